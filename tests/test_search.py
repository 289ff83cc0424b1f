"""tl_hub.search (issue [7/7]): an Optuna search over backbones x policies x learning rates on a time budget.

Real pieces throughout: a tiny ViT checkpoint on disk, PNG image folders, real `tl_hub.finetune` trials,
Optuna's SQLite storage in the output folder. Searches here have budgets of seconds; the assertions are on
leaderboard rows, trial states and folders, never on how long anything took.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import tl_hub
from tl_hub.config import RecipeConfig
from tl_hub.errors import ConfigError
from tl_hub.leaderboard import LEADERBOARD_COLUMNS, read_leaderboard
from tl_hub.search_space import SearchSpace
from tl_hub.search_trials import OutOfTime, PrunedByScore, TrialParams, TrialWatch, estimate_cost
from helpers.images import write_image_folder

optuna = pytest.importorskip("optuna")

LABELS = ["red", "green", "blue"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("search_data")
    write_image_folder(root / "train", LABELS, per_label=12, seed=0)
    write_image_folder(root / "test", LABELS, per_label=4, seed=1)
    return root


@pytest.fixture(scope="module")
def vit(tiny) -> str:
    return str(tiny("vit"))


def _recipe(vit: str, data: Path, out: Path, **search: object) -> dict:
    return {"model": vit, "dataset": str(data), "image_size": 32, "epochs": 2, "batch_size": 8, "num_workers": 0,
            "augment": False, "seed": 0, "eval_fraction": 0.25, "output_dir": str(out), "progress": False,
            "search": search or {"policies": ["head", "full", "partial@0.5"], "learning_rate": [1e-4, 1e-2]}}


def test_search_writes_an_ordinary_output_folder_with_its_leaderboard(tmp_path, vit, data):
    out = tmp_path / "search"
    result = tl_hub.search(_recipe(vit, data, out), time_budget="25s")
    rows = read_leaderboard(out / "leaderboard.csv")
    with (out / "leaderboard.csv").open() as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == LEADERBOARD_COLUMNS
    assert len(rows) == len(result.leaderboard) >= 2
    assert rows[0].policy == "head" or any(r.policy == "head" for r in rows)  # cheap first: a head trial ran
    assert all(r.state in {"complete", "pruned"} for r in rows)
    complete = [r for r in rows if r.state == "complete"]
    assert result.best.score == max(r.score for r in complete)
    # the top of the folder is the best trial's model: an ordinary output folder that loads anywhere
    best_dir = out / "trials" / f"trial-{result.best.trial:03d}"
    assert load_file(out / "model.safetensors").keys() == load_file(best_dir / "model.safetensors").keys()
    for name in load_file(out / "model.safetensors"):
        assert (load_file(out / "model.safetensors")[name] == load_file(best_dir / "model.safetensors")[name]).all()
    model, _ = tl_hub.load(str(out))
    assert model.config.num_labels == 3
    assert RecipeConfig.from_yaml(out / "recipe.yaml").output_dir == str(out)
    info = json.loads((out / "run_info.json").read_text())
    assert info["search"]["best_trial"] == result.best.trial and info["search"]["trials"] == len(rows)
    # the score that chose the model is the validation carve-out's; the test split is evaluated once, at the end
    trial_info = json.loads((best_dir / "run_info.json").read_text())
    assert "stratified" in trial_info["data"]["eval_from"]
    assert trial_info["policy"]["auto_choice"] == {"name": "head", "train_fraction": None}  # 27 images, 3 labels
    assert result.test_metrics is not None and result.test_metrics["split"] == "test"
    assert result.test_metrics["num_examples"] == 12
    # every trial that finished told the search the test split's size (the final evaluation's estimate reads it)
    study = optuna.load_study(study_name="tl_hub_search", storage=f"sqlite:///{out / 'study.db'}")
    assert {t.user_attrs.get("n_test") for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE} == {12}
    card = (out / "README.md").read_text()
    assert "## How this model was chosen" in card and "search_scores.png" in card
    assert (out / "search_scores.png").is_file() and (out / "study.db").is_file()
    from tl_hub.output_folder import hub_files

    assert {"leaderboard.csv", "search_scores.png"} <= set(hub_files(out))
    assert "study.db" not in hub_files(out) and "trials" not in hub_files(out)


def test_same_search_resumes_another_is_refused(tmp_path, vit, data):
    out = tmp_path / "search"
    recipe = _recipe(vit, data, out, policies=["head"], epochs=[1, 2])
    first = tl_hub.search(recipe, time_budget="60s")
    assert first.stopped == "every candidate tried"
    again = tl_hub.search(recipe, time_budget="60s")  # same folder, same search: the study goes on (nothing left)
    assert [r.trial for r in again.leaderboard] == [r.trial for r in first.leaderboard]
    with pytest.raises(ConfigError, match="holds another search.*epochs: 2 there, 3 here"):
        tl_hub.search({**recipe, "epochs": 3}, time_budget="60s")
    with pytest.raises(ConfigError, match=r"search: \{.*policies.*full"):
        tl_hub.search(recipe, time_budget="60s", policies=["full"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="holds no tl_hub search"):
        tl_hub.search({**recipe, "output_dir": str(tmp_path / "mine")}, time_budget="60s")


def test_pruned_trial_ends_cleanly_and_its_run_resumes(tmp_path, vit, data):
    """The pruner's stop comes after the epoch's checkpoint: the run folder holds it, and the same recipe resumes."""
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()
    cfg = RecipeConfig(model=vit, dataset=str(data), image_size=32, epochs=3, batch_size=8, num_workers=0,
                       augment=False, seed=0, policy="full", output_dir=str(tmp_path / "t"))
    watch = TrialWatch(trial, "accuracy", deadline=time.monotonic() + 3600)
    with pytest.raises(PrunedByScore):
        tl_hub.finetune(cfg, callbacks=[watch])
    assert watch.epochs_run == 1 and list(study.trials[0].intermediate_values) == [1]
    assert any((tmp_path / "t" / "checkpoints").glob("checkpoint-*"))
    assert not (tmp_path / "t" / "run_info.json").exists()
    resumed = tl_hub.finetune(cfg)
    assert resumed.best_epoch is not None and len(resumed.history) == 3
    assert json.loads((tmp_path / "t" / "run_info.json").read_text())["resumed_from"]


def test_time_budget_stops_a_trial_that_would_overrun(tmp_path, vit, data):
    study = optuna.create_study(direction="maximize")
    watch = TrialWatch(study.ask(), "accuracy", deadline=time.monotonic() - 1)
    cfg = RecipeConfig(model=vit, dataset=str(data), image_size=32, epochs=2, batch_size=8, num_workers=0,
                       augment=False, seed=0, policy="full", output_dir=str(tmp_path / "t"))
    with pytest.raises(OutOfTime):
        tl_hub.finetune(cfg, callbacks=[watch])


def test_cost_estimate_from_finished_trials():
    done = [{"backbone": "m", "policy": "head", "epoch_s": 0.1, "overhead_s": 3.0},
            {"backbone": "m", "policy": "full", "epoch_s": 10.0, "overhead_s": 4.0}]
    assert estimate_cost(TrialParams("m", "full", None, 3), done) == 34.0
    assert estimate_cost(TrialParams("m", "partial@0.3", None, 2), done) == 34.0  # 1.5 x full's epoch
    assert estimate_cost(TrialParams("m", "head", 1e-3, 5), done) == 3.5
    assert estimate_cost(TrialParams("other", "full", None, 3), done) is None


def test_the_final_test_evaluation_is_announced_with_its_expected_seconds():
    from tl_hub.search_trials import estimate_test_eval

    assert estimate_test_eval([]) == 0.0  # no trial has run: nothing tells the test split's size yet
    head = {"policy": "head", "epoch_s": 0.1, "s_per_image": 0.02, "n_train": 80, "n_eval": 20, "n_test": 500}
    assert estimate_test_eval([head]) == 500 * 0.02 + 5
    full = {"policy": "full", "epoch_s": 26.0, "n_train": 80, "n_eval": 20, "n_test": 500}  # 0.1 s per image
    assert estimate_test_eval([head, full]) == 500 * 0.1 + 5  # the slowest backbone seen


def test_search_runs_what_auto_would_after_the_first_trial(tmp_path, vit, data):
    """The second trial is `policy: auto`'s recipe (its rule's pick, default rate, the recipe's epochs): the
    search's baseline, marked in the leaderboard and the card."""
    out = tmp_path / "search"
    recipe = _recipe(vit, data, out, policies=["head", "partial@0.5"], learning_rate=[1e-4, 1e-2], epochs=[1, 3])
    tl_hub.search(recipe, time_budget="20s")
    rows = {r.trial: r for r in read_leaderboard(out / "leaderboard.csv")}
    assert (rows[0].policy, rows[0].epochs) == ("head", 3)  # cheap first
    assert (rows[1].policy, rows[1].learning_rate, rows[1].epochs, rows[1].note) == ("head", 1e-3, 1, "auto's pick")
    assert [r.trial for r in rows.values() if "auto's pick" in r.note] == [1]  # once per study
    assert "The trial marked \"auto's pick\" trains what `policy: auto` would" in (out / "README.md").read_text()


