"""One trial of a search: its parameters, its recipe and run folder, the per-epoch pruning watch, its cost.

`run_trial` is the Optuna objective `tl_hub.search` hands to the study: it samples a backbone, a freeze
policy, a learning rate (and epochs) from the `SearchSpace`, trains that recipe with `tl_hub.finetune` in
its own run folder (`trials/trial-NNN`, which follows `tl_hub.run_folder`'s rules: a trial that a killed
search retries resumes from its checkpoint there, bit for bit), reports every epoch's validation score to
the study and stops when the pruner (or the time budget) says so. Every trial records what it cost, so the
search knows whether another one fits in the time left (`estimate_cost`).

Example:
    >>> from tl_hub.config import RecipeConfig
    >>> params = TrialParams("bundled:efficientnet_lite0", "partial@0.3", 3e-4, 4)
    >>> cfg = trial_config(RecipeConfig(dataset="bundled:digits", output_dir="s"), params, folder="s/trials/trial-000",
    ...                    feature_cache_dir="s/trials/features")
    >>> cfg.policy, cfg.train_fraction, cfg.learning_rate, cfg.epochs, cfg.output_dir
    ('partial', 0.3, 0.0003, 4, 's/trials/trial-000')
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_hub.config import RecipeConfig
from tl_hub.errors import StopRequested
from tl_hub.search_space import PolicyCandidate, SearchSpace

__all__ = ["RETRY_OF", "OutOfTime", "PrunedByScore", "TrialParams", "TrialWatch", "best_score", "estimate_cost", "estimate_test_eval",
           "folder_number", "inherited_scores", "interrupted_to_retry", "retried_trial",
           "sample_params", "trial_config", "trial_facts", "trial_folder"]


class PrunedByScore(StopRequested):
    """Raised from the loop's epoch callback when the pruner stops a trial (its checkpoint is written first)."""


class OutOfTime(StopRequested):
    """Raised from the loop's step callback when the search's time budget for trials has run out."""


@dataclass(frozen=True)
class TrialParams:
    """What one trial tries. `learning_rate` None: the policy's default rate (the range was not searched)."""

    backbone: str
    policy_label: str
    learning_rate: float | None
    epochs: int

    @property
    def candidate(self) -> PolicyCandidate:
        return PolicyCandidate.parse(self.policy_label)


def sample_params(trial: Any, space: SearchSpace, backbones: Sequence[str]) -> TrialParams:
    """Draw a trial's parameters from the space (Optuna's `suggest_*`; fixed for an enqueued or retried trial).

    Example:
        >>> sample_params(optuna_trial, space, ["bundled:efficientnet_lite0"])  # doctest: +SKIP
    """
    backbone = trial.suggest_categorical("backbone", list(backbones))
    label = trial.suggest_categorical("policy", [c.label for c in space.candidates])
    lr = None
    if space.learning_rate is not None:
        lr = trial.suggest_float("learning_rate", space.learning_rate[0], space.learning_rate[1], log=True)
    epochs = space.epochs[0] if len(space.epochs) == 1 else trial.suggest_categorical("epochs", list(space.epochs))
    return TrialParams(backbone, label, lr, int(epochs))


RETRY_OF = "retry_of"  # user attribute of the trial that retries an interrupted (Ctrl-C'd) one: that trial's number


def retried_trial(frozen: Any) -> int | None:
    """The number of the trial `frozen` retries: one that a killed search left running (Optuna's heartbeat retry
    sets the `failed_trial` system attribute) or one that was interrupted (`tl_hub.search` enqueues its retry
    with the `retry_of` user attribute); None for a first try."""
    number = frozen.system_attrs.get("failed_trial", frozen.user_attrs.get(RETRY_OF))
    return None if number is None else int(number)


def folder_number(trial: Any) -> int:
    """The trial whose run folder this trial uses: a retry resumes in the folder of the trial it retries (which,
    for a retry of a retry, is the first try's folder)."""
    trials = {t.number: t for t in trial.study.get_trials(deepcopy=False)}
    frozen = trials.get(trial.number)
    failed = retried_trial(frozen) if frozen is not None else None
    if failed is None:
        return int(trial.number)
    original = trials.get(failed)
    return int(original.user_attrs.get("folder_trial", failed)) if original is not None else failed


