"""Checks and parses a ``.tflite`` file without an interpreter: I/O, ops, integer-only and the Edge TPU's verdict.

Everything here reads the flatbuffer with the ``tflite`` schema package alone
(``edgetl.tflite_schema``: no runtime package needed), so ``edgetl inspect``
never hands an untrusted file to native code, and every command runs these
checks before an interpreter sees the bytes. Both metadata blocks are read:
edgetl's own entry (``edgetl.model_metadata``) and the standard TFLite metadata that
MediaPipe and the Task Library read (``edgetl.tflite_metadata``).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import stat
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from edgetl import edgetpu, tflite_schema
from edgetl.errors import ModelFileError
from edgetl.model_metadata import TFLITE_IDENTIFIER, EdgetlMetadata, check_tflite_bytes, read_edgetl_metadata, read_metadata
from edgetl.tflite_metadata import METADATA_BUFFER_NAME, TensorMetadata, TFLiteMetadata, read_tflite_metadata

PathLike = Union[str, os.PathLike]

# Larger files are refused before they are read whole (flatbuffers stop at 2 GiB anyway).
MAX_MODEL_BYTES = 2**31
# Larger tensors are refused: a damaged shape must not make edgetl or the runtime allocate gigabytes.
MAX_TENSOR_BYTES = 2**30
# Image inputs wider or taller than this are refused (classifiers for small devices take <= 600 px).
MAX_IMAGE_SIDE = 8192

# Custom op that the Edge TPU compiler puts in place of the subgraph it maps to the TPU.
EDGETPU_CUSTOM_OP = edgetpu.COMPILED_OP

_FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16", "COMPLEX64", "COMPLEX128"})


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output tensor as the flatbuffer declares it.

    Attributes:
      name: tensor name.
      index: tensor index in the main subgraph (what ``set_tensor`` takes).
      shape: static shape, batch first.
      shape_signature: shape with -1 where a dimension is dynamic (equals
        ``shape`` when the model declares no signature).
      dtype: numpy-style dtype name ('float32', 'uint8', 'int8', ...).
      scale: quantization scales (empty for float tensors).
      zero_point: quantization zero points, one per scale.
    """

    name: str
    index: int
    shape: Tuple[int, ...]
    shape_signature: Tuple[int, ...]
    dtype: str
    scale: Tuple[float, ...] = ()
    zero_point: Tuple[int, ...] = ()

    @property
    def quantized(self) -> bool:
        """True when the tensor carries non-zero quantization parameters."""
        return any(s != 0.0 for s in self.scale)

    @property
    def dynamic(self) -> bool:
        """True when any dimension is only known at run time."""
        return any(d < 0 for d in self.shape_signature)

    def describe(self) -> str:
        """Compact text such as ``uint8[1,224,224,3] q=(0.0078125, 128)``."""
        dims = ",".join("?" if d < 0 else str(d) for d in self.shape_signature)
        text = f"{self.dtype}[{dims}]"
        if self.quantized:
            if len(self.scale) == 1:
                text += f" q=({self.scale[0]:.6g}, {self.zero_point[0]})"
            else:
                text += f" q=per-channel x{len(self.scale)}"
        return text


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What ``edgetl inspect`` reports about a ``.tflite`` file.

    Attributes:
      path: the file.
      size_bytes: file size.
      sha256: hex digest of the file, to tell copies apart across devices.
      schema_version: TFLite schema version in the flatbuffer.
      description: the converter's description string.
      subgraphs: number of subgraphs (1 for plain classifiers).
      inputs: inputs of the main subgraph.
      outputs: outputs of the main subgraph.
      op_counts: operator name -> count over all subgraphs, most frequent first;
        custom ops appear under their custom code (e.g. 'edgetpu-custom-op').
      tensor_types: tensor type -> count over all subgraphs.
      fully_integer: no tensor of any floating-point type anywhere in the model.
      edgetpu_compiled: the Edge TPU compiler produced this file.
      edgetpu: the Edge TPU's verdict (``edgetl.edgetpu.check``): whether the
        file is compatible, and why not.
      metadata: metadata entry name -> size in bytes.
      min_runtime_version: the converter's 'min_runtime_version' entry: the
        oldest TFLite runtime with every op version the file uses ('' when absent).
      edgetl_metadata: edgetl's embedded metadata entry, or None (third-party models).
      tflite_metadata: the standard TFLite metadata (``TFLITE_METADATA``) with
        the labels of its appended zip, or None.
      warnings: problems with the standard metadata or its zip; they are
        ignored (the device falls back to flags and defaults) and shown.
    """

    path: str
    size_bytes: int
    sha256: str
    schema_version: int
    description: str
    subgraphs: int
    inputs: Tuple[TensorInfo, ...]
    outputs: Tuple[TensorInfo, ...]
    op_counts: Dict[str, int]
    tensor_types: Dict[str, int]
    fully_integer: bool
    edgetpu_compiled: bool
    edgetpu: edgetpu.EdgeTPUCheck
    metadata: Dict[str, int]
    min_runtime_version: str = ""
    edgetl_metadata: Optional[EdgetlMetadata] = None
    tflite_metadata: Optional[TFLiteMetadata] = None
    warnings: Tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The file name without folders."""
        return Path(self.path).name

    @property
    def edgetpu_compatible(self) -> bool:
        """The Edge TPU compiler can map the whole graph (or already did): ``edgetpu.compatible``."""
        return self.edgetpu.compatible

    @property
    def custom_ops(self) -> Tuple[str, ...]:
        """Custom op codes the model uses (the runtime must provide them)."""
        return tuple(sorted(op for op in self.op_counts if not op.isupper()))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dictionary (edgetl's metadata and the Edge TPU verdict as nested dictionaries)."""
        data = dataclasses.asdict(self)
        data["edgetl_metadata"] = metadata_dict(self.edgetl_metadata)
        data["edgetpu"] = self.edgetpu.to_dict()
        return data


def metadata_dict(metadata: Optional[EdgetlMetadata]) -> Optional[Dict[str, Any]]:
    """edgetl's metadata as a plain dictionary, or None."""
    return None if metadata is None else dataclasses.asdict(metadata)


def model_labels(info: ModelInfo) -> Tuple[Tuple[str, ...], str]:
    """The labels a model carries and where they come from: edgetl's metadata, else the standard TFLite metadata.

    Returns:
      (labels, source): source is 'edgetl metadata', 'TFLite metadata, labels.txt'
      or 'none' (then labels is empty).
    """
    if info.edgetl_metadata is not None and info.edgetl_metadata.labels:
        return tuple(info.edgetl_metadata.labels), "edgetl metadata"
    standard = info.tflite_metadata
    if standard is not None and standard.labels:
        return standard.labels, f"TFLite metadata, {standard.labels_file}"
    return (), "none"


def input_metadata(info: ModelInfo, index: int = 0) -> Optional[TensorMetadata]:
    """The standard TFLite metadata of input ``index`` (a ``TensorMetadata``), or None."""
    standard = info.tflite_metadata
    return standard.inputs[index] if standard is not None and index < len(standard.inputs) else None


def read_model(path: PathLike) -> bytes:
    """Reads a ``.tflite`` file after checking it exists, is a file and is not empty or foreign.

    Args:
      path: the model file.

    Returns:
      The file's bytes (the only copy later stages use, so the checked bytes
      are the ones the interpreter loads).

    Raises:
      ModelFileError: missing, a folder or not a regular file, unreadable,
        empty, too short, larger than MAX_MODEL_BYTES, or no ``TFL3`` identifier.
    """
    path = Path(path)
    if not path.exists():
        hint = ""
        siblings = sorted(p.name for p in path.parent.glob("*.tflite")) if path.parent.is_dir() else []
        if siblings:
            hint = f" Models in '{path.parent}': {', '.join(siblings[:5])}{' ...' if len(siblings) > 5 else ''}."
        raise ModelFileError(f"Model file '{path}' does not exist; pass the path of a .tflite file.{hint}")
    if path.is_dir():
        raise ModelFileError(f"'{path}' is a folder, not a model; pass the path of a .tflite file inside it.")
    try:
        # A FIFO or a device would block or never end: only regular files are read.
        if not stat.S_ISREG(path.stat().st_mode):
            raise ModelFileError(f"'{path}' is not a regular file (a pipe, socket or device); pass the path of a .tflite file.")
        with open(path, "rb") as handle:
            # The identifier first: a multi-GB file that is not a model is never read whole.
            header = handle.read(16)
            if header[4:8] != TFLITE_IDENTIFIER:
                check_tflite_bytes(header, str(path))
            handle.seek(0)
            data = handle.read(MAX_MODEL_BYTES + 1)
    except PermissionError:
        raise ModelFileError(f"Model file '{path}' cannot be read (permission denied); check its permissions.") from None
    except OSError as e:
        raise ModelFileError(f"Model file '{path}' cannot be read ({e.strerror}); check the disk and re-copy it.") from e
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFileError(f"Model file '{path}' is larger than {MAX_MODEL_BYTES / 2**30:g} GiB, more than a model for a "
                             f"small device holds; check that it is the right file.")
    check_tflite_bytes(data, str(path))
    return data


def _op_name(code, builtin_names: Dict[int, str], custom_code: int) -> str:
    # Schema v3a moved builtin codes past 127 to a new field; the larger of the two is the real one.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == custom_code:
        raw = code.CustomCode()
        return raw.decode("utf-8", "replace") if raw else "CUSTOM"
    return builtin_names.get(builtin, f"BUILTIN_{builtin}")


def _tensor_info(tensor, index: int, type_names: Dict[int, str]) -> TensorInfo:
    shape = tuple(int(d) for d in (tensor.ShapeAsNumpy() if tensor.ShapeLength() else ()))
    signature = tuple(int(d) for d in tensor.ShapeSignatureAsNumpy()) if tensor.ShapeSignatureLength() else shape
    quant = tensor.Quantization()
    scale: Tuple[float, ...] = ()
    zero_point: Tuple[int, ...] = ()
    if quant is not None and quant.ScaleLength():
        scale = tuple(float(s) for s in quant.ScaleAsNumpy())
        zero_point = tuple(int(z) for z in quant.ZeroPointAsNumpy()) if quant.ZeroPointLength() else (0,) * len(scale)
    name = (tensor.Name() or b"").decode("utf-8", "replace")
    return TensorInfo(name, index, shape, signature, type_names.get(tensor.Type(), "unknown").lower(), scale, zero_point)


# Bytes per element of each TFLite tensor type (string and resource tensors counted as 1).
_TYPE_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "BFLOAT16": 2, "FLOAT64": 8, "INT32": 4, "UINT32": 4, "INT64": 8,
               "UINT64": 8, "INT16": 2, "UINT16": 2, "COMPLEX64": 8, "COMPLEX128": 16}


