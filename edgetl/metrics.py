"""Classification metrics from labels and scores (numpy only)."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import numpy as np


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
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    per_class = {}
    for index, name in enumerate(class_names):
        total = matrix[index].sum()
        per_class[name] = float(matrix[index, index] / total) if total else float("nan")
    ranked = np.argsort(-scores, axis=1) if len(labels) else np.zeros((0, num_classes), np.int64)
    top = {}
    for k in top_k:
        k = min(int(k), num_classes)
        top[int(k)] = float(np.mean([labels[i] in ranked[i, :k] for i in range(len(labels))])) if len(labels) else 0.0
    accuracy = float(np.mean(predicted == labels)) if len(labels) else 0.0
    return ClassificationMetrics(accuracy, top, per_class, matrix.tolist(), int(len(labels)))