def inherited_scores(trial: Any) -> dict[int, float]:
    """The per-epoch validation scores an interrupted trial reported before it stopped, for its retry (which
    resumes from the run's checkpoint and reports only the epochs after it) to report again, so that the pruner
    sees the whole curve; {} for a first try or a heartbeat retry (Optuna copies those itself)."""
    trials = {t.number: t for t in trial.study.get_trials(deepcopy=False)}
    frozen = trials.get(trial.number)
    failed = frozen.user_attrs.get(RETRY_OF) if frozen is not None else None
    original = trials.get(int(failed)) if failed is not None else None
    return dict(original.intermediate_values) if original is not None else {}


def interrupted_to_retry(trials: Sequence[Any]) -> list[Any]:
    """The interrupted (Ctrl-C'd) trials no trial retries yet, oldest first: a resumed search runs each again.

    Example:
        >>> interrupted_to_retry([])
        []
    """
    retried = {retried_trial(t) for t in trials}
    return [t for t in trials if t.user_attrs.get("interrupted") and t.number not in retried]


def trial_folder(output_dir: Path, number: int) -> Path:
    """`output_dir/trials/trial-NNN`.

    Example:
        >>> trial_folder(Path("s"), 7).as_posix()
        's/trials/trial-007'
    """
    return output_dir / "trials" / f"trial-{number:03d}"


def trial_config(base: RecipeConfig, params: TrialParams, *, folder: str | Path, feature_cache_dir: str | Path) -> RecipeConfig:
    """The trial's recipe: the search recipe's keys with the trial's backbone, policy, learning rate and epochs,
    its own run folder, no push and no trackers; cached features shared by every trial (on disk) so that a
    `head` trial on a backbone seen before skips the backbone pass."""
    candidate = params.candidate
    # [6/7]'s test_split: none keeps the test split out of every trial (scores come from the carve-out of train)
    no_test = {"test_split": "none"} if "test_split" in RecipeConfig.field_help() else {}
    return base.replace(**no_test,
        model=params.backbone, policy=candidate.policy, train_fraction=candidate.fraction,
        learning_rate=params.learning_rate, epochs=params.epochs, output_dir=str(folder), push_to_hub=False,
        hub_model_id=None, log_with=[], overwrite_output_dir=False, resume_from_checkpoint="auto",
        feature_cache_dir=base.feature_cache_dir or str(feature_cache_dir), progress=False,
    )


@dataclass
class TrialWatch:
    """The loop callback of one trial: reports each epoch's validation score to Optuna and raises
    `PrunedByScore` when the pruner says so (unless `prunable` is False: auto's pick, the search's baseline);
    raises `OutOfTime` after `deadline` (time.monotonic())."""

    trial: Any
    metric: str
    deadline: float
    prunable: bool = True
    started: float = field(default_factory=time.monotonic)
    epoch_seconds: list[float] = field(default_factory=list)
    epochs_run: int = 0
    last_score: float | None = None

    def __call__(self, event: str, state: Any) -> None:
        if event == "epoch" and state.history:
            record = state.history[-1]
            self.epochs_run = len(state.history)
            self.epoch_seconds.append(float(record.get("epoch_time_s") or 0.0))
            value = record.get(f"eval_{self.metric}")
            if value is not None and not math.isnan(float(value)):
                self.last_score = float(value)
                self.trial.report(float(value), step=self.epochs_run)
                if self.prunable and self.trial.should_prune():
                    raise PrunedByScore(f"pruned after epoch {self.epochs_run}")
        if time.monotonic() > self.deadline:
            raise OutOfTime("the search's time budget ran out")

    def record(self, cost_s: float) -> dict[str, Any]:
        """The cost facts a later `estimate_cost` reads (trial user attributes)."""
        trained = sum(self.epoch_seconds)
        return {"cost_s": round(cost_s, 3), "epochs_run": self.epochs_run,
                "epoch_s": round(trained / len(self.epoch_seconds), 3) if self.epoch_seconds else None,
                "overhead_s": round(max(cost_s - trained, 0.0), 3)}


