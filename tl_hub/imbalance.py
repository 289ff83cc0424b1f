"""Class imbalance: how uneven the training labels are, and what a run does about it.

Two recipe keys act on it:

- `class_weights`: `none` (every image counts the same), `auto` (inverse-frequency weights, on only when the
  largest label has more than `IMBALANCE_RATIO_THRESHOLD` times the images of the smallest), or a mapping
  `{label: weight}` (labels not named keep weight 1). The weights go into the loss (`tl_hub.loss.LossSpec`).
- `sampler`: `random` (a seeded permutation per epoch) or `balanced` (every label drawn equally often, with
  replacement; `tl_hub.seeding.BalancedEpochSampler`). Both keep the epoch length.

`plan_imbalance` turns the two keys and the training label counts into an `ImbalancePlan`: the weights the
loss uses and a sentence for the console, run_info.json and the model card.

Example:
    >>> plan = plan_imbalance("auto", "random", ["cat", "dog"], [400, 40])
    >>> plan.ratio, plan.class_weights
    (10.0, {'cat': 0.55, 'dog': 5.5})
    >>> plan_imbalance("auto", "random", ["cat", "dog"], [50, 40]).class_weights is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tl_hub.errors import ConfigError

__all__ = ["CLASS_WEIGHT_CHOICES", "IMBALANCE_RATIO_THRESHOLD", "SAMPLERS", "ImbalancePlan", "check_class_weights",
           "imbalance_ratio", "inverse_frequency_weights", "plan_imbalance"]

#: `class_weights: auto` turns the weights on when the largest label count exceeds this many times the smallest.
#: 3 is a common rule of thumb for "moderately imbalanced"; below it the plain loss loses little (the benchmark
#: in the README, "Imbalanced data", measured a 20:1 split).
IMBALANCE_RATIO_THRESHOLD = 3.0
CLASS_WEIGHT_CHOICES = ("auto", "none")
SAMPLERS = ("random", "balanced")


def imbalance_ratio(counts: Sequence[int]) -> float:
    """The largest label count over the smallest (1.0 for balanced data; inf when a label has none).

    Example:
        >>> imbalance_ratio([1000, 50, 1000])
        20.0
    """
    if not counts:
        return 1.0
    low, high = min(counts), max(counts)
    return math.inf if low <= 0 else high / low


def inverse_frequency_weights(counts: Sequence[int]) -> list[float]:
    """Weight of each label `n_total / (n_labels * n_label)`: rare labels weigh more, and the weights average
    1 over the training images, so the loss keeps its scale (scikit-learn's `compute_class_weight("balanced")`
    formula, written out because scikit-learn is not a dependency of tl_hub; the tests compare the two).

    Example:
        >>> inverse_frequency_weights([300, 100])
        [0.6667, 2.0]
    """
    if any(int(n) <= 0 for n in counts):
        raise ConfigError(f"class_weights: auto needs at least one training image per label; got counts {list(counts)}")
    total, k = sum(int(n) for n in counts), len(counts)
    return [round(total / (k * int(n)), 4) for n in counts]


def check_class_weights(value: Any, labels: Sequence[str] | None = None) -> None:
    """Raise ConfigError unless `value` is "auto", "none" or a mapping of label -> positive finite weight (with
    `labels` given, every key must be one of them).

    Example:
        >>> check_class_weights({"cat": 2.0}, ["cat", "dog"])
        >>> check_class_weights({"cta": 2.0}, ["cat", "dog"])
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: class_weights: label 'cta' is not a label of this dataset; its labels are: cat, dog. Name labels exactly as the data report lists them
    """
    if isinstance(value, str):
        if value not in CLASS_WEIGHT_CHOICES:
            raise ConfigError(f"class_weights: got {value!r}; choose auto, none, or a mapping {{label: weight}} "
                              "(e.g. {cat: 2.0, dog: 1.0})")
        return
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"class_weights: got {value!r}; choose auto, none, or a non-empty mapping {{label: weight}}")
    for label, weight in value.items():
        number = _number(weight)
        if number is None or not math.isfinite(number) or number <= 0:
            raise ConfigError(f"class_weights: label {label!r} has weight {weight!r}; a weight must be a positive "
                              "finite number (1 = as usual, 2 = each image counts twice). Remove the label to keep 1")
        if labels is not None and str(label) not in labels:
            raise ConfigError(f"class_weights: label {label!r} is not a label of this dataset; its labels are: "
                              f"{', '.join(labels)}. Name labels exactly as the data report lists them")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ImbalancePlan:
    """The label counts of the training split and what the run does about their imbalance.

    Example:
        >>> plan = plan_imbalance("none", "balanced", ["a", "b"], [90, 10])
        >>> plan.loss_weights, plan.sampler
        (None, 'balanced')
    """

    counts: dict[str, int]
    ratio: float
    threshold: float
    requested: str  # "auto", "none" or "mapping"
    class_weights: dict[str, float] | None  # the loss's weight per label, or None (unweighted)
    sampler: str
    reason: str

    @property
    def loss_weights(self) -> tuple[float, ...] | None:
        """The weights in label-id order, as `LossSpec.class_weights` takes them."""
        return None if self.class_weights is None else tuple(self.class_weights.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (run_info.json's "imbalance")."""
        out = asdict(self)
        out["ratio"] = None if math.isinf(self.ratio) else round(self.ratio, 2)
        return out


