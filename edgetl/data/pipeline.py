"""Image lists -> batched, prefetched ``tf.data`` pipelines (decode with Pillow, cache, augment)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from edgetl.config import AugmentConfig
from edgetl.images import ImageReadError, load_image
from edgetl.model.keras import keras, tf


def _decoder(size: int):
    def decode(path: bytes) -> np.ndarray:
        try:
            return load_image(path.decode("utf-8", "surrogateescape"), size)
        except ImageReadError:
            # The scan already dropped unreadable files; one that broke since (a flaky
            # disk, a file rewritten mid-run) becomes a black image rather than killing an epoch.
            return np.zeros((size, size, 3), np.uint8)

    return decode


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int],
    size: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    augment: Optional[AugmentConfig] = None,
    cache: bool = True,
):
    """Builds a ``tf.data.Dataset`` of ``(float32 [0,255] images, int labels)`` batches.

    Decoding uses ``edgetl.images.load_image`` (Pillow) so training sees the
    same pixels the device side will. Decoded images are cached in memory
    before shuffling and augmentation, so each file is decoded once per run.

    Args:
      paths: image files.
      labels: class index per file.
      size: square side to resize to.
      batch_size: images per batch.
      shuffle: reshuffle every epoch (training).
      seed: shuffle and augmentation seed.
      augment: augmentation to apply (training only); None = none.
      cache: keep decoded images in memory.
    """
    path_ds = tf.data.Dataset.from_tensor_slices(
        (np.array([p.encode("utf-8", "surrogateescape") for p in paths], dtype=object), np.asarray(labels, np.int32))
    )
    decode = _decoder(size)

    def load(path, label):
        image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        image.set_shape((size, size, 3))
        return image, label

    dataset = path_ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(max(len(paths), 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    augmenter = build_augmenter(augment, seed) if augment is not None else None
    if augmenter is not None:
        dataset = dataset.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def build_augmenter(config: AugmentConfig, seed: int = 0):
    """A Sequential of Keras preprocessing layers, or None when nothing is enabled.

    Works on float pixels in [0, 255]; contrast is clipped back into that range.
    """
    if not config.enabled:
        return None
    layers = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if config.rotation > 0:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="reflect", seed=seed + 1))
    if config.zoom > 0:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="reflect", seed=seed + 2))
    if config.contrast > 0:
        layers.append(keras.layers.RandomContrast(config.contrast, seed=seed + 3))
        layers.append(keras.layers.Lambda(lambda x: tf.clip_by_value(x, 0.0, 255.0)))
    if not layers:
        return None
    return keras.Sequential(layers, name="edgetl_augment")
