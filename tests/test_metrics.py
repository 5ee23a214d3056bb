"""Accuracy is computed in one place (edgetl.metrics), with the counts written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgetl.metrics import classification_metrics, confusion_matrix, recall_precision, top1_accuracy, top_k_accuracy


def test_top1_and_top_k_on_known_counts():
    assert top1_accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert math.isnan(top1_accuracy([], []))
    with pytest.raises(ValueError):
        top1_accuracy([0, 1], [0])
    ranked = np.array([[0, 1], [2, 1], [2, 0], [1, 2]])
    assert top_k_accuracy([0, 1, 1, 2], ranked, 1) == 0.25 and top_k_accuracy([0, 1, 1, 2], ranked, 2) == 0.75
    assert top_k_accuracy([], np.zeros((0, 2)), 1) == 0.0


def test_confusion_recall_precision_and_the_summary_agree():
    matrix = confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 2], (2, 3))  # column 2: a label outside the classes
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 1]]
    assert recall_precision(matrix) == [(2, 1, 0.5, 1.0), (3, 2, 2 / 3, 2 / 3)]
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    metrics = classification_metrics([0, 1, 1, 1], scores, ["a", "b"], top_k=(1, 2))
    assert metrics.accuracy == top1_accuracy(scores.argmax(1), [0, 1, 1, 1]) == 0.75
    assert metrics.top_k_accuracy == {1: 0.75, 2: 1.0} and metrics.per_class_accuracy == {"a": 1.0, "b": 2 / 3}
    assert metrics.confusion_matrix == [[1, 0], [1, 2]] and metrics.count == 4