def _check_tensor_size(path: str, tensor, index: int, shape, type_name: str) -> None:
    """Refuses a tensor whose declared shape needs more than MAX_TENSOR_BYTES (a damaged or hostile file)."""
    elements = 1
    for dim in shape:
        elements *= max(int(dim), 1)
    size = elements * _TYPE_BYTES.get(type_name, 1)
    if size > MAX_TENSOR_BYTES:
        name = (tensor.Name() or b"").decode("utf-8", "replace")
        raise ModelFileError(
            f"'{path}' declares tensor {index} '{name}' of shape {[int(d) for d in shape]} ({size / 2**30:.1f} GiB), "
            f"more than {MAX_TENSOR_BYTES / 2**30:g} GiB; the file is damaged or not a model for a small device. "
            f"Re-copy or re-export it."
        )


def _check_buffers(model, size: int) -> set:
    """Touches every constant buffer so a truncated file fails here, not inside native code.

    Returns:
      Indices of the buffers that hold data (constant tensors point at them).
    """
    filled = set()
    for index in range(model.BuffersLength()):
        buffer = model.Buffers(index)
        if buffer is None:
            continue
        if buffer.Offset() > 1:  # buffers of models over 2 GB live after the flatbuffer
            if buffer.Offset() + buffer.Size() > size:
                raise ValueError(f"buffer {index} ends at byte {buffer.Offset() + buffer.Size()}, past the end")
            filled.add(index)
        elif buffer.DataLength():
            buffer.DataAsNumpy()  # numpy refuses a view that runs past the end of the file
            filled.add(index)
    return filled


