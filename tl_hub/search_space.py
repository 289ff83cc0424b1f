"""What `tl_hub.search` may try: the candidates of a search (the `search:` block of a recipe).

A search recipe is an ordinary recipe (its keys are the fixed part of every trial) plus a `search:` block:

```yaml
dataset: bundled:fashion_mnist
image_size: 112
search:
  backbones: [bundled:efficientnet_lite0, google/vit-base-patch16-224-in21k]  # Hub ids, folders, bundled ids
  policies: [head, partial@0.3, partial@0.6, full, lp-ft]                  # the default
  learning_rate: [1.0e-5, 3.0e-3]                                         # log-uniform range
  epochs: [3, 5, 8]                                                       # choices (default: the recipe's)
  screen_top: 2                                                           # more backbones: screen, keep 2
```

`partial@F` is the `partial` policy training the deepest fraction F of the backbone (`train_fraction`).

Example:
    >>> space = SearchSpace.from_dict({"policies": ["head", "partial@0.3"], "learning_rate": [1e-4, 1e-2]},
    ...                               default_backbone="bundled:efficientnet_lite0", default_epochs=5)
    >>> [c.label for c in space.candidates], space.epochs
    (['head', 'partial@0.3'], [5])
    >>> SearchSpace.from_dict({"policies": ["half"]}, default_backbone="m", default_epochs=1)
    Traceback (most recent call last):
    ...
    tl_hub.errors.ConfigError: search.policies: got 'half'; each entry is head, full, lp-ft, or partial@F with F in (0, 1] (e.g. partial@0.3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tl_hub.config_parsing import closest
from tl_hub.errors import ConfigError

__all__ = ["DEFAULT_POLICIES", "PolicyCandidate", "SearchSpace", "parse_duration"]

#: the policies a search tries when its block names none: the cheap one, two depths of partial, all, lp-ft
DEFAULT_POLICIES: tuple[str, ...] = ("head", "partial@0.3", "partial@0.6", "full", "lp-ft")
_KEYS = ("backbones", "policies", "learning_rate", "epochs", "screen_top", "screen_images")


@dataclass(frozen=True)
class PolicyCandidate:
    """One freeze policy a trial may use: its name and, for `partial`, the fraction of depth that trains.

    Example:
        >>> PolicyCandidate.parse("partial@0.3")
        PolicyCandidate(policy='partial', fraction=0.3)
        >>> PolicyCandidate.parse("head").label
        'head'
    """

    policy: str
    fraction: float | None = None

    @property
    def label(self) -> str:
        return self.policy if self.fraction is None else f"{self.policy}@{self.fraction:g}"

    @classmethod
    def parse(cls, text: Any) -> PolicyCandidate:
        """`head`, `full`, `lp-ft` or `partial@F`; anything else is a ConfigError saying what is accepted."""
        raw = str(text).strip()
        name, _, frac = raw.partition("@")
        fix = "each entry is head, full, lp-ft, or partial@F with F in (0, 1] (e.g. partial@0.3)"
        if name in ("head", "full", "lp-ft") and not frac:
            return cls(name)
        if name == "partial":
            try:
                value = float(frac) if frac else 0.3
            except ValueError:
                value = -1.0
            if 0 < value <= 1:
                return cls("partial", value)
        raise ConfigError(f"search.policies: got {raw!r}; {fix}")


@dataclass(frozen=True)
class SearchSpace:
    """The candidates of a search: backbones, policies, a learning-rate range (None: each policy's default
    rate, not searched), epoch choices, and how many backbones survive screening."""

    backbones: list[str]
    candidates: list[PolicyCandidate]
    learning_rate: tuple[float, float] | None
    epochs: list[int]
    screen_top: int = 2
    screen_images: int = 2000

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None, *, default_backbone: str, default_epochs: int) -> SearchSpace:
        """The `search:` block (or `tl_hub.search` keywords) checked; missing entries take the defaults:
        the recipe's backbone, `DEFAULT_POLICIES`, the policies' default learning rates, the recipe's epochs."""
        block = dict(block or {})
        unknown = [k for k in block if k not in _KEYS]
        if unknown:
            raise ConfigError(f"search: unknown key {unknown[0]!r}{closest(unknown[0], _KEYS)}. Valid keys: "
                              f"{', '.join(_KEYS)}")
        backbones = _str_list("backbones", block.get("backbones") or [default_backbone])
        policies = [PolicyCandidate.parse(p) for p in _str_list("policies", block.get("policies") or DEFAULT_POLICIES)]
        epochs = [_positive_int("epochs", e) for e in _as_list(block.get("epochs") or [default_epochs])]
        space = cls(backbones=list(dict.fromkeys(backbones)), candidates=list(dict.fromkeys(policies)),
                    learning_rate=_lr_range(block.get("learning_rate")), epochs=sorted(set(epochs)),
                    screen_top=_positive_int("screen_top", block.get("screen_top", 2)),
                    screen_images=_positive_int("screen_images", block.get("screen_images", 2000)))
        return space

    def params_for(self, backbone: str, policy: str, fraction: float | None, learning_rate: float,
                   epochs: int) -> dict[str, Any] | None:
        """The trial parameters (Optuna's, for `enqueue_trial`) of the point of this space nearest to a given
        recipe: the candidate of that policy with the nearest fraction, the learning rate clipped into the range
        (left out when the rate is not searched), the nearest epoch choice; None when no candidate has the policy.

        Example:
            >>> space = SearchSpace.from_dict({"policies": ["head", "partial@0.3", "partial@0.6"],
            ...     "learning_rate": [1e-5, 1e-2], "epochs": [5, 10, 20]}, default_backbone="m", default_epochs=5)
            >>> space.params_for("m", "partial", 0.35, 1e-4, 12)
            {'backbone': 'm', 'policy': 'partial@0.3', 'learning_rate': 0.0001, 'epochs': 10}
            >>> space.params_for("m", "full", None, 1e-4, 10) is None
            True
        """
        same = [c for c in self.candidates if c.policy == policy]
        if not same:
            return None
        nearest = min(same, key=lambda c: abs((c.fraction or 0.0) - (fraction or 0.0)))
        params: dict[str, Any] = {"backbone": backbone, "policy": nearest.label}
        if self.learning_rate is not None:
            params["learning_rate"] = min(max(learning_rate, self.learning_rate[0]), self.learning_rate[1])
        if len(self.epochs) > 1:
            params["epochs"] = min(self.epochs, key=lambda e: (abs(e - epochs), e))
        return params

    def to_dict(self) -> dict[str, Any]:
        """The block as YAML-safe values (what `search.yaml` records).

        Example:
            >>> SearchSpace.from_dict({}, default_backbone="m", default_epochs=2).to_dict()["policies"][:2]
            ['head', 'partial@0.3']
        """
        return {"backbones": list(self.backbones), "policies": [c.label for c in self.candidates],
                "learning_rate": list(self.learning_rate) if self.learning_rate else None,
                "epochs": list(self.epochs), "screen_top": self.screen_top, "screen_images": self.screen_images}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _str_list(key: str, value: Any) -> list[str]:
    items = _as_list(value)
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise ConfigError(f"search.{key}: got {value!r}; give a list of names, e.g. [{'head' if key == 'policies' else 'bundled:efficientnet_lite0'}]")
    return [v.strip() for v in items]


def _positive_int(key: str, value: Any) -> int:
    try:
        number = int(value)
        ok = number >= 1 and float(value) == number
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"search.{key}: got {value!r}; expected a whole number >= 1")
    return number


def _lr_range(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in _as_list(value))
        ok = 0 < low <= high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"search.learning_rate: got {value!r}; expected [low, high] with 0 < low <= high "
                          "(e.g. [1.0e-5, 3.0e-3]), searched on a log scale; leave it out to use each policy's default")
    return (low, high)


def parse_duration(text: Any, key: str = "time_budget") -> float:
    """Seconds from `90`, `90s`, `30m`, `1.5h` (a number alone is seconds).

    Example:
        >>> parse_duration("30m"), parse_duration("90"), parse_duration(2.5)
        (1800.0, 90.0, 2.5)
    """
    raw = str(text).strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(raw[-1:], None)
    number = raw[:-1] if scale else raw
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{key}: got {text!r}; expected a positive duration such as 90s, 30m or 2h")
    return seconds

