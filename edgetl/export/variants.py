"""The table of TFLite export variants: each row owns everything about its files, converter settings included (no TensorFlow).

A variant is one row of ``VARIANTS``: its name and file suffix, which model it
converts (float or QAT), how the converter is set (optimizations, target
types, op set, calibration, integer I/O), what it needs from older runtimes,
whether the Edge TPU can run it, and what to do when its accuracy drops. The
converter (``edgetl.export.tflite``), the CLI and ``edgetl run`` read the
table; adding a variant is adding a row (and its tests and
docs). Converter settings are written as names (``"DEFAULT"``,
``"TFLITE_BUILTINS_INT8"``) so this module stays importable without
TensorFlow; ``tflite.TracedModel.convert`` resolves them on ``tf.lite``.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Tuple

from edgetl.errors import ConfigError, suggest
from edgetl.export.min_runtime import ConverterSetting, PER_TENSOR_DENSE_WEIGHTS


@dataclasses.dataclass(frozen=True)
class TFLiteVariant:
    """One kind of ``.tflite`` file edgetl can write, and how the converter makes it.

    Attributes:
      name: what users type (``--variants fp32,int8``).
      suffix: appended to the model's file stem (``mobilenet_v2_224_int8.tflite``).
      description: one line for ``--help`` and the docs.
      default: exported when no ``--variants`` is given (QAT variants only
        when the run has a QAT model).
      needs_qat: converts the QAT model (``edgetl qat``) instead of the float model.
      optimize: ``converter.optimizations = [tf.lite.Optimize.DEFAULT]``
        (quantize what the other settings allow).
      supported_types: ``converter.target_spec.supported_types``, as ``tf`` dtype names.
      supported_ops: ``converter.target_spec.supported_ops``, as ``tf.lite.OpsSet`` names.
      needs_calibration: needs a representative dataset (calibration images).
      calibration_cap: use at most this many calibration images (None: all).
        A QAT graph carries its ranges in fake-quant ops; the converter still
        insists on data and uses it only where a range is missing.
      integer_io: input/output tensors are uint8/int8 (per ``--io-type``)
        instead of float32; the input normalisation can then be folded into
        the input quantization (``edgetl.quant.fold.InputFold``).
      edgetpu_compatible: files are full-integer 8-bit, what the Edge TPU runs
        (``edgetl.edgetpu``); ``--edgetpu`` compiles them.
      reference: the file the others are compared with (size ratio, speed-up).
      min_runtime_settings: converter settings that keep op versions loadable
        by older TFLite runtimes (``edgetl.export.min_runtime``).
      accuracy_remedy: what to try when a file of this variant is flagged for
        losing accuracy ('' when there is nothing variant-specific).
    """

    name: str
    suffix: str
    description: str
    default: bool = False
    needs_qat: bool = False
    optimize: bool = False
    supported_types: Tuple[str, ...] = ()
    supported_ops: Tuple[str, ...] = ()
    needs_calibration: bool = False
    calibration_cap: Optional[int] = None
    integer_io: bool = False
    edgetpu_compatible: bool = False
    reference: bool = False
    min_runtime_settings: Tuple[ConverterSetting, ...] = ()
    accuracy_remedy: str = ""

    def io_dtype(self, io_type: str = "uint8") -> str:
        """The input/output dtype of files of this variant, given ``--io-type``."""
        return io_type if self.integer_io else "float32"


VARIANTS: Dict[str, TFLiteVariant] = {
    variant.name: variant
    for variant in (
        TFLiteVariant("fp32", "fp32", "float32 weights and activations; the reference.", default=True, reference=True),
        TFLiteVariant("fp16", "fp16", "float16 weights (half the size), float32 compute; fast on GPU delegates.",
                      default=True, optimize=True, supported_types=("float16",)),
        TFLiteVariant("dynamic", "dynamic", "int8 weights, float activations quantized on the fly; no calibration.",
                      default=True, optimize=True, min_runtime_settings=(PER_TENSOR_DENSE_WEIGHTS,)),
        TFLiteVariant("int8", "int8", "full-integer post-training quantization calibrated on training images.",
                      default=True, optimize=True, supported_ops=("TFLITE_BUILTINS_INT8",), needs_calibration=True,
                      integer_io=True, edgetpu_compatible=True,
                      accuracy_remedy="Calibrate on more, training-like images (--calibration-images, --calibration-dir) "
                                      "or export qat-int8 after `edgetl qat`."),
        TFLiteVariant("qat-int8", "qat_int8", "full-integer model from quantization-aware training (edgetl qat).",
                      default=True, needs_qat=True, optimize=True, supported_ops=("TFLITE_BUILTINS_INT8",),
                      needs_calibration=True, calibration_cap=100, integer_io=True, edgetpu_compatible=True,
                      accuracy_remedy="Run `edgetl qat` for more epochs or with a lower learning rate."),
        # Not a default: CPUs run int16 activations on TFLite's reference kernels (XNNPACK has none),
        # several times slower than int8 and fp32 (docs/benchmarks.md); it is the accuracy-first
        # integer variant for accelerators and microcontrollers with 16x8 kernels.
        TFLiteVariant("int16x8", "int16x8", "16-bit activations, 8-bit weights (post-training, calibrated); "
                      "float32 I/O; close to float accuracy, slow on CPUs.",
                      optimize=True, supported_ops=("EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",),
                      needs_calibration=True,
                      accuracy_remedy="Calibrate on more, training-like images (--calibration-images, --calibration-dir)."),
    )
}

# The default variants (`edgetl run`); `edgetl export` leaves out the QAT ones when the
# run has no QAT model.
DEFAULT_VARIANTS: Tuple[str, ...] = tuple(name for name, variant in VARIANTS.items() if variant.default)
IO_TYPES: Tuple[str, ...] = ("uint8", "int8")
REFERENCE_VARIANT: str = next(name for name, variant in VARIANTS.items() if variant.reference)


def variant_names() -> List[str]:
    """Every variant name, in table order."""
    return list(VARIANTS)


def qat_variant_names() -> List[str]:
    """The variants converted from the QAT model."""
    return [name for name, variant in VARIANTS.items() if variant.needs_qat]


def float_variant_names(names: Iterable[str] = DEFAULT_VARIANTS) -> List[str]:
    """``names`` without the QAT variants: what can be exported without ``edgetl qat``."""
    return [name for name in names if not get_variant(name).needs_qat]


def get_variant(name: str) -> TFLiteVariant:
    """The variant called ``name``.

    Raises:
      ConfigError: for an unknown name, with close matches.
    """
    key = name.strip().lower().replace("_", "-")
    if key in VARIANTS:
        return VARIANTS[key]
    raise ConfigError(
        f"Unknown export variant '{name}'.{suggest(key, VARIANTS)} Valid variants: {', '.join(VARIANTS)}."
    )


def parse_variants(value: Iterable[str] | str) -> Tuple[str, ...]:
    """Normalises ``"fp32,int8"`` or a list into a tuple of known names, order kept, duplicates dropped.

    Raises:
      ConfigError: for an unknown or empty name.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names: List[str] = []
    for item in items:
        if not str(item).strip():
            continue
        name = get_variant(str(item)).name
        if name not in names:
            names.append(name)
    return tuple(names)


__all__ = ["DEFAULT_VARIANTS", "IO_TYPES", "REFERENCE_VARIANT", "TFLiteVariant", "VARIANTS", "float_variant_names",
           "get_variant", "parse_variants", "qat_variant_names", "variant_names"]
