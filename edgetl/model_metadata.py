"""edgetl's model metadata: what a device needs to use a ``.tflite`` file, embedded in it (no TensorFlow).

``EdgetlMetadata`` is JSON stored as a TFLite metadata entry named
``edgetl.metadata`` (the flatbuffer's ``metadata`` list, next to TensorFlow's
own ``min_runtime_version`` and the standard ``TFLITE_METADATA`` that
``edgetl.tflite_metadata`` reads), so it travels inside the file and is read
with the ``flatbuffers`` package alone. Files exported before edgetl 0.1.1 name
the entry ``edgetl.model_card``; both names are read. ``labels.txt`` and
``<model>.json`` sidecars are also written next to each exported model.
(In the field a "model card" is documentation about a model, which is why the
embedded entry is called metadata.)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from edgetl import tflite_schema
from edgetl.errors import ModelFileError

METADATA_NAME = "edgetl.metadata"
# Names edgetl wrote the same entry under before, read as well.
LEGACY_METADATA_NAMES = ("edgetl.model_card",)
METADATA_FORMAT = 1
TFLITE_IDENTIFIER = b"TFL3"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """An input or output contract.

    Attributes:
      shape: tensor shape, batch first (``[1, H, W, 3]`` for images).
      dtype: 'float32', 'uint8' or 'int8' (what the interpreter takes/returns).
      scale: quantization scale (0.0 for float tensors).
      zero_point: quantization zero point.
    """

    shape: Tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0


@dataclasses.dataclass(frozen=True)
class EdgetlMetadata:
    """Everything a device needs besides the runtime, embedded in each exported model as edgetl's metadata entry.

    To feed the model: decode the image to RGB, resize to ``input.shape[1:3]``
    (bilinear), compute ``(pixel - mean) / std`` per channel (pixels in
    [0, 255]), then quantize with ``input.scale``/``input.zero_point`` when
    the input dtype is an integer type. The output holds ``output_kind``
    ('probabilities' after softmax) in ``labels`` order. In int8 files whose
    normalisation is folded into the input quantization, mean/std state that
    normalisation (127 and 127.5 for MobileNet) and, quantized, give back the
    pixel itself: the device feeds raw pixels.

    Attributes:
      labels: class names; index = output position.
      input: input tensor contract.
      output: output tensor contract.
      mean: per-channel value subtracted from [0, 255] pixels before the model.
      std: per-channel divisor applied after ``mean``.
      resize: resize filter used during training ('bilinear').
      color: channel order ('RGB').
      output_kind: 'probabilities' (softmax applied in the model) or 'logits'.
      backbone: registry name of the backbone.
      alpha: width multiplier, or None.
      variant: export variant ('fp32', 'fp16', 'dynamic', 'int8', 'qat-int8'...).
      preprocessing: the backbone's in-graph normalisation, for humans.
      edgetl_version: version of edgetl that wrote the file.
      format: format version of this entry.
      extra: free-form additions (accuracy at export, dataset name...).
    """

    labels: Tuple[str, ...]
    input: TensorSpec
    output: TensorSpec
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "bilinear"
    color: str = "RGB"
    output_kind: str = "probabilities"
    backbone: str = ""
    alpha: Optional[float] = None
    variant: str = ""
    preprocessing: str = ""
    edgetl_version: str = ""
    format: int = METADATA_FORMAT
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        """The metadata as compact, sorted JSON."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "EdgetlMetadata":
        """Parses the entry; unknown keys from newer versions are kept in ``extra``."""
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        extra = dict(data.get("extra") or {})
        extra.update({k: v for k, v in data.items() if k not in known})
        return cls(
            labels=tuple(data["labels"]),
            input=TensorSpec(**{**data["input"], "shape": tuple(data["input"]["shape"])}),
            output=TensorSpec(**{**data["output"], "shape": tuple(data["output"]["shape"])}),
            mean=tuple(data.get("mean", (0.0, 0.0, 0.0))),
            std=tuple(data.get("std", (1.0, 1.0, 1.0))),
            resize=data.get("resize", "bilinear"),
            color=data.get("color", "RGB"),
            output_kind=data.get("output_kind", "probabilities"),
            backbone=data.get("backbone", ""),
            alpha=data.get("alpha"),
            variant=data.get("variant", ""),
            preprocessing=data.get("preprocessing", ""),
            edgetl_version=data.get("edgetl_version", ""),
            format=int(data.get("format", METADATA_FORMAT)),
            extra={k: v for k, v in extra.items() if k not in known},
        )


