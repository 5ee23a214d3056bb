"""edgetl's tfmot quantize scheme: the default 8-bit scheme plus QuantizeConfigs for the layers edgetl's rewrite adds.

Built only on tfmot's public extension points (``QuantizeRegistry``,
``QuantizeScheme``, ``QuantizeConfig``, ``quantizers``) and handed to its
public ``quantize_apply(model, scheme=...)``, the way tfmot's own
``Default8BitQuantizeScheme`` is:

* ``Multiply`` (squeeze-excite), ``HardSwish`` and ``HardSigmoid``
  (``edgetl.quant.layers``), and a ``Rescaling`` / ``Normalization`` the
  rewrite could not fold, have no entry in tfmot's registry. They are quantized
  at their output only, which is what TFLite's int8 ``MUL`` / ``HARD_SWISH``
  compute (inputs are already quantized upstream).
* The input normalisation (``edgetl.quant.fold.INPUT_NORM_LAYER``, a frozen 1x1
  ``DepthwiseConv2D``) is quantized at its output only; when it is on the uint8
  grid (an ``InputFold``) the range is fixed to the fold's, since its outputs
  are exactly the points of that grid and a moving average would drift.
* Every other layer gets tfmot's default 8-bit QuantizeConfig.

Importing this module imports TensorFlow and tfmot.
"""

from __future__ import annotations

import collections
from typing import Dict, List, Tuple

from edgetl import _internals
from edgetl._optional import import_optional
from edgetl.errors import ExportError
from edgetl.export.variants import float_variant_names
from edgetl.model.keras import keras
from edgetl.quant.fold import INPUT_NORM_LAYER, PIXEL_RANGE, InputFold
from edgetl.quant.layers import HardSigmoid, HardSwish, custom_objects as layer_objects
from edgetl.quant.rewrite import rewrite

# tfmot reads TF_USE_LEGACY_KERAS at import: it must come after edgetl.model.keras.
tfmot = import_optional("tensorflow_model_optimization", "train", "Quantization-aware training")
_qk = tfmot.quantization.keras

# Layers tfmot's registry does not know, quantized at their output (see the module docstring).
OUTPUT_QUANTIZED = (keras.layers.Multiply, HardSwish, HardSigmoid, keras.layers.Rescaling, keras.layers.Normalization)


def _output_quantizer(num_bits: int = 8):
    # What tfmot's default 8-bit scheme puts on activations: per-tensor, asymmetric, moving average.
    return _qk.quantizers.MovingAverageQuantizer(num_bits=num_bits, per_axis=False, symmetric=False, narrow_range=False)


@keras.utils.register_keras_serializable(package="edgetl")
class OutputQuantizeConfig(_qk.QuantizeConfig):
    """Quantizes only a layer's output, with a moving-average range; its weights (if any) stay float."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_output_quantizer()]

    def get_config(self):
        return {}


@keras.utils.register_keras_serializable(package="edgetl")
class FixedRangeOutputQuantizeConfig(OutputQuantizeConfig):
    """Quantizes a layer's output on a fixed ``[min_value, max_value]`` that training never moves.

    Used for the folded input normalisation, whose outputs are exactly the
    points of that grid: a moving-average quantizer would drift towards each
    batch's narrower range and round pixels differently from the int8 file.
    """

    def __init__(self, min_value: float, max_value: float):
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def get_output_quantizers(self, layer):
        return [_qk.quantizers.FixedQuantizer(num_bits=8, init_min=self.min_value, init_max=self.max_value,
                                               narrow_range=False)]

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


def _is_input_norm(layer) -> bool:
    return layer.name.startswith(INPUT_NORM_LAYER) and isinstance(layer, keras.layers.DepthwiseConv2D)


class EdgetlQuantizeRegistry(_qk.QuantizeRegistry):
    """tfmot's default 8-bit registry plus edgetl's layers (see the module docstring)."""

    def __init__(self):
        self._default = _qk.default_8bit.Default8BitQuantizeRegistry()

    def supports(self, layer) -> bool:
        return _is_input_norm(layer) or isinstance(layer, OUTPUT_QUANTIZED) or self._default.supports(layer)

    def get_quantize_config(self, layer):
        if _is_input_norm(layer):
            kernel, bias = layer.get_weights()
            fold = InputFold.of(kernel, bias, exact=True)
            return FixedRangeOutputQuantizeConfig(*fold.range) if fold is not None else OutputQuantizeConfig()
        if isinstance(layer, OUTPUT_QUANTIZED):
            return OutputQuantizeConfig()
        return self._default.get_quantize_config(layer)


class EdgetlQuantizeScheme(_qk.QuantizeScheme):
    """tfmot's default 8-bit layout transforms (Conv+BN+ReLU...) with ``EdgetlQuantizeRegistry``."""

    def get_layout_transformer(self):
        return _qk.default_8bit.Default8BitQuantizeLayoutTransform()

    def get_quantize_registry(self):
        return EdgetlQuantizeRegistry()


