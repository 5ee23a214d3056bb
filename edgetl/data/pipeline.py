"""Image lists -> batched, prefetched ``tf.data`` pipelines (decode with Pillow, cache, augment)."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Optional, Sequence, Union

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


# Above this many bytes of decoded pixels, images are decoded on the fly instead of held in memory.
IN_MEMORY_LIMIT = 2 * 1024**3


def fits_in_memory(count: int, size: int) -> bool:
    """Whether ``count`` decoded ``size``x``size`` RGB images stay under IN_MEMORY_LIMIT."""
    return count * size * size * 3 <= IN_MEMORY_LIMIT


def decode_images(paths: Sequence[str], size: int, progress: bool = False, desc: str = "decoding") -> np.ndarray:
    """Decodes every image once, on a thread pool (Pillow releases the GIL), into one uint8 array."""
    decode = _decoder(size)
    workers = min(8, (os.cpu_count() or 1) * 2)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        iterator = pool.map(lambda p: decode(p.encode("utf-8", "surrogateescape")), paths)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(paths), desc=desc, unit="img", leave=False, disable=None)
        images = list(iterator)
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)


def make_dataset(
    paths: Union[Sequence[str], np.ndarray],
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
    same pixels the device side will. Pass images already decoded by
    ``decode_images`` to share one decode between several datasets; paths are
    decoded on the fly and cached in memory before shuffling and augmentation.

    Args:
      paths: image files, or a uint8 array of decoded images.
      labels: class index per file.
      size: square side to resize to.
      batch_size: images per batch.
      shuffle: reshuffle every epoch (training).
      seed: shuffle and augmentation seed.
      augment: augmentation to apply (training only); None = none.
      cache: keep decoded images in memory.
    """
    if isinstance(paths, np.ndarray):
        dataset = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32)))
    else:
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
