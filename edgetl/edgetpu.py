"""The Edge TPU's rules for a ``.tflite`` file, from Coral's documentation: one rule set, one verdict (``compatible``).

``edgetl inspect`` (``edgetl.modelfile``), the export (``edgetl.export``) and
the backbone table (``edgetl.model.registry``) all use this module, so they
cannot disagree on a file. It reads what ``edgetl.modelfile.parse_model``
gathered in its walk of the flatbuffer (no TensorFlow, no runtime).

Source: Coral, "TensorFlow models on the Edge TPU",
https://coral.ai/docs/edgetpu/models-intro/ ("Model requirements" and
"Supported operations", Edge TPU Compiler v16). A model is *compatible* when:

* every tensor is 8-bit quantized (int8/uint8; int32 biases and shapes):
  float or 16-bit activations make the compiler refuse the model;
* tensor sizes are constant (no dynamic shapes), which it also refuses;
* only the 3 innermost dimensions of an activation are larger than 1;
* it has one subgraph (the compiler maps only the first);
* it uses only the supported operations below. The first other op and every
  op after it run on the CPU.

The op list is Coral's table in TFLite builtin names. Its "LSTM"
(unidirectional only) is the builtin Keras' ``LSTM`` converts to,
``UNIDIRECTIONAL_SEQUENCE_LSTM``, which compiler v16 maps (the Coral team in
google-coral/edgetpu#156, 2021-07-29: "The latest compiler release supports
LSTM (Unidirectional only)"); ``BIDIRECTIONAL_SEQUENCE_LSTM`` is not in it.
Only the compiler's own log says what maps in the end (shapes and sizes can
still keep an op on the CPU).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Tuple

SOURCE = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"

SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6",
    "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX",
    "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV",
})

# Tensor types the Edge TPU holds: 8-bit quantized values, and the int32/int64/bool of biases, shapes and indices.
EDGETPU_TYPES = frozenset({"INT8", "UINT8", "INT32", "INT64", "BOOL"})
# Custom op that the Edge TPU compiler puts in place of the subgraph it maps to the TPU.
COMPILED_OP = "edgetpu-custom-op"
# Converters put these at the ends of a model with float I/O; the CPU runs them.
IO_CONVERSION_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclasses.dataclass(frozen=True)
class GraphFacts:
    """What the rules need from a model, gathered by ``edgetl.modelfile.parse_model``.

    Attributes:
      op_counts: op name -> count over all subgraphs.
      wide_ops: op name -> count of ops reading or writing a tensor whose type
        the Edge TPU does not hold (float, int16...).
      wide_types: those tensor types.
      wide_io: names of input/output tensors of such a type.
      dynamic: names of tensors of the main subgraph with a dynamic dimension
        (inputs and outputs first).
      high_rank: activation tensors with more than 3 dimensions larger than 1.
      subgraphs: number of subgraphs.
    """

    op_counts: Mapping[str, int]
    wide_ops: Mapping[str, int]
    wide_types: Tuple[str, ...]
    wide_io: Tuple[str, ...]
    dynamic: Tuple[str, ...]
    high_rank: int
    subgraphs: int


@dataclasses.dataclass(frozen=True)
class EdgeTPUCheck:
    """The Edge TPU's verdict on one file.

    Attributes:
      compatible: every requirement is met, so the compiler can map the whole
        graph to the Edge TPU (True for a file it already compiled).
      compiled: the Edge TPU compiler produced this file.
      issues: each requirement not met, one line (empty when compatible).
      refused: the issues that make the compiler refuse the file (not 8-bit,
        dynamic shapes); with the others it compiles, and part runs on the CPU.
      cpu_ops: op name -> count of ops outside Coral's list (they, and every op
        after the first of them, run on the CPU).
    """

    compatible: bool
    compiled: bool
    issues: Tuple[str, ...]
    refused: Tuple[str, ...]
    cpu_ops: Dict[str, int]

    def summary(self) -> str:
        """One line for ``edgetl inspect`` and the export report."""
        if self.compiled:
            return "compiled for the Edge TPU; run it with --delegate edgetpu"
        if self.compatible:
            return "compatible: 8-bit integer, static shapes, every op in the Edge TPU's list (edgetpu_compiler maps all)"
        what = "refused by edgetpu_compiler" if self.refused else "partly on the CPU after edgetpu_compiler"
        return f"not compatible ({what}): " + "; ".join(self.issues)

    def to_dict(self) -> dict:
        """JSON-ready dictionary, with the summary line."""
        return {**dataclasses.asdict(self), "summary": self.summary()}


def _listed(counts: Mapping[str, int], limit: int = 5) -> str:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} x{count}" for name, count in ranked[:limit]) + (" ..." if len(ranked) > limit else "")


def check(facts: GraphFacts) -> EdgeTPUCheck:
    """Applies the Edge TPU's rules (see the module docstring) to one model.

    Args:
      facts: what ``edgetl.modelfile.parse_model`` gathered (``ModelInfo.edgetpu`` is this check's result).

    Returns:
      The EdgeTPUCheck.

    Example:
      >>> from edgetl.modelfile import inspect_model
      >>> inspect_model("mobilenet_v2_1.0_224_quant.tflite").edgetpu.compatible
      True
    """
    if COMPILED_OP in facts.op_counts:
        return EdgeTPUCheck(True, True, (), (), {})
    issues, refused = [], []
    core = {name: count for name, count in facts.wide_ops.items() if name not in IO_CONVERSION_OPS}
    kinds = "/".join(t.lower() for t in facts.wide_types) or "float"
    if core:
        refused.append(f"{sum(core.values())} ops compute in {kinds} ({_listed(core)}): the Edge TPU runs 8-bit "
                       f"integer models only; export a full-integer int8 model")
    elif facts.wide_io:
        issues.append(f"{kinds} input/output ({', '.join(facts.wide_io)}): the QUANTIZE/DEQUANTIZE ops at the ends run "
                      f"on the CPU; export with int8/uint8 inputs and outputs")
    if facts.dynamic:
        shown = ", ".join(facts.dynamic[:3]) + (f" and {len(facts.dynamic) - 3} more" if len(facts.dynamic) > 3 else "")
        refused.append(f"dynamic shapes on {shown}; export with a fixed batch size of 1")
    float_ends = bool(facts.wide_io) and not core
    cpu_ops = {name: count for name, count in facts.op_counts.items()
               if name not in SUPPORTED_OPS and not (name == "DEQUANTIZE" and float_ends)}
    if cpu_ops:
        issues.append(f"ops the Edge TPU cannot run: {', '.join(sorted(cpu_ops))} (they and all later ops fall back "
                      f"to the CPU)")
    if facts.high_rank:
        issues.append(f"{facts.high_rank} activation tensors use more than 3 non-trivial dimensions (e.g. a batch size > 1)")
    if facts.subgraphs > 1:
        issues.append(f"{facts.subgraphs} subgraphs (control flow); the compiler maps only the first")
    issues = refused + issues
    return EdgeTPUCheck(not issues, False, tuple(issues), tuple(refused), dict(sorted(cpu_ops.items())))


__all__ = ["COMPILED_OP", "EDGETPU_TYPES", "EdgeTPUCheck", "GraphFacts", "SOURCE", "SUPPORTED_OPS", "check"]