def estimate_cost(params: TrialParams, finished: Sequence[dict[str, Any]]) -> float | None:
    """Seconds the trial is expected to take, from the user attributes of trials that ran; None when no trial
    tells (then the search tries it, and the time budget stops it if it overruns).

    The same backbone and policy: their overhead plus per-epoch time. Another policy that trains through the
    images: 1.5 x the per-epoch time of such a trial (full trains more than partial); with none yet, a head
    trial's forward speed (its feature pass, `s_per_image`) x (3 x train + eval images) per epoch (forward +
    backward is about 3 forwards).

    Example:
        >>> p = TrialParams("m", "full", None, 4)
        >>> estimate_cost(p, [{"backbone": "m", "policy": "partial@0.3", "epoch_s": 10.0, "overhead_s": 5.0}])
        65.0
        >>> estimate_cost(p, [{"backbone": "m", "policy": "head", "epoch_s": 0.1, "overhead_s": 5.0,
        ...                    "s_per_image": 0.01, "n_train": 80, "n_eval": 20}])
        15.4
        >>> estimate_cost(p, []) is None
        True
    """
    usable = [a for a in finished if a.get("backbone") == params.backbone and a.get("epoch_s") is not None]
    same = [a for a in usable if a.get("policy") == params.policy_label]
    if same:
        return max(a["overhead_s"] + a["epoch_s"] * params.epochs for a in same)
    if params.candidate.policy == "head":
        return None
    images = [a for a in usable if not str(a.get("policy")).startswith("head")]
    if images:
        return max(a["overhead_s"] + 1.5 * a["epoch_s"] * params.epochs for a in images)
    probes = [a for a in usable if a.get("s_per_image") and a.get("n_train")]
    if probes:
        return max(a["overhead_s"] + params.epochs * a["s_per_image"] * (3 * a["n_train"] + a.get("n_eval", 0))
                   for a in probes)
    return None


def trial_facts(run_dir: Path) -> dict[str, Any]:
    """From a finished trial's folder, what `estimate_cost` reads (the backbone's seconds per image in the
    feature pass of head trials, the numbers of train, eval and test images) and auto's pick for the data.

    Example:
        >>> trial_facts(Path("no/such/run"))
        {}
    """
    import json

    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        info = json.loads((run_dir / "run_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    data = info.get("data") or {}
    sizes = data.get("sizes") or {}
    facts: dict[str, Any] = {"n_train": int(sizes.get("train", 0)), "n_eval": int(sizes.get("eval", 0))}
    unused = data.get("unused_splits") or {}
    test = next((int(unused[name]) for name in ("test", "testing") if name in unused), None)
    if test is not None:  # trials leave the test split out; the search's final evaluation reads it
        facts["n_test"] = test
    choice = (info.get("policy") or {}).get("auto_choice")
    if choice:  # what `policy: auto` picks for this data: the search tries that as well
        facts["auto_choice"] = choice
    feature = metrics.get("feature_extraction") or {}
    if feature.get("images") and feature.get("seconds"):
        facts["s_per_image"] = float(feature["seconds"]) / float(feature["images"])
    return facts


def estimate_test_eval(finished: Sequence[dict[str, Any]]) -> float:
    """Seconds the search's one final test evaluation is expected to take (so that it fits in the budget too):
    the test images x the slowest seconds per image seen (a head trial's feature pass, which decodes and runs
    the backbone once per image like the evaluation; else an image trial's epoch time over 3 x train + eval
    images) + 5 s to load the model; 0 while no trial tells the test split's size.

    Example:
        >>> estimate_test_eval([{"n_test": 1000, "s_per_image": 0.01}])
        15.0
        >>> estimate_test_eval([{"n_test": 1000, "epoch_s": 65.0, "n_train": 400, "n_eval": 100}])
        55.0
        >>> estimate_test_eval([])
        0.0
    """
    n_test = max((int(a["n_test"]) for a in finished if a.get("n_test")), default=0)
    speeds = [float(a["s_per_image"]) for a in finished if a.get("s_per_image")]
    speeds += [float(a["epoch_s"]) / (3 * a["n_train"] + a["n_eval"]) for a in finished
               if a.get("epoch_s") and a.get("n_train") and not str(a.get("policy", "")).startswith("head")]
    if not n_test or not speeds:
        return 0.0
    return round(n_test * max(speeds) + 5.0, 3)


def best_score(history: Sequence[dict[str, Any]], metric: str, greater: bool) -> float | None:
    """The best per-epoch validation value of `metric` in a run's history (None when never evaluated).

    Example:
        >>> best_score([{"eval_accuracy": 0.5}, {"eval_accuracy": 0.7}], "accuracy", True)
        0.7
    """
    values = [float(r[f"eval_{metric}"]) for r in history if r.get(f"eval_{metric}") is not None]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None
    return max(values) if greater else min(values)
