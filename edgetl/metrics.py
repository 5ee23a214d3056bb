"""Classification metrics from labels and predictions (numpy only): the one place accuracy is computed.

Training (``edgetl.train``), QAT (``edgetl.quant.qat``), the export's
verification (``edgetl.export.tflite``) and ``edgetl eval``
(``edgetl.evaluate``) all count through these functions, so "accuracy" means
the same number everywhere: the share of examples whose top-1 class is the
label.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


def top1_accuracy(predicted: Sequence[int], labels: Sequence[int]) -> float:
    """Share of examples whose predicted class is the label.

    Args:
      predicted: predicted class index per example.
      labels: true class index per example (same length).

    Returns:
      The accuracy in [0, 1]; NaN when there are no examples.
    """
    predicted = np.asarray(predicted)
    labels = np.asarray(labels)
    if predicted.shape != labels.shape:
        raise ValueError(f"{len(predicted)} predictions for {len(labels)} labels")
    return float(np.mean(predicted == labels)) if len(labels) else float("nan")


def top_k_accuracy(labels: Sequence[int], ranked: np.ndarray, k: int) -> float:
    """Share of examples whose label is among the first ``k`` classes of their ranking.

    Args:
      labels: true class index per example, shape ``(n,)``.
      ranked: class indices per example, best first, shape ``(n, >= k)``.
      k: how many ranked classes count.

    Returns:
      The accuracy in [0, 1]; 0.0 when there are no examples.
    """
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return 0.0
    ranked = np.asarray(ranked)[:, :k]
    return float(np.mean(np.any(ranked == labels[:, None], axis=1)))


def confusion_matrix(rows: Sequence[int], columns: Sequence[int], shape: Tuple[int, int]) -> np.ndarray:
    """Counts of (true row, predicted column) pairs, ``int64[shape]``."""
    matrix = np.zeros(shape, dtype=np.int64)
    if len(rows):
        np.add.at(matrix, (np.asarray(rows, np.int64), np.asarray(columns, np.int64)), 1)
    return matrix


def recall_precision(matrix: np.ndarray) -> List[Tuple[int, int, Optional[float], Optional[float]]]:
    """Per row of a confusion matrix: (examples, correct, recall, precision); None where undefined.

    Row ``i`` is class ``i`` and so is column ``i`` (extra columns, such as
    predictions outside the evaluated classes, count against precision only).
    """
    predicted = matrix.sum(axis=0)
    out = []
    for index in range(matrix.shape[0]):
        total = int(matrix[index].sum())
        correct = int(matrix[index, index])
        out.append((total, correct, correct / total if total else None,
                    correct / int(predicted[index]) if predicted[index] else None))
    return out


@dataclasses.dataclass(frozen=True)
class ClassificationMetrics:
    """Accuracy figures of one model on one labelled set.

    Attributes:
      accuracy: top-1 accuracy.
      top_k_accuracy: ``{k: accuracy}`` for the requested k values.
      per_class_accuracy: recall of each class, by name.
      confusion_matrix: rows = true class, columns = predicted class.
      count: number of examples.
    """

    accuracy: float
    top_k_accuracy: Dict[int, float]
    per_class_accuracy: Dict[str, float]
    confusion_matrix: List[List[int]]
    count: int


def classification_metrics(labels: Sequence[int], scores: np.ndarray, class_names: Sequence[str], top_k=(1,)) -> ClassificationMetrics:
    """Top-1/top-k accuracy, per-class accuracy and the confusion matrix.

    Args:
      labels: true class index per example.
      scores: ``(n, num_classes)`` scores or probabilities.
      class_names: names in output order.
      top_k: k values to report.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores)
    num_classes = len(class_names)
    predicted = scores.argmax(axis=1) if len(labels) else np.zeros(0, np.int64)
    matrix = confusion_matrix(labels, predicted, (num_classes, num_classes))
    per_class = {name: (recall if recall is not None else float("nan"))
                 for name, (_, _, recall, _) in zip(class_names, recall_precision(matrix))}
    ranked = np.argsort(-scores, axis=1) if len(labels) else np.zeros((0, num_classes), np.int64)
    top = {}
    for k in top_k:
        k = min(int(k), num_classes)
        top[int(k)] = top_k_accuracy(labels, ranked, k)
    accuracy = top1_accuracy(predicted, labels) if len(labels) else 0.0
    return ClassificationMetrics(accuracy, top, per_class, matrix.tolist(), int(len(labels)))


__all__ = ["ClassificationMetrics", "classification_metrics", "confusion_matrix", "recall_precision", "top1_accuracy",
           "top_k_accuracy"]
