"""Rows of the decoded store -> batched, prefetched ``tf.data`` pipelines (shuffle of row numbers, augment).

Training reads the run's decoded store (``edgetl.data.store``): the dataset
holds only row numbers and labels, shuffles those, and reads each batch's rows
with ``tf.numpy_function``, so memory does not grow with the number of images
(no ``Dataset.cache()`` of pixels, no array of every image).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from edgetl.config import AugmentConfig
from edgetl.model.keras import keras, tf


def store_dataset(
    store,
    rows: Sequence[int],
    labels: Sequence[int],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    augment: Optional[AugmentConfig] = None,
    shard_policy: Optional[str] = None,
):
    """A ``tf.data.Dataset`` of ``(float32 [0,255] images, int32 labels)`` batches read from a decoded store.

    Only the row numbers are shuffled (a full shuffle each epoch, seeded);
    each batch's rows are read with one ``store.read`` call in a
    ``tf.numpy_function``, in parallel and in order.

    Args:
      store: an ``edgetl.data.store.ImageStore`` holding every row.
      rows: row number of each image.
      labels: class index of each image.
      batch_size: images per batch (the global batch under a distribution strategy).
      shuffle: reshuffle every epoch (training).
      seed: shuffle and augmentation seed.
      augment: augmentation to apply (training only); None = none.
      shard_policy: 'data' makes a multi-worker strategy shard by batches
        (``tf.data.experimental.AutoShardPolicy.DATA``); None leaves tf.data's default.
    """
    size = store.size
    dataset = tf.data.Dataset.from_tensor_slices((np.asarray(rows, np.int64), np.asarray(labels, np.int32)))
    if shuffle:
        dataset = dataset.shuffle(max(len(rows), 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def read(batch_rows, batch_labels):
        images = tf.numpy_function(store.read, [batch_rows], tf.uint8, stateful=False)
        images.set_shape((None, size, size, 3))
        return tf.cast(images, tf.float32), batch_labels

    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    augmenter = build_augmenter(augment, seed) if augment is not None else None
    if augmenter is not None:
        dataset = dataset.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    if shard_policy == "data":
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(options)
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
