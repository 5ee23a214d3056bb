"""What a backbone is: ``BackboneSpec`` (how to build it, its sizes, widths, weights, preprocessing) and ``Preprocessing`` (no TensorFlow)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Dict, Optional, Tuple

from edgetl.errors import ConfigError, WeightsError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How raw RGB pixels in [0, 255] become the backbone's input.

    edgetl always feeds the model float pixels in [0, 255] and puts the
    normalisation inside the graph, so the device only resizes and casts.

    Attributes:
      scale: multiplier of a ``Rescaling`` layer edgetl adds in front of the
        backbone, or None when the backbone normalises internally.
      offset: offset of that ``Rescaling`` layer.
      description: the resulting range, for humans and the edgetl metadata.
    """

    scale: Optional[float]
    offset: float
    description: str

    @property
    def in_model(self) -> bool:
        """True when the Keras application already normalises its input."""
        return self.scale is None


MOBILENET_PREPROCESSING = Preprocessing(1.0 / 127.5, -1.0, "x / 127.5 - 1 -> [-1, 1] (Rescaling layer added by edgetl)")
INTERNAL_PREPROCESSING = Preprocessing(None, 0.0, "[0, 255] -> backbone's own Rescaling/Normalization layers")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone: how to build it and what it expects.

    Attributes:
      name: registry name, upstream Keras name in snake_case.
      keras_name: attribute of ``tf_keras.applications`` that builds it.
      family: group name shown by ``edgetl backbones``.
      default_size: input side length (square) used when none is given.
      min_size: smallest input side the architecture accepts.
      imagenet_sizes: sizes with their own ImageNet checkpoint; other sizes
        reuse the ``default_size`` weights (convolutions are size-agnostic).
      alphas: width multipliers the architecture accepts; empty when the
        backbone has no width multiplier.
      imagenet_alphas: width multipliers that have ImageNet weights.
      default_alpha: width multiplier used when none is given.
      preprocessing: how pixels in [0, 255] are normalised.
      builder_kwargs: extra keyword arguments for the Keras builder.
      weights_file: ``(alpha, size) -> file name`` of the no-top ImageNet
        weights in Keras' cache (``~/.keras/models``).
      weights_origin: the folder URL Keras downloads those files from (the
        ``BASE_WEIGHT(S)_PATH`` of its ``applications`` module); the file
        name is appended.
      edgetpu_compatible: its int8 files get ``edgetl.edgetpu``'s verdict
        "compatible" (every op in the Edge TPU's list); checked on every
        backbone's int8 QAT file by ``tests/test_qat.py``.
      description: one line on what it is good for.
    """

    name: str
    keras_name: str
    family: str
    default_size: int
    min_size: int
    imagenet_sizes: Tuple[int, ...]
    alphas: Tuple[float, ...]
    imagenet_alphas: Tuple[float, ...]
    default_alpha: Optional[float]
    preprocessing: Preprocessing
    weights_file: Callable[[Optional[float], int], str]
    builder_kwargs: Dict[str, object] = dataclasses.field(default_factory=dict)
    weights_origin: str = ""
    edgetpu_compatible: bool = False
    description: str = ""

    def resolve_alpha(self, alpha: Optional[float]) -> Optional[float]:
        """Returns the width multiplier to build with, validating ``alpha``."""
        if not self.alphas:
            if alpha not in (None, 1.0):
                raise ConfigError(
                    f"`alpha`={alpha} is not supported by '{self.name}', which has no width multiplier. "
                    f"Leave --alpha unset for this backbone."
                )
            return None
        if alpha is None:
            return self.default_alpha
        if alpha <= 0 or alpha > 2:
            raise ConfigError(f"`alpha`={alpha} is out of range for '{self.name}'; expected one of {list(self.alphas)}.")
        return float(alpha)

    def resolve_size(self, size: Optional[int]) -> int:
        """Returns the input side length, validating ``size``."""
        if size is None:
            return self.default_size
        if size < self.min_size:
            raise ConfigError(
                f"`size`={size} is too small for '{self.name}': the minimum is {self.min_size} px. "
                f"Use --size {self.min_size} or larger (default {self.default_size})."
            )
        return int(size)

    def check_imagenet(self, alpha: Optional[float], size: int) -> None:
        """Raises WeightsError when no ImageNet weights exist for ``alpha``.

        Sizes without their own checkpoint reuse the weights trained at the
        default size, which Keras does too; a note is logged.
        """
        if self.alphas and alpha not in self.imagenet_alphas:
            raise WeightsError(
                f"No ImageNet weights exist for '{self.name}' with alpha={alpha}: "
                f"pretrained widths are {list(self.imagenet_alphas)}. "
                f"Pick one of those, or train from scratch with --weights none."
            )
        if self.imagenet_sizes and size not in self.imagenet_sizes:
            logger.info(
                "'%s' has ImageNet weights at %s px; using the %d px weights at %d px.",
                self.name, list(self.imagenet_sizes), self.default_size, size,
            )

    def has_imagenet(self, alpha: Optional[float]) -> bool:
        """Whether ImageNet weights exist for this width multiplier."""
        return not self.alphas or alpha in self.imagenet_alphas


__all__ = ["BackboneSpec", "INTERNAL_PREPROCESSING", "MOBILENET_PREPROCESSING", "Preprocessing"]
