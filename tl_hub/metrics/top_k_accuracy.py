"""Top-k accuracy: the reference class is among the k best-ranked classes (an `evaluate` module).

Predictions are, per example, class ids ranked by score, best first (at least k of them) — e.g.
`np.argsort(-logits, axis=1)[:, :k]`. Ranked ids instead of raw scores keep the evaluate/Arrow encoding
cheap: a 50,000 x 1,000 score matrix took 28 s to encode, its top-5 ids take milliseconds.
`tl_hub.metrics.top_k_ids(logits, k)` computes them.

Example:
    >>> import evaluate
    >>> from tl_hub.metrics import metric_path
    >>> topk = evaluate.load(metric_path("top_k_accuracy"), keep_in_memory=True)  # doctest: +SKIP
    >>> topk.compute(predictions=[[1, 2], [0, 1]], references=[2, 2], k=2)  # doctest: +SKIP
    {'top_2_accuracy': 0.5}
"""

from __future__ import annotations

import datasets
import evaluate

from tl_hub.metrics.scores import top_k_accuracy

_DESCRIPTION = "Fraction of examples whose reference class is among the k best-ranked classes."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): per example, class ids ranked best first (at least k of them).
    references (list of int): reference class ids.
    k (int): how many top classes count (default 5).
Returns:
    top_<k>_accuracy (float): in [0, 1].
"""


class TopKAccuracy(evaluate.Metric):
    """Top-k accuracy from ranked class ids."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, k=5):
        return top_k_accuracy(predictions, references, k=k)
