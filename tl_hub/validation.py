"""Checks of user-given values that several entry points share (recipe keys, function arguments).

Each check raises `ConfigError` naming the key, the value received and what is allowed, so a rule
reads the same whether it comes from a YAML recipe, the command line or a Python call.

Example:
    >>> check_range("epochs", 0, low=1)
    Traceback (most recent call last):
    ...
    tl_hub.errors.ConfigError: epochs: got 0; must be in [1, inf]
    >>> check_range("eval_fraction", 0.2, low=0, high=1, low_open=True, high_open=True)
"""

from __future__ import annotations

from tl_hub.errors import ConfigError

__all__ = ["check_range", "check_positive_int"]


def check_range(
    key: str,
    value: float | int | None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> None:
    """Raise ConfigError unless `value` (None passes) lies in the interval; open ends exclude the bound.

    Example:
        >>> check_range("layer_decay", 1.5, low=0, high=1, low_open=True, hint="1 disables the decay")
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: layer_decay: got 1.5; must be in (0, 1] (1 disables the decay)
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: got {value!r} ({type(value).__name__}); expected a number")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ConfigError(f"{key}: got {value!r}; must be in {span}" + (f" ({hint})" if hint else ""))


def check_positive_int(key: str, value: object) -> None:
    """Raise ConfigError unless `value` is None or an integer >= 1 (booleans are not integers here).

    Example:
        >>> check_positive_int("examples_per_label", 0)
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: examples_per_label: got 0; must be in [1, inf]
    """
    import numbers

    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{key}: got {value!r} ({type(value).__name__}); expected an integer >= 1 or None")
    check_range(key, int(value), low=1)
