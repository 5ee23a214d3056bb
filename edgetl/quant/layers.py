"""The Keras layers the graph rewrite puts in place of raw-op subgraphs tfmot cannot quantize (HardSwish, HardSigmoid).

MobileNetV3 builds hard-swish and its squeeze-excite gate from raw
``TFOpLambda`` ops (``x + 3``, ``* 1/6``), which tfmot can neither clone nor
annotate. As one layer each they get a QuantizeConfig (``edgetl.quant.scheme``)
and still convert to TFLite's single ``HARD_SWISH`` op.
"""

from __future__ import annotations

from edgetl.model.keras import keras, tf


@keras.utils.register_keras_serializable(package="edgetl")
class HardSigmoid(keras.layers.Layer):
    """``relu6(x + 3) / 6``: MobileNetV3's gate, as one layer tfmot can wrap."""

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.utils.register_keras_serializable(package="edgetl")
class HardSwish(keras.layers.Layer):
    """``x * relu6(x + 3) / 6``: written so the TFLite converter fuses it into ``HARD_SWISH``."""

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def custom_objects() -> dict:
    """The layers by every name a saved model may use for them (with and without the ``edgetl>`` package)."""
    return {"HardSwish": HardSwish, "HardSigmoid": HardSigmoid,
            "edgetl>HardSwish": HardSwish, "edgetl>HardSigmoid": HardSigmoid}


__all__ = ["HardSigmoid", "HardSwish", "custom_objects"]
