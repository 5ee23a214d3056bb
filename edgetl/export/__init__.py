"""TFLite export of a run: variants, calibration data, conversion, Edge TPU compile (TensorFlow only where converting).

``import edgetl.export`` stays TensorFlow-free; ``export_run`` is resolved on first use.
"""

from __future__ import annotations

import importlib

from edgetl.export.variants import DEFAULT_VARIANTS, VARIANTS, TFLiteVariant, get_variant, parse_variants, variant_names

_LAZY = {
    "export_run": ("edgetl.export.tflite", "export_run"),
    "ExportResult": ("edgetl.export.tflite", "ExportResult"),
    "VariantResult": ("edgetl.export.tflite", "VariantResult"),
    "compile_edgetpu": ("edgetl.export.edgetpu", "compile_edgetpu"),
    "check_edgetpu_rules": ("edgetl.export.edgetpu", "check_edgetpu_rules"),
}

__all__ = ["DEFAULT_VARIANTS", "VARIANTS", "TFLiteVariant", "get_variant", "parse_variants", "variant_names", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgetl.export' has no attribute '{name}'")
