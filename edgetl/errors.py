"""Exception types edgetl raises for problems a user can fix.

Every message follows one template: what failed (with the value received),
what was expected, and how to fix it. The CLI prints ``str(error)`` as a single
line and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

import difflib
import errno
from typing import Iterable


class EdgetlError(Exception):
    """Base class of every error that is the user's to fix."""

    exit_code = 1


class ConfigError(EdgetlError):
    """A configuration value or recipe key is invalid."""


class DatasetError(EdgetlError):
    """The image folder cannot be used for training or evaluation."""


class UnknownBackboneError(ConfigError):
    """A backbone name is not in the registry."""


class WeightsError(EdgetlError):
    """Pretrained weights are unavailable or do not fit the architecture."""


class MissingDependencyError(EdgetlError):
    """An optional dependency (an extra) is not installed."""


class RunDirError(EdgetlError):
    """A run directory lacks what a stage needs."""


class StoreError(EdgetlError):
    """The decoded image store of a run cannot be written or read (full disk, damaged row)."""


class ExportError(EdgetlError):
    """Quantization or TFLite conversion failed."""


class ModelFileError(EdgetlError):
    """A ``.tflite`` file is missing, truncated or not a TFLite model."""


class DelegateError(EdgetlError):
    """A TFLite delegate could not be loaded."""


class RemoteError(EdgetlError):
    """A remote device could not be reached or used."""


def suggest(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Returns ' Did you mean ...?' for close matches of ``value``, else ''."""
    choices = list(choices)
    matches = difflib.get_close_matches(value, choices, n=n, cutoff=0.5)
    if not matches:
        lowered = value.lower().replace("-", "_")
        matches = [c for c in choices if lowered in c or c in lowered][:n]
    if not matches:
        return ""
    quoted = ", ".join(f"'{m}'" for m in matches)
    return f" Did you mean {quoted}?"


# Write failures a user fixes by freeing space (or raising a limit): errno -> words.
DISK_FULL_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                    errno.EFBIG: "file too large"}
# ... or by choosing another place to write.
WRITE_ERRNOS = {**DISK_FULL_ERRNOS, errno.EROFS: "read-only file system"}


def os_error_message(error: BaseException, text: str) -> str:
    """The one-line message for a full disk, quota, size limit, read-only or permission error; '' for any other error.

    Recognised by errno, and by the words TensorFlow's own exception types
    (which carry no errno) use for them.

    Args:
      error: the exception.
      text: its message, flattened to one line.
    """
    target = getattr(error, "filename", None) if isinstance(error, OSError) else None
    if isinstance(error, PermissionError):
        return (f"permission denied on '{target or '?'}'. Check the permissions of the file and its folder, "
                f"or choose another path.")
    number = getattr(error, "errno", None) if isinstance(error, OSError) else None
    lowered = text.lower()
    reason = WRITE_ERRNOS.get(number) or next((words for words in WRITE_ERRNOS.values() if words in lowered), "")
    if not reason:
        return ""
    where = f" while writing '{target}'" if target else ""
    return (f"{reason}{where} ({text[:200]}). Free some space (or raise the limit) or choose another output folder, "
            f"then run the same command again: files edgetl finished before are intact (each is written to a "
            f"temporary file, then renamed).")