def custom_objects() -> Dict[str, object]:
    """edgetl's layers and QuantizeConfigs by every name a saved QAT model may use for them."""
    objects = dict(layer_objects())
    for cls in (OutputQuantizeConfig, FixedRangeOutputQuantizeConfig):
        objects[cls.__name__] = objects[f"edgetl>{cls.__name__}"] = cls
    return objects


def qat_scope():
    """Scope in which tfmot's and edgetl's QAT objects deserialize (``load_model``, ``clone_model``).

    Example:
      >>> with qat_scope():
      ...     model = keras.models.load_model("run/qat/model.h5")
    """
    return _qk.quantize_scope(custom_objects())


def quantize(model, freeze_batch_norm: bool = True) -> Tuple[object, List[str]]:
    """Rewrites ``model`` (``edgetl.quant.rewrite``) and quantizes every layer for QAT with ``EdgetlQuantizeScheme``.

    All weights become trainable except BatchNormalization (kept in inference
    mode: a few QAT epochs on a small dataset would wreck its statistics) and
    the frozen input normalisation. The input is quantized on the fixed
    pixel range [0, 255]. An input normalisation that is the same for all
    channels is put on the uint8 grid with a fixed output range (see
    ``InputFold``), which the int8 export folds into its input quantization;
    either way the int8 file takes raw pixels.

    Args:
      model: the trained float classifier.
      freeze_batch_norm: keep BatchNormalization frozen.

    Returns:
      ``(qat_model, notes)``: a new tfmot model (weights copied) and the rewrites applied.

    Raises:
      ExportError: when a layer cannot be quantized, naming it.

    Example:
      >>> qat_model, notes = quantize(load_model("run/model.keras"))
    """
    rewritten = rewrite(model, on_grid=True)
    float_model, notes = rewritten.model, list(rewritten.notes)
    leftovers: List[str] = []
    output_quantized: "collections.Counter[str]" = collections.Counter()
    for layer in float_model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if _internals.is_tf_op_layer(layer) or isinstance(layer, keras.layers.Lambda):
            leftovers.append(layer.name)
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = not freeze_batch_norm
        else:
            # The input normalisation is quantized at its output only (its per-channel weights stay
            # float here and the converter quantizes them exactly); frozen, it never trains.
            layer.trainable = not _is_input_norm(layer)
        if isinstance(layer, OUTPUT_QUANTIZED):
            output_quantized[type(layer).__name__] += 1
    if leftovers:
        raise ExportError(
            f"Cannot quantize raw TensorFlow op / Lambda layers {leftovers[:5]}: tfmot has no QuantizeConfig for them "
            f"and edgetl knows no equivalent layer. Replace them with Keras layers in the model, or export without QAT "
            f"(--variants {','.join(float_variant_names())})."
        )
    for class_name, count in sorted(output_quantized.items()):
        notes.append(f"{class_name} has no tfmot registry entry -> quantized at its output (x{count})")
    try:
        with qat_scope():
            annotated = _qk.quantize_annotate_model(float_model)
            qat_model = _qk.quantize_apply(annotated, scheme=EdgetlQuantizeScheme())
    except (RuntimeError, ValueError, TypeError, AttributeError) as e:
        first = " ".join(str(e).split())[:300]
        raise ExportError(
            f"tfmot could not quantize '{model.name}': {first}. Expected every layer to have a QuantizeConfig; "
            f"export without QAT (--variants {','.join(float_variant_names())}) or report the layer to edgetl."
        ) from e
    # tfmot's input quantizer keeps the min/max of all values seen; starting it at [0, 255]
    # (pixels never leave that range) makes the int8 input the raw pixels exactly.
    _internals.set_input_quantizer_range(qat_model, *PIXEL_RANGE)
    notes.append(f"input quantized on the fixed range {list(PIXEL_RANGE)} (raw pixels)")
    for fold in rewritten.folds.values():
        notes.append(f"input normalisation on the uint8 grid, {fold.describe()}: int8 files fold it into their "
                     f"input quantization (scale {fold.scale:.6g}, zero point {fold.zero_point})")
    return qat_model, notes


__all__ = ["EdgetlQuantizeRegistry", "EdgetlQuantizeScheme", "FixedRangeOutputQuantizeConfig", "OUTPUT_QUANTIZED",
           "OutputQuantizeConfig", "custom_objects", "qat_scope", "quantize"]
