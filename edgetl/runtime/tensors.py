"""Image pixels -> input tensor (flags > edgetl metadata > standard TFLite metadata > defaults), and outputs -> float scores."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np

from edgetl.errors import ConfigError, ModelFileError
from edgetl.model_metadata import EdgetlMetadata
from edgetl.tflite_metadata import TensorMetadata

if TYPE_CHECKING:  # only annotations: edgetl.modelfile imports this module to describe a model's preprocessing
    from edgetl.modelfile import TensorInfo

Triple = Tuple[float, float, float]
_SUPPORTED_INPUTS = ("float32", "uint8", "int8")


def parse_channel_values(text: Optional[str], name: str) -> Optional[Triple]:
    """Parses ``--mean``/``--std``: one number for all channels or three comma-separated (R,G,B).

    Raises:
      ConfigError: not numbers, wrong count, or a zero std.
    """
    if text is None:
        return None
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"`--{name}` must be a number or three numbers like 127.5,127.5,127.5; got '{text}'.") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ConfigError(f"`--{name}` takes 1 or 3 values (R,G,B); got {len(values)} in '{text}'.")
    if name == "std" and any(v == 0 for v in values):
        raise ConfigError(f"`--std` must not be 0 (it divides the pixels); got '{text}'. Use 1 for no scaling.")
    return (values[0], values[1], values[2])


@dataclasses.dataclass(frozen=True)
class InputTransform:
    """Turns RGB uint8 pixels (already resized) into the model's input tensor.

    real = (pixel - mean) / std per channel; float inputs take ``real``,
    integer inputs take round(real / scale + zero_point) clipped to the type.
    A quantized third-party model without edgetl metadata takes the raw pixels
    (``raw``), which is what Coral/TF-slim quantized models expect and what
    MediaPipe and the Task Library feed a uint8 input whatever its
    NormalizationOptions say; so does edgetl metadata whose mean/std undo the input
    quantization exactly (edgetl's int8 files), without the float round trip.

    Attributes:
      height: input height in pixels.
      width: input width in pixels.
      dtype: 'float32', 'uint8' or 'int8'.
      mean: per-channel value subtracted from [0, 255] pixels.
      std: per-channel divisor.
      scale: input quantization scale (0.0 for float inputs).
      zero_point: input quantization zero point.
      raw: feed pixels unchanged (uint8) or shifted by -128 (int8).
      color: channel order the model wants ('RGB' or 'BGR').
      source: where mean/std came from: 'options' (--mean/--std),
        'edgetl-metadata' (edgetl's embedded metadata), 'tflite-metadata' (the
        standard metadata's NormalizationOptions) or 'default'.
    """

    height: int
    width: int
    dtype: str
    mean: Triple = (0.0, 0.0, 0.0)
    std: Triple = (1.0, 1.0, 1.0)
    scale: float = 0.0
    zero_point: int = 0
    raw: bool = False
    color: str = "RGB"
    source: str = "default"

    @property
    def size(self) -> Tuple[int, int]:
        """(height, width) for ``images.load_image``."""
        return (self.height, self.width)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Converts ``(N, H, W, 3)`` or ``(H, W, 3)`` uint8 pixels to a batched input tensor."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"pixels of shape {pixels.shape[1:]} given for a {self.height}x{self.width}x3 input")
        if self.color.upper() == "BGR":
            pixels = pixels[..., ::-1]
        if self.raw:
            if self.dtype == "uint8":
                return np.ascontiguousarray(pixels, dtype=np.uint8)
            return (pixels.astype(np.int16) - 128).astype(np.int8)
        real = (pixels.astype(np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.dtype == "float32":
            return real
        return quantize(real, self.scale, self.zero_point, self.dtype)

    def describe(self) -> str:
        """One line for reports, e.g. '224x224 uint8, raw pixels'."""
        text = f"{self.height}x{self.width} {self.dtype}"
        if self.raw and self.source == "default":
            return text + ", raw pixels (no metadata)"
        source = {"tflite-metadata": "TFLite metadata", "edgetl-metadata": "edgetl metadata"}.get(self.source, self.source)
        text += f", (pixel - {_short(self.mean)}) / {_short(self.std)} from {source}"
        if self.scale:
            text += f", quantized ({self.scale:.6g}, {self.zero_point})"
        if self.raw:
            text += (" = raw pixels" if self.source != "tflite-metadata" else "; fed raw pixels, as MediaPipe does") + \
            (" - 128" if self.dtype == "int8" else "")
        return text


def _short(values: Sequence[float]) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "(" + ",".join(f"{v:g}" for v in values) + ")"


def _undoes_quantization(mean: Triple, std: Triple, scale: float, zero_point: int, dtype: str) -> bool:
    """True when (pixel - mean) / std quantized with (scale, zero_point) is the pixel (uint8) or pixel - 128 (int8)."""
    pixel_zero = zero_point + (128 if dtype == "int8" else 0)
    # 1e-6 relative keeps 255 * error far below the half level that would change a rounded value.
    return scale > 0 and all(abs(s * scale - 1.0) < 1e-6 and abs(m - pixel_zero) < 1e-6 for m, s in zip(mean, std))


def quantize(real: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """round(real / scale + zero_point), clipped to ``dtype``'s range."""
    info = np.iinfo(dtype)
    return np.clip(np.round(real / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """An output tensor as float32, using the tensor's own (per-tensor) quantization."""
    values = np.asarray(values)
    if tensor.quantized and len(tensor.scale) == 1:
        return (values.astype(np.float32) - np.float32(tensor.zero_point[0])) * np.float32(tensor.scale[0])
    return values.astype(np.float32)


def to_scores(values: np.ndarray, tensor: TensorInfo, metadata: Optional[EdgetlMetadata]) -> np.ndarray:
    """Classifier outputs as ``(N, classes)`` float32 scores (softmax applied when edgetl's metadata says 'logits')."""
    scores = dequantize(values, tensor)
    scores = scores.reshape(scores.shape[0], -1)
    if metadata is not None and metadata.output_kind == "logits":
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    return scores


def input_transform(
    tensor: TensorInfo,
    metadata: Optional[EdgetlMetadata],
    mean: Optional[Triple] = None,
    std: Optional[Triple] = None,
    model_name: str = "model",
    standard: Optional[TensorMetadata] = None,
) -> InputTransform:
    """Builds the InputTransform of an image input: flags > edgetl metadata > standard TFLite metadata > defaults.

    A float input takes ``(pixel - mean) / std`` from the first of these that
    gives them; an integer input without edgetl metadata takes raw pixels, as
    MediaPipe and the Task Library feed uint8 models (their
    NormalizationOptions describe the quantized values, e.g. Coral's
    127.5/127.5 with scale 1/128, zero point 128).

    Args:
      tensor: the model's image input.
      metadata: edgetl's embedded metadata, or None for third-party models.
      mean: ``--mean`` override (wins over both kinds of metadata).
      std: ``--std`` override.
      model_name: used in messages.
      standard: the input's standard TFLite metadata, or None.

    Returns:
      The InputTransform.

    Raises:
      ModelFileError: the input is not an NHWC RGB image, or of an unsupported type.
    """
    shape = tensor.shape
    if len(shape) != 4:
        raise ModelFileError(
            f"'{model_name}' has input {tensor.describe()}, not an image batch [N,H,W,C]; "
            f"edgetl predict/eval/bench --images need an image classifier."
        )
    if shape[3] != 3:
        raise ModelFileError(
            f"'{model_name}' takes {shape[3]}-channel images (input {tensor.describe()}) but edgetl decodes images to "
            f"RGB (3 channels); use a model with an RGB input."
        )
    if tensor.dtype not in _SUPPORTED_INPUTS:
        raise ModelFileError(
            f"'{model_name}' has a {tensor.dtype} input; edgetl feeds float32, uint8 or int8 inputs. Re-export the model "
            f"with one of those input types."
        )
    if tensor.dtype != "float32" and not tensor.quantized:
        raise ModelFileError(f"'{model_name}' has a {tensor.dtype} input without quantization parameters; re-export it.")
    scale = tensor.scale[0] if tensor.quantized else 0.0
    zero_point = tensor.zero_point[0] if tensor.quantized else 0
    declared = standard.channel_normalization() if standard is not None else None
    if metadata is not None:
        base_source, base_mean, base_std = "edgetl-metadata", tuple(metadata.mean), tuple(metadata.std)
    elif declared is not None:
        base_source, (base_mean, base_std) = "tflite-metadata", declared
    else:
        base_source, base_mean, base_std = "default", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if mean is not None or std is not None:
        source, mean, std = "options", tuple(mean or base_mean), tuple(std or base_std)
    else:
        source, mean, std = base_source, base_mean, base_std
    raw = tensor.dtype != "float32" and (source in ("default", "tflite-metadata")
                                         or _undoes_quantization(mean, std, scale, zero_point, tensor.dtype))
    color = metadata.color if metadata is not None else "RGB"
    return InputTransform(int(shape[1]), int(shape[2]), tensor.dtype, tuple(float(m) for m in mean),
                          tuple(float(s) for s in std), float(scale), int(zero_point), raw, color, source)
