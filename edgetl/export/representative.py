"""Representative images for int8 calibration, drawn from a run's training split (no TensorFlow needed).

The images are decoded with ``edgetl.images.load_image``, the same Pillow
decode and resize as training and the device, so the calibrated ranges are
the ranges the device will see. A run's own images are read from its decoded
store (``edgetl.data.store``), where training put them: no second decode.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgetl.errors import ExportError
from edgetl.images import IMAGE_EXTENSIONS, ImageReadError, load_image
from edgetl.run_dir import DatasetRecord


def sample_paths(items: Sequence[Tuple[str, int]], count: int, seed: int = 42) -> List[str]:
    """Up to ``count`` paths, balanced over classes (round-robin over shuffled classes).

    A plain random sample of a skewed dataset would calibrate mostly on the
    largest class; round-robin keeps every class's activations in range.
    """
    rng = random.Random(seed)
    by_label = {}
    for path, label in items:
        by_label.setdefault(label, []).append(path)
    queues = []
    for label in sorted(by_label):
        paths = list(by_label[label])
        rng.shuffle(paths)
        queues.append(paths)
    picked: List[str] = []
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop())
    return picked


def folder_items(folder: str) -> List[Tuple[str, int]]:
    """Every image under ``folder`` (any depth) as ``(path, sub-folder index)`` pairs."""
    root = Path(folder)
    if not root.is_dir():
        raise ExportError(f"`calibration_dir`='{folder}' is not a folder. Pass a folder of images (e.g. the training folder).")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    parents = sorted({p.parent for p in files})
    return [(str(p), parents.index(p.parent)) for p in files]


def calibration_items(dataset: Optional[DatasetRecord], calibration_dir: Optional[str]) -> Tuple[List[Tuple[str, int]], str]:
    """The candidate calibration images and a short description of where they come from."""
    if calibration_dir:
        return folder_items(calibration_dir), f"folder '{calibration_dir}'"
    if dataset is None:
        return [], "no dataset.json"
    return list(dataset.train), "the run's training split"


def load_images(paths: Sequence[str], size: int, store=None) -> Tuple[np.ndarray, List[str]]:
    """Decodes ``paths`` to a ``(N, size, size, 3)`` uint8 array; unreadable files are skipped and returned.

    With ``store`` (an ``edgetl.data.store.ImageStore`` of ``size`` px, updated for
    ``paths``), the stored rows are read instead of decoding the files.
    """
    if store is not None and store.size == size:
        rows, _, skipped = store.usable(paths, [0] * len(paths))
        return (store.read(rows) if len(rows) else np.zeros((0, size, size, 3), np.uint8)), [str(p) for p in skipped]
    images, skipped = [], []
    for path in paths:
        try:
            images.append(load_image(path, size))
        except ImageReadError:
            skipped.append(str(path))
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), skipped
    return np.stack(images), skipped


def representative_images(
    dataset: Optional[DatasetRecord],
    size: int,
    count: int = 300,
    calibration_dir: Optional[str] = None,
    seed: int = 42,
    store=None,
) -> np.ndarray:
    """Calibration images for full-integer quantization.

    Args:
      dataset: the run's split (its training images are used).
      size: square side the model takes.
      count: at most this many images.
      calibration_dir: use the images of this folder instead.
      seed: seed of the class-balanced sample.
      store: the run's decoded store (``edgetl.data.store.ImageStore``); used
        for the run's own images, not for ``calibration_dir``.

    Returns:
      ``uint8`` array ``(N, size, size, 3)``, N >= 1.

    Raises:
      ExportError: when there is no readable calibration image.

    Example:
      >>> images = representative_images(RunPaths.of("runs/x").load_dataset(), 224, 300)
    """
    items, source = calibration_items(dataset, calibration_dir)
    images, skipped = load_images(sample_paths(items, count, seed), size, None if calibration_dir else store)
    if len(images) == 0:
        from edgetl.export.variants import VARIANTS

        calibrated = [name for name, variant in VARIANTS.items() if variant.needs_calibration]
        uncalibrated = [name for name in VARIANTS if name not in calibrated]
        raise ExportError(
            f"Integer export ({', '.join(calibrated)}) needs calibration images, but {source} has {len(items)} image(s) "
            f"and {len(skipped)} could not be read. Pass --calibration-dir FOLDER with training-like images, "
            f"or export only --variants {','.join(uncalibrated)}."
        )
    return images


def representative_dataset(images: np.ndarray, transform: Optional[Callable[[np.ndarray], np.ndarray]] = None
                           ) -> Callable[[], Iterator[List[np.ndarray]]]:
    """A TFLite ``representative_dataset``: one float32 image of batch 1 per step.

    Args:
      images: uint8 pixels ``(N, H, W, 3)``.
      transform: maps pixels to what the model takes (default: float32 [0, 255]);
        applied one image at a time, so the float copies never all exist at once.
    """

    def generate() -> Iterator[List[np.ndarray]]:
        for image in images:
            pixels = image[None].astype(np.float32)
            yield [np.asarray(transform(pixels), np.float32) if transform is not None else pixels]

    return generate
