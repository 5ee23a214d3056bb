"""Deterministic, stratified train/validation split from a seed (no TensorFlow)."""

from __future__ import annotations

import dataclasses
from typing import Dict

import numpy as np

from edgetl.data.folder import ImageFolder
from edgetl.errors import DatasetError


@dataclasses.dataclass(frozen=True)
class Splits:
    """Training and validation images, sharing one class list.

    Attributes:
      train: training images.
      val: validation images.
    """

    train: ImageFolder
    val: ImageFolder

    @property
    def class_names(self):
        return self.train.class_names


def _subset(folder: ImageFolder, indices) -> ImageFolder:
    indices = sorted(int(i) for i in indices)
    return dataclasses.replace(
        folder,
        paths=tuple(folder.paths[i] for i in indices),
        labels=tuple(folder.labels[i] for i in indices),
        skipped=(),
    )


def split_folder(folder: ImageFolder, val_fraction: float, seed: int) -> Splits:
    """Splits each class by ``val_fraction``; the same seed gives the same split.

    Every class keeps at least one image on each side.

    Raises:
      DatasetError: when a class has fewer than two images.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(folder.labels)
    train_idx, val_idx = [], []
    for label, name in enumerate(folder.class_names):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            raise DatasetError(
                f"Class '{name}' has {len(members)} usable image(s); a train/validation split needs at least 2. "
                f"Add images or pass a separate --val folder."
            )
        members = rng.permutation(members)
        n_val = min(max(1, int(round(len(members) * val_fraction))), len(members) - 1)
        val_idx.extend(members[:n_val])
        train_idx.extend(members[n_val:])
    return Splits(_subset(folder, train_idx), _subset(folder, val_idx))


def class_weights(folder: ImageFolder, mode: str = "auto") -> Dict[int, float]:
    """Inverse-frequency class weights (mean 1), or {} when not wanted.

    Args:
      folder: training images.
      mode: 'on', 'off', or 'auto' (on when the largest class has >= 1.5x the
        images of the smallest).
    """
    counts = np.bincount(np.asarray(folder.labels), minlength=len(folder.class_names)).astype(np.float64)
    if mode == "off" or (mode == "auto" and counts.max() < 1.5 * counts.min()):
        return {}
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}
