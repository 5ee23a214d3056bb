"""PNG plots: training curves and confusion matrices (matplotlib, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from edgetl._atomic import atomic_path
from edgetl._optional import import_optional


def _pyplot():
    matplotlib = import_optional("matplotlib", "train", "Plotting")
    matplotlib.use("Agg")  # headless: CI and SSH sessions have no display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: Path) -> Path:
    """Writes the figure as a PNG atomically (a half-written plot never sits under the final name)."""
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
    return path


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
    return _save(plt, figure, path)


def _literal(text: str) -> str:
    """A class name as matplotlib text, shown as it is: '$' would otherwise start TeX math (and bad TeX raises)."""
    return str(text).replace("$", r"\$")


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str = "",
                          columns: Optional[Sequence[str]] = None) -> Path:
    """Confusion matrix heat map, rows = true class, columns = predicted class.

    ``columns`` names the predicted columns when they differ from the rows
    (``edgetl eval`` adds '(other)' for labels outside the folder's classes).
    """
    plt = _pyplot()
    columns = list(columns) if columns is not None else list(class_names)
    size = max(4.0, 0.6 * max(len(class_names), len(columns)) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(columns)), labels=[_literal(name) for name in columns], rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), labels=[_literal(name) for name in class_names])
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title or "confusion matrix")
    figure.colorbar(image, ax=axis, fraction=0.046)
    return _save(plt, figure, path)


def plot_accuracy_latency(points: Sequence[Tuple[str, float, float, int]], path: Path,
                          float_accuracy: Optional[float] = None, highlight: Optional[str] = None) -> Path:
    """Accuracy against p50 latency, one marker per exported file, marker area proportional to file size.

    Args:
      points: (variant, p50 ms, accuracy, size in bytes) per file.
      path: PNG to write.
      float_accuracy: the Keras float accuracy, drawn as a dashed line.
      highlight: the recommended variant, drawn in another colour.
    """
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    largest = max(size for *_, size in points)
    # Variants often tie on accuracy: stagger the labels so they stay readable.
    offsets = ((8, 8), (8, -16), (8, 22), (8, -30), (8, 36))
    for index, (variant, latency, accuracy, size) in enumerate(sorted(points, key=lambda p: p[1])):
        chosen = variant == highlight
        axis.scatter([latency], [accuracy * 100], s=60 + 600 * size / largest, alpha=0.6,
                     color="tab:orange" if chosen else "tab:blue", edgecolors="black", linewidths=1.5 if chosen else 0.5)
        axis.annotate(f"{variant} ({size / 1e6:.2f} MB)" + (" *" if chosen else ""), (latency, accuracy * 100),
                      textcoords="offset points", xytext=offsets[index % len(offsets)], fontsize=8)
    if float_accuracy is not None:
        axis.axhline(float_accuracy * 100, color="grey", linestyle="--", linewidth=0.8, label="Keras float")
        axis.legend(fontsize=8, loc="lower right")
    axis.set_xlabel("p50 latency (ms, this host)")
    axis.set_ylabel("validation top-1 (%)")
    axis.set_title("exported files: accuracy vs latency (marker area ~ size)")
    axis.grid(alpha=0.3)
    return _save(plt, figure, path)
