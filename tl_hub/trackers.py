"""Experiment trackers: accelerate's (tensorboard, wandb, mlflow, ...), named by the recipe's `log_with`.

A recipe may only name trackers accelerate knows (checked with the recipe), and a run only starts with
trackers installed on its machine (checked before anything else happens): either mistake is a
`ConfigError` naming the trackers there are. A run logs under `tracker_project` with the name
`run_name` (default: the output folder's name) and records as hyperparameters what it really used:
the resolved policy, its peak learning rate and the data sizes, beside the recipe's own scalar keys.
TensorBoard writes to ``OUTPUT_DIR/runs/PROJECT/RUN_NAME``.

Example:
    >>> check_tracker_names(["tensorboard"])
    ['tensorboard']
    >>> run_hparams({"epochs": 3, "labels": ["a", "b"]}, policy="head", learning_rate=1e-3,
    ...             sizes={"train": 10, "eval": 4, "labels": 2})["policy"]
    'head'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from tl_hub.config_parsing import closest
from tl_hub.errors import ConfigError

__all__ = ["check_tracker_names", "installed_trackers", "make_trackers", "run_hparams", "tracker_init_kwargs"]

#: the pip package of each tracker, for the "not installed" message
_PACKAGES = {"comet_ml": "comet-ml", "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow",
             "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}
#: the keyword by which each tracker that takes one is given a run name (accelerate passes it through)
_RUN_NAME_KEYWORDS = {"wandb": "name", "mlflow": "run_name", "comet_ml": "experiment_name", "trackio": "name"}


def known_trackers() -> list[str]:
    """Every tracker accelerate can start.

    Example:
        >>> "tensorboard" in known_trackers() and "wandb" in known_trackers()
        True
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    return list(LOGGER_TYPE_TO_CLASS)


def installed_trackers() -> list[str]:
    """The trackers whose packages are installed here.

    Example:
        >>> set(installed_trackers()) <= set(known_trackers())
        True
    """
    from accelerate.tracking import get_available_trackers

    return [str(getattr(t, "value", t)) for t in get_available_trackers()]


def check_tracker_names(names: Iterable[str]) -> list[str]:
    """The recipe's `log_with`, lower-cased, each a tracker accelerate knows (or "all").

    Example:
        >>> check_tracker_names(["tensorbord"])
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: log_with: unknown tracker 'tensorbord' (did you mean 'tensorboard'?); ...
    """
    names = [str(n).strip().lower() for n in names]
    if not names:
        return names
    known = known_trackers()
    for name in names:
        if name != "all" and name not in known:
            raise ConfigError(f"log_with: unknown tracker {name!r}{closest(name, known)}; accelerate's trackers: "
                              f"{', '.join(known)} (or all: every installed one); installed here: "
                              f"{', '.join(installed_trackers()) or 'none'}")
    return names


def _check_installed(names: list[str]) -> list[str]:
    """`names` with "all" expanded to the installed trackers; a tracker not installed is a ConfigError."""
    installed = installed_trackers()
    if "all" in names:
        names = list(dict.fromkeys([*(n for n in names if n != "all"), *installed]))
    for name in names:
        if name not in installed:
            raise ConfigError(f"log_with: {name!r} is not installed here (pip install {_PACKAGES.get(name, name)}); "
                              f"installed trackers: {', '.join(installed) or 'none'}")
    return names


def make_trackers(names: Iterable[str], *, project: str, run_name: str, logging_dir: str | Path) -> list[Any]:
    """What `log_with` hands to the Accelerator: the tracker names, TensorBoard as a tracker object (so it
    writes to ``logging_dir/project/run_name``: accelerate names its folder after the project only).
    Raises ConfigError for a tracker that is not installed here.

    Example:
        >>> [type(t).__name__ for t in make_trackers(["tensorboard"], project="p", run_name="r", logging_dir="runs")]
        ['TensorBoardTracker']
    """
    from accelerate.tracking import TensorBoardTracker

    wanted = _check_installed(check_tracker_names(names))
    return [TensorBoardTracker(f"{project}/{run_name}", str(logging_dir)) if n == "tensorboard" else n
            for n in wanted]


def tracker_init_kwargs(names: Iterable[Any], run_name: str) -> dict[str, dict[str, str]]:
    """accelerate's `init_kwargs`: the run name for every tracker that takes one.

    Example:
        >>> tracker_init_kwargs(["wandb", "mlflow"], "lite0-head")
        {'wandb': {'name': 'lite0-head'}, 'mlflow': {'run_name': 'lite0-head'}}
    """
    return {n: {_RUN_NAME_KEYWORDS[n]: run_name} for n in names if isinstance(n, str) and n in _RUN_NAME_KEYWORDS}


def run_hparams(recipe: Mapping[str, Any], *, policy: str, learning_rate: float,
                sizes: Mapping[str, int]) -> dict[str, Any]:
    """The hyperparameters a run logs: the recipe's scalar keys, with what the run resolved in place of
    what the recipe left open (`policy: auto` -> the policy used; `learning_rate: null` -> its peak rate),
    and the data sizes as `n_train`, `n_eval`, `n_labels`.

    Example:
        >>> run_hparams({"policy": "auto", "learning_rate": None}, policy="partial", learning_rate=1e-4,
        ...             sizes={"train": 900, "eval": 100, "labels": 10})
        {'policy': 'partial', 'learning_rate': 0.0001, 'requested_policy': 'auto', 'n_train': 900, 'n_eval': 100, 'n_labels': 10}
    """
    scalars = {k: v for k, v in recipe.items() if isinstance(v, (int, float, str, bool))}
    return {**scalars, "policy": policy, "learning_rate": float(learning_rate),
            "requested_policy": str(recipe.get("policy", policy)), **{f"n_{k}": int(v) for k, v in sizes.items()}}
