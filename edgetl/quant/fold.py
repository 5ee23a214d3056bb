"""Input normalisation folded into the int8 input quantization: ``InputFold`` (numpy), and where a model has one.

An input normalisation that is the same affine map for every channel
(MobileNet's ``x / 127.5 - 1``, a plain ``x / 255``) can live in the uint8
input tensor's own ``(scale, zero_point)`` instead of an op, as in Google's
TF2 PTQ MobileNets: the device feeds raw pixels and the full-resolution op is
gone. This module is numpy only; ``input_fold`` imports tf_keras when called.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np

# The name of the frozen 1x1 DepthwiseConv2D the graph rewrite turns an input normalisation into.
INPUT_NORM_LAYER = "edgetl_input_norm"
# What an edgetl classifier takes: RGB pixels in [0, 255].
PIXEL_RANGE = (0.0, 255.0)


@dataclasses.dataclass(frozen=True)
class InputFold:
    """An input normalisation ``scale * (pixel - zero_point)``, the same for every channel, folded into int8 input quantization.

    The uint8 input tensor of an int8 file then carries ``(scale,
    zero_point)`` itself, as in Google's TF2 PTQ MobileNets: the device feeds
    raw pixels and TFLite skips the full-resolution op that would otherwise
    normalise them. A zero point must be an integer: MobileNet's
    ``x / 127.5 - 1`` has 127.5, rounded down to 127 as TFLite's own
    calibration of a [-1, 1] input does, so the int8 model reads pixel p as
    ``(p - 127) / 127.5``, 0.5 / 127.5 above the float model. QAT trains on
    that exact mapping (``edgetl.quant.scheme.quantize``); PTQ calibrates on it.

    Attributes:
      scale: real value of one pixel step (the input tensor's quantization scale).
      zero_point: pixel value read as 0.0 (the uint8 zero point; int8 is 128 less).
    """

    scale: float
    zero_point: int

    @classmethod
    def of(cls, scale: np.ndarray, offset: np.ndarray, exact: bool = False) -> Optional["InputFold"]:
        """The fold of ``pixel * scale + offset`` (per-channel arrays), or None when it cannot be folded.

        Args:
          scale: per-channel multiplier.
          offset: per-channel offset.
          exact: require an integer zero point (no half-level shift).
        """
        scale = np.asarray(scale, np.float64).ravel()
        offset = np.asarray(offset, np.float64).ravel()
        if scale.size == 0 or scale[0] <= 0 or not np.allclose(scale, scale[0], rtol=1e-6, atol=0.0):
            return None
        if not np.allclose(offset, offset[0], rtol=1e-6, atol=1e-9):
            return None
        step = float(scale[0])
        # Measured in float32, x / 127.5 comes out ~1e-7 off; keep the divisor the model meant.
        divisor = round(2.0 / step) / 2.0
        if abs(1.0 / step - divisor) < 1e-5 * divisor:
            step = 1.0 / divisor
        exact_zero = -float(offset[0]) / step
        nearest = round(exact_zero)
        if abs(exact_zero - nearest) < 1e-3:
            zero_point = int(nearest)
        elif exact:
            return None
        elif abs(exact_zero - np.floor(exact_zero) - 0.5) < 1e-3:
            zero_point = int(np.floor(exact_zero))  # 127.5 -> 127, as TFLite calibrates a [-1, 1] input
        else:
            zero_point = int(nearest)
        if not 0 <= zero_point <= 255:
            return None  # TFLite needs 0.0 inside the uint8 range
        return cls(step, zero_point)

    @property
    def range(self) -> Tuple[float, float]:
        """The real values of pixels 0 and 255: the input quantization range."""
        return self.scale * (PIXEL_RANGE[0] - self.zero_point), self.scale * (PIXEL_RANGE[1] - self.zero_point)

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """What the int8 model's input tensor means for ``pixels`` in [0, 255], as float32."""
        return (np.asarray(pixels, np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)

    def describe(self) -> str:
        """E.g. '(pixel - 127) * 0.00784314'."""
        return f"(pixel - {self.zero_point}) * {self.scale:.6g}"


def input_fold(model, exact: bool = False) -> Optional[Tuple[InputFold, object]]:
    """The foldable input normalisation of a rewritten or QAT model, and the model after it.

    Looks for edgetl's frozen 1x1 ``DepthwiseConv2D`` (``INPUT_NORM_LAYER``,
    plain or QAT-wrapped) applied to the model's only input. The int8 export
    converts ``tail`` with ``(fold.scale, fold.zero_point)`` as its input
    quantization (see ``edgetl.export.tflite.TracedModel``).

    Args:
      model: a model from ``edgetl.quant.rewrite.prepare_for_quantization`` or ``edgetl.quant.scheme.quantize``.
      exact: fold only a map whose zero point is already an integer. QAT
        models need it: they trained on the normalisation as it is, and one
        saved before edgetl put it on the uint8 grid keeps its depthwise op.

    Returns:
      ``(fold, tail)``, where ``tail`` is a Keras model from the normalised
      input to the outputs sharing the model's layers; None when the model
      has no such layer or its map differs between channels.

    Example:
      >>> fold, tail = input_fold(prepare_for_quantization(model)[0])
      >>> fold.scale, fold.zero_point
      (0.00784313725490196, 127)
    """
    from edgetl import _internals
    from edgetl.model.keras import keras

    if len(model.inputs) != 1:
        return None
    norm = next((layer for layer in model.layers if getattr(layer, "layer", layer).name == INPUT_NORM_LAYER), None)
    if norm is None:
        return None
    inner = getattr(norm, "layer", norm)
    if not isinstance(inner, keras.layers.DepthwiseConv2D) or not inner.use_bias:
        return None
    source = norm.input
    producer = _internals.producing_layer(source)
    if producer is not None and _internals.is_quantize_layer(producer):
        source = producer.input
    if source is not model.inputs[0]:
        return None
    fold = InputFold.of(inner.depthwise_kernel.numpy(), inner.bias.numpy(), exact=exact)
    if fold is None:
        return None
    try:
        # The model's own name: it prefixes every tensor name in the .tflite, as in the float files.
        tail = keras.Model(norm.output, model.output, name=model.name)
    except ValueError:  # the raw input feeds other layers too: the normalisation is not all it goes through
        return None
    return fold, tail


__all__ = ["INPUT_NORM_LAYER", "PIXEL_RANGE", "InputFold", "input_fold"]
