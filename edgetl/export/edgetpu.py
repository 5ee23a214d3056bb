"""Edge TPU: check a ``.tflite`` against the Edge TPU's rules, run ``edgetpu_compiler`` if on PATH (never installs it).

No TensorFlow: the model is read with the ``tflite`` schema package
(``edgetl.tflite_schema``), and the compiler is a subprocess.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edgetl import tflite_schema
from edgetl._atomic import write_bytes
from edgetl.errors import ExportError
from edgetl.model_card import check_tflite_bytes, read_card

COMPILER = "edgetpu_compiler"
INSTALL_HINT = (
    f"`{COMPILER}` is not on PATH, so no *_edgetpu.tflite was written. It runs on x86-64 Debian/Ubuntu: "
    f"install the 'edgetpu-compiler' package from Coral's apt repository (https://coral.ai/docs/edgetpu/compiler/), "
    f"then re-run with --edgetpu."
)

# Coral's list of operations the Edge TPU can execute (coral.ai/docs/edgetpu/models-intro).
# An op outside it runs on the CPU, and so does everything after it in the graph.
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD",
    "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
_INTEGER_TYPES = {"INT8", "UINT8", "INT32", "INT64", "BOOL"}


@dataclasses.dataclass(frozen=True)
class EdgeTPUCheck:
    """Whether a model meets the Edge TPU's rules before compiling.

    Attributes:
      ok: fully integer with static shapes (the compiler accepts it).
      problems: rule violations that stop the compile, one line each.
      cpu_ops: op name -> count of ops outside the Edge TPU op list (they and
        what follows them run on the CPU; not fatal).
      op_counts: op name -> count over the whole model.
    """

    ok: bool
    problems: Tuple[str, ...]
    cpu_ops: Dict[str, int]
    op_counts: Dict[str, int]

    def summary(self) -> str:
        """One line for the export report."""
        if not self.ok:
            return "not Edge TPU compatible: " + "; ".join(self.problems)
        if self.cpu_ops:
            listed = ", ".join(f"{name} x{count}" for name, count in sorted(self.cpu_ops.items()))
            return f"fully integer, static shapes; ops outside the Edge TPU op list (CPU): {listed}"
        return "fully integer, static shapes; every op is in the Edge TPU op list"


@dataclasses.dataclass(frozen=True)
class EdgeTPUResult:
    """Outcome of one ``edgetpu_compiler`` run.

    Attributes:
      source: the int8 model compiled.
      path: the ``*_edgetpu.tflite`` written, or None when compiling failed.
      log_path: the compiler's op-mapping log copied next to it, or None.
      tpu_ops: number of ops mapped to the Edge TPU.
      cpu_ops: number of ops left on the CPU.
      op_table: ``(op, count, status)`` rows of the compiler's summary.
      subgraphs: number of Edge TPU subgraphs (1 is best).
      compiler_version: the compiler's version line.
      message: one line for humans.
    """

    source: str
    path: Optional[str]
    log_path: Optional[str]
    tpu_ops: int
    cpu_ops: int
    op_table: Tuple[Tuple[str, int, str], ...]
    subgraphs: Optional[int]
    compiler_version: str
    message: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _operator_names() -> Dict[int, str]:
    return tflite_schema.enum_names(tflite_schema.reader().BuiltinOperator)


def _type_names() -> Dict[int, str]:
    return tflite_schema.enum_names(tflite_schema.reader().TensorType)


def model_ops(data: bytes) -> List[Tuple[str, List[Tuple[str, bool, Tuple[int, ...]]]]]:
    """Every op of the main subgraph as ``(op name, [(tensor type, quantized, shape signature), ...])``."""
    check_tflite_bytes(data)
    model = tflite_schema.reader().Model.GetRootAs(data, 0)
    ops_by_code = _operator_names()
    types = _type_names()
    codes = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = ops_by_code.get(builtin, f"OP_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(code.CustomCode() or b'').decode('utf-8', 'replace')}"
        codes.append(name)
    graph = model.Subgraphs(0)
    result = []
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        tensors = []
        for tensor_index in list(op.InputsAsNumpy()) + list(op.OutputsAsNumpy()):
            if tensor_index < 0:
                continue
            tensor = graph.Tensors(int(tensor_index))
            quantization = tensor.Quantization()
            quantized = quantization is not None and quantization.ScaleLength() > 0
            signature = tuple(int(d) for d in (tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy() if tensor.ShapeLength() else ()))
            tensors.append((types.get(tensor.Type(), str(tensor.Type())), quantized, signature))
        result.append((codes[op.OpcodeIndex()], tensors))
    return result


def check_edgetpu_rules(data: bytes) -> EdgeTPUCheck:
    """Checks the Edge TPU's rules: every tensor integer and quantized, every shape static.

    Args:
      data: ``.tflite`` bytes.

    Returns:
      An EdgeTPUCheck; ``ok`` is False when the compiler would reject the model.

    Example:
      >>> print(check_edgetpu_rules(Path("m_int8.tflite").read_bytes()).summary())
    """
    ops = model_ops(data)
    counts = collections.Counter(name for name, _ in ops)
    float_ops = collections.Counter()
    dynamic = collections.Counter()
    for name, tensors in ops:
        if any(dtype not in _INTEGER_TYPES for dtype, _, _ in tensors):
            float_ops[name] += 1
        if any(d < 0 for _, _, shape in tensors for d in shape):
            dynamic[name] += 1
    problems = []
    if float_ops:
        problems.append("float tensors in " + ", ".join(f"{n} x{c}" for n, c in sorted(float_ops.items()))
                        + " (export the int8 or qat-int8 variant)")
    if dynamic:
        problems.append("dynamic shapes in " + ", ".join(f"{n} x{c}" for n, c in sorted(dynamic.items())))
    cpu = {name: count for name, count in counts.items() if name not in EDGETPU_OPS}
    return EdgeTPUCheck(ok=not problems, problems=tuple(problems), cpu_ops=cpu, op_counts=dict(counts))


def find_compiler() -> Optional[str]:
    """Path of ``edgetpu_compiler`` on PATH, or None."""
    return shutil.which(COMPILER)


_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*)$")


def parse_compiler_output(text: str) -> Tuple[Tuple[Tuple[str, int, str], ...], Optional[int], str]:
    """``(op rows, subgraph count, version line)`` from the compiler's ``-s`` output or log."""
    rows = []
    in_table = False
    subgraphs = None
    version = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Edge TPU Compiler version"):
            version = stripped
        match = re.match(r"Number of Edge TPU subgraphs:\s*(\d+)", stripped)
        if match:
            subgraphs = int(match.group(1))
        if re.match(r"^Operator\s+Count\s+Status", stripped):
            in_table = True
            continue
        if in_table:
            row = _ROW.match(stripped)
            if row:
                rows.append((row.group(1), int(row.group(2)), row.group(3).strip()))
            elif stripped and not stripped.startswith("-"):
                in_table = stripped.startswith(("Operator", "Count"))
    return tuple(rows), subgraphs, version


