"""The rules for the data options of a run, shared by `load_data` and `RecipeConfig` (kept light: no
datasets/torch import, so a recipe is validated without loading them).

Example:
    >>> check_data_options(eval_fraction=1.0)
    Traceback (most recent call last):
    ...
    tl_hub.errors.ConfigError: eval_fraction: got 1.0; must be in (0, 1) (e.g. 0.2)
"""

from __future__ import annotations

from tl_hub.errors import ConfigError
from tl_hub.validation import check_positive_int, check_range

__all__ = ["MIN_IMAGE_SIZE", "ON_BAD_IMAGE", "check_data_options", "check_image_size"]

#: what to do with an unreadable image
ON_BAD_IMAGE = ("skip", "error")
#: the smallest training/eval image side tl_hub accepts (smaller crops leave conv nets nothing to see)
MIN_IMAGE_SIZE = 16


def check_image_size(image_size: int | None) -> None:
    """Raise ConfigError unless `image_size` is None (the backbone's own size) or an integer >= 16.

    Example:
        >>> check_image_size(8)
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: image_size: got 8; must be in [16, inf] (e.g. 112 for a quick CPU run, 224 for most backbones)
    """
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)):
        raise ConfigError(f"image_size: got {image_size!r} ({type(image_size).__name__}); expected an integer or None")
    check_range("image_size", image_size, low=MIN_IMAGE_SIZE, hint="e.g. 112 for a quick CPU run, 224 for most backbones")


def check_data_options(
    *,
    eval_fraction: float = 0.2,
    on_bad_image: str = "skip",
    max_bad_fraction: float = 0.01,
    max_train_samples: int | None = None,
    examples_per_label: int | None = None,
    image_size: int | None = None,
) -> None:
    """Raise ConfigError naming the first invalid option (the value received and what is allowed).

    Example:
        >>> check_data_options(on_bad_image="ignore")
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: on_bad_image: got 'ignore'; use 'skip' or 'error'
    """
    check_range("eval_fraction", eval_fraction, low=0, high=1, low_open=True, high_open=True, hint="e.g. 0.2")
    if on_bad_image not in ON_BAD_IMAGE:
        raise ConfigError(f"on_bad_image: got {on_bad_image!r}; use 'skip' or 'error'")
    check_range("max_bad_fraction", max_bad_fraction, low=0, high=1, hint="e.g. 0.01")
    check_positive_int("max_train_samples", max_train_samples)
    check_positive_int("examples_per_label", examples_per_label)
    check_image_size(image_size)
