"""Freeze policies: which depths of a pretrained backbone train, chosen from the size of the dataset.

Policies:
- `head`    backbone frozen, only the new head trains (small data);
- `partial` stem and shallow blocks frozen, the deepest `train_fraction` of the blocks + neck + head train;
- `full`    everything trains, starting from the pretrained weights;
- `scratch` everything trains from a random init (load the backbone with `pretrained=False`);
- `lp-ft`   linear probing then fine-tuning (Kumar et al., 2022): the head trains alone for
            `head_epochs_fraction` of the epochs (phase "head"), then everything trains (phase "full").

Frozen normalisation layers stay frozen for real: BatchNorm-style layers (and dropout) inside frozen
depths are switched to a subclass whose `train()` always means `eval()`, so their running statistics
never move, even when a training loop calls `model.train()`. The swap is undone when they are unfrozen.

Example:
    >>> from tl_hub import load_backbone, choose_policy, apply_policy, param_groups
    >>> policy = choose_policy(num_examples=20_000, num_labels=10)
    >>> policy.name
    'partial'
    >>> model = load_backbone("bundled:efficientnet_lite0", ["cat", "dog"])  # doctest: +SKIP
    >>> summary = apply_policy(model, policy)  # doctest: +SKIP
    >>> optimizer = torch.optim.AdamW(param_groups(model, 1e-3, layer_decay=0.8, weight_decay=0.05))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

from tl_hub.errors import ConfigError

POLICIES = ("head", "partial", "full", "scratch", "lp-ft")
_ALIASES = {"lp_ft": "lp-ft", "lpft": "lp-ft", "linear-probe": "head", "frozen": "head", "finetune": "full"}

#: default share of the block depths that train under `partial` (Lite0: 5 of 16 = its last 2 stages)
DEFAULT_TRAIN_FRACTION = 0.3
#: default share of the epochs that train only the head under `lp-ft`
DEFAULT_HEAD_EPOCHS_FRACTION = 0.5

# Thresholds of choose_policy, in images per label. Measured (OFFLINE_ASSETS, Fashion-MNIST, ImageNet
# EfficientNet-Lite0, 112 px): at 100/label a frozen backbone (linear probe) beat re-training the last
# 2 stages (0.84 vs 0.81); at 1,000/label re-training the last 2 stages won (0.888 vs 0.873).
# The switch sits at the geometric middle of the two measured points.
HEAD_MAX_PER_LABEL = 300
PARTIAL_MEASURED_PER_LABEL = 1000
# Full fine-tuning only with plenty of data per label and in total (not measured here: the common
# practice that full fine-tuning pays off on ImageNet-scale data; at 100/label it lost, 0.801 vs 0.845).
FULL_MIN_PER_LABEL = 5000
FULL_MIN_TOTAL = 50_000


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
        if self.train_fraction is not None and name != "partial":
            raise ConfigError(f"train_fraction: got {self.train_fraction!r} for policy {name!r}; it applies to 'partial' only")
        if self.head_epochs_fraction is not None and name != "lp-ft":
            raise ConfigError(
                f"head_epochs_fraction: got {self.head_epochs_fraction!r} for policy {name!r}; it applies to 'lp-ft' only"
            )
        if name == "partial":
            frac = DEFAULT_TRAIN_FRACTION if self.train_fraction is None else self.train_fraction
            if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
                raise ConfigError(f"train_fraction: got {frac!r}; use a number in (0, 1], e.g. 0.3")
            self.train_fraction = float(frac)
        if name == "lp-ft":
            frac = DEFAULT_HEAD_EPOCHS_FRACTION if self.head_epochs_fraction is None else self.head_epochs_fraction
            if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
                raise ConfigError(f"head_epochs_fraction: got {frac!r}; use a number in (0, 1), e.g. 0.5")
            self.head_epochs_fraction = float(frac)

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


def choose_policy(num_examples: int, num_labels: int, *, num_depths: int | None = None) -> FreezePolicy:
    """Pick a freeze policy from the dataset size (images per label and in total), with a reason.

    - fewer than 300 images per label: `head` (frozen backbone);
    - from 300 per label: `partial` (deepest 30% of the blocks; more of them above 1,000 per label);
    - at least 5,000 per label and 50,000 in total: `full`.

    Args:
        num_examples: number of training images.
        num_labels: number of labels.
        num_depths: number of depths of the model (`max(depth_map(model).values()) + 1`), to say in the
            reason how many depths `partial` trains.

    Example:
        >>> choose_policy(1_000, 10).name, choose_policy(20_000, 10).name, choose_policy(600_000, 100).name
        ('head', 'partial', 'full')
    """
    for key, value, low in (("num_examples", num_examples, 1), ("num_labels", num_labels, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key}: got {value!r}; expected an integer >= {low}")
    if num_depths is not None and (isinstance(num_depths, bool) or not isinstance(num_depths, int) or num_depths < 2):
        raise ConfigError(f"num_depths: got {num_depths!r}; expected an integer >= 2 (stem ... head)")
    per_label = num_examples / num_labels
    size = f"{_fmt(num_examples)} training images for {num_labels} labels is about {_fmt(per_label)} per label."
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
# apply_policy
# ---------------------------------------------------------------------------------------------------


class _AlwaysEval:
    """Mixin: `train(mode)` always switches the module to eval mode (frozen statistics, no dropout)."""

    _tl_hub_original_class: type

    def train(self, mode: bool = True) -> Any:
        return super().train(False)  # type: ignore[misc]


_FROZEN_CLASSES: dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    if cls not in _FROZEN_CLASSES:
        _FROZEN_CLASSES[cls] = type(
            f"Frozen{cls.__name__}", (_AlwaysEval, cls), {"_tl_hub_original_class": cls, "__module__": __name__}
        )
    return _FROZEN_CLASSES[cls]


def is_frozen_module(module: Any) -> bool:
    """True when `apply_policy` locked `module` in eval mode.

    Example:
        >>> import torch
        >>> is_frozen_module(torch.nn.BatchNorm2d(3))
        False
    """
    return isinstance(module, _AlwaysEval)


def _freeze_module(module: Any) -> None:
    if not is_frozen_module(module):
        module.__class__ = _frozen_class(type(module))
    module.train(False)


def _unfreeze_module(module: Any, training: bool) -> None:
    if is_frozen_module(module):
        module.__class__ = type(module)._tl_hub_original_class
        module.train(training)


def _has_stats_or_noise(module: Any) -> bool:
    """Modules whose train mode changes state or output: norms with running stats, dropout, drop-path."""
    import torch.nn as nn

    if isinstance(module, nn.modules.batchnorm._NormBase):
        return bool(module.track_running_stats)
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return True
    return "droppath" in type(module).__name__.lower().replace("_", "")


@dataclass
class PolicySummary:
    """What `apply_policy` did: parameter counts and one row per depth.

    `rows`: list of {"depth", "kind", "modules", "params", "trainable"}.

    Example:
        >>> summary = apply_policy(model, FreezePolicy("head"))  # doctest: +SKIP
        >>> print(summary.table())  # doctest: +SKIP
    """

    policy: str
    phase: str | None
    trainable_params: int
    frozen_params: int
    frozen_stat_layers: int
    rows: list[dict[str, Any]]

    @property
    def trained_depths(self) -> list[int]:
        return [r["depth"] for r in self.rows if r["trainable"]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    def table(self) -> str:
        """Markdown table: depth, kind, modules (abbreviated), parameters, trains/frozen."""
        lines = ["| depth | kind | modules | params | status |", "|---:|---|---|---:|---|"]
        short = _short_names(self.rows)
        for r in self.rows:
            status = "trains" if r["trainable"] else "frozen"
            modules = _abbreviate([short[u] for u in r["modules"]])
            lines.append(f"| {r['depth']} | {r['kind']} | {modules} | {r['params']:,} | {status} |")
        total = self.trainable_params + self.frozen_params
        share = self.trainable_params / total if total else 0.0
        lines.append(
            f"\n{self.trainable_params:,} of {total:,} parameters train ({share:.1%}); "
            f"{self.frozen_stat_layers} norm/dropout layers locked in eval mode."
        )
        return "\n".join(lines)


def _short_names(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Display names of unit paths: the wrapper component shared by most units (`resnet.`, `timm_model.`,
    `vit.`) and a following `encoder.` are dropped, so `resnet.encoder.stages.0.layers.1` -> `stages.0.layers.1`."""
    units = [u for r in rows for u in r["modules"]]
    firsts = [u.split(".")[0] for u in units if "." in u]
    common = max(set(firsts), key=firsts.count) if firsts else None
    short: dict[str, str] = {}
    for u in units:
        parts = u.split(".")
        if common is not None and len(parts) >= 2 and parts[0] == common and firsts.count(common) * 2 >= len(units):
            parts = parts[1:]
        if len(parts) > 2 and parts[0] == "encoder":
            parts = parts[1:]
        short[u] = ".".join(parts)
    return short


