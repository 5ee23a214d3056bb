"""Capture what native code (TensorFlow, the converter, TFLite runtimes, delegates) writes to fds 1/2."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Dict, Iterator, Sequence


@contextlib.contextmanager
def capture_native_output(fds: Sequence[int] = (2,)) -> Iterator[Dict[str, str]]:
    """Redirects file descriptors ``fds`` into a temp file; yields ``{"text": ...}``, filled on exit.

    C++ code writes straight to the descriptors, past ``sys.stderr``, so only
    a descriptor-level redirect can silence its banners or keep its
    explanation of a failure for a one-line error. Where the descriptors
    cannot be duplicated (an embedded interpreter), nothing is captured.
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
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, original in zip(fds, saved):
                os.dup2(original, fd)
                os.close(original)
            sink.seek(0)
            captured["text"] = sink.read().decode("utf-8", "replace")
