"""`tl_hub.search`: AutoML on a time budget. Try backbones x freeze policies x learning rates with Optuna
and keep the best model, as an ordinary output folder. (The module is `search_run`, not `search`: a submodule
named `search` would replace the function `tl_hub.search` once anything imported it.)

The recipe's keys are the fixed part of every trial; the `search:` block (or keywords) lists the candidates
(`tl_hub.search_space`). The search:

1. screens the backbones when there are more than `screen_top` (`tl_hub.screening.screen_backbones`: a cheap
   linear probe each) and keeps the best few;
2. starts with one `head` trial per kept backbone (cached features: seconds each), then runs what `policy: auto`
   would (the rule's pick for the data size the first trial recorded, at its default learning rate and the
   recipe's epochs; never pruned by score: it is the baseline the search has to beat), then lets Optuna's TPE
   sampler choose backbone, policy, learning rate (log scale) and epochs; Hyperband prunes trials on their
   per-epoch validation score (a pruned trial ends cleanly after its epoch's checkpoint);
3. keeps the study in SQLite in the output folder (`study.db`; or any Optuna RDB URL via `storage`): a killed
   search run again resumes (a trial it left running is retried in its own folder, from its checkpoint, once
   its heartbeat is stale), and several processes or machines given the same URL share the work;
4. stops starting trials when the time left cannot fit one (estimated from the trials that ran) and stops a
   trial that would overrun, so the search ends within its budget; the one test evaluation of the chosen
   model follows it, announced with its expected seconds and recorded apart (`test_eval_s`), as AutoGluon's
   `evaluate` follows `fit(time_limit=...)` and a run's test score is not part of its training time;
5. copies the best trial to the top of the output folder, evaluates it once on the test split, and writes
   `leaderboard.csv`, `search_scores.png` and the card's "How this model was chosen".

Scores come from the validation carve-out of train (`test_split: none` in every trial's recipe): the
test split is never seen until the best trial is chosen.

Example:
    >>> import tl_hub
    >>> result = tl_hub.search("recipes/search/fashion.yaml", time_budget="10m")  # doctest: +SKIP
    >>> result.best.policy, result.test_metrics["accuracy"]  # doctest: +SKIP
    ('partial', 0.86)
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_hub.config import RecipeConfig
from tl_hub.errors import ConfigError, TlHubError
from tl_hub.leaderboard import AUTO_PICK, LeaderboardRow, rows_from_trials
from tl_hub.output_folder import STUDY_FILE, TEST_EVAL_DIR
from tl_hub.policy import peak_learning_rate
from tl_hub.reporting import logger, use_console
from tl_hub.search_output import claim_search_folder, publish_best, search_spec
from tl_hub.search_space import SearchSpace, parse_duration
from tl_hub.search_trials import (
    RETRY_OF,
    OutOfTime,
    PrunedByScore,
    TrialParams,
    TrialWatch,
    best_score,
    estimate_cost,
    estimate_test_eval,
    folder_number,
    inherited_scores,
    interrupted_to_retry,
    sample_params,
    trial_config,
    trial_facts,
    trial_folder,
)

__all__ = ["SearchResult", "load_search_recipe", "search"]

_STUDY_NAME = "tl_hub_search"


@dataclass
class SearchResult:
    """What `search` returns: the output folder (the best model at its top), the leaderboard (best first), the
    best trial's row, its test metrics (None without a test split), seconds this call ran, and why it stopped."""

    output_dir: str
    leaderboard: list[LeaderboardRow]
    best: LeaderboardRow | None
    test_metrics: dict[str, Any] | None
    seconds: float
    stopped: str
    screen: list[dict[str, Any]] = field(default_factory=list)


def load_search_recipe(config: Any, overrides: dict[str, Any]) -> tuple[RecipeConfig, dict[str, Any]]:
    """The fixed recipe and the `search:` block, from a YAML path, a dict or a RecipeConfig, overrides applied.

    Example:
        >>> cfg, block = load_search_recipe({"dataset": "beans", "search": {"policies": ["head"]}}, {"epochs": 2})
        >>> cfg.epochs, block
        (2, {'policies': ['head']})
    """
    from tl_hub.config_parsing import read_yaml

    block: dict[str, Any] = {}
    if isinstance(config, (str, os.PathLike)):
        config = read_yaml(Path(config))
    if isinstance(config, dict):
        values = dict(config)
        block = dict(values.pop("search", None) or {})
        config = RecipeConfig.from_dict({**values, **overrides}) if values or overrides else None
        overrides = {}
    if config is None:
        config = RecipeConfig.from_dict(overrides)
    elif not isinstance(config, RecipeConfig):
        raise ConfigError(f"config: got {type(config).__name__}; pass a RecipeConfig, a recipe YAML path or a dict")
    elif overrides:
        config = config.replace(**overrides)
    return config, block


