"""Accuracy: the fraction of predictions equal to the reference label (an `evaluate` module).

Shipped inside tl_hub so it loads offline; `evaluate.load("accuracy")` would fetch code from the Hub.

Example:
    >>> import evaluate
    >>> from tl_hub.metrics import metric_path
    >>> metric = evaluate.load(metric_path("accuracy"), keep_in_memory=True)  # doctest: +SKIP
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])  # doctest: +SKIP
    {'accuracy': 0.6666666666666666}
"""

from __future__ import annotations

import datasets
import evaluate

from tl_hub.metrics.scores import accuracy

_DESCRIPTION = "Fraction of examples whose predicted class id equals the reference class id."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): reference class ids.
    sample_weight (list of float, optional): per-example weights.
Returns:
    accuracy (float): in [0, 1].
"""


class Accuracy(evaluate.Metric):
    """Top-1 accuracy over integer class ids."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, sample_weight=None):
        return accuracy(predictions, references, sample_weight=sample_weight)
