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

from tl_hub.metrics.scores import precision_recall_f1

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
        return precision_recall_f1(predictions, references, labels=labels)