def parse_model(data: bytes, path: str = "model") -> ModelInfo:
    """Parses checked ``.tflite`` bytes into a ModelInfo (no interpreter involved).

    Args:
      data: the file's bytes (see ``read_model``).
      path: the file name used in messages and in the result.

    Returns:
      The ModelInfo.

    Raises:
      ModelFileError: the flatbuffer is truncated or damaged, or has no subgraph.
    """
    check_tflite_bytes(data, path)
    schema = tflite_schema.reader()
    builtin_names = tflite_schema.enum_names(schema.BuiltinOperator)
    type_names = tflite_schema.enum_names(schema.TensorType)
    custom_code = schema.BuiltinOperator.CUSTOM
    try:
        model = schema.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() == 0:
            raise ModelFileError(f"'{path}' has no subgraph, so there is nothing to run; re-export the model.")
        constant_buffers = _check_buffers(model, len(data))
        op_names = [_op_name(model.OperatorCodes(i), builtin_names, custom_code) for i in range(model.OperatorCodesLength())]
        op_counts: collections.Counter = collections.Counter()
        tensor_types: collections.Counter = collections.Counter()
        wide_ops: collections.Counter = collections.Counter()
        wide_types: set = set()
        dynamic: List[str] = []
        big_rank = 0
        for graph_index in range(model.SubgraphsLength()):
            graph = model.Subgraphs(graph_index)
            tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
            types = [type_names.get(t.Type(), "unknown") for t in tensors]
            tensor_types.update(types)
            for op_index in range(graph.OperatorsLength()):
                op = graph.Operators(op_index)
                name = op_names[op.OpcodeIndex()]
                op_counts[name] += 1
                touched = [i for i in list(op.InputsAsNumpy() if op.InputsLength() else []) +
                           list(op.OutputsAsNumpy() if op.OutputsLength() else []) if i >= 0]
                if any(i >= len(tensors) for i in touched):
                    raise ValueError(f"op {op_index} ({name}) of subgraph {graph_index} uses tensor {max(touched)}, "
                                     f"but the subgraph has {len(tensors)} tensors")
                wide = {types[i] for i in touched if types[i] not in edgetpu.EDGETPU_TYPES}
                if wide:
                    wide_ops[name] += 1
                    wide_types.update(wide)
            for tensor_index, tensor in enumerate(tensors):
                shape = tensor.ShapeAsNumpy() if tensor.ShapeLength() else ()
                _check_tensor_size(path, tensor, tensor_index, shape, types[tensor_index])
                if graph_index == 0 and tensor.ShapeSignatureLength() and min(tensor.ShapeSignatureAsNumpy()) < 0:
                    dynamic.append((tensor.Name() or b"").decode("utf-8", "replace") or f"tensor {tensor_index}")
                # The Edge TPU keeps only the 3 innermost dimensions of activations; outer ones must be 1.
                if len(shape) > 3 and any(int(d) > 1 for d in shape[:-3]) and tensor.Buffer() not in constant_buffers:
                    big_rank += 1
        main_graph = model.Subgraphs(0)
        main_tensors = [main_graph.Tensors(i) for i in range(main_graph.TensorsLength())]
        ends = list(main_graph.InputsAsNumpy() if main_graph.InputsLength() else []) + \
            list(main_graph.OutputsAsNumpy() if main_graph.OutputsLength() else [])
        if any(not 0 <= int(i) < len(main_tensors) for i in ends):
            raise ValueError(f"input/output tensor indices {[int(i) for i in ends]} outside 0..{len(main_tensors) - 1}")
        inputs = tuple(_tensor_info(main_tensors[i], int(i), type_names) for i in main_graph.InputsAsNumpy()) \
            if main_graph.InputsLength() else ()
        outputs = tuple(_tensor_info(main_tensors[i], int(i), type_names) for i in main_graph.OutputsAsNumpy()) \
            if main_graph.OutputsLength() else ()
        description = (model.Description() or b"").decode("utf-8", "replace")
        version = int(model.Version())
    except ModelFileError:
        raise
    except Exception as e:  # a damaged flatbuffer raises anything from IndexError to struct.error
        raise ModelFileError(
            f"'{path}' is truncated or damaged: its TFLite flatbuffer cannot be parsed ({type(e).__name__}: {e}). "
            f"Re-copy or re-export the model."
        ) from e

    metadata = read_metadata(data)
    edgetl_metadata = read_edgetl_metadata(data)
    standard, warnings = read_tflite_metadata(data, metadata.get(METADATA_BUFFER_NAME), str(path))
    fully_integer = not any(t in _FLOAT_TYPES for t in tensor_types)
    ends = [t.name for t in inputs + outputs]
    dynamic_ends = [t.name for t in inputs + outputs if t.dynamic]
    facts = edgetpu.GraphFacts(
        op_counts=dict(op_counts), wide_ops=dict(wide_ops), wide_types=tuple(sorted(wide_types)),
        wide_io=tuple(t.name for t in inputs + outputs if t.dtype.upper() not in edgetpu.EDGETPU_TYPES),
        dynamic=tuple(dynamic_ends + [name for name in dynamic if name not in ends]), high_rank=big_rank,
        subgraphs=int(model.SubgraphsLength()))
    return ModelInfo(
        path=str(path),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        schema_version=version,
        description=description,
        subgraphs=int(model.SubgraphsLength()),
        inputs=inputs,
        outputs=outputs,
        op_counts=dict(op_counts.most_common()),
        tensor_types=dict(tensor_types.most_common()),
        fully_integer=fully_integer,
        edgetpu_compiled=EDGETPU_CUSTOM_OP in op_counts,
        edgetpu=edgetpu.check(facts),
        metadata={name: len(value) for name, value in metadata.items()},
        min_runtime_version=metadata.get("min_runtime_version", b"").rstrip(b"\x00").decode("utf-8", "replace"),
        edgetl_metadata=edgetl_metadata,
        tflite_metadata=standard,
        warnings=warnings,
    )