def _finished(study, **user_attrs):
    dist = optuna.distributions.CategoricalDistribution(["m"])
    study.add_trial(optuna.trial.create_trial(params={"backbone": "m"}, distributions={"backbone": dist}, value=0.5,
                                              user_attrs=user_attrs))


def test_auto_pick_is_the_spaces_nearest_point_and_is_never_pruned_by_score():
    from types import SimpleNamespace

    from tl_hub.search_run import _enqueue_auto_pick
    from tl_hub.search_trials import sample_params

    space = SearchSpace.from_dict({"policies": ["head", "partial@0.3", "partial@0.6"], "learning_rate": [1e-5, 1e-2],
                                   "epochs": [5, 10, 20]}, default_backbone="m", default_epochs=10)
    config = RecipeConfig(model="m", dataset="x", output_dir="o", epochs=10)
    study = optuna.create_study(direction="maximize")
    _enqueue_auto_pick(study, config, space, ["m"])
    assert not study.trials  # no trial has told the data size yet
    _finished(study, auto_choice={"name": "partial", "train_fraction": 0.35})
    _enqueue_auto_pick(study, config, space, ["m"])
    _enqueue_auto_pick(study, config, space, ["m"])  # once per study
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.WAITING) == 1
    trial = study.ask()  # the enqueued one, as the search's objective gets it
    assert trial.user_attrs == {"auto_pick": True}
    assert sample_params(trial, space, ["m"]) == TrialParams("m", "partial@0.3", 1e-4, 10)
    # a space without the rule's policy: nothing to enqueue, said once
    other = optuna.create_study(direction="maximize")
    _finished(other, auto_choice={"name": "full", "train_fraction": None})
    _enqueue_auto_pick(other, config, space, ["m"])
    assert other.user_attrs["auto_pick"] == {} and len(other.trials) == 1
    # the baseline reports its scores but the pruner does not stop it
    pruning = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    state = SimpleNamespace(history=[{"eval_accuracy": 0.5, "epoch_time_s": 1.0}])
    TrialWatch(pruning.ask(), "accuracy", deadline=time.monotonic() + 60, prunable=False)("epoch", state)
    with pytest.raises(PrunedByScore):
        TrialWatch(pruning.ask(), "accuracy", deadline=time.monotonic() + 60)("epoch", state)


