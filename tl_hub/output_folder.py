"""The files of a tl_hub output folder: the one list that the run's writer, the card and the push share.

A run writes a Hub-ready folder: the model (`model.safetensors`, `config.json` with the label names, and
for transformers backbones `preprocessor_config.json`), the model card (`README.md`) with its two
plots, the resolved recipe, the metrics and the run's facts (`run_info.json`); resumable state goes to
`checkpoints/`, which is never pushed.

Example:
    >>> from tl_hub.output_folder import CARD_FILE, RUN_FILES
    >>> CARD_FILE in RUN_FILES, "checkpoints" in RUN_FILES
    (True, False)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tl_hub.errors import HubError

__all__ = [
    "CARD_FILE", "CHECKPOINTS_DIR", "CONFIG_FILE", "CONFUSION_PNG", "CURVES_PNG", "METRICS_FILE",
    "LEADERBOARD_FILE", "MODEL_FILE", "PROCESSOR_FILE", "RECIPE_FILE", "REQUIRED_FILES", "RUN_FILES", "RUN_INFO_FILE",
    "SEARCH_FILE", "SEARCH_PLOT", "SEARCH_STATE", "STUDY_FILE", "TEST_EVAL_DIR", "TRIALS_DIR",
    "check_output_folder", "hub_files", "remove_run_files",
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
CARD_FILE = "README.md"
RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
RUN_INFO_FILE = "run_info.json"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"
CHECKPOINTS_DIR = "checkpoints"
# a search's output folder (tl_hub.search) also holds these
LEADERBOARD_FILE = "leaderboard.csv"
SEARCH_PLOT = "search_scores.png"
STUDY_FILE = "study.db"
SEARCH_FILE = "search.yaml"
TRIALS_DIR = "trials"
TEST_EVAL_DIR = "test_evaluation"

#: every file a run writes into its output folder: a push sends exactly these (those present), and
#: overwrite_output_dir replaces these and checkpoints/ only; other files in the folder are the user's
RUN_FILES: tuple[str, ...] = (
    MODEL_FILE, CONFIG_FILE, PROCESSOR_FILE, CARD_FILE, RECIPE_FILE, METRICS_FILE, RUN_INFO_FILE,
    CONFUSION_PNG, CURVES_PNG, LEADERBOARD_FILE, SEARCH_PLOT,
)
#: a search's own state (the Optuna study, its recipe, each trial's run folder, the test evaluation): kept in
#: the folder so the search resumes, never pushed (like checkpoints/)
SEARCH_STATE: tuple[str, ...] = (STUDY_FILE, SEARCH_FILE, TRIALS_DIR, TEST_EVAL_DIR)
#: what makes a folder a finished tl_hub run
REQUIRED_FILES: tuple[str, ...] = (RUN_INFO_FILE, CONFIG_FILE, MODEL_FILE)


def check_output_folder(output_dir: str | Path) -> Path:
    """The folder as a Path if it holds a finished tl_hub run (`REQUIRED_FILES`); else HubError saying what to push.

    Example:
        >>> check_output_folder("not/a/run")
        Traceback (most recent call last):
        ...
        tl_hub.errors.HubError: output_dir: 'not/a/run' is not a folder; pass the folder a tl_hub training run wrote (it holds run_info.json, config.json, model.safetensors)
    """
    out = Path(output_dir).expanduser()
    if not out.is_dir():
        raise HubError(f"output_dir: {str(output_dir)!r} is not a folder; pass the folder a tl_hub training run "
                       f"wrote (it holds {', '.join(REQUIRED_FILES)})")
    missing = [name for name in REQUIRED_FILES if not (out / name).is_file()]
    if missing:
        raise HubError(f"output_dir: {str(out)!r} is not a tl_hub output folder: missing {', '.join(missing)}. "
                       "Push the folder that `tl-hub train` / tl_hub.finetune() wrote (its output_dir), "
                       "or use huggingface_hub.upload_folder for other folders")
    return out


def hub_files(output_dir: Path) -> dict[str, Path]:
    """Repo path -> local file for every `RUN_FILES` entry present in the folder: what a push sends."""
    return {name: output_dir / name for name in RUN_FILES if (output_dir / name).is_file()}


def remove_run_files(output_dir: Path) -> list[str]:
    """Delete the files a run writes (`RUN_FILES`) and `checkpoints/`; other files stay. Returns what went."""
    removed = [name for name in RUN_FILES if (output_dir / name).exists()]
    for name in removed:
        (output_dir / name).unlink()
    if (output_dir / CHECKPOINTS_DIR).exists():
        shutil.rmtree(output_dir / CHECKPOINTS_DIR)
        removed.append(f"{CHECKPOINTS_DIR}/")
    return removed