def search(config: Any = None, *, time_budget: Any = "30m", backbones: Sequence[str] | None = None,
           policies: Sequence[str] | None = None, learning_rate: Sequence[float] | None = None,
           epochs: Sequence[int] | None = None, screen_top: int | None = None, storage: str | None = None,
           heartbeat_s: int = 10, **overrides: Any) -> SearchResult:
    """Search backbones x policies x learning rates within `time_budget`; the best model ends up in `output_dir`.

    Args:
        config: a recipe (YAML path, dict or RecipeConfig), optionally with a `search:` block.
        time_budget: seconds, or "90s", "30m", "2h".
        backbones, policies, learning_rate ([low, high]), epochs (choices), screen_top: override the block.
        storage: an Optuna RDB URL (PostgreSQL, MySQL, SQLite) that several workers share; default: SQLite
            `study.db` in the output folder.
        heartbeat_s: how often a running trial says it is alive; a trial silent for 3x this long (a killed
            worker's) is retried from its checkpoint.
        **overrides: recipe keys.

    Example:
        >>> result = search("recipes/search/fashion.yaml", time_budget="5m")  # doctest: +SKIP
    """
    use_console()
    started = time.monotonic()
    config, block = load_search_recipe(config, overrides)
    for key, value in (("backbones", backbones), ("policies", policies), ("learning_rate", learning_rate),
                       ("epochs", epochs), ("screen_top", screen_top)):
        if value is not None:
            block[key] = list(value) if isinstance(value, (list, tuple)) else value
    space = SearchSpace.from_dict(block, default_backbone=config.model, default_epochs=config.epochs)
    budget = parse_duration(time_budget)
    out, resumed = claim_search_folder(config, search_spec(config, space.to_dict()))
    logger.info(f"search: {'resuming the search' if resumed else 'a new search'} in {out}; time budget {budget:.0f} s")
    from filelock import FileLock

    with FileLock(str(out / ".search.lock")):  # workers starting together: one creates the tables and the study
        study = _open_study(out, storage, config, heartbeat_s)
        _retry_interrupted(study)
    clock = _Clock(started, budget, float(study.user_attrs.get("spent_s", 0.0)))
    kept, screen = _screen(study, config, space)
    _enqueue_cheap_first(study, space, kept)
    stopped = _run_trials(study, config, space, kept, out, clock)
    return _finish(study, config, out, clock, stopped, screen)


@dataclass
class _Clock:
    """The budget: `spent` seconds before this call (a resumed search), this call's start, the budget."""

    started: float
    budget: float
    spent_before: float

    def spent(self) -> float:
        return self.spent_before + time.monotonic() - self.started

    def left(self) -> float:
        return self.budget - self.spent()


def _open_study(out: Path, storage: str | None, config: RecipeConfig, heartbeat_s: int) -> Any:
    try:
        import optuna
    except ImportError as err:
        raise ConfigError("tl_hub.search needs Optuna: pip install 'tl-hub[search]' (or pip install optuna)") from err
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from tl_hub.metrics import greater_is_better

    url = storage or f"sqlite:///{(out / STUDY_FILE).resolve()}"
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8; they are what resumes
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = RDBStorage(url, engine_kwargs=engine, heartbeat_interval=max(1, int(heartbeat_s)),
                         grace_period=3 * max(1, int(heartbeat_s)),
                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                             max_retry=3, inherit_intermediate_values=True))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the order of trials is the study's (recorded); what each trial trains is a pure function of its recipe
    sampler = optuna.samplers.TPESampler(seed=(config.seed * 7919 + os.getpid()) % 2**31, n_startup_trials=4)
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    direction = "maximize" if greater_is_better(config.metric_for_best_model) else "minimize"
    return optuna.create_study(storage=rdb, study_name=_STUDY_NAME, sampler=sampler, pruner=pruner,
                               direction=direction, load_if_exists=True)