def test_search_block_is_checked():
    with pytest.raises(ConfigError, match="search: unknown key 'policy' .*did you mean 'policies'"):
        SearchSpace.from_dict({"policy": ["head"]}, default_backbone="m", default_epochs=1)
    with pytest.raises(ConfigError, match=r"search.learning_rate: got \[0.1, 0.01\]"):
        SearchSpace.from_dict({"learning_rate": [0.1, 0.01]}, default_backbone="m", default_epochs=1)
    with pytest.raises(ConfigError, match="time_budget: got 'soon'"):
        tl_hub.search({"dataset": "x", "output_dir": "y"}, time_budget="soon")


DRIVER = r'''
import json, os, signal, sys
import tl_hub
from tl_hub import search_trials

kill_after = int(os.environ.get("KILL_AFTER_EPOCH", "0"))
kill_with = getattr(signal, os.environ.get("KILL_WITH", "SIGKILL"))
# Ctrl-C as in a terminal: a process started from a background job inherits SIGINT *ignored*, and Python then
# installs no KeyboardInterrupt handler
signal.signal(signal.SIGINT, signal.default_int_handler)
real = search_trials.TrialWatch.__call__
def watch(self, event, state):
    real(self, event, state)
    if kill_after and event == "epoch" and self.epochs_run == kill_after:
        os.kill(os.getpid(), kill_with)   # right after the epoch's checkpoint, mid-trial (SIGINT: a Ctrl-C)
search_trials.TrialWatch.__call__ = watch
recipe = json.loads(sys.argv[1])
try:
    result = tl_hub.search(recipe, time_budget=sys.argv[2], heartbeat_s=int(os.environ.get("HEARTBEAT_S", "10")))
except KeyboardInterrupt:
    sys.exit(130)
print("ROWS", json.dumps([[r.trial, r.state, r.note] for r in result.leaderboard]))
'''


