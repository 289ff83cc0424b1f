"""Freeze policies: which depths of a pretrained backbone train, chosen from the size of the dataset.

Policies:
- `head`    backbone frozen, only the new head trains (small data);
- `partial` stem and shallow blocks frozen, the deepest `train_fraction` of the blocks + neck + head train;
- `full`    everything trains, starting from the pretrained weights;
- `scratch` everything trains from a random init (load the backbone with `pretrained=False`);
- `lp-ft`   linear probing then fine-tuning (Kumar et al., 2022): the head trains alone for
            `head_epochs_fraction` of the epochs (phase "head"), then everything trains (phase "full").

This module decides: the list of policies, the rules of their knobs, `choose_policy` (from the data
size, with a reason in words), and what a run uses (`resolve_policy`, `peak_learning_rate`,
`plan_phases`, `uses_feature_cache`). `tl_hub.freezing` applies a policy to a model.

Example:
    >>> policy = choose_policy(num_examples=20_000, num_labels=10)
    >>> policy.name, [p.name for p in plan_phases(policy, epochs=3)]
    ('partial', ['partial'])
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tl_hub.errors import ConfigError
from tl_hub.validation import check_range

#: a concrete freeze policy
PolicyName = Literal["head", "partial", "full", "scratch", "lp-ft"]
#: what a recipe may ask for: a concrete policy, or `auto` (chosen from the data size by `choose_policy`)
RecipePolicy = Literal["auto", PolicyName]
POLICIES: tuple[str, ...] = typing.get_args(PolicyName)
AUTO = "auto"
_ALIASES = {"lp_ft": "lp-ft", "lpft": "lp-ft", "linear-probe": "head", "frozen": "head", "finetune": "full"}

#: default share of the block depths that train under `partial` (Lite0: 5 of 16 = its last 2 stages)
DEFAULT_TRAIN_FRACTION = 0.3
#: default share of the epochs that train only the head under `lp-ft`
DEFAULT_HEAD_EPOCHS_FRACTION = 0.5
#: default peak AdamW learning rates: only the head (or everything from random) trains / pretrained layers train
HEAD_LEARNING_RATE = 1e-3
BACKBONE_LEARNING_RATE = 1e-4

# Thresholds of choose_policy, in images per label, from the policy-quality measurements on Fashion-MNIST
# with the ImageNet EfficientNet-Lite0 (README, "Benchmarks"): a frozen backbone won at 100 per label,
# re-training the deepest layers at 1,000 per label; the switch sits at the geometric middle of the two.
HEAD_MAX_PER_LABEL = 300
PARTIAL_MEASURED_PER_LABEL = 1000
# Full fine-tuning only with plenty of data per label and in total: common practice, not measured here.
FULL_MIN_PER_LABEL = 5000
FULL_MIN_TOTAL = 50_000
# With uneven labels the rule reads the smallest labels, not the mean: it uses the count of the label at the
# 10th percentile of the label counts (numpy's "lower" method: with 10 labels or fewer, the smallest label;
# with 100, the 10th smallest) when that is below the mean. The rarest labels are where re-training layers
# overfits first; taking a percentile rather than the minimum keeps one stray label from deciding alone.
SMALL_LABELS_PERCENTILE = 10


# ---------------------------------------------------------------------------------------------------
# The rules of the policy knobs (shared by RecipeConfig and FreezePolicy)
# ---------------------------------------------------------------------------------------------------


def check_policy_knobs(policy: str, train_fraction: float | None, head_epochs_fraction: float | None) -> None:
    """Raise ConfigError when a knob is out of range or set for a policy it does not apply to.

    `train_fraction` (0, 1] applies to `partial`, `head_epochs_fraction` (0, 1) to `lp-ft`; both are
    accepted with `auto`, which uses them if it picks that policy.

    Example:
        >>> check_policy_knobs("head", 0.5, None)
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: train_fraction: got 0.5 with policy 'head'; it applies to policy 'partial' only (or auto). Remove it or set policy: partial
    """
    check_range("train_fraction", train_fraction, low=0, high=1, low_open=True, hint="e.g. 0.3")
    check_range("head_epochs_fraction", head_epochs_fraction, low=0, high=1, low_open=True, high_open=True,
                hint="e.g. 0.5")
    for key, value, owner in (("train_fraction", train_fraction, "partial"),
                              ("head_epochs_fraction", head_epochs_fraction, "lp-ft")):
        if value is not None and policy not in (AUTO, owner):
            raise ConfigError(
                f"{key}: got {value} with policy {policy!r}; it applies to policy {owner!r} only (or auto). "
                f"Remove it or set policy: {owner}"
            )


def uses_feature_cache(policy: str, feature_cache: str) -> bool:
    """Whether the head trains on features computed once: under `head`, and in lp-ft's head phase (the
    backbone does not change while only the head trains).

    `feature_cache` is "auto" (then for those two), "on" or "off". "on" with a policy that trains backbone
    layers from the start is refused; with `auto` the rule is applied again to the policy it resolves to.

    Example:
        >>> uses_feature_cache("head", "auto"), uses_feature_cache("lp-ft", "auto"), uses_feature_cache("partial", "auto")
        (True, True, False)
    """
    if feature_cache == "on" and policy not in ("head", "lp-ft", AUTO):
        raise ConfigError(
            f"feature_cache: 'on' with policy {policy!r}; cached features need a frozen backbone (policy head, "
            "lp-ft's head phase, or auto when it picks head). Use feature_cache: auto or off"
        )
    return policy in ("head", "lp-ft") and feature_cache != "off"


# ---------------------------------------------------------------------------------------------------
# FreezePolicy
# ---------------------------------------------------------------------------------------------------


@dataclass
class FreezePolicy:
    """A freeze policy by name, with its knobs and a plain-words reason.

    Args:
        name: one of "head", "partial", "full", "scratch", "lp-ft".
        train_fraction: `partial` only: share (0, 1] of the block depths that train, deepest first
            (default 0.3; the neck and head always train).
        head_epochs_fraction: `lp-ft` only: share (0, 1) of the epochs that train only the head (default 0.5).
        reason: why this policy was chosen.

    Example:
        >>> FreezePolicy("partial", train_fraction=0.5).to_dict()["train_fraction"]
        0.5
        >>> FreezePolicy.from_dict(FreezePolicy("lp-ft").to_dict()).head_epochs_fraction
        0.5
    """

    name: str
    train_fraction: float | None = field(default=None, kw_only=True)
    head_epochs_fraction: float | None = field(default=None, kw_only=True)
    reason: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        raw = self.name
        name = str(raw).strip().lower() if isinstance(raw, str) else raw
        name = _ALIASES.get(name, name)
        if name not in POLICIES:
            raise ConfigError(f"policy: got {raw!r}; choose one of {', '.join(POLICIES)} (or 'auto' in a recipe)")
        self.name = name
        check_policy_knobs(name, self.train_fraction, self.head_epochs_fraction)
        if name == "partial":
            self.train_fraction = float(DEFAULT_TRAIN_FRACTION if self.train_fraction is None else self.train_fraction)
        if name == "lp-ft":
            self.head_epochs_fraction = float(
                DEFAULT_HEAD_EPOCHS_FRACTION if self.head_epochs_fraction is None else self.head_epochs_fraction
            )

    @property
    def pretrained(self) -> bool:
        """False only for `scratch` (load the backbone with random weights)."""
        return self.name != "scratch"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (inverse of `from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FreezePolicy:
        """Rebuild from `to_dict()` output; unknown keys raise ConfigError."""
        known = {"name", "train_fraction", "head_epochs_fraction", "reason"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"policy: unknown keys {unknown}; valid keys are {sorted(known)}")
        if "name" not in data:
            raise ConfigError(f"policy: {data!r} has no 'name'; expected one of {', '.join(POLICIES)}")
        return cls(
            data["name"],
            train_fraction=data.get("train_fraction"),
            head_epochs_fraction=data.get("head_epochs_fraction"),
            reason=data.get("reason", "") or "",
        )


# ---------------------------------------------------------------------------------------------------
# choose_policy
# ---------------------------------------------------------------------------------------------------


def _partial_fraction(per_label: float) -> float:
    """0.3 (= Lite0's last 2 stages, the measured setting) up to 1,000/label, rising log-linearly to 0.6
    at 5,000/label: more data supports re-training more layers."""
    if per_label <= PARTIAL_MEASURED_PER_LABEL:
        return DEFAULT_TRAIN_FRACTION
    t = math.log(per_label / PARTIAL_MEASURED_PER_LABEL) / math.log(FULL_MIN_PER_LABEL / PARTIAL_MEASURED_PER_LABEL)
    return round(DEFAULT_TRAIN_FRACTION + min(1.0, t) * 0.3, 2)


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def small_label_count(label_counts: Any) -> int:
    """The training images of the label at the `SMALL_LABELS_PERCENTILE` (10th) percentile of the label
    counts (numpy's "lower" method: an actual label's count).

    Example:
        >>> small_label_count([1000] * 5 + [50] * 5), small_label_count(list(range(1, 101)))
        (50, 10)
    """
    import numpy as np

    return int(np.percentile(np.asarray(list(label_counts)), SMALL_LABELS_PERCENTILE, method="lower"))


def _per_label_basis(num_examples: int, num_labels: int, label_counts: Any) -> tuple[float, str]:
    """(the images per label the rule decides on, the sentence that says so)."""
    mean = num_examples / num_labels
    size = f"{_fmt(num_examples)} training images for {num_labels} labels is about {_fmt(mean)} per label."
    if label_counts is None or len(label_counts) == 0:
        return mean, size
    small = small_label_count(label_counts)
    if small >= mean:
        return mean, size
    return small, (
        f"{size} The labels are uneven (smallest {_fmt(min(label_counts))}, largest {_fmt(max(label_counts))}), so "
        f"tl_hub decides on its smaller labels: the {SMALL_LABELS_PERCENTILE}th-percentile label has {_fmt(small)} "
        f"images, and the rules below read that count, not the mean (the rarest labels overfit first)."
    )


def choose_policy(num_examples: int, num_labels: int, *, num_depths: int | None = None,
                  label_counts: Any = None) -> FreezePolicy:
    """Pick a freeze policy from the dataset size (images per label and in total), with a reason.

    "Images per label" is the mean, or, with `label_counts` given and uneven, the count of the label at the
    10th percentile of the counts when that is smaller (`small_label_count`):

    - fewer than 300 images per label: `head` (frozen backbone);
    - from 300 per label: `partial` (deepest 30% of the blocks; more of them above 1,000 per label);
    - at least 5,000 per label and 50,000 in total: `full`.

    Args:
        num_examples: number of training images.
        num_labels: number of labels.
        num_depths: number of depths of the model (`max(depth_map(model).values()) + 1`), to say in the
            reason how many depths `partial` trains.
        label_counts: training images of each label (the data report's `per_label["train"]`), or None.

    Example:
        >>> choose_policy(1_000, 10).name, choose_policy(20_000, 10).name, choose_policy(600_000, 100).name
        ('head', 'partial', 'full')
        >>> choose_policy(5_250, 10).name, choose_policy(5_250, 10, label_counts=[1000] * 5 + [50] * 5).name
        ('partial', 'head')
    """
    for key, value, low in (("num_examples", num_examples, 1), ("num_labels", num_labels, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key}: got {value!r}; expected an integer >= {low}")
    if num_depths is not None and (isinstance(num_depths, bool) or not isinstance(num_depths, int) or num_depths < 2):
        raise ConfigError(f"num_depths: got {num_depths!r}; expected an integer >= 2 (stem ... head)")
    if label_counts is not None and len(label_counts) != num_labels:
        raise ConfigError(f"label_counts: got {len(label_counts)} counts; expected one per label ({num_labels})")
    per_label, size = _per_label_basis(num_examples, num_labels, label_counts)
    evidence = (
        "On Fashion-MNIST with the ImageNet-pretrained EfficientNet-Lite0, a frozen backbone with a trained "
        "head beat re-training the last two stages at 100 images per label (accuracy 0.84 vs 0.81), while "
        "re-training the last two stages won at 1,000 per label (0.888 vs 0.873); tl_hub switches at about "
        f"{HEAD_MAX_PER_LABEL} per label, between those two measured points."
    )
    override = "Override with policy: head|partial|full|lp-ft|scratch."
    if per_label < HEAD_MAX_PER_LABEL:
        few = " That is very little data: expect noisy results." if per_label < 5 else ""
        reason = (
            f"{size} Below about {HEAD_MAX_PER_LABEL} per label, tl_hub keeps the pretrained backbone frozen and "
            f"trains only the new head (policy head): with little data, re-training layers overfits and loses "
            f"the pretrained features. {evidence}{few} {override}"
        )
        return FreezePolicy("head", reason=reason)
    if per_label >= FULL_MIN_PER_LABEL and num_examples >= FULL_MIN_TOTAL:
        reason = (
            f"{size} With at least {_fmt(FULL_MIN_PER_LABEL)} per label and {_fmt(FULL_MIN_TOTAL)} in total there "
            f"is enough data to adapt every layer, so tl_hub fine-tunes the whole network from the pretrained "
            f"weights (policy full), with smaller learning rates for the shallow layers when layer_decay < 1. "
            f"This threshold follows common practice rather than a measurement here (at 100 per label full "
            f"fine-tuning lost to the frozen backbone, 0.801 vs 0.845). {evidence} {override}"
        )
        return FreezePolicy("full", reason=reason)
    fraction = _partial_fraction(per_label)
    where = ""
    if num_depths is not None:
        blocks = max(1, num_depths - 3)
        where = f" (about {max(1, math.ceil(fraction * blocks))} of this model's {num_depths} depths, plus the neck and head)"
    reason = (
        f"{size} From about {HEAD_MAX_PER_LABEL} per label there is enough data to adapt the deepest layers, "
        f"so tl_hub freezes the stem and shallow blocks and re-trains the deepest {fraction:.0%} of the "
        f"blocks{where} together with the head (policy partial, train_fraction {fraction:g}). {evidence} "
        f"Full fine-tuning is chosen only from {_fmt(FULL_MIN_PER_LABEL)} per label and {_fmt(FULL_MIN_TOTAL)} "
        f"images in total. {override}"
    )
    return FreezePolicy("partial", train_fraction=fraction, reason=reason)


# ---------------------------------------------------------------------------------------------------
# Resolution: the policy, learning rates and phases a run uses
# ---------------------------------------------------------------------------------------------------


def resolve_policy(
    requested: str,
    *,
    num_examples: int,
    num_labels: int,
    num_depths: int | None = None,
    train_fraction: float | None = None,
    head_epochs_fraction: float | None = None,
    label_counts: Any = None,
) -> FreezePolicy:
    """The concrete policy of a run: `choose_policy` for "auto" (reading `label_counts` when given) (keeping a requested `train_fraction` if it
    picks `partial`), else the requested policy with its knobs.

    Example:
        >>> resolve_policy("auto", num_examples=1_000, num_labels=10).name
        'head'
        >>> resolve_policy("partial", num_examples=10, num_labels=2, train_fraction=0.5).train_fraction
        0.5
    """
    check_policy_knobs(requested, train_fraction, head_epochs_fraction)
    if requested == AUTO:
        chosen = choose_policy(num_examples, num_labels, num_depths=num_depths, label_counts=label_counts)
        if train_fraction is not None and chosen.name == "partial":
            chosen = FreezePolicy("partial", train_fraction=train_fraction, reason=chosen.reason)
        return chosen
    return FreezePolicy(requested, train_fraction=train_fraction, head_epochs_fraction=head_epochs_fraction,
                        reason=f"set in the recipe (policy: {requested})")


def peak_learning_rate(policy: str, phase: str | None = None, learning_rate: float | None = None) -> float:
    """The peak AdamW learning rate of a policy (and lp-ft phase): `learning_rate` when given, else 1e-3 when
    only the head trains (`head`, lp-ft's head phase) or everything starts from random (`scratch`), and
    1e-4 when pretrained layers train (`partial`, `full`, lp-ft's full phase).

    Example:
        >>> peak_learning_rate("head"), peak_learning_rate("lp-ft", "full"), peak_learning_rate("full", None, 5e-5)
        (0.001, 0.0001, 5e-05)
    """
    if learning_rate is not None:
        return learning_rate
    if policy not in POLICIES:
        raise ConfigError(
            f"policy: got {policy!r}; a learning rate needs a resolved policy ({', '.join(POLICIES)})"
        )
    if policy in ("head", "scratch") or (policy == "lp-ft" and phase == "head"):
        return HEAD_LEARNING_RATE
    return BACKBONE_LEARNING_RATE


@dataclass(frozen=True)
class PhasePlan:
    """One training phase of a policy: its name, epochs, peak learning rate, and the `phase` argument that
    `apply_policy` takes for it (lp-ft only; None otherwise).

    Example:
        >>> [p.name for p in plan_phases(FreezePolicy("lp-ft"), epochs=4)]
        ['head', 'full']
    """

    name: str
    epochs: int
    learning_rate: float
    lp_ft_phase: str | None = None


def plan_phases(policy: FreezePolicy, epochs: int, learning_rate: float | None = None) -> list[PhasePlan]:
    """The phases a run trains: one phase named after the policy, or lp-ft's head phase
    (`head_epochs_fraction` of the epochs, at least 1 and at most epochs - 1 when there are 2 or more) and
    full phase.

    Example:
        >>> [(p.name, p.epochs, p.learning_rate) for p in plan_phases(FreezePolicy("lp-ft"), epochs=5)]
        [('head', 2, 0.001), ('full', 3, 0.0001)]
        >>> plan_phases(FreezePolicy("head"), epochs=3)[0].epochs
        3
    """
    if policy.name != "lp-ft":
        return [PhasePlan(policy.name, epochs, peak_learning_rate(policy.name, None, learning_rate))]
    head_epochs = max(1, min(epochs - 1, round(epochs * policy.head_epochs_fraction)))
    return [
        PhasePlan("head", head_epochs, peak_learning_rate("lp-ft", "head", learning_rate), "head"),
        PhasePlan("full", epochs - head_epochs, peak_learning_rate("lp-ft", "full", learning_rate), "full"),
    ]


def explain_policy(
    num_examples: int, num_labels: int, *, requested: str = AUTO, num_depths: int | None = None,
    label_counts: Any = None,
) -> FreezePolicy:
    """The policy for a dataset size with its reason; a requested policy's reason also says what `auto`
    would have chosen and why (what `tl-hub policy` prints).

    Example:
        >>> explain_policy(1_000, 10, requested="full").reason.startswith("policy full was requested")
        True
    """
    if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 2:
        raise ConfigError(f"labels: got {num_labels!r}; an image classifier needs at least 2 labels")
    auto = choose_policy(num_examples, num_labels, num_depths=num_depths, label_counts=label_counts)
    if requested in (None, "", AUTO):
        return auto
    chosen = FreezePolicy(requested)
    chosen.reason = (
        f"policy {chosen.name} was requested. For {num_examples:,} images and {num_labels} labels the automatic "
        f"choice would be {auto.name}: {auto.reason}"
    )
    return chosen