def plan_imbalance(class_weights: Any, sampler: str, labels: Sequence[str], counts: Sequence[int], *,
                   multi_label: bool = False) -> ImbalancePlan:
    """What a run does about the imbalance of its training labels (`counts`, in label-id order), with a reason.

    Example:
        >>> print(plan_imbalance("auto", "random", ["a", "b"], [100, 90]).reason)
        largest/smallest label ratio 1.1 (a: 100, b: 90), not above 3: class_weights auto left the loss unweighted; sampler random.
    """
    check_class_weights(class_weights, list(labels))
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler: got {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if len(counts) != len(labels):
        raise ConfigError(f"class_weights: {len(counts)} label counts for {len(labels)} labels")
    if multi_label and class_weights != "none":
        raise ConfigError(f"class_weights: got {class_weights!r} in a multi-label run; per-label weights of a "
                          "single-label loss do not apply there. Set class_weights: none")
    by_label = {str(name): int(n) for name, n in zip(labels, counts)}
    ratio = imbalance_ratio(list(by_label.values()))
    largest, smallest = max(by_label, key=by_label.get), min(by_label, key=by_label.get)
    shape = (f"largest/smallest label ratio {ratio:.1f} ({largest}: {by_label[largest]:,}, "
             f"{smallest}: {by_label[smallest]:,})" if by_label[largest] != by_label[smallest] else
             f"largest/smallest label ratio 1.0 (every label: {by_label[largest]:,})")
    weights: dict[str, float] | None = None
    if isinstance(class_weights, Mapping):
        weights = {name: float(class_weights.get(name, 1.0)) for name in by_label}
        action, requested = "class_weights set in the recipe (labels not named keep 1)", "mapping"
    elif class_weights == "auto" and ratio > IMBALANCE_RATIO_THRESHOLD:
        weights = dict(zip(by_label, inverse_frequency_weights(list(by_label.values()))))
        action, requested = (f"above {IMBALANCE_RATIO_THRESHOLD:g}: class_weights auto weighted the loss by inverse "
                             f"label frequency ({smallest} {weights[smallest]:g}, {largest} {weights[largest]:g})"), "auto"
    elif class_weights == "auto":
        action, requested = f"not above {IMBALANCE_RATIO_THRESHOLD:g}: class_weights auto left the loss unweighted", "auto"
    else:
        action, requested = "class_weights none (unweighted loss)", "none"
    reason = f"{shape}, {action}; sampler {sampler}"
    if sampler == "balanced":
        reason += " (each label drawn equally often, with replacement)"
    return ImbalancePlan(by_label, ratio, IMBALANCE_RATIO_THRESHOLD, requested, weights, sampler, reason + ".")
