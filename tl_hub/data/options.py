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

__all__ = ["MIN_IMAGE_SIZE", "NO_TEST_SPLIT", "ON_BAD_IMAGE", "check_data_options", "check_image_size",
           "check_test_split"]

#: what to do with an unreadable image
ON_BAD_IMAGE = ("skip", "error")
#: the smallest training/eval image side tl_hub accepts (smaller crops leave conv nets nothing to see)
MIN_IMAGE_SIZE = 16
#: the ``test_split`` value that leaves the test split out (no held-out evaluation)
NO_TEST_SPLIT = "none"


def check_test_split(test_split: str | None, *, train_split: str | None = None, eval_split: str | None = None) -> None:
    """Raise ConfigError unless `test_split` is None (automatic), ``"none"`` or a split name that is neither the
    training split nor the eval split (the test split is held out from both). Whether the dataset has the split
    is checked when it is read (`tl_hub.data.load_data`).

    Example:
        >>> check_test_split("test", eval_split="test")
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: test_split: got 'test', the same as eval_split; the test split is held out from training and selection: name another split, null (automatic) or 'none' (no test split)
    """
    if test_split is None:
        return
    if not isinstance(test_split, str) or not test_split.strip():
        raise ConfigError(f"test_split: got {test_split!r}; expected a split name (e.g. 'test'), null (automatic: the "
                          f"dataset's test split when there is one) or {NO_TEST_SPLIT!r} (no test split)")
    for key, other in (("train_split", train_split), ("eval_split", eval_split)):
        if other is not None and test_split == other:
            raise ConfigError(f"test_split: got {test_split!r}, the same as {key}; the test split is held out from "
                              f"training and selection: name another split, null (automatic) or {NO_TEST_SPLIT!r} "
                              "(no test split)")


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
    test_split: str | None = None,
    train_split: str | None = None,
    eval_split: str | None = None,
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
    check_test_split(test_split, train_split=train_split, eval_split=eval_split)
