"""Tiny .tflite classifiers built with the flatbuffer schema alone (no TensorFlow), for device-side tests.

The model averages each colour channel over the image (MEAN over H, W) and
applies a sharp SOFTMAX, so it labels a solid red/green/blue picture by its
dominant channel: enough to test eval/predict/bench end to end with float32,
int8 and uint8 I/O, fixed or dynamic batch, with or without edgetl metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgetl.model_metadata import EdgetlMetadata, TensorSpec, embed_edgetl_metadata

_TYPES = {"float32": schema.TensorType.FLOAT32, "int8": schema.TensorType.INT8, "uint8": schema.TensorType.UINT8}
# int8/uint8 zero points that make [0, 1] the representable range of the input.
_INPUT_ZERO_POINT = {"int8": -128, "uint8": 0}
# TFLite requires softmax outputs quantized with scale 1/256 and these zero points.
_SOFTMAX_ZERO_POINT = {"int8": -128, "uint8": 0}


def _pack(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor(name, shape, tensor_type, buffer=0, quant=None, signature=None):
    tensor = schema.TensorT()
    tensor.name = name
    tensor.shape = list(shape)
    tensor.type = tensor_type
    tensor.buffer = buffer
    tensor.quantization = quant
    if signature is not None:
        tensor.shapeSignature = list(signature)
    return tensor


def _quant(scale: float, zero_point: int):
    params = schema.QuantizationParametersT()
    params.scale = [scale]
    params.zeroPoint = [zero_point]
    return params


def build_colour_model(dtype: str = "float32", size: int = 8, channels: int = 3, dynamic_batch: bool = False) -> bytes:
    """MEAN(H, W) -> SOFTMAX(beta=20) classifier of ``channels`` classes; float inputs expect [0, 1]."""
    tensor_type = _TYPES[dtype]
    model = schema.ModelT()
    model.version = 3
    model.description = "edgetl test colour model"
    model.buffers = [schema.BufferT()]
    axes = schema.BufferT()
    axes.data = list(np.array([1, 2], np.int32).tobytes())
    model.buffers.append(axes)
    integer = dtype != "float32"
    in_quant = _quant(1 / 255, _INPUT_ZERO_POINT[dtype]) if integer else None
    out_quant = _quant(1 / 256, _SOFTMAX_ZERO_POINT[dtype]) if integer else None
    tensors = [
        _tensor("image", [1, size, size, channels], tensor_type, quant=in_quant,
                signature=[-1, size, size, channels] if dynamic_batch else None),
        _tensor("axes", [2], schema.TensorType.INT32, buffer=1),
        _tensor("channel_mean", [1, channels], tensor_type, quant=_quant(1 / 255, _INPUT_ZERO_POINT[dtype]) if integer else None),
        _tensor("probabilities", [1, channels], tensor_type, quant=out_quant),
    ]
    codes = []
    for op in (schema.BuiltinOperator.MEAN, schema.BuiltinOperator.SOFTMAX):
        code = schema.OperatorCodeT()
        code.builtinCode = op
        code.deprecatedBuiltinCode = op
        code.version = 2 if integer else 1
        codes.append(code)
    mean = schema.OperatorT()
    mean.opcodeIndex, mean.inputs, mean.outputs = 0, [0, 1], [2]
    mean.builtinOptionsType = schema.BuiltinOptions.ReducerOptions
    mean.builtinOptions = schema.ReducerOptionsT()
    mean.builtinOptions.keepDims = False
    softmax = schema.OperatorT()
    softmax.opcodeIndex, softmax.inputs, softmax.outputs = 1, [2], [3]
    softmax.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
    softmax.builtinOptions = schema.SoftmaxOptionsT()
    softmax.builtinOptions.beta = 20.0
    graph = schema.SubGraphT()
    graph.name = "main"
    graph.tensors, graph.inputs, graph.outputs, graph.operators = tensors, [0], [3], [mean, softmax]
    model.subgraphs = [graph]
    model.operatorCodes = codes
    return _pack(model)


def build_edgetpu_model() -> bytes:
    """A model whose only op is 'edgetpu-custom-op', as edgetpu_compiler writes them (never runnable here)."""
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "edgetpu-custom-op"
    code.version = 1
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    op.customOptions = [0] * 8
    graph = schema.SubGraphT()
    graph.tensors = [
        _tensor("input", [1, 8, 8, 3], schema.TensorType.UINT8, quant=_quant(1 / 128, 128)),
        _tensor("output", [1, 3], schema.TensorType.UINT8, quant=_quant(1 / 256, 0)),
    ]
    graph.inputs, graph.outputs, graph.operators = [0], [1], [op]
    model.subgraphs = [graph]
    model.operatorCodes = [code]
    return _pack(model)


def colour_metadata(dtype: str, labels: Sequence[str] = ("red", "green", "blue"), size: int = 8,
                output_kind: str = "probabilities") -> EdgetlMetadata:
    """The edgetl metadata edgetl would embed: pixels / 255, labels in output order."""
    integer = dtype != "float32"
    return EdgetlMetadata(
        labels=tuple(labels),
        input=TensorSpec((1, size, size, 3), dtype, 1 / 255 if integer else 0.0, _INPUT_ZERO_POINT.get(dtype, 0)),
        output=TensorSpec((1, len(labels)), dtype, 1 / 256 if integer else 0.0, _SOFTMAX_ZERO_POINT.get(dtype, 0)),
        mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), backbone="test_colour_mean", variant="int8" if integer else "fp32",
        preprocessing="none", edgetl_version="test", output_kind=output_kind,
    )


def write_colour_model(path: Path, dtype: str = "float32", metadata: bool = True, dynamic_batch: bool = False,
                       channels: int = 3, labels: Optional[Sequence[str]] = None) -> Path:
    """Writes a colour model (with edgetl metadata unless ``metadata`` is False) and returns the path."""
    data = build_colour_model(dtype, channels=channels, dynamic_batch=dynamic_batch)
    if metadata:
        data = embed_edgetl_metadata(data, colour_metadata(dtype, labels or ("red", "green", "blue")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _pack_mutated(data: bytes, edit) -> bytes:
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    edit(model)
    return _pack(model)


def build_crashing_model(dtype: str = "float32") -> bytes:
    """A well-formed flatbuffer that crashes LiteRT 2.3 (SIGSEGV in allocate_tensors).

    The colour model with its SOFTMAX op code changed to SPLIT: SPLIT reads a
    second input that the op does not have. Every structural check passes; only
    running it shows the problem.
    """
    def edit(model):
        code = model.operatorCodes[1]
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.SPLIT

    return _pack_mutated(build_colour_model(dtype), edit)


def build_hanging_model() -> bytes:
    """A model whose one inference never ends: WHILE (x == x) { x = x + x }."""
    def tensor(name, tensor_type):
        return _tensor(name, [1], tensor_type)

    def code(op):
        operator_code = schema.OperatorCodeT()
        operator_code.builtinCode = operator_code.deprecatedBuiltinCode = op
        operator_code.version = 1
        return operator_code

    def operator(opcode, inputs, outputs, options_type=0, options=None):
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode, inputs, outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        return op

    def graph(name, tensors, ops):
        subgraph = schema.SubGraphT()
        subgraph.name, subgraph.tensors, subgraph.inputs, subgraph.outputs, subgraph.operators = name, tensors, [0], [1], ops
        return subgraph

    float32, boolean = schema.TensorType.FLOAT32, schema.TensorType.BOOL
    loop = schema.WhileOptionsT()
    loop.condSubgraphIndex, loop.bodySubgraphIndex = 1, 2
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.operatorCodes = [code(schema.BuiltinOperator.WHILE), code(schema.BuiltinOperator.EQUAL),
                           code(schema.BuiltinOperator.ADD)]
    model.subgraphs = [
        graph("main", [tensor("x", float32), tensor("y", float32)],
              [operator(0, [0], [1], schema.BuiltinOptions.WhileOptions, loop)]),
        graph("cond", [tensor("a", float32), tensor("same", boolean)], [operator(1, [0, 0], [1])]),
        graph("body", [tensor("a", float32), tensor("doubled", float32)],
              [operator(2, [0, 0], [1], schema.BuiltinOptions.AddOptions, schema.AddOptionsT())]),
    ]
    return _pack(model)


def build_huge_input_model(side: int = 100_000) -> bytes:
    """The colour model declaring a side x side RGB input (float32: 120 GB at 100,000 px)."""
    def edit(model):
        model.subgraphs[0].tensors[0].shape = [1, side, side, 3]

    return _pack_mutated(build_colour_model("float32"), edit)


def build_dense_colour_model(weights: np.ndarray, bias: np.ndarray, size: int = 8) -> bytes:
    """Float classifier MEAN(H, W) -> FULLY_CONNECTED(weights, bias) -> SOFTMAX: logits = mean colour . weights.T + bias.

    ``weights`` is ``[classes, 3]``; the mean colour is in whatever units the
    device feeds ((pixel - mean) / std of the model's metadata).
    """
    weights = np.asarray(weights, np.float32)
    bias = np.asarray(bias, np.float32)
    classes = int(weights.shape[0])
    model = schema.ModelT()
    model.version = 3
    model.description = "edgetl test dense colour model"
    model.buffers = [schema.BufferT()]
    for array in (np.array([1, 2], np.int32), weights, bias):
        buffer = schema.BufferT()
        buffer.data = list(array.tobytes())
        model.buffers.append(buffer)
    float32 = schema.TensorType.FLOAT32
    tensors = [
        _tensor("image", [1, size, size, 3], float32),
        _tensor("axes", [2], schema.TensorType.INT32, buffer=1),
        _tensor("channel_mean", [1, 3], float32),
        _tensor("weights", [classes, 3], float32, buffer=2),
        _tensor("bias", [classes], float32, buffer=3),
        _tensor("logits", [1, classes], float32),
        _tensor("probabilities", [1, classes], float32),
    ]
    codes = []
    for op in (schema.BuiltinOperator.MEAN, schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.SOFTMAX):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = op
        code.version = 1
        codes.append(code)
    mean = schema.OperatorT()
    mean.opcodeIndex, mean.inputs, mean.outputs = 0, [0, 1], [2]
    mean.builtinOptionsType, mean.builtinOptions = schema.BuiltinOptions.ReducerOptions, schema.ReducerOptionsT()
    dense = schema.OperatorT()
    dense.opcodeIndex, dense.inputs, dense.outputs = 1, [2, 3, 4], [5]
    dense.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    dense.builtinOptions = schema.FullyConnectedOptionsT()
    softmax = schema.OperatorT()
    softmax.opcodeIndex, softmax.inputs, softmax.outputs = 2, [5], [6]
    softmax.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
    softmax.builtinOptions = schema.SoftmaxOptionsT()
    softmax.builtinOptions.beta = 1.0
    graph = schema.SubGraphT()
    graph.name = "main"
    graph.tensors, graph.inputs, graph.outputs, graph.operators = tensors, [0], [6], [mean, dense, softmax]
    model.subgraphs = [graph]
    model.operatorCodes = codes
    return _pack(model)


def build_minus_one_one_model() -> bytes:
    """Red/green/blue classifier that expects (pixel - 127.5) / 127.5, like a Model Maker float file.

    Fed [0, 255] pixels instead (mean 0, std 1), the third logit adds the sum of
    the three channels (~300) and wins for every colour: chance accuracy.
    """
    return build_dense_colour_model([[1, 0, 0], [0, 1, 0], [1, 1, 2]], [0, 0, 0])


def build_nearest_colour_model(colours: Sequence[Sequence[int]]) -> bytes:
    """Classifier of ``len(colours)`` classes: the nearest colour to the image's mean, fed pixel / 255."""
    prototypes = np.asarray(colours, np.float32) / 255.0
    return build_dense_colour_model(prototypes * 40.0, -20.0 * (prototypes ** 2).sum(axis=1))


def with_tflite_metadata(data: bytes, labels: Optional[Sequence[str]] = None, mean: float = 0.0, std: float = 1.0,
                         labels_name: str = "labels.txt") -> bytes:
    """``data`` with standard TFLite metadata, as Google's writers lay it out: image input with
    NormalizationOptions (mean, std), output labels in a zip after the flatbuffer."""
    from edgetl.model_metadata import embed_entries
    from edgetl.tflite_metadata import (AssociatedFile, TensorMetadata, TFLiteMetadata, append_associated_files,
                                        build_metadata)

    files = (AssociatedFile(labels_name, "TENSOR_AXIS_LABELS", "Labels."),) if labels is not None else ()
    metadata = TFLiteMetadata(
        name="test classifier", min_parser_version="1.0.0",
        inputs=(TensorMetadata("image", content="ImageProperties", color_space="RGB", mean=(mean,), std=(std,),
                               process_units=("NormalizationOptions",)),),
        outputs=(TensorMetadata("probability", content="FeatureProperties", associated_files=files),))
    packed = embed_entries(data, {"TFLITE_METADATA": build_metadata(metadata)})
    return append_associated_files(packed, {labels_name: "".join(f"{l}\n" for l in labels).encode()} if labels else {})
