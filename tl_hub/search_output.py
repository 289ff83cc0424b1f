"""The output folder of a search: whose search it holds (resume it or refuse), and the best trial's model
put at its top as an ordinary tl_hub output folder, with the leaderboard, the plot and the test score.

The folder rules follow `tl_hub.run_folder`'s for one run: a new or empty folder starts a search; a folder
holding a search of the same recipe and candidates (`search.yaml`) resumes it (the Optuna study in
`study.db` goes on where it stopped); another search, or other files, are refused with the difference,
unless `overwrite_output_dir`. Each trial is a run folder of its own under `trials/`.

Example:
    >>> from tl_hub.config import RecipeConfig
    >>> search_spec(RecipeConfig(dataset="d", epochs=2), {"policies": ["head"]})["search"]
    {'policies': ['head']}
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tl_hub.config import RecipeConfig
from tl_hub.errors import ConfigError
from tl_hub.leaderboard import LeaderboardRow, plot_scores, write_leaderboard
from tl_hub.output_folder import (
    CARD_FILE,
    LEADERBOARD_FILE,
    RECIPE_FILE,
    RUN_FILES,
    RUN_INFO_FILE,
    SEARCH_FILE,
    SEARCH_PLOT,
    SEARCH_STATE,
    TEST_EVAL_DIR,
    remove_run_files,
)
from tl_hub.run_folder import describe_differences

__all__ = ["claim_search_folder", "publish_best", "search_spec"]

_FREE = {"output_dir", "overwrite_output_dir", "resume_from_checkpoint", "push_to_hub", "hub_model_id", "hub_private",
         "progress", "num_workers", "log_with", "tracker_project", "run_name", "feature_cache_dir", "image_cache_max_gb"}


def search_spec(config: RecipeConfig, space: dict[str, Any]) -> dict[str, Any]:
    """What makes two searches the same search: the fixed recipe and the candidates (`search.yaml`)."""
    return {"recipe": {k: v for k, v in config.to_dict().items() if k not in _FREE}, "search": space}


def claim_search_folder(config: RecipeConfig, spec: dict[str, Any]) -> tuple[Path, bool]:
    """Make `config.output_dir` this search's folder; returns (folder, resumed). ConfigError when it holds another
    search or other files (unless `overwrite_output_dir`, which removes tl_hub's files there only)."""
    import yaml

    out = Path(config.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir: {out} is a file, not a folder; choose another output_dir")
    contents = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    spec_file = out / SEARCH_FILE
    previous = yaml.safe_load(spec_file.read_text(encoding="utf-8")) if spec_file.is_file() else None
    if previous == spec:
        return out, True
    if contents and not _only_lock(contents):
        if not config.overwrite_output_dir:
            raise ConfigError(_refusal(out, previous, spec, contents))
        _remove_search(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = spec_file.with_name(f".{SEARCH_FILE}.{os.getpid()}.tmp")  # several workers may start together
    tmp.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    tmp.replace(spec_file)
    return out, False


def _only_lock(contents: list[str]) -> bool:
    return all(name.startswith(".") for name in contents)  # a lock or a spec another worker is writing


def _refusal(out: Path, previous: dict[str, Any] | None, spec: dict[str, Any], contents: list[str]) -> str:
    if previous is None:
        listing = ", ".join(contents[:8]) + (f", … (+{len(contents) - 8})" if len(contents) > 8 else "")
        return (f"output_dir: {out} is not empty and holds no tl_hub search ({listing}). Use another output_dir, or "
                "set overwrite_output_dir: true to replace tl_hub's files there (yours are kept).")
    try:
        diff = describe_differences(RecipeConfig.from_dict(previous["recipe"]), RecipeConfig.from_dict(spec["recipe"]))
    except (ConfigError, KeyError, TypeError):
        diff = ""
    if not diff:
        diff = f"search: {previous.get('search')} there, {spec['search']} here"
    return (f"output_dir: {out} holds another search ({diff}). Use another output_dir (e.g. --output_dir {out}-2), "
            "set overwrite_output_dir: true to replace it, or rerun its own search to resume it.")


def _remove_search(out: Path) -> None:
    remove_run_files(out)
    for name in SEARCH_STATE:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def publish_best(out: Path, best_dir: Path, rows: list[LeaderboardRow], summary: dict[str, Any],
                 test_metrics: dict[str, Any] | None) -> None:
    """Put the best trial's model at the top of the search folder as an ordinary output folder (its run files,
    its recipe rewritten to train there), with `leaderboard.csv`, `search_scores.png` and, in `run_info.json`,
    the search's summary and the test score; then render the model card from them."""
    from tl_hub.card import write_model_card
    from tl_hub.checkpoint import atomic_write_json

    for name in RUN_FILES:
        if (best_dir / name).is_file() and name not in (CARD_FILE, LEADERBOARD_FILE, SEARCH_PLOT):
            shutil.copy2(best_dir / name, out / name)
    recipe = RecipeConfig.from_yaml(best_dir / RECIPE_FILE).replace(output_dir=str(out))
    recipe.to_yaml(out / RECIPE_FILE)
    write_leaderboard(out / LEADERBOARD_FILE, rows)
    plotted = plot_scores(rows, out / SEARCH_PLOT, metric=summary.get("metric", "score"))
    run_info = json.loads((out / RUN_INFO_FILE).read_text(encoding="utf-8"))
    run_info["search"] = {**summary, "plot": SEARCH_PLOT if plotted else None, "test": test_metrics,
                          "test_evaluation": TEST_EVAL_DIR if test_metrics else None}
    atomic_write_json(out / RUN_INFO_FILE, run_info)
    write_model_card(out, repo_id=recipe.hub_model_id)