def inspect_model(path: PathLike) -> ModelInfo:
    """Checks and parses a ``.tflite`` file: I/O, op histogram, integer-only, the Edge TPU's verdict, metadata.

    Args:
      path: the model file.

    Returns:
      The ModelInfo.

    Raises:
      ModelFileError: the file is missing, empty, truncated or not a TFLite model.

    Example:
      >>> info = inspect_model("mobilenet_v2_1.0_224_quant.tflite")
      >>> info.inputs[0].describe(), info.fully_integer
      ('uint8[1,224,224,3] q=(0.0078125, 128)', True)
    """
    return parse_model(read_model(path), str(path))


def check_image_input(info: ModelInfo) -> None:
    """Refuses an image input that decoded images cannot be fitted to.

    Images of any size are resized to the model's input, so the checks are on
    the model: a fixed, plausible height and width, and embedded edgetl metadata that
    describes this file's input tensor (not one of another export).

    Raises:
      ModelFileError: a dynamic, zero or huge height/width, or edgetl metadata whose
        input shape or dtype differs from the tensor's.
    """
    if not info.inputs or len(info.inputs[0].shape) != 4:
        return  # input_transform explains what is not an image input
    tensor = info.inputs[0]
    height, width = tensor.shape[1:3]
    if any(d < 0 for d in tensor.shape_signature[1:3]):
        raise ModelFileError(
            f"'{info.path}' has a dynamic image size (input {tensor.describe()}); edgetl resizes images to a fixed "
            f"size. Export the model with a fixed input size."
        )
    if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
        raise ModelFileError(
            f"'{info.path}' takes {height}x{width} images (input {tensor.describe()}); edgetl feeds images of 1 to "
            f"{MAX_IMAGE_SIDE} pixels a side. The file is damaged or not an image classifier."
        )
    metadata = info.edgetl_metadata
    if metadata is not None and metadata.input.shape and len(metadata.input.shape) == 4:
        described = tuple(int(d) for d in metadata.input.shape[1:3])
        if described != (height, width) or metadata.input.dtype != tensor.dtype:
            raise ModelFileError(
                f"'{info.path}' has a {tensor.dtype} {height}x{width} input but its edgetl metadata describes a "
                f"{metadata.input.dtype} {described[0]}x{described[1]} one: the metadata belongs to another export. "
                f"Re-export the model (edgetl export) instead of editing it."
            )


