"""Imports of optional dependencies with an error naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgetl.errors import MissingDependencyError


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Imports ``module`` or raises a MissingDependencyError naming the extra.

    Args:
      module: dotted module name, e.g. ``"tensorflow"``.
      extra: the edgetl extra that provides it, e.g. ``"train"``.
      purpose: what needs it, e.g. ``"'edgetl train'"``.

    Returns:
      The imported module.

    Raises:
      MissingDependencyError: when the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{purpose} needs `{module}`, which is not installed ({e}). "
            f"Install it with: pip install \"edgetl[{extra}]\""
        ) from e
