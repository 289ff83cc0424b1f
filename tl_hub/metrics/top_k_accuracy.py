"""Top-k accuracy: the reference class is among the k highest scores (an `evaluate` module).

Predictions are per-class scores (logits or probabilities), one list per example. A reference whose
score ties with the k-th highest counts as a hit.

Example:
    >>> import evaluate
    >>> from tl_hub.metrics import metric_path
    >>> topk = evaluate.load(metric_path("top_k_accuracy"), keep_in_memory=True)  # doctest: +SKIP
    >>> topk.compute(predictions=[[0.1, 0.5, 0.4], [0.8, 0.15, 0.05]], references=[2, 2], k=2)  # doctest: +SKIP
    {'top_2_accuracy': 0.5}
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Fraction of examples whose reference class is among the k highest-scored classes."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): per-class scores, shape [n_examples, n_classes].
    references (list of int): reference class ids.
    k (int): how many top classes count (default 5).
Returns:
    top_<k>_accuracy (float): in [0, 1].
"""


class TopKAccuracy(evaluate.Metric):
    """Top-k accuracy from per-class scores."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, k=5):
        scores = np.asarray(predictions, dtype=np.float64)
        references = np.asarray(references, dtype=np.int64)
        if scores.ndim != 2 or scores.shape[0] != references.shape[0]:
            raise ValueError(
                f"top_k_accuracy: predictions must be [n_examples, n_classes] scores, got shape {scores.shape} "
                f"for {references.shape[0]} references"
            )
        true_scores = scores[np.arange(len(references)), references]
        # rank = how many classes score strictly higher than the reference class
        rank = (scores > true_scores[:, None]).sum(axis=1)
        return {f"top_{int(k)}_accuracy": float(np.mean(rank < int(k))) if len(references) else 0.0}
