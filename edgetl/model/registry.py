"""The backbone registry (``register``/``get``/``list_backbones``), filled with ``edgetl.model.backbones``; no TensorFlow.

Add a backbone by appending a ``BackboneSpec`` to ``edgetl.model.backbones.BACKBONES``
(or, from outside edgetl, by calling ``register``).
"""

from __future__ import annotations

import fnmatch
from typing import Dict, List

from edgetl.errors import ConfigError, UnknownBackboneError, suggest
from edgetl.model.backbones import BACKBONES
from edgetl.model.spec import INTERNAL_PREPROCESSING, MOBILENET_PREPROCESSING, BackboneSpec, Preprocessing  # noqa: F401

_REGISTRY: Dict[str, BackboneSpec] = {spec.name: spec for spec in BACKBONES}


def register(spec: BackboneSpec, overwrite: bool = False) -> BackboneSpec:
    """Adds ``spec`` to the registry and returns it.

    Example:
      >>> register(dataclasses.replace(get("mobilenet_v2"), name="my_mnv2"))

    Raises:
      ConfigError: when the name is taken and ``overwrite`` is False.
    """
    if spec.name in _REGISTRY and not overwrite:
        raise ConfigError(f"Backbone '{spec.name}' is already registered; pass overwrite=True to replace it.")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones(pattern: str = "*") -> List[str]:
    """Registered backbone names matching a glob ``pattern``, sorted."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def get(name: str) -> BackboneSpec:
    """Returns the spec registered as ``name``.

    Raises:
      UnknownBackboneError: naming the closest registered names.
    """
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return _REGISTRY[key]
    raise UnknownBackboneError(
        f"Unknown backbone '{name}'.{suggest(key, _REGISTRY)} Run 'edgetl backbones' to list all."
    )


__all__ = ["BackboneSpec", "INTERNAL_PREPROCESSING", "MOBILENET_PREPROCESSING", "Preprocessing", "get", "list_backbones",
           "register"]