def _retry_interrupted(study: Any) -> None:
    """Enqueue a retry of each trial a Ctrl-C (or SIGTERM) interrupted: it runs first and resumes that trial's run
    from its last checkpoint, in the same folder. (A killed search's trials are retried by Optuna's heartbeat.)"""
    for trial in interrupted_to_retry(study.get_trials(deepcopy=False)):
        logger.info(f"search: trial {trial.number} was interrupted; it runs again first, from its last checkpoint")
        baseline = {AUTO_PICK: True} if trial.user_attrs.get(AUTO_PICK) else {}
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number, **baseline}, skip_if_exists=False)


def _screen(study: Any, config: RecipeConfig, space: SearchSpace) -> tuple[list[str], list[dict[str, Any]]]:
    """The backbones that get trials: all of them, or the `screen_top` best of a screen (done once per study)."""
    if len(space.backbones) <= space.screen_top:
        return list(space.backbones), []
    if "screen" not in study.user_attrs:
        from tl_hub.screening import screen_backbones

        scores = screen_backbones(config, list(space.backbones), max_images=space.screen_images, seed=config.seed)
        study.set_user_attr("screen", [_as_dict(s) for s in scores])
    screen = list(study.user_attrs["screen"])
    kept = [s["backbone"] for s in screen[: space.screen_top]]
    logger.info("search: screened " + ", ".join(f"{s['backbone']} {s['score']:.4f}" for s in screen)
                + f"; trials for {', '.join(kept)}")
    return kept, screen


def _as_dict(score: Any) -> dict[str, Any]:
    keys = ("backbone", "score", "metric", "n_images", "seconds")
    return {k: getattr(score, k) if not isinstance(score, dict) else score[k] for k in keys}


def _enqueue_cheap_first(study: Any, space: SearchSpace, kept: list[str]) -> None:
    """A new study starts with the cheapest trial per backbone: `head` at its default learning rate."""
    if study.trials or "head" not in [c.label for c in space.candidates]:
        return
    for backbone in kept:
        study.enqueue_trial(space.params_for(backbone, "head", None, peak_learning_rate("head"), space.epochs[-1]),
                            skip_if_exists=True)


def _enqueue_auto_pick(study: Any, config: RecipeConfig, space: SearchSpace, kept: list[str]) -> None:
    """Once a trial has recorded what `policy: auto` picks for the data (`auto_choice`), enqueue that recipe,
    once per study: the rule's policy (the space's nearest candidate), its default learning rate (the recipe's,
    if set) and the recipe's epochs, on the recipe's backbone (the best kept one if that was screened out). It is
    not pruned by score, so the search's best is at least as good as `auto` on the validation split."""
    if AUTO_PICK in study.user_attrs:
        return
    trials = study.get_trials(deepcopy=False)
    choice = next((t.user_attrs["auto_choice"] for t in trials if t.user_attrs.get("auto_choice")), None)
    if choice is None:
        return
    backbone = config.model if config.model in kept else kept[0]
    rate = config.learning_rate or peak_learning_rate(choice["name"])
    params = space.params_for(backbone, choice["name"], choice.get("train_fraction"), rate, config.epochs)
    study.set_user_attr(AUTO_PICK, params or {})
    if params is None:
        logger.info(f"search: policy auto would pick {choice['name']}, which the search's policies leave out")
        return
    same = next((t.number for t in trials if t.params == params and not t.user_attrs.get("not_run")), None)
    if same is not None:
        logger.info(f"search: trial {same} already trains what policy auto would ({params})")
        return
    logger.info(f"search: next, what policy auto would train: {params}")
    study.enqueue_trial(params, user_attrs={AUTO_PICK: True})


