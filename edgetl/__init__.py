"""edgetl: transfer learning, QAT and TFLite export of small image classifiers for the edge.

``import edgetl`` never imports TensorFlow; the stage functions below are
resolved on first use (PEP 562), so a device with only a TFLite runtime can
import the package. They are named apart from the stage modules (``train_model``
in ``edgetl.train``) because importing a submodule rebinds its name on the package.

Example:
  >>> import edgetl
  >>> result = edgetl.run("data/flowers", out="runs/flowers", recipe="models/mobilenet_v2_035_224.yaml")
  >>> print(result.report.recommended, result.report.row(result.report.recommended).p50_ms)
  >>> result = edgetl.train_model(edgetl.DataConfig(path="data/flowers"),
  ...                       edgetl.ModelConfig("mobilenet_v2", alpha=0.35),
  ...                       edgetl.TrainConfig(epochs=5), out="runs/flowers")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "train_model": ("edgetl.train", "train"),
    "TrainResult": ("edgetl.train", "TrainResult"),
    "DataConfig": ("edgetl.config", "DataConfig"),
    "ModelConfig": ("edgetl.config", "ModelConfig"),
    "TrainConfig": ("edgetl.config", "TrainConfig"),
    "AugmentConfig": ("edgetl.config", "AugmentConfig"),
    "list_backbones": ("edgetl.model.registry", "list_backbones"),
    "get_backbone": ("edgetl.model.registry", "get"),
    "register_backbone": ("edgetl.model.registry", "register"),
    "scan_folder": ("edgetl.data.folder", "scan_folder"),
    "read_edgetl_metadata": ("edgetl.model_metadata", "read_edgetl_metadata"),
    "read_card": ("edgetl.model_card", "read_card"),  # deprecated name (FutureWarning on use)
    "QATConfig": ("edgetl.config", "QATConfig"),
    "ExportConfig": ("edgetl.config", "ExportConfig"),
    "quantize_aware_finetune": ("edgetl.quant.qat", "quantize_aware_finetune"),
    "export_run": ("edgetl.export.tflite", "export_run"),
    "evaluate_model": ("edgetl.evaluate", "evaluate"),
    "benchmark": ("edgetl.bench", "benchmark"),
    "predict_images": ("edgetl.predict", "predict"),
    "run_quickstart": ("edgetl.quickstart", "quickstart"),
    "run": ("edgetl.workflow", "run"),
    "RunResult": ("edgetl.workflow", "RunResult"),
    "ReportConfig": ("edgetl.config", "ReportConfig"),
    "TuneConfig": ("edgetl.config", "TuneConfig"),
    "tune_recipe": ("edgetl.tune", "tune"),
    "TuneResult": ("edgetl.tune", "TuneResult"),
    "build_report": ("edgetl.report", "build_report"),
    "backbone_cost": ("edgetl.model.head", "backbone_cost"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgetl' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
