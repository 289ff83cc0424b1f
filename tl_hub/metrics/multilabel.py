"""Multi-label evaluation metrics (scikit-learn's arithmetic): mAP, micro/macro F1 at a threshold, per-label AP.

A multi-label model scores each label on its own (a sigmoid of its logit); a label is predicted when its
probability is at least ``threshold``. Metrics:

- ``map``: macro average precision -- the mean over labels of `sklearn.metrics.average_precision_score`
  of the label's probabilities (threshold-free), over the labels with at least one positive eval image
  (AP is undefined without positives);
- ``f1_micro``, ``f1_macro``, ``precision_macro``, ``recall_macro``, ``precision_micro``, ``recall_micro``:
  `sklearn.metrics.precision_recall_fscore_support` of the thresholded predictions (zero divisions count 0);
- ``accuracy``: exact-match (subset) accuracy: the share of images whose predicted label set is exactly
  their true set;
- ``per_label``: {name: {"ap", "precision", "recall", "f1", "support"}}.

Example:
    >>> import numpy as np
    >>> logits = np.array([[3.0, -3.0, 2.0], [-2.0, 4.0, -1.0]])
    >>> r = compute_multilabel_metrics(logits, np.array([[1, 0, 1], [0, 1, 0]]), ["a", "b", "c"])
    >>> r["map"], r["f1_micro"], r["accuracy"]
    (1.0, 1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tl_hub.errors import DataError

__all__ = ["MULTI_LABEL_KEYS", "compute_multilabel_metrics", "sigmoid"]

#: the scalar keys `compute_multilabel_metrics` reports
MULTI_LABEL_KEYS = ("map", "f1_micro", "f1_macro", "precision_micro", "recall_micro", "precision_macro",
                    "recall_macro", "accuracy")


def sigmoid(logits: Any) -> np.ndarray:
    """The logistic function, float64 and overflow-free.

    Example:
        >>> sigmoid(np.array([0.0, 1000.0, -1000.0])).tolist()
        [0.5, 1.0, 0.0]
    """
    x = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def compute_multilabel_metrics(logits: Any, references: Any, label_names: Sequence[str],
                               threshold: float = 0.5) -> dict[str, Any]:
    """All multi-label metrics from logits ``[N, K]`` and multi-hot references ``[N, K]``.

    Example:
        >>> r = compute_multilabel_metrics(np.zeros((2, 2)), np.array([[1, 0], [1, 1]]), ["a", "b"], threshold=0.6)
        >>> r["f1_micro"], r["per_label"]["a"]["support"]
        (0.0, 2)
    """
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    names = [str(n) for n in label_names]
    scores = sigmoid(logits)
    truth = np.asarray(references).astype(np.int64)
    if scores.ndim != 2 or truth.shape != scores.shape or scores.shape[1] != len(names):
        raise DataError(
            f"multi-label metrics: logits {tuple(scores.shape)} and references {tuple(truth.shape)} must both be "
            f"[N, {len(names)}] (one column per label)"
        )
    if scores.shape[0] == 0:
        raise DataError("references: got 0 examples; there is nothing to evaluate (is the eval split empty?)")
    predicted = (scores >= threshold).astype(np.int64)
    aps = [float(average_precision_score(truth[:, k], scores[:, k])) if truth[:, k].any() else None
           for k in range(len(names))]
    defined = [a for a in aps if a is not None]
    result: dict[str, Any] = {"map": float(np.mean(defined)) if defined else float("nan")}
    for average in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(truth, predicted, average=average, zero_division=0)
        result.update({f"f1_{average}": float(f), f"precision_{average}": float(p), f"recall_{average}": float(r)})
    result["accuracy"] = float((predicted == truth).all(axis=1).mean())
    p, r, f, support = precision_recall_fscore_support(truth, predicted, average=None, zero_division=0,
                                                       labels=list(range(len(names))))
    result["per_label"] = {name: {"ap": aps[k], "precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                                  "support": int(support[k])} for k, name in enumerate(names)}
    return result