def _run_driver(tmp_path: Path, recipe: dict, budget: str, **env: str) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1",
               **env}
    return subprocess.Popen([sys.executable, str(script), json.dumps(recipe), budget], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_killed_search_resumes_its_trial_from_the_checkpoint(tmp_path, vit, data):
    out = tmp_path / "search"
    recipe = _recipe(vit, data, out, policies=["full"], epochs=[3])
    killed = _run_driver(tmp_path, recipe, "120s", KILL_AFTER_EPOCH="2", HEARTBEAT_S="1")
    log = killed.communicate(timeout=300)[0]
    assert killed.returncode == -9, log
    assert any((out / "trials" / "trial-000" / "checkpoints").glob("checkpoint-*"))
    time.sleep(3.5)  # the killed trial's heartbeat goes stale (3 x heartbeat_s)
    again = _run_driver(tmp_path, recipe, "120s", HEARTBEAT_S="1")
    log = again.communicate(timeout=300)[0]
    assert again.returncode == 0, log
    rows = {r.trial: r for r in read_leaderboard(out / "leaderboard.csv")}
    assert rows[0].state == "fail"
    retry = next(r for r in rows.values() if r.state == "complete")
    assert retry.trial > 0 and "resumed trial 0's run" in retry.note and retry.epochs_run == 3
    _assert_resumed_bit_for_bit(tmp_path, out)


def _assert_resumed_bit_for_bit(tmp_path: Path, out: Path) -> None:
    """Trial 0's run resumed from its checkpoint, and its model is the model of the same recipe trained without
    a stop, bit for bit."""
    info = json.loads((out / "trials" / "trial-000" / "run_info.json").read_text())
    assert info["resumed_from"] and "checkpoint" in info["resumed_from"]
    trial_recipe = RecipeConfig.from_yaml(out / "trials" / "trial-000" / "recipe.yaml")
    clean_recipe = tmp_path / "clean.yaml"
    trial_recipe.replace(output_dir=str(tmp_path / "clean")).to_yaml(clean_recipe)
    # in a process set up as the search's (OMP_NUM_THREADS=1): a float sum's order depends on the thread count
    clean = subprocess.run([sys.executable, "-c", "import sys, tl_hub; tl_hub.finetune(sys.argv[1])", str(clean_recipe)],
                           env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, capture_output=True,
                           text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr[-3000:]
    a = load_file(out / "trials" / "trial-000" / "model.safetensors")
    b = load_file(tmp_path / "clean" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.slow
def test_interrupted_search_retries_its_trial_first_from_the_checkpoint(tmp_path, vit, data):
    """A Ctrl-C (a real SIGINT) mid-trial: Optuna marks the trial failed; the next search of the folder runs it
    again first, in its folder, from its last checkpoint, with the epochs it had scored given to the pruner."""
    out = tmp_path / "search"
    recipe = _recipe(vit, data, out, policies=["full"], epochs=[3])
    stopped = _run_driver(tmp_path, recipe, "120s", KILL_AFTER_EPOCH="2", KILL_WITH="SIGINT")
    log = stopped.communicate(timeout=300)[0]
    assert stopped.returncode == 130, log
    study = optuna.load_study(study_name="tl_hub_search", storage=f"sqlite:///{out / 'study.db'}")
    first = study.trials[0]
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["interrupted"]
    assert sorted(first.intermediate_values) == [1, 2] and study.user_attrs["spent_s"] > 0
    again = _run_driver(tmp_path, recipe, "120s")
    log = again.communicate(timeout=300)[0]
    assert again.returncode == 0, log
    study = optuna.load_study(study_name="tl_hub_search", storage=f"sqlite:///{out / 'study.db'}")
    retry = study.trials[1]
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["folder_trial"] == 0
    assert retry.state == optuna.trial.TrialState.COMPLETE and sorted(retry.intermediate_values) == [1, 2, 3]
    assert retry.intermediate_values[1] == first.intermediate_values[1]
    rows = {r.trial: r for r in read_leaderboard(out / "leaderboard.csv")}
    assert rows[0].state == "fail" and "interrupted (Ctrl-C)" in rows[0].note
    assert "resumed trial 0's run" in rows[1].note and rows[1].epochs_run == 3
    _assert_resumed_bit_for_bit(tmp_path, out)


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path, vit, data):
    out = tmp_path / "search"
    recipe = _recipe(vit, data, out, policies=["head", "full", "partial@0.5"], epochs=[1, 2])
    workers = [_run_driver(tmp_path, recipe, "90s") for _ in range(2)]  # room for both to start on a busy machine
    logs = [w.communicate(timeout=400)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    study = optuna.load_study(study_name="tl_hub_search", storage=f"sqlite:///{out / 'study.db'}")
    ran = [t for t in study.trials if t.user_attrs.get("worker") and not t.user_attrs.get("not_run")]
    assert len({t.user_attrs["worker"] for t in ran}) == 2  # both processes trained trials of the one study
    folders = [t.user_attrs["folder_trial"] for t in ran]
    assert len(folders) == len(set(folders))  # each trial its own run folder
    for t in ran:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert (out / "trials" / f"trial-{t.number:03d}" / "run_info.json").is_file()
    rows = read_leaderboard(out / "leaderboard.csv")
    assert {r.trial for r in rows} == {t.number for t in ran}


def test_cli_search_runs_a_recipe_file_with_keys(tmp_path, vit, data, capsys):
    import yaml

    from tl_hub.cli import main

    recipe = _recipe(vit, data, tmp_path / "cli", policies=["head"])
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["search", str(tmp_path / "search.yaml"), "--time-budget", "soon"]) == 2
    assert "time_budget: got 'soon'" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "search.yaml"), "--time-budget", "60s", "--epochs", "1"]) == 0
    assert "leaderboard:" in capsys.readouterr().out
    rows = read_leaderboard(tmp_path / "cli" / "leaderboard.csv")
    assert [(r.policy, r.epochs) for r in rows] == [("head", 1)]  # the --epochs key overrode the recipe's


def test_more_backbones_than_screen_top_are_screened_first(tmp_path, vit, tiny, data):
    """Two backbones, screen_top 1: tl_hub.screening ranks them once (kept in the study) and only the best gets trials."""
    out = tmp_path / "search"
    other = str(tiny("convnext"))
    result = tl_hub.search(_recipe(vit, data, out, backbones=[vit, other], policies=["head"], screen_top=1,
                                   screen_images=24), time_budget="60s")
    assert [s["backbone"] for s in result.screen] in ([vit, other], [other, vit])
    assert result.screen[0]["score"] >= result.screen[1]["score"]
    assert {r.backbone for r in result.leaderboard} == {result.screen[0]["backbone"]}
    assert "The backbones were screened first" in (out / "README.md").read_text()
