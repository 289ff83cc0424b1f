"""Precision, recall and F1 per label and macro-averaged, in one pass (an `evaluate` module).

One module instead of three because `evaluate.combine` forwards keyword arguments such as
`average="macro"` to every metric. Divisions by zero give 0 (scikit-learn's `zero_division=0`).

Macro averages run over `labels` when given, else over the class ids that occur in the references or
the predictions (scikit-learn's default, and what the Hub's `f1`/`precision`/`recall` metrics report).

Example:
    >>> import evaluate
    >>> from tl_hub.metrics import metric_path
    >>> prf = evaluate.load(metric_path("precision_recall_f1"), keep_in_memory=True)  # doctest: +SKIP
    >>> prf.compute(predictions=[0, 1, 1], references=[0, 1, 0], labels=[0, 1])["f1_macro"]  # doctest: +SKIP
    0.6666666666666666
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Per-label and macro-averaged precision, recall and F1 for single-label classification."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): reference class ids.
    labels (list of int, optional): class ids to report and to macro-average over
        (default: the ids present in references or predictions).
Returns:
    precision_macro, recall_macro, f1_macro (float),
    per_label (dict): {class id: {"precision", "recall", "f1", "support"}} for every id in labels.
"""


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


class PrecisionRecallF1(evaluate.Metric):
    """Per-label and macro precision/recall/F1 (zero division -> 0)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, labels=None):
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
            int(c): {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for c, p, r, f, s in zip(labels, precision, recall, f1, support)
        }
        return {
            "precision_macro": float(precision.mean()) if len(labels) else 0.0,
            "recall_macro": float(recall.mean()) if len(labels) else 0.0,
            "f1_macro": float(f1.mean()) if len(labels) else 0.0,
            "per_label": per_label,
        }