def _abbreviate(names: list[str], width: int = 56) -> str:
    """Join display names, at most about `width` characters, with a count of the ones left out."""
    text = ", ".join(names)
    if len(text) <= width:
        return text
    out: list[str] = []
    for name in names:
        if out and len(", ".join(out + [name])) > width - 10:
            break
        out.append(name)
    return ", ".join(out) + f", … (+{len(names) - len(out)})"


def trained_depths(info: Any, policy: FreezePolicy, phase: str | None = None) -> set[int]:
    """Depths that train under `policy` (and `phase` for lp-ft), given a `tl_hub.depth.DepthInfo`.

    Example:
        >>> sorted(trained_depths(depth_info(model), FreezePolicy("head")))  # doctest: +SKIP
        [18]
    """
    from tl_hub.depth import BLOCK, HEAD, NECK

    top = info.max_depth
    name = policy.name
    if name == "lp-ft":
        name = "head" if phase in (None, "head") else "full"
    if name == "head":
        return {top}
    if name in ("full", "scratch"):
        return set(range(top + 1))
    fraction = policy.train_fraction or DEFAULT_TRAIN_FRACTION
    if fraction >= 1:
        return set(range(top + 1))
    blocks = [d for d, kind in enumerate(info.kinds) if kind == BLOCK]
    k = max(1, math.ceil(fraction * len(blocks) - 1e-9)) if blocks else 0
    chosen = set(blocks[len(blocks) - k:]) if k else set()
    return chosen | {d for d, kind in enumerate(info.kinds) if kind in (NECK, HEAD)}


