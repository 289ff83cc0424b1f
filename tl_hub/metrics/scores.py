"""The arithmetic of tl_hub's shipped metrics: plain numpy functions over integer class ids.

Each shipped `evaluate` module next to this file (`accuracy.py`, `precision_recall_f1.py`,
`top_k_accuracy.py`, `confusion_matrix.py`) computes its result by calling the function of the same
name here, and `tl_hub.metrics.compute_metrics` calls these functions directly: one piece of code, the
same numbers either way. A run's per-epoch evaluation so needs neither `evaluate`'s import nor its
per-call Arrow encoding of the predictions; `evaluate` is loaded only for metrics that are not shipped.

Example:
    >>> accuracy([0, 1, 1], [0, 1, 0])
    {'accuracy': 0.6666666666666666}
    >>> confusion_matrix([0, 1, 1], [0, 1, 0], num_labels=2)
    {'confusion_matrix': [[1, 1], [0, 1]]}
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["accuracy", "confusion_matrix", "precision_recall_f1", "top_k_accuracy"]


def accuracy(predictions: Any, references: Any, sample_weight: Any = None) -> dict[str, float]:
    """Fraction of examples whose predicted class id equals the reference (optionally weighted).

    Example:
        >>> accuracy([1, 0, 1], [1, 1, 1], sample_weight=[1.0, 2.0, 1.0])
        {'accuracy': 0.5}
    """
    predictions = np.asarray(predictions, dtype=np.int64)
    references = np.asarray(references, dtype=np.int64)
    hits = (predictions == references).astype(np.float64)
    weights = np.ones_like(hits) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return {"accuracy": float((hits * weights).sum() / weights.sum())}


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def precision_recall_f1(predictions: Any, references: Any, labels: Any = None) -> dict[str, Any]:
    """Per-label and macro precision, recall and F1 (zero division -> 0). Macro averages run over `labels`
    when given, else over the class ids present in the references or the predictions (scikit-learn's
    default).

    Example:
        >>> r = precision_recall_f1([0, 1, 1], [0, 1, 0], labels=[0, 1])
        >>> round(r["f1_macro"], 4), r["per_label"][0]
        (0.6667, {'precision': 1.0, 'recall': 0.5, 'f1': 0.6666666666666666, 'support': 2})
    """
    predictions = np.asarray(predictions, dtype=np.int64)
    references = np.asarray(references, dtype=np.int64)
    if labels is None:
        labels = np.union1d(np.unique(predictions), np.unique(references))
    labels = np.asarray(labels, dtype=np.int64)
    # per requested label: true positives, predicted count, reference count
    size = int(max(labels.max(initial=-1), predictions.max(initial=-1), references.max(initial=-1))) + 1
    if labels.size and labels.min() < 0:
        raise ValueError(f"precision_recall_f1: labels must be class ids >= 0, got {labels.tolist()}")
    tp = np.bincount(references[predictions == references], minlength=size)[labels].astype(np.float64)
    predicted = np.bincount(predictions, minlength=size)[labels].astype(np.float64)
    support = np.bincount(references, minlength=size)[labels].astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    per_label = {
        int(c): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for c, p, r, f, s in zip(labels, precision, recall, f1, support)
    }
    return {
        "precision_macro": float(precision.mean()) if len(labels) else 0.0,
        "recall_macro": float(recall.mean()) if len(labels) else 0.0,
        "f1_macro": float(f1.mean()) if len(labels) else 0.0,
        "per_label": per_label,
    }


def top_k_accuracy(predictions: Any, references: Any, k: int = 5) -> dict[str, float]:
    """Fraction of examples whose reference is among the first `k` of its ranked class ids (`predictions`:
    per example, class ids best first, at least k of them).

    Example:
        >>> top_k_accuracy([[1, 2], [0, 1]], [2, 2], k=2)
        {'top_2_accuracy': 0.5}
    """
    k = int(k)
    references = np.asarray(references, dtype=np.int64)
    if len(references) == 0:
        return {f"top_{k}_accuracy": 0.0}
    ranked = np.asarray(predictions, dtype=np.int64)
    if ranked.ndim != 2 or ranked.shape[0] != references.shape[0] or ranked.shape[1] < k:
        raise ValueError(
            f"top_k_accuracy: predictions must be [n_examples, >= {k}] ranked class ids, got shape "
            f"{ranked.shape} for {references.shape[0]} references"
        )
    hits = (ranked[:, :k] == references[:, None]).any(axis=1)
    return {f"top_{k}_accuracy": float(hits.mean())}


def confusion_matrix(predictions: Any, references: Any, num_labels: int | None = None) -> dict[str, list[list[int]]]:
    """Counts of (reference, prediction) pairs: entry [i][j] counts references i predicted as j; the size is
    `num_labels` (default: 1 + the largest id seen).

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 1, 0], num_labels=3)
        {'confusion_matrix': [[1, 1, 0], [0, 1, 0], [0, 0, 0]]}
    """
    predictions = np.asarray(predictions, dtype=np.int64)
    references = np.asarray(references, dtype=np.int64)
    if num_labels is None:
        num_labels = int(max(predictions.max(initial=-1), references.max(initial=-1))) + 1
    num_labels = int(num_labels)
    ids = np.concatenate([predictions, references]) if len(predictions) else np.zeros(0, dtype=np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= num_labels):
        raise ValueError(f"confusion_matrix: class ids must be in [0, {num_labels}), got {ids.min()}..{ids.max()}")
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (references, predictions), 1)
    return {"confusion_matrix": matrix.tolist()}
