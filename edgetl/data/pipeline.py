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
    view: int = 0,
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
      view: a fixed ``dihedral`` view applied to every image (0 = as decoded).
    """
    size = store.size
    dataset = tf.data.Dataset.from_tensor_slices((np.asarray(rows, np.int64), np.asarray(labels, np.int32)))
    if shuffle:
        dataset = dataset.shuffle(max(len(rows), 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def read(batch_rows, batch_labels):
        images = tf.numpy_function(store.read, [batch_rows], tf.uint8, stateful=False)
        images.set_shape((None, size, size, 3))
        return dihedral(tf.cast(images, tf.float32), view), batch_labels

    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    augmenter = build_augmenter(augment, seed) if augment is not None else None
    if augmenter is not None:
        dataset = dataset.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    if shard_policy == "data":
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(options)
    return dataset.prefetch(tf.data.AUTOTUNE)


def dihedral(images, index: int):
    """One of the 8 symmetries of a square image batch ``[N, S, S, C]``: 0 is the identity.

    1 flips left-right, 2 up-down, 3 both (a 180-degree rotation); 4-7 are
    0-3 after a transpose (4: transpose, 5: a 90-degree rotation, 6: a
    270-degree one, 7: the anti-transpose).
    """
    if index & 4:
        images = tf.transpose(images, [0, 2, 1, 3])
    if index & 1:
        images = tf.reverse(images, axis=[2])
    if index & 2:
        images = tf.reverse(images, axis=[1])
    return images


class RandomDihedral(keras.layers.Layer):
    """Draws one of the symmetries of a square for each image (training only).

    With ``mirror``, any of the 8 (4 rotations by 90 degrees, each possibly
    mirrored); without, the 4 rotations. The augmentation of objects that are
    photographed in any orientation. It runs in the tf.data pipeline, never in
    a saved model.
    """

    def __init__(self, mirror: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.mirror = mirror
        self._generator = tf.random.Generator.from_seed(seed)
        # The rotations among dihedral() indices: 0, 180 (3), 90 (5), 270 (6) degrees.
        self._choices = tf.constant(list(range(8)) if mirror else [0, 3, 5, 6], tf.int32)

    def call(self, inputs, training=True):
        if not training:
            return inputs
        count = tf.shape(inputs)[0]
        pick = self._generator.uniform([count], 0, int(self._choices.shape[0]), dtype=tf.int32)
        index = tf.reshape(tf.gather(self._choices, pick), [-1, 1, 1, 1])
        images = tf.where(tf.bitwise.bitwise_and(index, 4) > 0, tf.transpose(inputs, [0, 2, 1, 3]), inputs)
        images = tf.where(tf.bitwise.bitwise_and(index, 1) > 0, tf.reverse(images, axis=[2]), images)
        return tf.where(tf.bitwise.bitwise_and(index, 2) > 0, tf.reverse(images, axis=[1]), images)


def build_augmenter(config: AugmentConfig, seed: int = 0):
    """A Sequential of Keras preprocessing layers, or None when nothing is enabled.

    Works on float pixels in [0, 255]; contrast is clipped back into that range.
    """
    if not config.enabled:
        return None
    layers = []
    if config.orientation == "any":
        layers.append(RandomDihedral(mirror=config.flip, seed=seed + 4))
    elif config.flip:
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
