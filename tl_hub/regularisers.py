"""Regularisers for fine-tuning: mixup/cutmix, an EMA of the weights, gradient checkpointing, and the rules
saying which policies they apply to. (Label smoothing is part of the loss: `tl_hub.loss.LossSpec`.)

- mixup / cutmix: torchvision's `transforms.v2.MixUp` / `CutMix` (both: one of the two per batch), applied
  to a whole batch on the device. They draw from torch's global CPU generator, which `mix_batch` seeds from
  its `seed` argument (the loop passes `mix_seed(seed, epoch, batch, process)`) inside `fork_rng`, so a
  batch's mixing is a pure function of that seed and leaves the loop's other random numbers untouched:
  a resumed run mixes exactly as an uninterrupted one.
- EMA: timm's `ModelEmaV3` (parameters and float buffers, `torch._foreach_lerp_`, constant decay), updated
  after every optimizer step; its weights are checkpointed with the model and are what is evaluated, kept as
  the best model and written to the output folder.
- gradient checkpointing: transformers' `gradient_checkpointing_enable` (TimmWrapper forwards it to timm's
  `set_grad_checkpointing`); a backbone that has neither is refused. Gradients are unchanged, but a block's
  recompute runs its BatchNorm layers in training mode a second time, so their running statistics take one
  more momentum update per step (torch.utils.checkpoint's known effect): a run with it is not bit-identical to
  one without, which is why it is part of the loop's fingerprint.

Example:
    >>> import torch
    >>> spec = MixSpec(mixup_alpha=0.2, num_classes=3)
    >>> x, y = mix_batch(spec, torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]), seed=7)
    >>> y.shape, bool(torch.allclose(y.sum(1), torch.ones(4)))
    (torch.Size([4, 3]), True)
    >>> bool((mix_batch(spec, torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]), seed=7)[1] == y).all())
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tl_hub.errors import ConfigError
from tl_hub.validation import check_range

__all__ = ["MixSpec", "mix_batch", "make_ema", "ema_weights_in", "enable_gradient_checkpointing",
           "check_regularisers", "check_regularisers_for_policy", "describe_regularisers"]


# ----------------------------------------------------------------------------------------------
# the recipe's rules
# ----------------------------------------------------------------------------------------------
def check_regularisers(*, label_smoothing: float, mixup_alpha: float, cutmix_alpha: float,
                       ema_decay: float | None, policy: str, feature_cache: str,
                       gradient_checkpointing: bool) -> None:
    """Raise ConfigError for an out-of-range value, or for a regulariser set with a policy where it cannot
    act (checked again by `check_regularisers_for_policy` once `auto` has picked its policy).

    Example:
        >>> check_regularisers(label_smoothing=0.1, mixup_alpha=-1, cutmix_alpha=0, ema_decay=None,
        ...                    policy="partial", feature_cache="auto", gradient_checkpointing=False)
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: mixup_alpha: got -1; must be in [0, inf] (0 = off; 0.2 is a common value)
    """
    check_range("label_smoothing", label_smoothing, low=0, high=1, high_open=True, hint="0 = off; 0.1 is common")
    check_range("mixup_alpha", mixup_alpha, low=0, hint="0 = off; 0.2 is a common value")
    check_range("cutmix_alpha", cutmix_alpha, low=0, hint="0 = off; 1.0 is a common value")
    check_range("ema_decay", ema_decay, low=0, high=1, low_open=True, high_open=True,
                hint="null = off; 0.999 is common; closer to 1 = a longer average")
    if policy != "auto":
        check_regularisers_for_policy(policy, feature_cache, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                                      gradient_checkpointing=gradient_checkpointing)


def check_regularisers_for_policy(policy: str, feature_cache: str, *, mixup_alpha: float, cutmix_alpha: float,
                                  gradient_checkpointing: bool) -> None:
    """Mixup/cutmix need images (not the head's cached features); gradient checkpointing needs a backbone
    that trains. Raise ConfigError naming the key and what to change otherwise.

    Example:
        >>> check_regularisers_for_policy("head", "auto", mixup_alpha=0.2, cutmix_alpha=0.0,
        ...                               gradient_checkpointing=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: mixup_alpha: got 0.2 with policy 'head', where the head trains on cached features ...
    """
    cached = policy == "head" and feature_cache != "off"
    for key, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if value and cached:
            raise ConfigError(
                f"{key}: got {value} with policy 'head', where the head trains on cached features (computed once "
                "from unaugmented images) and there are no images to mix. Use policy partial or full, set "
                f"feature_cache: off, or remove {key}"
            )
    if gradient_checkpointing and policy == "head":
        raise ConfigError(
            "gradient_checkpointing: got true with policy 'head'; the backbone is frozen, so there are no "
            "backbone activations to recompute. Remove it, or use policy partial, full, scratch or lp-ft"
        )


def describe_regularisers(*, label_smoothing: float, mixup_alpha: float, cutmix_alpha: float,
                          ema_decay: float | None, gradient_checkpointing: bool, policy: str,
                          feature_cache_used: bool) -> str:
    """One line for the model card: the regularisers that really ran ("none" when none did).

    Example:
        >>> describe_regularisers(label_smoothing=0.1, mixup_alpha=0.0, cutmix_alpha=0.0, ema_decay=0.999,
        ...                       gradient_checkpointing=False, policy="partial", feature_cache_used=False)
        'label smoothing 0.1; EMA of the weights (decay 0.999): the EMA weights are the ones evaluated and saved'
    """
    parts = [f"label smoothing {label_smoothing:g}"] if label_smoothing else []
    mixes = [f"{name} (alpha {alpha:g})" for name, alpha in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if alpha]
    if mixes:
        where = " in the full phase only (the head phase trained on cached features)" if (
            policy == "lp-ft" and feature_cache_used) else ""
        parts.append(" or ".join(mixes) + " per batch" + where)
    if ema_decay:
        parts.append(f"EMA of the weights (decay {ema_decay:g}): the EMA weights are the ones evaluated and saved")
    if gradient_checkpointing:
        parts.append("gradient checkpointing (the same gradients; BatchNorm layers that train also update their "
                     "running statistics in the recompute)")
    return "; ".join(parts) or "none"


# ----------------------------------------------------------------------------------------------
# mixup / cutmix
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MixSpec:
    """Mixup/cutmix of a run: each alpha > 0 turns one on (both: one of them, 50/50, per batch).

    Example:
        >>> MixSpec(0.2, 0.0, 10).active, MixSpec(num_classes=10).active
        (True, False)
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    num_classes: int = 0

    @property
    def active(self) -> bool:
        return bool(self.mixup_alpha or self.cutmix_alpha)

    def fingerprint(self) -> dict[str, float]:
        """What a resumed run must share with the run that wrote the checkpoint."""
        return {"mixup_alpha": self.mixup_alpha, "cutmix_alpha": self.cutmix_alpha}


def mix_batch(spec: MixSpec, pixel_values: Any, labels: Any, seed: int) -> tuple[Any, Any]:
    """Mix a batch of images ``[B, C, H, W]`` (on any device) and return it with its soft targets
    ``[B, num_classes]`` (float32), drawn as a pure function of `seed`: torchvision's MixUp / CutMix under
    torch's CPU generator seeded with `seed` and restored afterwards.

    Example:
        >>> import torch
        >>> x, y = mix_batch(MixSpec(0.0, 1.0, 2), torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), seed=1)
        >>> y.shape, y.dtype
        (torch.Size([2, 2]), torch.float32)
    """
    import torch
    from torchvision.transforms import v2

    transforms = [kind(alpha=float(alpha), num_classes=spec.num_classes)
                  for kind, alpha in ((v2.MixUp, spec.mixup_alpha), (v2.CutMix, spec.cutmix_alpha)) if alpha]
    mix = transforms[0] if len(transforms) == 1 else v2.RandomChoice(transforms)
    with torch.random.fork_rng(devices=[]):  # the CPU generator only: every draw of v2.MixUp/CutMix is there
        torch.manual_seed(int(seed))
        mixed, targets = mix(pixel_values, labels)
    return mixed, targets.float()


# ----------------------------------------------------------------------------------------------
# EMA of the weights
# ----------------------------------------------------------------------------------------------
def make_ema(model: Any, decay: float) -> Any:
    """timm's `ModelEmaV3` over `model`: a copy whose parameters and float buffers follow
    ``ema = decay * ema + (1 - decay) * model`` at each `update(model)` (no warmup: a resumed run needs no
    step count to continue it exactly).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1, bias=False); _ = torch.nn.init.zeros_(model.weight)
        >>> ema = make_ema(model, 0.9)
        >>> with torch.no_grad(): _ = model.weight.fill_(1.0)
        >>> ema.update(model); round(float(ema.module.weight.detach()), 4)
        0.1
    """
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=False, foreach=True)


@contextlib.contextmanager
def ema_weights_in(model: Any, ema: Any) -> Iterator[None]:
    """Inside the block `model` holds the EMA's weights (copied in place: every module sharing its
    parameters, e.g. a DDP or compiled wrapper, sees them); afterwards exactly its own again.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1); ema = make_ema(model, 0.5)
        >>> with torch.no_grad(): _ = ema.module.weight.fill_(3.0)
        >>> with ema_weights_in(model, ema): float(model.weight.detach())
        3.0
        >>> float(model.weight.detach()) != 3.0
        True
    """
    import torch

    with torch.no_grad():
        raw = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(ema.module.state_dict())
    try:
        yield
    finally:
        with torch.no_grad():
            model.load_state_dict(raw)


# ----------------------------------------------------------------------------------------------
# gradient checkpointing
# ----------------------------------------------------------------------------------------------
def enable_gradient_checkpointing(model: Any, model_name: str = "the backbone") -> None:
    """Recompute the backbone's activations in the backward pass instead of keeping them (less memory,
    about a third more compute; the same gradients; trainable BatchNorm statistics see the recompute too).
    ConfigError when the backbone cannot.

    Example:
        >>> import torch
        >>> enable_gradient_checkpointing(torch.nn.Linear(1, 1), "a Linear")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: gradient_checkpointing: got true, but a Linear (Linear) does not support it ...
    """
    if getattr(model, "supports_gradient_checkpointing", False) and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return
    raise ConfigError(
        f"gradient_checkpointing: got true, but {model_name} ({type(model).__name__}) does not support it (no "
        "transformers gradient_checkpointing_enable, or a timm model without set_grad_checkpointing). Set "
        "gradient_checkpointing: false, or pick a backbone that supports it"
    )
