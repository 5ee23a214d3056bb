"""The oldest TFLite runtime an exported file must load in (``--min-runtime``), and the converter settings that keep it there.

The converter writes into every file a ``min_runtime_version`` metadata entry:
the oldest TFLite runtime that has every op version the file uses
(``tensorflow/lite/tools/versioning/runtime_version.cc``). By default edgetl
targets tflite-runtime 2.14, the last wheel for 32-bit Raspberry Pi OS and the
Coral images, and the TFLite inside the Task Library 0.4.4.

Only one setting is needed today, measured with TensorFlow 2.21: since TF
2.17 the dynamic-range quantizer writes per-channel int8 weights into
FULLY_CONNECTED, op version 12 (``min_runtime_version`` 2.17.0). The
converter's private ``_experimental_disable_per_channel_quantization_for_dense_layers``
(``edgetl._internals.keep_dense_weights_per_tensor``) keeps dense weights
per-tensor (version 9, 2.4.0) at the same size. The public
alternative, ``experimental_new_dynamic_range_quantizer = False``, gives
version 9 too but a 10% larger file and a wrong ``min_runtime_version`` (1.6.0
for a file with CONV_2D version 5), so the private flag is used. A file still
newer than the target is named in one warning line at export time. Which
variant needs which setting is in the variant table (``edgetl.export.variants``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, List, Optional, Sequence, Tuple

from edgetl.errors import ConfigError

DEFAULT_MIN_RUNTIME = "2.14"
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")


@dataclasses.dataclass(frozen=True)
class ConverterSetting:
    """A converter switch that keeps a variant's op versions within older runtimes (a row of the variant table holds it).

    Attributes:
      name: what it does, for messages and the docs.
      apply: ``apply(converter) -> bool`` sets it on a ``TFLiteConverter``;
        False when this TensorFlow no longer has the switch (the file is then
        named by the min-runtime check instead).
      needed_below: runtimes older than this need it (newer ones get the converter's default).
      why: the op version it avoids.
    """

    name: str
    apply: Callable[[Any], bool] = dataclasses.field(compare=False, repr=False)
    needed_below: Tuple[int, ...]
    why: str


def _keep_dense_weights_per_tensor(converter: Any) -> bool:
    from edgetl import _internals

    return _internals.keep_dense_weights_per_tensor(converter)


PER_TENSOR_DENSE_WEIGHTS = ConverterSetting(
    "per-tensor dynamic-range FULLY_CONNECTED weights", _keep_dense_weights_per_tensor, (2, 17),
    "per-channel dynamic-range FULLY_CONNECTED is op version 12, added in TFLite 2.17")


def parse_version(text: str, what: str = "--min-runtime") -> Tuple[int, ...]:
    """``'2.14'`` or ``'2.14.0'`` -> ``(2, 14, 0)``.

    Raises:
      ConfigError: not one to three dot-separated integers.
    """
    value = str(text).strip()
    if not _VERSION.match(value):
        raise ConfigError(f"`{what}` must be a TFLite runtime version like 2.14 or 2.17.0; got '{text}'.")
    parts = tuple(int(p) for p in value.split("."))
    return parts + (0,) * (3 - len(parts))


def needed_settings(settings: Sequence[ConverterSetting], target: str) -> List[ConverterSetting]:
    """The ``settings`` a file must be converted with to load in TFLite runtime ``target``."""
    wanted = parse_version(target)
    return [setting for setting in settings if wanted < setting.needed_below]


def runtime_warning(variant: str, file_version: str, target: str) -> Optional[str]:
    """One line when a file needs a newer runtime than ``target`` (None when it does not, or records no version)."""
    if not file_version:
        return None
    try:
        needed = parse_version(file_version, "min_runtime_version")
    except ConfigError:
        return None
    if needed <= parse_version(target):
        return None
    return (f"{variant}: needs TFLite runtime >= {file_version} (its op versions), newer than the --min-runtime "
            f"target {target}: it will not load in tflite-runtime {target} or the Task Library 0.4.4. Ship another "
            f"variant to such devices, or raise --min-runtime if none of them runs an older runtime.")


__all__ = ["DEFAULT_MIN_RUNTIME", "PER_TENSOR_DENSE_WEIGHTS", "ConverterSetting", "needed_settings", "parse_version",
           "runtime_warning"]
