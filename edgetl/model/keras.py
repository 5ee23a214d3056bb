"""The one place edgetl imports TensorFlow's Keras 2 (``tf_keras``).

tensorflow-model-optimization only accepts Keras 2 models, and TensorFlow only
routes ``tf.keras`` to Keras 2 when TF_USE_LEGACY_KERAS is set before
TensorFlow is first imported; this module sets it, then imports both. Every
TensorFlow-using edgetl module imports ``tf`` and ``keras`` from here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

# TensorFlow's C++ side logs through absl: level 2 still lets ERROR lines through, and TF 2.21 prints harmless
# ones in the normal path (e.g. "NodeDef mentions attribute use_unbounded_threadpool" while tf.data runs QAT).
# Real failures surface as Python exceptions, so the terminal stays quiet unless `edgetl --verbose`
# (EDGETL_TF_LOGS=1) asks for them; a TF_CPP_MIN_LOG_LEVEL the user set wins.
_TF_LOGS = os.environ.get("EDGETL_TF_LOGS") == "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if _TF_LOGS else "3")
if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    warnings.warn(
        "TensorFlow was imported before edgetl without TF_USE_LEGACY_KERAS=1; quantization-aware "
        "training may fail. Set TF_USE_LEGACY_KERAS=1 in the environment, or import edgetl first.",
        stacklevel=2,
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"

from edgetl._native import capture_native_output  # noqa: E402
from edgetl._optional import import_optional  # noqa: E402

# TensorFlow's C++ side prints oneDNN/CUDA banners while loading, before logging is configured,
# so TF_CPP_MIN_LOG_LEVEL cannot silence them; Python exceptions still surface.
# EDGETL_TF_LOGS=1 shows them.
_quiet = contextlib.nullcontext() if _TF_LOGS else capture_native_output()
with _quiet:
    tf = import_optional("tensorflow", "train", "Training and export")
    keras = import_optional("tf_keras", "train", "Training and export")
    tf.config.list_physical_devices("GPU")  # the CUDA probe (and its cuInit message) happens here

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras"]