def check_tflite_bytes(data: bytes, name: str = "model") -> None:
    """Cheap structural checks before a flatbuffer parser or interpreter sees ``data``.

    Raises:
      ModelFileError: empty, too short, or no ``TFL3`` identifier.
    """
    if len(data) == 0:
        raise ModelFileError(f"'{name}' is empty (0 bytes); re-copy or re-export the model.")
    if len(data) < 16:
        raise ModelFileError(f"'{name}' is too short ({len(data)} bytes) to be a TFLite model; the file is truncated.")
    if data[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(
            f"'{name}' is not a TFLite model (identifier {data[4:8]!r}, expected b'TFL3'). "
            f"Pass a .tflite file exported by edgetl or the TFLite converter."
        )


def read_metadata(data: bytes) -> Dict[str, bytes]:
    """All TFLite metadata entries of a model as ``{name: bytes}``.

    Raises:
      ModelFileError: when the flatbuffer cannot be parsed.
    """
    check_tflite_bytes(data)
    schema = tflite_schema.reader()
    try:
        model = schema.Model.GetRootAs(data, 0)
        entries = {}
        for index in range(model.MetadataLength()):
            entry = model.Metadata(index)
            name = (entry.Name() or b"").decode("utf-8", "replace")
            buffer = model.Buffers(entry.Buffer())
            if buffer is None:
                continue
            if buffer.Offset() > 1:  # large models keep buffers after the flatbuffer
                entries[name] = bytes(data[buffer.Offset(): buffer.Offset() + buffer.Size()])
            else:
                raw = buffer.DataAsNumpy()
                entries[name] = bytes(raw.tobytes()) if hasattr(raw, "tobytes") else b""
        return entries
    except ModelFileError:
        raise
    except Exception as e:  # a damaged flatbuffer raises anything from IndexError to struct.error
        raise ModelFileError(f"The TFLite flatbuffer cannot be parsed ({type(e).__name__}: {e}); the file is damaged.") from e


def find_edgetl_entry(entries: Mapping[str, bytes]) -> Optional[bytes]:
    """edgetl's entry among a model's metadata entries, under its current or an earlier name, or None."""
    for name in (METADATA_NAME,) + LEGACY_METADATA_NAMES:
        if name in entries:
            return entries[name]
    return None


def read_edgetl_metadata(data: bytes) -> Optional[EdgetlMetadata]:
    """The embedded edgetl metadata, or None when the model has none (third-party models).

    Raises:
      ModelFileError: the flatbuffer or the entry's JSON is damaged.
    """
    raw = find_edgetl_entry(read_metadata(data))
    if raw is None:
        return None
    try:
        return EdgetlMetadata.from_json(raw.decode("utf-8"))
    except (ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"The embedded edgetl metadata is damaged ({e}); re-export the model.") from e


def embed_edgetl_metadata(data: bytes, metadata: EdgetlMetadata) -> bytes:
    """Returns a copy of the ``.tflite`` bytes with ``metadata`` embedded (replacing an older entry).

    Example:
      >>> tflite_bytes = embed_edgetl_metadata(converter.convert(), metadata)
      >>> read_edgetl_metadata(tflite_bytes).labels
    """
    return embed_entries(data, {METADATA_NAME: metadata.to_json().encode("utf-8")})


def embed_entries(data: bytes, entries: Mapping[str, bytes], default_names: Optional[Mapping[int, str]] = None) -> bytes:
    """Returns a copy of the ``.tflite`` bytes with the metadata ``entries`` set (same-named ones replaced).

    The model is repacked with the schema's object API (export side: needs
    ai-edge-litert or TensorFlow), writing each distinct vector once. A zip
    of associated files appended to ``data`` (the standard metadata's
    ``labels.txt``) is appended again after the new flatbuffer: a repack
    drops everything after the flatbuffer.

    Args:
      data: the model.
      entries: metadata name -> content.
      default_names: tensor index (main subgraph) -> name given to that tensor
        when the flatbuffer leaves it unnamed.

    Raises:
      ModelFileError: ``data`` is not a TFLite model, or its appended zip is damaged.
    """
    check_tflite_bytes(data)
    schema = tflite_schema.object_api()
    import flatbuffers

    from edgetl.tflite_metadata import append_associated_files, read_associated_files

    appended = read_associated_files(data)
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    model.metadata = list(model.metadata or [])
    model.buffers = list(model.buffers or [])
    existing = {_entry_name(m): m for m in model.metadata}
    for name, content in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(content, np.uint8)
        entry = existing.get(name)
        if entry is not None and 0 <= entry.buffer < len(model.buffers):
            model.buffers[entry.buffer] = buffer  # in place: the old content leaves no orphan buffer behind
            continue
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    tensors = model.subgraphs[0].tensors if model.subgraphs else []
    for index, name in (default_names or {}).items():
        if 0 <= index < len(tensors) and not tensors[index].name:
            tensors[index].name = name
    builder = _sharing_builder(flatbuffers)(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return append_associated_files(bytes(builder.Output()), appended)


def _entry_name(entry) -> str:
    name = entry.name or b""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else name


def _sharing_builder(flatbuffers):
    """A flatbuffers ``Builder`` class that writes each distinct numpy vector once and aligns buffers like the converter.

    The object API (``ModelT.Pack``) writes every vector anew, and the
    converter does too: an int8 file holds one int64 zero-point vector (all
    zeros) per weight and bias tensor, 18% of MobileNetV2 alpha 0.35. Tables
    may point at the same vector, so each distinct one is written once; the
    interpreter reads the same values. Byte vectors (tensor data) start on 16
    bytes, as the converter writes them, so int32/float data stays aligned.
    """

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self, initial_size: int):
            super().__init__(initial_size)
            self._written: Dict[Tuple[str, int, bytes], int] = {}

        def CreateNumpyVector(self, x):  # noqa: N802 (flatbuffers' name)
            key = (x.dtype.str, int(x.size), x.tobytes())
            offset = self._written.get(key)
            if offset is None:
                if x.dtype.itemsize == 1 and x.size >= 16:
                    self.Prep(16, x.nbytes)
                offset = self._written[key] = super().CreateNumpyVector(x)
            return offset

    return SharingBuilder


def labels_text(labels: List[str]) -> str:
    """``labels.txt`` content: one label per line, in output order (see ``edgetl.labels.labels_text``)."""
    from edgetl.labels import labels_text as text

    return text(labels)
