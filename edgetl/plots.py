"""PNG plots: training curves and confusion matrices (matplotlib, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from edgetl._atomic import atomic_path
from edgetl._optional import import_optional


def _pyplot():
    matplotlib = import_optional("matplotlib", "train", "Plotting")
    matplotlib.use("Agg")  # headless: CI and SSH sessions have no display
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(stages: Dict[str, Dict[str, List[float]]], path: Path) -> Path:
    """Loss and accuracy per epoch, stages side by side on one epoch axis.

    Args:
      stages: ``{stage name: keras History.history}`` in training order.
      path: PNG to write.
    """
    plt = _pyplot()
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 4))
    start = 0
    for stage, history in stages.items():
        epochs = len(history.get("loss", []))
        if not epochs:
            continue
        xs = list(range(start + 1, start + epochs + 1))
        for key, axis in (("loss", loss_axis), ("accuracy", acc_axis)):
            if key in history:
                axis.plot(xs, history[key], marker="o", label=f"{stage} train")
            if f"val_{key}" in history:
                axis.plot(xs, history[f"val_{key}"], marker="s", linestyle="--", label=f"{stage} val")
        start += epochs
        loss_axis.axvline(start + 0.5, color="grey", linewidth=0.5)
    for axis, title in ((loss_axis, "loss"), (acc_axis, "accuracy")):
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
    return path


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Confusion matrix heat map, rows = true class, columns = predicted class."""
    plt = _pyplot()
    size = max(4.0, 0.6 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(class_names)), labels=class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), labels=class_names)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title or "confusion matrix")
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
    return path
