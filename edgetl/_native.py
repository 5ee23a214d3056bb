"""Capture what native code (TensorFlow, the converter, TFLite runtimes, delegates) writes to fds 1/2."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import tempfile
import threading
from typing import Dict, Iterator, Sequence


@contextlib.contextmanager
def capture_native_output(fds: Sequence[int] = (2,)) -> Iterator[Dict[str, str]]:
    """Redirects file descriptors ``fds`` into a temp file; yields ``{"text": ...}``, filled on exit.

    C++ code writes straight to the descriptors, past ``sys.stderr``, so only
    a descriptor-level redirect can silence its banners or keep its
    explanation of a failure for a one-line error. Python code called inside
    (the converter's ``warnings.warn``) is captured too: where ``sys.stdout`` /
    ``sys.stderr`` write to a descriptor of their own (``filter_native_logs``
    gives ``sys.stderr`` one), they are pointed at the same sink meanwhile.
    Where the descriptors cannot be duplicated (an embedded interpreter),
    nothing is captured.
    """
    captured = {"text": ""}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(fd) for fd in fds]
    except (OSError, ValueError, AttributeError):
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        for fd in fds:
            os.dup2(sink.fileno(), fd)
        streams = {name: getattr(sys, name) for fd, name in ((1, "stdout"), (2, "stderr"))
                   if fd in fds and _own_descriptor(getattr(sys, name), fd)}
        for name in streams:
            setattr(sys, name, open(sink.fileno(), "w", buffering=1, encoding="utf-8", errors="replace", closefd=False))
        try:
            yield captured
        finally:
            for name, stream in streams.items():
                with contextlib.suppress(Exception):
                    getattr(sys, name).close()  # flushes into the sink; closefd=False keeps the sink open
                setattr(sys, name, stream)
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, original in zip(fds, saved):
                os.dup2(original, fd)
                os.close(original)
            sink.seek(0)
            captured["text"] = sink.read().decode("utf-8", "replace")


def _own_descriptor(stream, fd: int) -> bool:
    """True when ``stream`` writes to an open descriptor other than ``fd`` (so redirecting ``fd`` misses it).

    Streams without a descriptor (pytest's capture, io.StringIO) are left alone: their host chose them.
    """
    try:
        return stream.fileno() != fd
    except (AttributeError, OSError, ValueError):
        return False


# absl/glog's line prefix, which TensorFlow's C++ side writes: severity, MMDD, time (TF 2.21 prints 00:00:<epoch s>.<us>), thread id, file:line].
_NATIVE_LOG_LINE = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] ")
_NATIVE_LOG_START = re.compile(rb"^[IWEF]\d")
_filter_installed = {"on": False}


def filter_native_logs(fd: int = 2) -> bool:
    """Drops TensorFlow's C++ log lines from ``fd`` for the rest of the process; everything else passes.

    ``TF_CPP_MIN_LOG_LEVEL`` does not stop every line: on an AMD EPYC without
    AVX-512, TF 2.21 printed "E0000 ... util.cc:131] oneDNN supports DT_UINT8
    only on platforms with AVX-512" in the middle of `edgetl quickstart` with
    the level at 3 (in one run of two; the first uint8 op may run while the
    import's capture is still on, or not). So the
    command line routes ``fd`` through a pipe and a thread that forwards every
    line except those in absl's format (``E0000 00:00:1796209564.189678  19612
    util.cc:131] ...``); a partial line is forwarded at once unless it starts
    like a log line. ``sys.stderr`` is pointed at the terminal itself, so
    Python's writes (progress bars, tracebacks, edgetl's messages) do not pass
    the filter; child processes, which inherit ``fd``, do.

    Only for the ``edgetl`` command (see ``edgetl.cli.run``): a library must not
    take over its host's stderr. Installed once per process; restored, and the
    pipe drained, at exit.

    Returns:
      True when installed (False where descriptors cannot be duplicated, or it already was).
    """
    if _filter_installed["on"]:
        return False
    try:
        sys.stderr.flush()
        original = os.dup(fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
    except (OSError, ValueError, AttributeError):
        return False
    _filter_installed["on"] = True
    # Python's own writes skip the pipe: sys.stderr gets its own copy of the terminal's descriptor, so
    # isatty() (progress bars) answers for the terminal and a traceback never waits on the pump.
    sys.stderr = open(os.dup(original), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                      errors="backslashreplace")

    def forward(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(original, view):]
            except OSError:
                return  # the terminal went away: nothing left to show

    def pump() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not _NATIVE_LOG_LINE.match(line))
            if pending and not _NATIVE_LOG_START.match(pending):
                kept, pending = kept + pending, b""
            if kept:
                forward(kept)
        if pending and not _NATIVE_LOG_LINE.match(pending):
            forward(pending)
        os.close(read_end)

    thread = threading.Thread(target=pump, name="edgetl-native-log-filter", daemon=True)
    thread.start()

    def restore() -> None:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(original, fd)  # the pipe's last writer in this process is gone: the pump reads to the end
        thread.join(timeout=5)

    atexit.register(restore)
    return True