def compile_edgetpu(model_path: str, out_dir: Optional[str] = None, timeout_s: int = 600,
                    compiler: Optional[str] = None) -> EdgeTPUResult:
    """Compiles an int8 model with ``edgetpu_compiler`` and summarises its op mapping.

    The compiler writes into a temporary folder; the result is moved into
    ``out_dir`` only when complete, with the metadata the compiler dropped put
    back (the edgetl model card, the standard TFLite metadata) and the zip of
    associated files (``labels.txt``) appended again.

    Args:
      model_path: a fully integer ``.tflite`` file.
      out_dir: where ``<stem>_edgetpu.tflite`` and ``<stem>_edgetpu.log`` go;
        default: next to the model.
      timeout_s: compiler time limit.
      compiler: explicit compiler path; default: ``edgetpu_compiler`` on PATH.

    Returns:
      An EdgeTPUResult (``path`` is None when the compiler failed).

    Raises:
      ExportError: when the compiler is not on PATH (message says how to get it).

    Example:
      >>> print(compile_edgetpu("export/mobilenet_v2_224_int8.tflite").message)
    """
    compiler = compiler or find_compiler()
    if not compiler:
        raise ExportError(INSTALL_HINT)
    source = Path(model_path)
    target_dir = Path(out_dir) if out_dir else source.parent
    stem = source.stem + "_edgetpu"
    with tempfile.TemporaryDirectory(prefix=".edgetpu.", dir=target_dir) as work:
        try:
            done = subprocess.run([compiler, "-s", "-o", work, str(source)], capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return EdgeTPUResult(str(source), None, None, 0, 0, (), None, "",
                                 f"{COMPILER} timed out after {timeout_s} s on {source.name}.")
        output = (done.stdout or "") + "\n" + (done.stderr or "")
        compiled = Path(work) / f"{stem}.tflite"
        log = Path(work) / f"{stem}.log"
        log_text = log.read_text(errors="replace") if log.is_file() else ""
        rows, subgraphs, version = parse_compiler_output(output)
        if not rows and log_text:
            rows, subgraphs_log, _ = parse_compiler_output(log_text)
            subgraphs = subgraphs if subgraphs is not None else subgraphs_log
        if done.returncode != 0 or not compiled.is_file():
            last = " ".join(output.split())[-300:]
            return EdgeTPUResult(str(source), None, None, 0, 0, rows, subgraphs, version,
                                 f"{COMPILER} failed on {source.name} (exit {done.returncode}): {last}")
        from edgetl.export.metadata import carry_metadata

        data = compiled.read_bytes()
        original = source.read_bytes()
        card = read_card(original)
        dropped = card is not None and read_card(data) is None
        data = carry_metadata(original, data, dataclasses.replace(card, variant=f"{card.variant}-edgetpu") if dropped else None)
        final = write_bytes(target_dir / f"{stem}.tflite", data)
        log_path = None
        if log_text:
            log_path = str(write_bytes(target_dir / f"{stem}.log", log_text.encode("utf-8")))
    tpu = sum(count for _, count, status in rows if "Mapped to Edge TPU" in status)
    cpu = sum(count for _, count, status in rows if "Mapped to Edge TPU" not in status)
    message = f"{final.name}: {tpu} op(s) on the Edge TPU, {cpu} on the CPU"
    if subgraphs is not None:
        message += f", {subgraphs} Edge TPU subgraph(s)"
    return EdgeTPUResult(str(source), str(final), log_path, tpu, cpu, rows, subgraphs, version, message + ".")


__all__ = ["EDGETPU_OPS", "INSTALL_HINT", "EdgeTPUCheck", "EdgeTPUResult", "check_edgetpu_rules", "compile_edgetpu",
           "find_compiler", "model_ops", "parse_compiler_output"]
