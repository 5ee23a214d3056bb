"""Edge TPU at export time: run ``edgetpu_compiler`` if on PATH (never installs it) on files the rules accept.

The rules themselves (Coral's requirements and op list, one verdict) are
``edgetl.edgetpu``, shared with ``edgetl inspect``. No TensorFlow: the
compiler is a subprocess.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from edgetl._atomic import write_bytes
from edgetl.edgetpu import EdgeTPUCheck
from edgetl.errors import ExportError
from edgetl.model_metadata import read_edgetl_metadata

COMPILER = "edgetpu_compiler"
INSTALL_HINT = (
    f"`{COMPILER}` is not on PATH, so no *_edgetpu.tflite was written. It runs on x86-64 Debian/Ubuntu: "
    f"install the 'edgetpu-compiler' package from Coral's apt repository (https://coral.ai/docs/edgetpu/compiler/), "
    f"then re-run with --edgetpu."
)

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


def check_edgetpu_rules(data: bytes, name: str = "model") -> EdgeTPUCheck:
    """The Edge TPU's verdict on ``.tflite`` bytes: ``edgetl.edgetpu.check`` of ``parse_model`` (what ``inspect`` shows).

    Raises:
      ModelFileError: the bytes are not a readable TFLite model.

    Example:
      >>> print(check_edgetpu_rules(Path("m_int8.tflite").read_bytes()).summary())
    """
    from edgetl.modelfile import parse_model

    return parse_model(data, name).edgetpu


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
    back (the edgetl model metadata, the standard TFLite metadata) and the zip of
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
        metadata = read_edgetl_metadata(original)
        dropped = metadata is not None and read_edgetl_metadata(data) is None
        data = carry_metadata(original, data, dataclasses.replace(metadata, variant=f"{metadata.variant}-edgetpu") if dropped else None)
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


__all__ = ["INSTALL_HINT", "EdgeTPUCheck", "EdgeTPUResult", "check_edgetpu_rules", "compile_edgetpu", "find_compiler",
           "parse_compiler_output"]