def apply_policy(model: Any, policy: FreezePolicy | str, *, phase: str | None = None) -> PolicySummary:
    """Freeze/unfreeze `model`'s parameters by depth and lock frozen norm/dropout layers in eval mode.

    Args:
        model: a model from `load_backbone` (or any classifier `depth_map` understands).
        policy: a FreezePolicy or a policy name.
        phase: `lp-ft` only: "head" (first; the default) or "full" (then).

    Returns:
        PolicySummary with trainable/frozen parameter counts and the per-depth table.

    Call it before wrapping the model for distributed training (DDP records which parameters need
    gradients when it is built); for lp-ft, the "full" phase needs a fresh wrapper/optimizer.

    Example:
        >>> summary = apply_policy(model, "lp-ft", phase="head")  # doctest: +SKIP
        >>> summary = apply_policy(model, "lp-ft", phase="full")  # doctest: +SKIP
    """
    from tl_hub.depth import depth_info, unwrap_model

    model = unwrap_model(model)
    if isinstance(policy, str):
        policy = FreezePolicy(policy)
    if phase is not None:
        if policy.name != "lp-ft":
            raise ConfigError(f"phase: got {phase!r} for policy {policy.name!r}; phases apply to 'lp-ft' only")
        if phase not in ("head", "full"):
            raise ConfigError(f"phase: got {phase!r}; lp-ft has phases 'head' (first) and 'full' (then)")
    info = depth_info(model)
    train_set = trained_depths(info, policy, phase)

    for name, param in model.named_parameters():
        param.requires_grad_(info.depth_of[name] in train_set)

    locked = 0
    model_training = model.training
    for path, module in model.named_modules():
        if not path or not _has_stats_or_noise(module):
            continue
        params = list(module.parameters())
        if params:
            frozen = not any(p.requires_grad for p in params)
        else:
            depth = info.depth_of_module(path)
            frozen = depth is not None and depth not in train_set
        if frozen:
            _freeze_module(module)
            locked += 1
        else:
            _unfreeze_module(module, model_training)

    rows = []
    named = dict(model.named_parameters())
    for depth, (kind, units) in enumerate(zip(info.kinds, info.units)):
        count = sum(named[n].numel() for n, d in info.depth_of.items() if d == depth)
        rows.append({"depth": depth, "kind": kind, "modules": list(units), "params": count,
                     "trainable": depth in train_set})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen_count = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return PolicySummary(
        policy=policy.name,
        phase=("head" if phase is None else phase) if policy.name == "lp-ft" else None,
        trainable_params=trainable,
        frozen_params=frozen_count,
        frozen_stat_layers=locked,
        rows=rows,
    )


# ---------------------------------------------------------------------------------------------------
# Optimizer parameter groups
# ---------------------------------------------------------------------------------------------------

