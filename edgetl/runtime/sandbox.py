"""Runs a ``.tflite`` file once in a child process before this process does, so a native crash is an error, not a dead CLI.

``edgetl.modelfile`` rejects damaged files before native code sees them, but a
well-formed flatbuffer can still describe a graph that crashes the TFLite
runtime (an op with fewer inputs than its kernel reads is enough). So before
the first in-process load of a file, a child process loads it with the same
runtime, delegate and thread count, allocates its tensors and runs one
inference on zeros. A child that dies by a signal, hangs or fails becomes a
one-line error naming the file (and the signal); a child that succeeds marks
the file verified, and later runs skip the probe.

The verified-cache holds one small marker file per (sha256 of the bytes,
runtime, runtime version, delegate) in ``$EDGETL_CACHE_DIR/verified``, else
``$XDG_CACHE_HOME/edgetl/verified``, else ``~/.cache/edgetl/verified``,
each written atomically: concurrent edgetl processes never corrupt it, and
an unwritable cache only means probing again next time.

Settings (environment):
  EDGETL_SANDBOX: 'auto' (default: probe files not in the cache), 'always'
    (probe every load) or 'off' (never probe; trust every file).
  EDGETL_SANDBOX_TIMEOUT: seconds a probe may take (default 120).

The child is a fork of this process on Linux when that is safe (no other
Python thread, TensorFlow not loaded, a CPU delegate): a few milliseconds, with
the runtime already imported. Otherwise it is a fresh Python process running
``_child_main`` on the model bytes from stdin (about 0.15 s more).
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from edgetl import errors
from edgetl.errors import ConfigError, EdgetlError, ModelFileError

logger = logging.getLogger(__name__)

MODES = ("auto", "always", "off")
DEFAULT_TIMEOUT = 120.0
_STAGES = {"load": "loading it and allocating its tensors", "invoke": "running one inference"}
# Keys verified by this process: a sweep over threads loads the same file many times.
_VERIFIED: Set[str] = set()
# Not `-m edgetl.runtime.sandbox`: that would run a second copy of this module as __main__.
_CHILD_CODE = "import sys; from edgetl.runtime.sandbox import _child_main; sys.exit(_child_main(sys.argv[1:]))"


def mode() -> str:
    """The EDGETL_SANDBOX setting.

    Raises:
      ConfigError: a value other than auto, always or off.
    """
    value = os.environ.get("EDGETL_SANDBOX", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ConfigError(f"EDGETL_SANDBOX='{value}' is not valid; expected auto (default), always or off.")
    return value


def timeout_seconds() -> float:
    """The EDGETL_SANDBOX_TIMEOUT setting in seconds.

    Raises:
      ConfigError: not a positive number.
    """
    text = os.environ.get("EDGETL_SANDBOX_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"EDGETL_SANDBOX_TIMEOUT='{text}' is not valid; expected a number of seconds > 0, e.g. 300.")
    return value


def cache_dir() -> Path:
    """Folder of the verified-model markers."""
    explicit = os.environ.get("EDGETL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser() / "verified"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgetl" / "verified"


def cache_key(sha256: str, runtime: Any, delegate_label: str) -> str:
    """File name of the marker of one file under one runtime and delegate."""
    words = f"{sha256}.{runtime.name}-{runtime.version}.{delegate_label}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", words)[:200]


def is_verified(key: str) -> bool:
    """True when this process or the cache has already run this (file, runtime, delegate)."""
    return key in _VERIFIED or (cache_dir() / key).is_file()


def _remember(key: str, label: str, size: int) -> None:
    _VERIFIED.add(key)
    from edgetl import __version__
    from edgetl._atomic import write_json

    try:
        write_json(cache_dir() / key, {"file": label, "size_bytes": size, "verified_at": time.time(),
                                       "edgetl_version": __version__})
    except OSError as e:  # a read-only home only costs a probe next time
        logger.info("cannot write the verified-model cache %s: %s", cache_dir(), e)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What the child reported.

    Attributes:
      ok: it loaded, allocated and ran the model.
      stage: the last stage it started ('load' or 'invoke').
      signal: the signal that killed it (0 if none).
      timed_out: it was killed after the timeout.
      error_type: class name of the exception it raised ('' if none).
      message: the exception's message.
      native: what native code wrote to the child's stdout/stderr.
      how: 'fork' or 'spawn'.
      seconds: wall time of the probe.
    """

    ok: bool
    stage: str = ""
    signal: int = 0
    timed_out: bool = False
    error_type: str = ""
    message: str = ""
    native: str = ""
    how: str = ""
    seconds: float = 0.0


