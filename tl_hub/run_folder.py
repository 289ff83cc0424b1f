"""The output folder as the home of one run: whose run it holds, whether to resume it, start over, reuse
or refuse it; and what to tell the user when a run stops.

The rules, for the main process before anything is written (`prepare_output_dir`):

- an empty or new folder: the run starts there;
- a folder of someone else's files (no tl_hub recipe in it): refused, unless `overwrite_output_dir`
  (which replaces tl_hub's own files only);
- a run of the same recipe: `resume_from_checkpoint: auto` (the default) resumes it from its newest
  checkpoint when it is unfinished, starts it again when it finished or never reached a checkpoint;
  `latest` resumes from the newest checkpoint in any case; `none` starts over; a path resumes from there;
- a run of another recipe that never reached a checkpoint (a run that failed early, e.g. on a typo): its
  files are replaced, so the corrected command just works;
- any other run of another recipe: refused with the keys that differ, unless `overwrite_output_dir`.

Example:
    >>> from tl_hub.config import RecipeConfig
    >>> describe_differences(RecipeConfig(dataset="a", epochs=5), RecipeConfig(dataset="a", epochs=3))
    'epochs: 5 there, 3 here'
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tl_hub.config import RecipeConfig
from tl_hub.errors import ConfigError, StopRequested
from tl_hub.output_folder import CHECKPOINTS_DIR, RECIPE_FILE, RUN_INFO_FILE, remove_run_files
from tl_hub.reporting import logger, main_process_reporter

__all__ = ["describe_differences", "explain_stop", "prepare_output_dir", "same_recipe", "stops_explained"]

# recipe keys that may differ between a run and its resumption
_RESUME_FREE_KEYS = {"resume_from_checkpoint", "overwrite_output_dir", "push_to_hub", "hub_model_id",
                     "hub_private", "log_with", "tracker_project", "run_name", "progress", "num_workers",
                     "feature_cache_dir", "output_dir", "image_cache_max_gb"}


def same_recipe(a: RecipeConfig, b: RecipeConfig) -> bool:
    """Whether two recipes train the same run (they may differ in where it goes and how it resumes or is pushed).

    Example:
        >>> same_recipe(RecipeConfig(dataset="a", output_dir="x"), RecipeConfig(dataset="a", output_dir="y"))
        True
    """
    return _training_keys(a) == _training_keys(b)


def describe_differences(there: RecipeConfig, here: RecipeConfig, limit: int = 4) -> str:
    """The keys in which two recipes differ, as "key: X there, Y here" (at most `limit`, then a count)."""
    a, b = _training_keys(there), _training_keys(here)
    diffs = [f"{k}: {a[k]!r} there, {b[k]!r} here".replace("'", "") for k in a if a[k] != b.get(k)]
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


def _training_keys(config: RecipeConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _RESUME_FREE_KEYS}


def prepare_output_dir(config: RecipeConfig, accelerator: Any) -> Path | None:
    """Make the output folder ready for this run and return the checkpoint to resume from, or None.

    The main process applies the rules of the module docstring (refusing with a ConfigError that names
    the folder and the way out), removes what a start-over replaces, and writes the recipe; then every
    process reads the same answer from the folder.

    Example:
        >>> prepare_output_dir(RecipeConfig(dataset="beans", output_dir="out"), make_accelerator())  # doctest: +SKIP
    """
    from tl_hub import checkpoint as ckpt
    from tl_hub.train import find_resume_checkpoint

    say = main_process_reporter(accelerator)
    output_dir = Path(config.output_dir).expanduser()
    checkpoint_dir = output_dir / CHECKPOINTS_DIR
    if accelerator.is_main_process:
        _claim(config, output_dir, say)
        _write_recipe(config, output_dir)
    accelerator.wait_for_everyone()
    mode = config.resume_from_checkpoint
    resume = None if mode == "none" else find_resume_checkpoint(checkpoint_dir, "latest" if mode == "auto" else mode)
    if resume is not None:
        state = ckpt.read_state(resume)
        say(f"resume_from_checkpoint: {mode} -- resuming the run in {output_dir} from {resume.name} (epoch "
            f"{state.get('epoch', 0) + 1}, global step {state['global_step']}); resume_from_checkpoint: none starts over")
    elif mode == "latest":
        say("resume_from_checkpoint: latest -- no checkpoint yet, starting from the beginning")
    return resume


def _claim(config: RecipeConfig, output_dir: Path, say: Callable[[str], None]) -> None:
    """Apply the folder rules on the main process: refuse, or clear what this run replaces."""
    from tl_hub import checkpoint as ckpt

    contents = _contents(output_dir)
    checkpoint_dir = output_dir / CHECKPOINTS_DIR
    for stale in ckpt.remove_incomplete(checkpoint_dir):
        say(f"removed an incomplete checkpoint left by an interrupted run: {stale.name}")
    if not contents:
        return
    previous = _previous_recipe(output_dir)
    finished = (output_dir / RUN_INFO_FILE).is_file()
    checkpointed = ckpt.latest_checkpoint(checkpoint_dir) is not None
    if previous is not None and same_recipe(previous, config):
        start_over = config.resume_from_checkpoint == "none" or (config.resume_from_checkpoint == "auto" and finished)
        if start_over and checkpoint_dir.exists():
            shutil.rmtree(checkpoint_dir)  # a fresh start never mixes with the older run's checkpoints
        if start_over and finished:
            say(f"{output_dir} holds a finished run of this recipe: training it again (resume_from_checkpoint: "
                f"{config.resume_from_checkpoint})")
        return
    if previous is not None and not finished and not checkpointed:
        removed = remove_run_files(output_dir)
        say(f"{output_dir}: replacing a run that stopped before its first checkpoint ({', '.join(removed)})")
        return
    if config.overwrite_output_dir:
        removed = remove_run_files(output_dir)
        say(f"overwrite_output_dir: replaced {', '.join(removed) or 'nothing'} in {output_dir} (other files kept)")
        return
    raise ConfigError(_refusal(config, output_dir, previous, contents, finished))


def _contents(output_dir: Path) -> list[str]:
    """The names in the folder ([] when it does not exist); ConfigError when it is a file or unreadable."""
    if not output_dir.exists():
        return []
    if not output_dir.is_dir():
        raise ConfigError(f"output_dir: {output_dir} is a file, not a folder; choose another output_dir "
                          "(or move the file away)")
    try:
        return sorted(p.name for p in output_dir.iterdir())
    except OSError as err:
        raise ConfigError(f"output_dir: cannot read {output_dir} ({err.strerror or err}); choose a folder you can "
                          "read and write") from err


def _previous_recipe(output_dir: Path) -> RecipeConfig | None:
    recipe = output_dir / RECIPE_FILE
    if not recipe.is_file():
        return None
    try:
        return RecipeConfig.from_yaml(recipe)
    except ConfigError:
        return None


def _refusal(config: RecipeConfig, output_dir: Path, previous: RecipeConfig | None, contents: list[str],
             finished: bool) -> str:
    if previous is None:
        listing = ", ".join(contents[:8]) + (f", … (+{len(contents) - 8})" if len(contents) > 8 else "")
        return (f"output_dir: {output_dir} is not empty and holds no tl_hub run ({listing}). Use another "
                "output_dir, or set overwrite_output_dir: true to write tl_hub's files there (yours are kept).")
    kind = "a finished run" if finished else "an unfinished run"
    resume = "" if finished else f", or rerun its own recipe ({output_dir / RECIPE_FILE}) to resume it"
    return (f"output_dir: {output_dir} holds {kind} of a different recipe ({describe_differences(previous, config)}). "
            f"Use another output_dir (e.g. --output_dir {output_dir}-2), set overwrite_output_dir: true to "
            f"replace it{resume}.")


def _write_recipe(config: RecipeConfig, output_dir: Path) -> None:
    blocker = next((p for p in output_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"output_dir: {output_dir} cannot be created: {blocker} is a file, not a folder; choose "
                          "another output_dir")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        config.to_yaml(output_dir / RECIPE_FILE)
    except OSError as err:
        raise ConfigError(f"output_dir: cannot write to {output_dir} ({err.strerror or err}); choose a folder you "
                          "can write to") from err


def explain_stop(stop: BaseException, output_dir: Path, accelerator: Any) -> None:
    """Tell the user (main process) how to go on after a run stopped: Ctrl-C, an error, any stop during
    training. With a checkpoint, the same command resumes from it; without, Ctrl-C says it starts again.

    Example:
        >>> explain_stop(KeyboardInterrupt(), Path("out"), make_accelerator())  # doctest: +SKIP
    """
    from tl_hub import checkpoint as ckpt

    if not accelerator.is_main_process or isinstance(stop, (SystemExit, StopRequested)):
        return
    latest = ckpt.latest_checkpoint(output_dir / CHECKPOINTS_DIR)
    what = "interrupted" if isinstance(stop, KeyboardInterrupt) else f"stopped ({type(stop).__name__})"
    if latest is not None:
        state = ckpt.read_state(latest)
        fix = "" if isinstance(stop, KeyboardInterrupt) else "after fixing the cause, "
        logger.warning(f"the run was {what}; {output_dir / CHECKPOINTS_DIR} holds {latest.name} (epoch "
                       f"{state.get('epoch', 0) + 1}, global step {state['global_step']}): {fix}run the same command "
                       "again to resume from it (resume_from_checkpoint: none starts over)")
    elif isinstance(stop, KeyboardInterrupt):
        logger.warning(f"the run was {what} before its first checkpoint: the same command starts it again "
                       f"({os.fspath(output_dir)} is reused)")


@contextlib.contextmanager
def stops_explained(output_dir: Path, accelerator: Any) -> Iterator[None]:
    """Run the block; if it stops (Ctrl-C, an error), `explain_stop` says how to go on, then the stop goes on.

    Example:
        >>> with stops_explained(Path("out"), make_accelerator()):  # doctest: +SKIP
        ...     train()
    """
    try:
        yield
    except BaseException as stop:
        explain_stop(stop, output_dir, accelerator)
        raise