def _run_trials(study: Any, config: RecipeConfig, space: SearchSpace, kept: list[str], out: Path,
                clock: _Clock) -> str:
    """Start trials while one fits in the time left; returns why the search stopped."""
    import optuna

    skipped_in_a_row = failed_in_a_row = 0
    while True:
        reserve = _final_reserve(clock.budget)
        if clock.left() <= reserve:
            return "time budget"
        if _space_exhausted(study, space, kept):
            return "every candidate tried"
        if skipped_in_a_row >= 25:
            return "time budget (no candidate fits in the time left)"
        if failed_in_a_row >= 3:
            return "three trials in a row failed (see the warnings above)"
        _enqueue_auto_pick(study, config, space, kept)
        objective = _Objective(config, space, kept, out, deadline=time.monotonic() + clock.left() - reserve)
        try:
            study.optimize(objective, n_trials=1, catch=(TlHubError,), gc_after_trial=True)
        except optuna.exceptions.UpdateFinishedTrialError as err:  # another worker took it for a dead one's
            logger.warning(f"search: a trial of this worker was ended by another worker ({err}); going on")
        finally:  # also on Ctrl-C: a resumed search counts the seconds this one spent
            study.set_user_attr("spent_s", max(float(study.user_attrs.get("spent_s", 0.0)), clock.spent()))
        last = study.trials[-1] if study.trials else None
        skipped_in_a_row = skipped_in_a_row + 1 if last is not None and last.user_attrs.get("not_run") else 0
        failed = last is not None and last.state == optuna.trial.TrialState.FAIL and bool(last.user_attrs.get("error"))
        failed_in_a_row = failed_in_a_row + 1 if failed else 0
        if failed:
            logger.warning(f"search: trial {last.number} failed: {last.user_attrs['error']}")


def _final_reserve(budget: float) -> float:
    """Seconds kept for the end (choose the best trial, copy it to the top, leaderboard, card): 2 % of the budget,
    at least 2 s. The one test evaluation that follows is not part of the budget (see the module docstring)."""
    return max(2.0, 0.02 * budget)


def _finished_facts(study: Any, but: int | None = None) -> list[dict[str, Any]]:
    """The user attributes of the trials that ran (what the cost estimates read), trial `but` left out."""
    return [{**t.user_attrs, "policy": t.user_attrs.get("label")} for t in study.get_trials(deepcopy=False)
            if t.number != but and t.user_attrs.get("epoch_s") is not None]


def _space_exhausted(study: Any, space: SearchSpace, kept: list[str]) -> bool:
    """A finite space (no learning-rate range) whose every point has a finished or pruned trial."""
    import optuna

    if space.learning_rate is not None:
        return False
    done = {(t.params.get("backbone"), t.params.get("policy"), t.params.get("epochs", space.epochs[0]))
            for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            and not t.user_attrs.get("not_run")}
    return len(done) >= len(kept) * len(space.candidates) * len(space.epochs)


@dataclass
class _Objective:
    """One trial: sample, check it fits, train in its folder with the pruning watch, record its cost."""

    config: RecipeConfig
    space: SearchSpace
    kept: list[str]
    out: Path
    deadline: float

    def __call__(self, trial: Any) -> float:
        import optuna

        from tl_hub.finetuning import finetune
        from tl_hub.metrics import greater_is_better

        params = sample_params(trial, self.space, self.kept)
        number = folder_number(trial)
        trial.set_user_attr("folder_trial", number)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        for key, value in (("backbone", params.backbone), ("policy", params.candidate.policy),
                           ("fraction", params.candidate.fraction), ("learning_rate", params.learning_rate),
                           ("epochs", params.epochs), ("label", params.policy_label)):
            trial.set_user_attr(key, value)
        if not self._fits(trial, params):
            trial.set_user_attr("not_run", "the time left cannot fit it")
            raise optuna.TrialPruned("not run: the time left cannot fit it")
        cfg = trial_config(self.config, params, folder=trial_folder(self.out, number),
                           feature_cache_dir=self.out / "trials" / "features")
        watch = TrialWatch(trial, cfg.metric_for_best_model, self.deadline,
                           prunable=not trial.user_attrs.get(AUTO_PICK))  # auto's pick: the baseline runs whole
        for step, value in sorted(inherited_scores(trial).items()):  # an interrupted trial's epochs, for the pruner
            trial.report(value, step)
        logger.info(f"search: trial {trial.number} ({params.backbone}, {params.policy_label}, lr "
                    f"{params.learning_rate or 'default'}, {params.epochs} epochs) in {cfg.output_dir}")
        try:
            result = finetune(cfg, callbacks=[watch])
        except (PrunedByScore, OutOfTime) as stop:
            trial.set_user_attr("note", "time budget" if isinstance(stop, OutOfTime) else "pruned by score")
            raise optuna.TrialPruned(str(stop)) from None
        except TlHubError as err:
            trial.set_user_attr("error", str(err))
            raise
        except KeyboardInterrupt:  # Optuna marks it failed; the next `search` of this folder retries it
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("note", "interrupted (Ctrl-C): the next search of this folder resumes it")
            raise
        finally:
            for key, value in watch.record(time.monotonic() - watch.started).items():
                trial.set_user_attr(key, value)
        for key, value in trial_facts(Path(cfg.output_dir)).items():
            trial.set_user_attr(key, value)
        score = best_score(result.history, cfg.metric_for_best_model, greater_is_better(cfg.metric_for_best_model))
        trial.set_user_attr("epochs_run", len(result.history))
        return float("nan") if score is None else score

    def _fits(self, trial: Any, params: TrialParams) -> bool:
        estimate = estimate_cost(params, _finished_facts(trial.study, but=trial.number))
        return estimate is None or time.monotonic() + estimate <= self.deadline