def _probe_steps(data: bytes, runtime: str, spec: Dict[str, Any], threads: Optional[int], label: str, report) -> None:
    """The child's work: build the interpreter exactly as the parent will (``build_interpreter``), then one inference on zeros."""
    import numpy as np

    from edgetl.modelfile import parse_model
    from edgetl.runtime.backend import DelegateSpec, build_interpreter, find_runtime

    spec_obj = DelegateSpec(spec["kind"], spec["library"], spec["device"], tuple(tuple(p) for p in spec["options"]))
    report("load")
    loaded = build_interpreter(data, parse_model(data, label), find_runtime(runtime), spec_obj, threads, label)
    interpreter = loaded.interpreter
    try:
        dtypes = [np.dtype(tensor.dtype) for tensor in loaded.model.inputs]
    except TypeError:  # string, bfloat16...: nothing numpy can zero-fill, so the check stops at allocation
        dtypes = []
    if dtypes and all(dtype.kind in "biuf" for dtype in dtypes):
        # The parsed shapes and dtypes, not the runtime's input details: those fail on a name that is not UTF-8.
        for tensor, dtype in zip(loaded.model.inputs, dtypes):
            interpreter.set_tensor(tensor.index, np.zeros(tensor.shape, dtype))
        report("invoke")
        interpreter.invoke()
    report("ok")


def _error_line(error: BaseException) -> str:
    return "error " + json.dumps({"type": type(error).__name__, "message": " ".join(str(error).split())[:2000]})


def _parse_report(text: str) -> Tuple[bool, str, str, str]:
    """(ok, last stage, error type, error message) from the child's status lines."""
    ok, stage, error_type, message = False, "", "", ""
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "stage":
            stage = rest.strip()
        elif word == "ok":
            ok = True
        elif word == "error":
            try:
                payload = json.loads(rest)
                error_type, message = str(payload.get("type", "")), str(payload.get("message", ""))
            except ValueError:
                error_type, message = "Error", rest
    return ok, stage, error_type, message


def _probe_fork(data: bytes, runtime: str, spec: Dict[str, Any], threads: Optional[int], label: str,
                timeout: float) -> ProbeResult:
    start = time.monotonic()
    read_end, write_end = os.pipe()
    native = tempfile.TemporaryFile()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into the parent's code, never run its atexit handlers
        code = 3
        try:
            # The parent reports a crash; a faulthandler dump (to a descriptor of the parent's) would only add noise.
            faulthandler.disable()
            os.close(read_end)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(native.fileno(), 1)
            os.dup2(native.fileno(), 2)

            def report(stage: str) -> None:
                os.write(write_end, (f"stage {stage}\n" if stage != "ok" else "ok\n").encode())

            _probe_steps(data, runtime, spec, threads, label, report)
            code = 0
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent as text
            try:
                os.write(write_end, (_error_line(e) + "\n").encode("utf-8", "replace"))
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: List[bytes] = []
    deadline = start + timeout
    timed_out = False
    status = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_end], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        while True:
            waited, status = os.waitpid(pid, 0 if timed_out else os.WNOHANG)
            if waited:
                break
            if time.monotonic() > deadline:  # closed the pipe but did not exit
                os.kill(pid, signal.SIGKILL)
                timed_out = True
            time.sleep(0.005)
    finally:
        os.close(read_end)
    native.seek(0)
    native_text = native.read().decode("utf-8", "replace")
    native.close()
    ok, stage, error_type, message = _parse_report(b"".join(chunks).decode("utf-8", "replace"))
    killed = os.WTERMSIG(status) if os.WIFSIGNALED(status) and not timed_out else 0
    ok = ok and not killed and not timed_out and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return ProbeResult(ok, stage, killed, timed_out, error_type, message, native_text, "fork", time.monotonic() - start)


