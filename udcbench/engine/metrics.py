"""Classification metrics: accuracy, mean class accuracy, macro-F1, confusion matrix; a run's chance level."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    correct = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, correct / support, np.nan)
        precision = np.where(predicted > 0, correct / predicted, 0.0)
        f1 = np.where(precision + np.nan_to_num(recall) > 0,
                      2 * precision * np.nan_to_num(recall) / (precision + np.nan_to_num(recall)), 0.0)
    present = support > 0
    return {
        "accuracy": float(correct.sum() / max(len(labels), 1)),
        "mean_class_accuracy": float(np.nanmean(recall[present])) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_accuracy": [None if np.isnan(r) else float(r) for r in recall],
        "confusion": confusion.tolist(),
        "count": int(len(labels)),
    }


def chance_accuracy(record: dict[str, Any]) -> float | None:
    """Chance level of a run's test (percent): the better of a uniform guess over its classes and always
    answering the largest class (from its confusion matrix)."""
    test = record.get("test_at_best") or {}
    confusion = test.get("confusion")
    classes = record.get("classes") or []
    levels = [100 / len(classes)] if classes else []
    if confusion:
        totals = [sum(row) for row in confusion]
        if sum(totals):
            levels.append(100 * max(totals) / sum(totals))
    return max(levels) if levels else None
