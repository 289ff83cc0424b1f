"""Confusion matrix: row = reference class, column = predicted class (an `evaluate` module).

Example:
    >>> import evaluate
    >>> from tl_hub.metrics import metric_path
    >>> cm = evaluate.load(metric_path("confusion_matrix"), keep_in_memory=True)  # doctest: +SKIP
    >>> cm.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_labels=2)  # doctest: +SKIP
    {'confusion_matrix': [[1, 1], [0, 1]]}
"""

from __future__ import annotations

import datasets
import evaluate

from tl_hub.metrics.scores import confusion_matrix

_DESCRIPTION = "Counts of (reference class, predicted class) pairs as a num_labels x num_labels matrix."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids in [0, num_labels).
    references (list of int): reference class ids in [0, num_labels).
    num_labels (int, optional): matrix size (default: 1 + the largest id seen).
Returns:
    confusion_matrix (list of list of int): entry [i][j] counts references i predicted as j.
"""


class ConfusionMatrix(evaluate.Metric):
    """Confusion matrix over class ids 0..num_labels-1 (rows: reference, columns: prediction)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, num_labels=None):
        return confusion_matrix(predictions, references, num_labels=num_labels)
