"""Two real CPU processes (gloo) run the recipe: same eval and held-out test metrics as one process, one writer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.images import write_image_folder
from helpers.tiny_models import tiny_checkpoint

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
LABELS = ["red", "green", "blue"]


def _run(cmd: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mp")
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    data = tmp_path / "imgs"  # train/ (eval: a 1/3 carve-out of it) and a held-out test/ split
    write_image_folder(data / "train", LABELS, per_label=12, seed=0)
    write_image_folder(data / "test", LABELS, per_label=5, seed=1)  # 15 rows: not a multiple of 2 processes
    model = tiny_checkpoint("vit", tmp_path / "vit")
    recipe = {"model": str(model), "dataset": str(data), "image_size": 32, "policy": "full", "epochs": 2,
              "batch_size": 8, "eval_batch_size": 5, "eval_fraction": 1 / 3, "seed": 0, "augment": True,
              "num_workers": 0, "learning_rate": 3e-3, "checkpointing_steps": 2}
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    _run([sys.executable, "recipes/finetune.py", "--config", str(cfg), "--output_dir",
                   str(tmp_path / "one")], tmp_path)
    multi = _run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_cpu_threads_per_process",
                  "1", "recipes/finetune.py", "--config", str(cfg), "--output_dir", str(tmp_path / "two")],
                 tmp_path)
    return tmp_path, multi


def test_two_processes_one_writer_exact_eval_count(runs):
    tmp_path, multi = runs
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    info2 = json.loads((tmp_path / "two" / "run_info.json").read_text())
    assert info2["num_processes"] == 2
    assert m2["num_eval_examples"] == m1["num_eval_examples"] == 12  # gather_for_metrics: no duplicates
    # one writer: the same files as the single-process run, the final messages printed once
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert multi.stdout.count("Hub-ready folder:") == 1
    assert multi.stdout.count("final eval:") == 1
    assert multi.stdout.count("test ('test' split, held out") == 1


def test_two_processes_give_the_test_metrics_of_one(runs):
    """The held-out test split, evaluated once at the end by both processes, gathered exactly once per row."""
    tmp_path, _ = runs
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["test"]["split"] == m2["test"]["split"] == "test"
    assert m1["test"]["num_examples"] == m2["test"]["num_examples"] == 15
    assert m2["test"]["final"] == m1["test"]["final"]
    assert m2["test"]["confusion_matrix"] == m1["test"]["confusion_matrix"]
    assert sum(map(sum, m2["test"]["confusion_matrix"])) == 15


def test_two_processes_train_the_same_model_as_one(runs):
    tmp_path, _ = runs
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert [e["eval_accuracy"] for e in m2["epochs"]] == [e["eval_accuracy"] for e in m1["epochs"]]
    assert m2["final"]["accuracy"] == m1["final"]["accuracy"]
    assert m2["confusion_matrix"] == m1["confusion_matrix"]
    for a, b in zip(m1["epochs"], m2["epochs"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
