"""Exception types edgetl raises for problems a user can fix.

Every message follows one template: what failed (with the value received),
what was expected, and how to fix it. The CLI prints ``str(error)`` as a single
line and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

import difflib
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
