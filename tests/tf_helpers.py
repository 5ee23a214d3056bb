"""TensorFlow-side test helpers: a randomly initialised backbone with sane BatchNorm statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def calibrated_backbone_weights(path: Path, size: int = 48, alpha: float = 0.35, seed: int = 0) -> Path:
    """Writes no-top MobileNetV2 weights whose BatchNorm statistics fit random images.

    A randomly initialised backbone in inference mode shrinks activations to
    ~1e-12 by the last layer (moving variance 1 everywhere), so a frozen random
    backbone gives constant features. Setting every BatchNorm's moving
    statistics to those of one batch (momentum 0) gives a random but
    informative feature extractor: a stand-in for ImageNet weights in tests
    that must not download anything.
    """
    from edgetl.model.keras import keras

    keras.utils.set_random_seed(seed)
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=alpha, input_shape=(size, size, 3))
    batch_norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batch_norms:
        layer.momentum = 0.0
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0, 255, size=(64, 1, 1, 3))
    images = np.clip(colours + rng.normal(0, 20, size=(64, size, size, 3)), 0, 255) / 127.5 - 1.0
    backbone(images.astype("float32"), training=True)
    backbone.save_weights(str(path))
    return path
