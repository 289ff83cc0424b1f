"""Applying a freeze policy to a model, and the optimizer parameter groups of what then trains.

`apply_policy` sets `requires_grad` by depth (`tl_hub.depth`) and makes frozen normalisation layers stay
frozen for real: BatchNorm-style layers (and dropout) inside frozen depths are switched to a subclass
whose `train()` always means `eval()`, so their running statistics never move, even when a training loop
calls `model.train()`. The swap is undone when they are unfrozen. `param_groups` builds AdamW groups with
layer-wise learning-rate decay; `simple_param_groups` two groups for a bare head.

Example:
    >>> from tl_hub import load_backbone, apply_policy, param_groups, FreezePolicy
    >>> model = load_backbone("bundled:efficientnet_lite0", ["cat", "dog"])  # doctest: +SKIP
    >>> summary = apply_policy(model, FreezePolicy("partial"))  # doctest: +SKIP
    >>> optimizer = torch.optim.AdamW(param_groups(model, 1e-4, layer_decay=0.8, weight_decay=0.05))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tl_hub.depth import BLOCK, HEAD, NECK, DepthInfo, depth_info, unwrap_model
from tl_hub.errors import ConfigError
from tl_hub.policy import DEFAULT_TRAIN_FRACTION, FreezePolicy

__all__ = ["PolicySummary", "apply_policy", "is_frozen_module", "param_groups", "simple_param_groups",
           "trained_depths"]


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


def trained_depths(info: DepthInfo, policy: FreezePolicy, phase: str | None = None) -> set[int]:
    """Depths that train under `policy` (and `phase` for lp-ft), given a `tl_hub.depth.DepthInfo`.

    Example:
        >>> sorted(trained_depths(depth_info(model), FreezePolicy("head")))  # doctest: +SKIP
        [18]
    """
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


def _decays(name: str, param: Any, skip: set[str]) -> bool:
    """Weight decay applies to matrices and kernels only: never to norms, biases, layer scales (ndim <= 1)
    or position/class tokens (by name, or listed by timm's `no_weight_decay`)."""
    return param.ndim > 1 and name not in skip and name.rpartition(".")[2] not in _NO_DECAY_NAMES


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
    Parameters that share a learning rate and a weight decay share one group (with `layer_decay` 1: two
    groups in all), so the optimizer runs few, large kernels. Each group also lists its `depths` and
    `param_names`, ordered from the shallowest depth.

    Example:
        >>> groups = param_groups(model, 1e-3, layer_decay=0.75, weight_decay=0.05)  # doctest: +SKIP
        >>> optimizer = torch.optim.AdamW(groups)  # doctest: +SKIP
    """
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
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = info.depth_of[name]
        decay = float(weight_decay) if weight_decay > 0 and _decays(name, param, skip) else 0.0
        group_lr = lr * layer_decay ** (top - depth)
        group = groups.setdefault((group_lr, decay), {"params": [], "param_names": [], "lr": group_lr,
                                                      "weight_decay": decay, "depths": []})
        group["params"].append(param)
        group["param_names"].append(name)
        if depth not in group["depths"]:
            group["depths"].append(depth)
    if not groups:
        raise ConfigError("param_groups: no parameter has requires_grad=True; nothing would train (check the policy)")
    ordered = sorted(groups.values(), key=lambda g: (min(g["depths"]), g["weight_decay"] == 0.0))
    for group in ordered:
        group["depths"].sort()
        low, high = group["depths"][0], group["depths"][-1]
        group["name"] = f"depth_{low}" + (f"-{high}" if high != low else "") + ("" if group["weight_decay"] else "_no_decay")
    return ordered


def simple_param_groups(model: Any, lr: float = 1e-3, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Two AdamW groups over the trainable parameters of a model without depths (a head on cached
    features): decayed and not, by the same rule as `param_groups`.

    Example:
        >>> import torch
        >>> [g["name"] for g in simple_param_groups(torch.nn.Linear(2, 2), 0.1, 0.01)]
        ['decay', 'no_decay']
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if _decays(name, param, set()) else no_decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "decay"})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "no_decay"})
    return groups