_NO_DECAY_NAMES = (
    "pos_embed", "cls_token", "dist_token", "distillation_token", "mask_token", "register_tokens", "reg_token",
    "position_embeddings", "position_embedding", "relative_position_bias_table", "absolute_pos_embed",
)


def _no_decay_names(model: Any) -> set[str]:
    names: set[str] = set()
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and hasattr(timm_model, "no_weight_decay"):
        names |= {f"timm_model.{n}" for n in timm_model.no_weight_decay()}
    return names


def param_groups(
    model: Any, lr: float, *, layer_decay: float = 1.0, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise LR decay and no weight decay on norms/biases/tokens.

    Only parameters with `requires_grad` are included. The LR of depth d is
    `lr * layer_decay ** (max_depth - d)`: the head gets `lr`, shallower depths less. Parameters with
    ndim <= 1 (norm weights, biases, layer scales) and position/class tokens get weight_decay 0.

    Example:
        >>> groups = param_groups(model, 1e-3, layer_decay=0.75, weight_decay=0.05)  # doctest: +SKIP
        >>> optimizer = torch.optim.AdamW(groups)  # doctest: +SKIP
    """
    from tl_hub.depth import depth_info, unwrap_model

    model = unwrap_model(model)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise ConfigError(f"learning_rate: got {lr!r}; use a positive number, e.g. 1e-3")
    if isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float)) or not 0 < layer_decay <= 1:
        raise ConfigError(f"layer_decay: got {layer_decay!r}; use a number in (0, 1] (1.0 = same LR everywhere)")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ConfigError(f"weight_decay: got {weight_decay!r}; use a number >= 0")
    info = depth_info(model)
    top = info.max_depth
    skip = _no_decay_names(model)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = info.depth_of[name]
        leaf = name.rpartition(".")[2]
        decay = param.ndim > 1 and name not in skip and leaf not in _NO_DECAY_NAMES and weight_decay > 0
        key = (depth, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": lr * layer_decay ** (top - depth),
                "weight_decay": float(weight_decay) if decay else 0.0,
                "depth": depth,
                "name": f"depth_{depth}" + ("" if decay else "_no_decay"),
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ConfigError("param_groups: no parameter has requires_grad=True; nothing would train (check the policy)")
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], not k[1]))]


# ---------------------------------------------------------------------------------------------------
# `tl-hub policy`
# ---------------------------------------------------------------------------------------------------


def policy_command(examples: int, labels: int, model: str | None = None, policy: str | None = "auto") -> int:
    """`tl-hub policy --examples N --labels K [--model SOURCE] [--policy P]`: print the choice and why.

    With a model, also print its depth table: depth, modules, parameters, frozen/trains.

    Example:
        >>> policy_command(examples=1000, labels=10)  # doctest: +ELLIPSIS
        policy: head
        ...
        0
    """
    from tl_hub.depth import depth_info

    if isinstance(labels, bool) or not isinstance(labels, int) or labels < 2:
        raise ConfigError(f"--labels: got {labels!r}; an image classifier needs at least 2 labels")
    loaded = None
    num_depths = None
    if model:
        from tl_hub.backbone import load_backbone

        loaded = load_backbone(model, [f"label_{i}" for i in range(labels)])
        num_depths = depth_info(loaded).max_depth + 1
    auto = choose_policy(examples, labels, num_depths=num_depths)
    if policy in (None, "", "auto"):
        chosen = auto
    else:
        chosen = FreezePolicy(policy)
        chosen.reason = (
            f"policy {chosen.name} was requested. For {examples:,} images and {labels} labels the automatic "
            f"choice would be {auto.name}: {auto.reason}"
        )
    knobs = ""
    if chosen.train_fraction is not None:
        knobs = f" (train_fraction {chosen.train_fraction:g})"
    if chosen.head_epochs_fraction is not None:
        knobs = f" (head_epochs_fraction {chosen.head_epochs_fraction:g})"
    print(f"policy: {chosen.name}{knobs}")
    print(textwrap.fill(chosen.reason, width=100))
    if loaded is not None:
        phase = "head" if chosen.name == "lp-ft" else None
        summary = apply_policy(loaded, chosen, phase=phase)
        print()
        title = f"{model}: {num_depths} depths"
        if phase:
            title += " (lp-ft phase 'head'; phase 'full' then trains every depth)"
        print(title)
        print(summary.table())
    return 0