def format_info(info: ModelInfo, max_labels: int = 5) -> str:
    """Human-readable report of ``info`` (what ``edgetl inspect`` prints)."""
    from edgetl._table import format_table

    lines = [
        f"{info.path}",
        f"  size: {info.size_bytes / 1e6:.2f} MB ({info.size_bytes:,} bytes), sha256 {info.sha256[:16]}",
        f"  schema v{info.schema_version}, {info.subgraphs} subgraph(s)"
        + (f", description '{info.description}'" if info.description else ""),
        "  min runtime: " + (f"TFLite {info.min_runtime_version} (the converter's min_runtime_version: the oldest "
                             f"runtime with every op version the file uses)" if info.min_runtime_version else "not recorded"),
        "",
    ]
    rows = [["input", t.name, t.describe()] for t in info.inputs] + [["output", t.name, t.describe()] for t in info.outputs]
    lines += ["  " + line for line in format_table(["", "tensor", "type"], rows).splitlines()]
    lines.append("")
    total = sum(info.op_counts.values())
    ops = ", ".join(f"{name} {count}" for name, count in info.op_counts.items())
    lines.append(f"  ops ({total}): {ops}")
    types = ", ".join(f"{name.lower()} {count}" for name, count in info.tensor_types.items())
    lines.append(f"  tensors: {types}")
    lines.append(f"  fully integer: {'yes' if info.fully_integer else 'no'}")
    tpu = info.edgetpu.summary()
    if info.edgetpu_compiled:
        tpu = f"compiled for the Edge TPU ({info.op_counts[EDGETPU_CUSTOM_OP]} {EDGETPU_CUSTOM_OP}); run it with --delegate edgetpu"
    lines.append(f"  Edge TPU: {tpu}")
    if info.metadata:
        standard = info.tflite_metadata
        files = "; appended zip: " + ", ".join(f"{name} ({size:,} B)" for name, size in standard.files.items()) \
            if standard is not None and standard.files else ""
        lines.append("  metadata: " + ", ".join(f"{name} ({size:,} B)" for name, size in info.metadata.items()) + files)
    lines += _format_tflite_metadata(info.tflite_metadata, max_labels)
    metadata = info.edgetl_metadata
    if metadata is None:
        lines.append("  edgetl metadata: none (not exported by edgetl)")
    else:
        shown = _shown(metadata.labels, max_labels)
        lines.append(f"  edgetl metadata: {metadata.backbone or '?'}"
                     + (f" alpha {metadata.alpha}" if metadata.alpha is not None else "")
                     + f", variant {metadata.variant or '?'}, edgetl {metadata.edgetl_version or '?'}")
        lines.append(f"    labels: {shown}")
        lines.append(f"    preprocessing: (pixel - {_triple(metadata.mean)}) / {_triple(metadata.std)}, {metadata.resize} "
                     f"resize, {metadata.color}" + (f"; in graph: {metadata.preprocessing}" if metadata.preprocessing else ""))
        lines.append(f"    output: {metadata.output_kind}")
    lines += _format_sources(info, max_labels)
    lines += [f"  warning: {warning}" for warning in info.warnings]
    return "\n".join(lines)


