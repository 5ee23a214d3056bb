"""The table of TFLite export variants: name, file suffix, calibration, QAT, I/O dtype (no TensorFlow)."""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Tuple

from edgetl.errors import ConfigError, suggest


@dataclasses.dataclass(frozen=True)
class TFLiteVariant:
    """One kind of ``.tflite`` file edgetl can write.

    Attributes:
      name: what users type (``--variants fp32,int8``).
      suffix: appended to the model's file stem (``mobilenet_v2_224_int8.tflite``).
      description: one line for ``--help`` and the manifest.
      needs_calibration: needs representative images (full-integer PTQ).
      needs_qat: converts the QAT model instead of the float model.
      integer_io: input/output tensors are uint8/int8 (per ``--io-type``)
        instead of float32.
      edgetpu_compilable: fully integer, so ``edgetpu_compiler`` can take it.
    """

    name: str
    suffix: str
    description: str
    needs_calibration: bool = False
    needs_qat: bool = False
    integer_io: bool = False
    edgetpu_compilable: bool = False

    def io_dtype(self, io_type: str = "uint8") -> str:
        """The input/output dtype of files of this variant, given ``--io-type``."""
        return io_type if self.integer_io else "float32"


VARIANTS: Dict[str, TFLiteVariant] = {
    variant.name: variant
    for variant in (
        TFLiteVariant("fp32", "fp32", "float32 weights and activations; the reference."),
        TFLiteVariant("fp16", "fp16", "float16 weights (half the size), float32 compute; fast on GPUs delegates."),
        TFLiteVariant("dynamic", "dynamic", "int8 weights, float activations quantized on the fly; no calibration."),
        TFLiteVariant("int8", "int8", "full-integer post-training quantization calibrated on training images.",
                      needs_calibration=True, integer_io=True, edgetpu_compilable=True),
        TFLiteVariant("qat-int8", "qat_int8", "full-integer model from quantization-aware training (edgetl qat).",
                      needs_qat=True, integer_io=True, edgetpu_compilable=True),
    )
}

DEFAULT_VARIANTS: Tuple[str, ...] = ("fp32", "fp16", "dynamic", "int8")
IO_TYPES: Tuple[str, ...] = ("uint8", "int8")


def variant_names() -> List[str]:
    """Every variant name, in table order."""
    return list(VARIANTS)


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
