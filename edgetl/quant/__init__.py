"""Quantization of edgetl classifiers, one module per job (TensorFlow only where needed).

* ``fold``: ``InputFold``, an input normalisation folded into the int8 input quantization (numpy only).
* ``layers``: the Keras layers the rewrite adds (HardSwish, HardSigmoid).
* ``rewrite``: the graph rewrite into quantizable layers, as pattern -> replacement units (tf_keras, no tfmot).
* ``scheme``: edgetl's tfmot ``QuantizeRegistry`` / ``QuantizeScheme`` and ``quantize`` (tfmot's public API).
* ``qat``: the QAT stage, ``quantize_aware_finetune``, with range calibration and distillation.

The float exports (fp32, fp16, dynamic, int16x8) use ``fold`` and ``rewrite``
only, so they never import tfmot. Names below resolve on first use (PEP 562).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "InputFold": "edgetl.quant.fold",
    "INPUT_NORM_LAYER": "edgetl.quant.fold",
    "PIXEL_RANGE": "edgetl.quant.fold",
    "input_fold": "edgetl.quant.fold",
    "HardSwish": "edgetl.quant.layers",
    "HardSigmoid": "edgetl.quant.layers",
    "prepare_for_quantization": "edgetl.quant.rewrite",
    "rewrite": "edgetl.quant.rewrite",
    "EdgetlQuantizeRegistry": "edgetl.quant.scheme",
    "EdgetlQuantizeScheme": "edgetl.quant.scheme",
    "FixedRangeOutputQuantizeConfig": "edgetl.quant.scheme",
    "OutputQuantizeConfig": "edgetl.quant.scheme",
    "qat_scope": "edgetl.quant.scheme",
    "quantize": "edgetl.quant.scheme",
    "QATResult": "edgetl.quant.qat",
    "calibrate_ranges": "edgetl.quant.qat",
    "load_qat_model": "edgetl.quant.qat",
    "quantize_aware_finetune": "edgetl.quant.qat",
    "read_qat_result": "edgetl.quant.qat",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgetl.quant' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