def _shown(labels: Sequence[str], max_labels: int) -> str:
    """The first labels, quoted where a comma or a space at an end would blur where one ends."""
    def quoted(label: str) -> str:
        return repr(label) if not label or "," in label or label != label.strip() else label

    return ", ".join(quoted(label) for label in labels[:max_labels]) + \
        (f", ... ({len(labels)} in all)" if len(labels) > max_labels else "")


def _format_tflite_metadata(standard, max_labels: int) -> List[str]:
    """The standard TFLite metadata block of ``inspect``."""
    if standard is None:
        return ["  TFLite metadata: none (MediaPipe and the Task Library need it)"]
    about = [f"'{standard.name}'" if standard.name else "unnamed"]
    about += [f"{key} {value}" for key, value in (("version", standard.version), ("author", standard.author)) if value]
    about.append(f"parser >= {standard.min_parser_version or '?'}")
    lines = ["  TFLite metadata: " + ", ".join(about)]
    for kind, tensors in (("input", standard.inputs), ("output", standard.outputs)):
        for tensor in tensors:
            parts = [tensor.content or "no content type"]
            if tensor.color_space:
                parts[0] += f" {tensor.color_space}"
            if tensor.normalization:
                parts.append(f"NormalizationOptions mean {_triple(tensor.mean) if tensor.mean else '?'} "
                             f"std {_triple(tensor.std) if tensor.std else '?'}")
            parts += [unit for unit in tensor.process_units if unit != "NormalizationOptions"]
            if tensor.stats_min or tensor.stats_max:
                parts.append(f"range [{_triple(tensor.stats_min or ['?'])}, {_triple(tensor.stats_max or ['?'])}]")
            for file in tensor.associated_files:
                text = f"{file.type} {file.name}"
                if file.name == standard.labels_file and standard.labels:
                    text += f" ({len(standard.labels)} labels: {_shown(standard.labels, max_labels)})"
                parts.append(text)
            lines.append(f"    {kind} '{tensor.name}': " + ", ".join(parts))
    return lines


def _format_sources(info: ModelInfo, max_labels: int) -> List[str]:
    """Which value the device side uses, and where it comes from (flags would win over both)."""
    labels, source = model_labels(info)
    lines = ["  device side uses (--labels/--mean/--std win over these):",
             f"    labels from the {source}: {_shown(labels, max_labels)}" if labels
             else "    labels: none: pass --labels FILE"]
    if info.inputs:
        from edgetl.runtime.tensors import input_transform

        try:
            transform = input_transform(info.inputs[0], info.edgetl_metadata, model_name=info.path, standard=input_metadata(info))
            lines.append(f"    preprocessing: {transform.describe()}")
        except ModelFileError:
            lines.append("    preprocessing: none (not an RGB image input)")
    return lines


def _triple(values) -> str:
    values = [float(v) for v in values]
    if len(set(values)) == 1:
        return f"{values[0]:g}"
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