def _probe_spawn(data: bytes, runtime: str, spec: Dict[str, Any], threads: Optional[int], label: str,
                 timeout: float) -> ProbeResult:
    start = time.monotonic()
    # The child must import what this process imports (edgetl itself, a runtime found on an added path).
    search = [str(Path(__file__).resolve().parents[2])] + [entry for entry in sys.path if entry]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(search)))
    arguments = json.dumps({"runtime": runtime, "spec": spec, "threads": threads, "label": label})
    try:
        process = subprocess.Popen([sys.executable, "-c", _CHILD_CODE, arguments], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except OSError as e:
        raise ModelFileError(f"Cannot start the process that checks '{label}' ({e}); set EDGETL_SANDBOX=off to skip the check.") from e
    timed_out = False
    try:
        stdout, stderr = process.communicate(input=data, timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        timed_out = True
    ok, stage, error_type, message = _parse_report(stdout.decode("utf-8", "replace"))
    code = process.returncode
    killed = -code if code is not None and code < 0 and not timed_out else 0
    ok = ok and code == 0 and not timed_out
    return ProbeResult(ok, stage, killed, timed_out, error_type, message, stderr.decode("utf-8", "replace"), "spawn",
                       time.monotonic() - start)


def _can_fork(spec: Dict[str, Any]) -> bool:
    # A fork copies only the calling thread: other Python threads may hold locks the child needs,
    # TensorFlow's runtime does not survive a fork, and Edge TPU / external delegates hold devices.
    return (sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1
            and "tensorflow" not in sys.modules and spec["kind"] in ("cpu", "xnnpack"))


def probe(data: bytes, runtime: str, spec: Any, threads: Optional[int], label: str = "model",
          timeout: Optional[float] = None, how: str = "auto") -> ProbeResult:
    """Loads ``data`` and runs one inference in a child process.

    Args:
      data: the model bytes (already structurally checked).
      runtime: a resolved runtime name ('litert', 'tflite-runtime', 'tensorflow').
      spec: the DelegateSpec the parent will use.
      threads: the interpreter threads the parent will use.
      label: the file name for messages.
      timeout: seconds before the child is killed (default: EDGETL_SANDBOX_TIMEOUT).
      how: 'fork', 'spawn' or 'auto' (fork where it is safe).

    Returns:
      The ProbeResult; it never raises for what the child did.
    """
    fields = {"kind": spec.kind, "library": spec.library, "device": spec.device, "options": [list(p) for p in spec.options]}
    timeout = timeout_seconds() if timeout is None else timeout
    if how == "fork" or (how == "auto" and _can_fork(fields)):
        return _probe_fork(data, runtime, fields, threads, label, timeout)
    return _probe_spawn(data, runtime, fields, threads, label, timeout)


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    description = signal.strsignal(number) if hasattr(signal, "strsignal") else None
    return f"{name} ({description})" if description else name


def probe_error(result: ProbeResult, label: str, runtime: Any, delegate_label: str, timeout: float) -> EdgetlError:
    """The one-line error for a failed probe."""
    where = f"{runtime.package} {runtime.version}, delegate '{delegate_label}'"
    doing = _STAGES.get(result.stage, "loading it")
    if result.signal:
        hint = (" SIGKILL usually means the system ran out of memory." if result.signal == signal.SIGKILL else "")
        return ModelFileError(
            f"'{label}' crashed the TFLite runtime ({where}) while {doing}: the check process died with "
            f"{_signal_name(result.signal)}.{hint} The file is damaged or describes a graph this runtime cannot run; "
            f"re-copy or re-export it, or try another --runtime. edgetl itself was not affected."
        )
    if result.timed_out:
        return ModelFileError(
            f"'{label}' did not finish {doing} within {timeout:g} s in the check process ({where}). If the model is "
            f"just slow on this device, set EDGETL_SANDBOX_TIMEOUT to more seconds; EDGETL_SANDBOX=off skips the check."
        )
    error_class = getattr(errors, result.error_type, None)
    if isinstance(error_class, type) and issubclass(error_class, EdgetlError):
        return error_class(result.message)  # the parent would have raised exactly this
    reason = result.message or "no message"
    native = " ".join(line.strip() for line in result.native.splitlines()
                      if line.strip() and not line.startswith("INFO:"))[:300]
    if native and native not in reason:
        reason += f"; {native}"
    return ModelFileError(
        f"{runtime.package} {runtime.version} cannot run '{label}' with delegate '{delegate_label}' while {doing}: "
        f"{result.error_type or 'failure'}: {reason}. Re-export the model or try another --runtime."
    )


def ensure_verified(data: bytes, sha256: str, runtime: Any, spec: Any, threads: Optional[int], label: str) -> None:
    """Probes a file in a child process unless it is already verified (see the module docstring).

    Args:
      data: the checked model bytes.
      sha256: their digest (``ModelInfo.sha256``).
      runtime: the resolved Runtime.
      spec: the DelegateSpec.
      threads: interpreter threads.
      label: the file name for messages.

    Raises:
      ModelFileError: the child crashed, hung or could not load or run the model.
      DelegateError, ConfigError: what the in-process load would have raised.
    """
    setting = mode()
    if setting == "off":
        return
    key = cache_key(sha256, runtime, spec.label)
    if setting == "auto" and is_verified(key):
        return
    timeout = timeout_seconds()
    result = probe(data, runtime.name, spec, threads, label, timeout)
    logger.info("probed %s in a child (%s): ok=%s in %.3f s", label, result.how, result.ok, result.seconds)
    if not result.ok:
        raise probe_error(result, label, runtime, spec.label, timeout)
    _remember(key, label, len(data))


def _child_main(argv: List[str]) -> int:
    """The spawned child: ARGS_JSON in ``argv``, the model bytes on stdin, status lines on stdout."""
    arguments = json.loads(argv[0])
    data = sys.stdin.buffer.read()
    # Status lines get their own descriptor; whatever native code prints goes to stderr.
    status = os.dup(1)
    os.dup2(2, 1)

    def report(stage: str) -> None:
        os.write(status, (f"stage {stage}\n" if stage != "ok" else "ok\n").encode())

    try:
        _probe_steps(data, arguments["runtime"], arguments["spec"], arguments["threads"], arguments["label"], report)
    except BaseException as e:  # noqa: BLE001 - reported to the parent as text
        os.write(status, (_error_line(e) + "\n").encode("utf-8", "replace"))
        return 3
    return 0