def _finish(study: Any, config: RecipeConfig, out: Path, clock: _Clock, stopped: str,
            screen: list[dict[str, Any]]) -> SearchResult:
    """Under a lock (several workers may end together; the last one publishes every trial): put the best finished
    trial at the top with its test score."""
    from filelock import FileLock

    with FileLock(str(out / ".search.lock")):
        rows, best, best_dir = _best(study, config, out, clock)
        spent = clock.spent()
        expected = estimate_test_eval(_finished_facts(study))
        if expected:
            logger.info(f"search: the budget is spent; now the chosen model's one test evaluation (about "
                        f"{expected:.0f} s, not part of the budget)")
        test_started = time.monotonic()
        test = _test_metrics(config, best_dir, out)
        summary = {"metric": config.metric_for_best_model, "time_budget_s": clock.budget,
                   "spent_s": round(spent, 1), "test_eval_s": round(time.monotonic() - test_started, 1),
                   "stopped": stopped, "trials": len(rows),
                   "best_trial": best.trial, "screen": screen, "sampler": "TPE", "pruner": "Hyperband (per epoch)"}
        publish_best(out, best_dir, rows, summary, test)
    study.set_user_attr("spent_s", max(float(study.user_attrs.get("spent_s", 0.0)), spent))
    logger.info(f"search: {len(rows)} trial(s), stopped: {stopped}; best: trial {best.trial} ({best.backbone}, "
                f"{best.policy}{'' if best.fraction is None else f'@{best.fraction:g}'}) validation "
                f"{config.metric_for_best_model} {best.score:.4f}"
                + (f"; test accuracy {test['accuracy']:.4f}" if test and "accuracy" in test else "")
                + f"; {spent:.0f} s of {clock.budget:.0f} s (+{summary['test_eval_s']:.0f} s test evaluation). "
                f"Hub-ready folder: {out}")
    return SearchResult(output_dir=str(out), leaderboard=rows, best=best, test_metrics=test,
                        seconds=time.monotonic() - clock.started, stopped=stopped, screen=screen)


def _best(study: Any, config: RecipeConfig, out: Path, clock: _Clock) -> tuple[list[LeaderboardRow], LeaderboardRow, Path]:
    """The leaderboard, the best finished trial's row and its run folder; TlHubError when none finished."""
    import optuna

    from tl_hub.metrics import greater_is_better

    rows = rows_from_trials(study.get_trials(deepcopy=False))
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None and t.value == t.value]
    if not complete:
        raise TlHubError(f"search: no trial finished within the time budget ({clock.budget:.0f} s; {len(rows)} "
                         f"started). Give a larger --time-budget, fewer epochs, or a cheaper policy (head); the same "
                         f"command resumes this search in {out}")
    greater = greater_is_better(config.metric_for_best_model)
    best_trial = max(complete, key=lambda t: (t.value if greater else -t.value, -t.number))
    best_dir = trial_folder(out, int(best_trial.user_attrs.get("folder_trial", best_trial.number)))
    return rows, next(r for r in rows if r.trial == best_trial.number), best_dir


def _test_metrics(config: RecipeConfig, best_dir: Path, out: Path) -> dict[str, Any] | None:
    """The best trial's model on the test split, once (None when the dataset has none: then the card reports
    the validation score only)."""
    from tl_hub.errors import DataError
    from tl_hub.evaluation import evaluate_model

    split = getattr(config, "test_split", None) or "test"
    if split == "none":
        return None
    try:
        result = evaluate_model(best_dir, config.dataset, output_dir=out / TEST_EVAL_DIR, split=split,
                                revision=config.dataset_revision, overwrite=True,
                                image_column=config.image_column, label_column=config.label_column)
    except DataError as err:
        logger.info(f"search: no test evaluation ({err})")
        return None
    scalars = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    return {**scalars, "split": result.split, "num_examples": result.num_examples}
