"""YAML recipes: a file of per-stage sections (data, model, train, tune, qat, export, report) -> config objects (no TensorFlow).

A recipe sets defaults; flags given on the command line override it. A run's own
``config.yaml`` is a valid recipe, so any run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Set

from edgetl.config import (DataConfig, ExportConfig, ModelConfig, QATConfig, ReportConfig, TrainConfig, TuneConfig, from_dict,
                           load_yaml)
from edgetl.errors import ConfigError, suggest

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "tune": TuneConfig, "qat": QATConfig,
            "export": ExportConfig, "report": ReportConfig}
# Keys a run's config.yaml carries that are records, not settings.
INFORMATIONAL_KEYS = ("edgetl_version",)


def load_recipe(path: Optional[str]) -> Dict[str, Any]:
    """Every stage's config from the recipe at ``path`` (defaults for absent sections).

    Raises:
      ConfigError: malformed YAML, an unknown section or key (with the closest
        valid name), or a value of the wrong type or range.

    Example:
      >>> configs = load_recipe("models/mobilenet_v2_035_224.yaml")
      >>> configs["model"].alpha
      0.35
    """
    raw = load_yaml(path) if path else {}
    configs = {}
    for key in raw:
        if key not in SECTIONS and key not in INFORMATIONAL_KEYS:
            raise ConfigError(
                f"Unknown section `{key}` in recipe '{path}'.{suggest(str(key), SECTIONS)} "
                f"Valid sections: {', '.join(SECTIONS)}."
            )
    for name, cls in SECTIONS.items():
        try:
            configs[name] = from_dict(cls, raw.get(name), name)
        except ConfigError as e:
            raise ConfigError(f"Recipe '{path}': {e}") from None
    return configs


def recipe_fields(path: Optional[str]) -> Set[str]:
    """The ``"section.field"`` names the recipe at ``path`` sets (empty for None).

    Raises:
      ConfigError: malformed YAML (as ``load_recipe``).
    """
    raw = load_yaml(path) if path else {}
    return {f"{section}.{field}" for section, values in raw.items() if isinstance(values, Mapping) for field in values}


def apply_overrides(configs: Dict[str, Any], overrides: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Returns ``configs`` with ``{section: {field: value}}`` replaced (validated again)."""
    result = dict(configs)
    for section, values in overrides.items():
        if values:
            result[section] = dataclasses.replace(result[section], **values)
    return result
