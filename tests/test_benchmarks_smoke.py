"""The benchmark harness (tests/benchmarks/) end to end on tiny data, so it cannot silently rot.

Runs `run.py --smoke` on the Fashion-MNIST subset that ships inside tl_hub (32 px, a few dozen images,
every section), checks the JSON and markdown it writes, one arm in its own process (the way every
arm runs in a real benchmark), the loop section alone, the Trainer baseline's freezing, and the loader's
missing-data error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent / "benchmarks"
# one thread: OpenMP threads spinning against other jobs on a busy 2-core machine cost 10x here
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
sys.path.insert(0, str(BENCH))

import fashion_mnist  # noqa: E402
import trainer_baseline  # noqa: E402

pytestmark = pytest.mark.slow


def test_missing_dataset_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(fashion_mnist.FashionMNISTMissing, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist.load_split("train")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "dataset-fashion-mnist" in proc.stderr


def test_balanced_subset_and_bundled_split():
    images, labels = fashion_mnist.load_split("train", "bundled")
    assert images.shape == (3000, 28, 28) and images.dtype.name == "uint8"
    idx = fashion_mnist.balanced_subset(labels, 105, seed=3)
    counts = sorted(int(c) for c in (labels[idx][:, None] == range(10)).sum(0))
    assert counts == [10] * 5 + [11] * 5
    assert list(idx) == list(fashion_mnist.balanced_subset(labels, 105, seed=3))
    assert list(idx) != list(fashion_mnist.balanced_subset(labels, 105, seed=4))


def test_trainer_freezing_leaves_only_named_parameters_trainable():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    n = trainer_baseline.set_trainable(model, ["2.weight", "2.bias"])
    assert n == 10
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["2.weight", "2.bias"]
    with pytest.raises(ValueError, match="not in the Trainer model"):
        trainer_baseline.set_trainable(model, ["head.weight"])


def test_smoke_run_writes_tables_and_every_section(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--smoke", "--data", "bundled", "--in-process", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=ENV,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = json.loads((out / "results.json").read_text())
    records = payload["records"]
    assert {(r["section"], r["arm"]) for r in records} == {
        ("speed", "floor"), ("speed", "tlhub"), ("speed", "trainer"),
        ("throughput", "tlhub"), ("throughput", "trainer"), ("quality", "tlhub"), ("fixed", "fixed_cost"),
        ("loop", "loop_overhead"),
    }
    assert all("error" not in r["result"] for r in records), [r["result"].get("error") for r in records]
    summary = payload["summary"]
    speed = summary["speed"][0]
    assert speed["speedup"]["median"] > 0 and speed["tlhub_over_floor"]["median"] > 0
    assert 0.0 <= speed["tlhub_test_accuracy"]["median"] <= 1.0
    assert 0.0 <= speed["trainer_test_accuracy"]["median"] <= 1.0
    assert summary["throughput"][0]["ratio"]["median"] > 0
    quality = summary["quality"][0]
    assert "auto" in quality["policies"] and "auto_gap_points" in quality
    # a run's fixed cost: the bundled-data head run against its forward pass over ready tensors, same process
    fixed_arm = next(r["result"] for r in records if r["section"] == "fixed")
    # 40 training images, the 600-image eval carve-out of train, the 2,000 held-out test images
    assert fixed_arm["images"] == 40 + 600 + 2000 and fixed_arm["epochs_run"] == 2 and fixed_arm["feature_cache_used"]
    assert 0 < fixed_arm["forward_s"] and fixed_arm["ratio"] == pytest.approx(fixed_arm["wall_s"] / fixed_arm["forward_s"])
    fixed = summary["fixed"][0]
    from tl_hub.config import quickstart_config
    from tl_hub.hardware import feature_batch_size

    run_batch = feature_batch_size(None, quickstart_config().batch_size, payload["meta"]["config"]["device"])
    assert fixed["ratio"]["median"] > 0 and fixed["floor_batch_size"] == run_batch  # the run's feature-pass batch
    target = next(t for t in summary["targets"] if t["target"].startswith("fixed cost"))
    assert "1.3x" in target["target"] and isinstance(target["met"], bool)
    # the head arm of the speed section trained only the head through the feature cache
    head_arm = next(r for r in records if r["section"] == "speed" and r["arm"] == "tlhub")
    assert head_arm["result"]["policy_used"]["name"] == "head"
    trainer_arm = next(r for r in records if r["section"] == "speed" and r["arm"] == "trainer")
    assert 0 < trainer_arm["result"]["trainable_params"] < 100_000  # the head only: 1280 * 10 + 10
    markdown = (out / "results.md").read_text()
    for heading in ("Small-data speed", "Fine-tuning throughput", "Policy quality", "A run's fixed cost",
                    "The loop's own cost (CPU)", "Memory", "Targets"):
        assert heading in markdown
    assert "Small-data speed" in proc.stdout  # the summary is printed too
    assert payload["meta"]["complete"] is True and "Partial results" not in markdown


def test_loop_section_alone_in_its_own_process(tmp_path):
    """`--sections loop` alone: one loop_overhead arm in its own process (tiny sizes), its rows, both targets
    and the markdown table. No wall-clock assertions: only the structure and positive rates."""
    out = tmp_path / "loop"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--smoke", "--sections", "loop", "--repeats", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=ENV,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = json.loads((out / "results.json").read_text())
    records = payload["records"]
    assert [(r["section"], r["arm"]) for r in records] == [("loop", "loop_overhead")]
    result = records[0]["result"]
    assert "error" not in result, result.get("error")
    assert result["cuda_available"] is False  # the arm's process runs with CUDA hidden: a CPU measurement
    overhead, pipeline = result["per_step_overhead"], result["input_pipeline"]
    assert len(overhead["tl_hub_images_per_second"]) == len(overhead["bare_images_per_second"]) == 2
    assert overhead["setup"]["images"] == payload["meta"]["config"]["loop_images"]
    assert pipeline["crop"] == payload["meta"]["config"]["loop_pipeline_crop"] and pipeline["workers"] == 1
    (row,) = payload["summary"]["loop"]
    assert row["ratio"] > 0 and row["ratio"] == pytest.approx(overhead["ratio"])
    assert row["tlhub_images_per_s"]["median"] > 0 and row["bare_images_per_s"]["median"] > 0
    assert row["paired_ratios"]["n"] == 2 and row["pipeline_images_per_s_per_worker"] > 0
    loop_targets = [t for t in payload["summary"]["targets"] if t["target"].startswith("loop:")]
    assert len(loop_targets) == 2 and all(isinstance(t["met"], bool) for t in loop_targets)
    assert ">= 0.8x a bare PyTorch loop" in loop_targets[0]["target"]
    assert ">= 8,000 img/s per worker core" in loop_targets[1]["target"]
    markdown = (out / "results.md").read_text()
    assert "## The loop's own cost (CPU)" in markdown and "throughput section" in markdown
    assert "| tl_hub img/s | bare img/s | ratio (tl_hub / bare) |" in markdown
    assert "loop: input pipeline" in proc.stdout  # the targets are printed with the tables
    assert "Small-data speed" not in markdown  # no other section ran


def test_quality_only_run_picks_its_sizes_and_keeps_partial_results(tmp_path):
    """--quality-ns chooses the training-set sizes; results.json is rewritten after every arm, so a
    run stopped early (a device time limit) still leaves what it measured."""
    sys.path.insert(0, str(BENCH))
    import run

    out = tmp_path / "bench"
    snapshots = []
    real_write = run.write_results

    def spy(out_dir, records, *args, **kw):
        result = real_write(out_dir, records, *args, **kw)
        snapshots.append((len(records), json.loads((out_dir / "results.json").read_text())["meta"]["complete"]))
        return result

    run.write_results = spy
    try:
        rc = run.main(["--smoke", "--data", "bundled", "--in-process", "--sections", "quality",
                       "--quality-ns", "30,40", "--out", str(out)])
    finally:
        run.write_results = real_write
    assert rc == 0
    payload = json.loads((out / "results.json").read_text())
    assert sorted({r["n"] for r in payload["records"]}) == [30, 40]
    # one partial write per arm (2 sizes x 2 policies), then the final one
    assert snapshots == [(1, False), (2, False), (3, False), (4, False), (4, True)]
    # --merge: one table from several runs, each record keeping its source
    merged = tmp_path / "merged"
    assert run.main(["--merge", str(out / "results.json"), str(out / "results.json"), "--out", str(merged)]) == 0
    both = json.loads((merged / "results.json").read_text())
    assert len(both["records"]) == 8 and {r["source"] for r in both["records"]} == {0, 1}
    assert "Sources:" in (merged / "results.md").read_text()
    (tmp_path / "junk.json").write_text("{}")
    assert run.main(["--merge", str(tmp_path / "junk.json"), "--out", str(merged)]) == 2
    assert run.build_config(run.parse_args(["--smoke", "--speed-ns", "50,60"])).speed_ns == (50, 60)
    later = run.build_config(run.parse_args(["--smoke", "--first-repeat", "1", "--repeats", "1"]))
    assert (later.first_repeat, later.speed_repeats, later.loop_repeats) == (1, 1, 1)
    for mode in (["--quick"], []):  # the loop section is in the default sections of quick and full runs
        assert "loop" in run.build_config(run.parse_args([*mode, "--device", "cpu"])).sections
    with pytest.raises(SystemExit, match="--quality-ns"):
        run.build_config(run.parse_args(["--smoke", "--quality-ns", "ten"]))


def test_one_arm_in_its_own_process(tmp_path):
    spec = {
        "arm": "floor", "model": "bundled:efficientnet_lite0", "device": "cpu", "image_size": 32,
        "batch_size": 8, "precision": "fp32", "num_workers": 0, "n_val": 8, "n_test": 20, "n_train": 20,
        "seed": 0, "data": "bundled", "workdir": str(tmp_path), "policy": "head", "epochs": 1,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--arm", str(tmp_path / "spec.json"),
         "--arm-result", str(tmp_path / "result.json")],
        capture_output=True, text=True, timeout=300, env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["images"] == 28  # 20 training + 8 validation images, each embedded once
    assert 0 < result["forward_s"] <= result["wall_s"]
    assert result["peak_rss_mb"] > 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_contention_script_pairs_trees_beside_busy_loops(tmp_path):
    """tests/benchmarks/contention.py: one run per tree (alternating), busy loops beside it, the load recorded."""
    other = tmp_path / "other_tree"
    other.mkdir()
    out = tmp_path / "contention"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "contention.py"), "--trees", str(BENCH.parents[1]), str(other), "--busy", "1",
         "--repeats", "1", "--out", str(out), "--", sys.executable, "-c",
         "import os, sys, time; time.sleep(0.3); print(os.environ['PYTHONPATH'].split(os.pathsep)[0])"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["tree"] for r in records] == [str(BENCH.parents[1]), str(other)]
    for record in records:
        assert record["returncode"] == 0 and record["wall_s"] >= 0.3 and record["loops_cores"] > 0.0
        assert record["others_cores"] >= 0.0 and record["cpu_s"] >= 0.0
    assert "beside 1 busy loop(s)" in (out / "results.md").read_text()


def test_screen_benchmark_on_the_bundled_subset(tmp_path):
    """screen.py end to end on tiny data: the screen's ranking beside each fine-tuned test accuracy, in its
    own process; then again from the first run's fine-tunes (--finetuned-from)."""
    base = [sys.executable, str(BENCH / "screen.py"), "--source", "bundled", "--n-train", "60", "--n-val", "20",
            "--n-test", "20", "--image-size", "32", "--epochs", "1", "--workdir", str(tmp_path / "work")]
    first = tmp_path / "first"
    subprocess.run(base + ["--max-images", "40", "--out", str(first)], check=True, env=ENV, timeout=900,
                   capture_output=True)
    doc = json.loads((first / "results.json").read_text())
    ranking = [row["backbone"] for row in doc["screen"]["ranking"]]
    assert sorted(ranking) == sorted(doc["fine_tuned"]) and len(ranking) == 4
    assert all(row["n_images"] == 40 for row in doc["screen"]["ranking"])
    assert all(0 <= r["test_accuracy"] <= 1 and r["test_images"] == 20 for r in doc["fine_tuned"].values())
    assert set(doc["targets"]) >= {"pick", "pick_gap_points", "control_last"}
    assert "| screen rank | backbone |" in (first / "results.md").read_text()
    again = tmp_path / "again"
    subprocess.run(base + ["--max-images", "60", "--finetuned-from", str(first / "results.json"), "--out", str(again)],
                   check=True, env=ENV, timeout=900, capture_output=True)
    doc2 = json.loads((again / "results.json").read_text())
    assert doc2["fine_tuned"] == doc["fine_tuned"] and doc2["screen"]["ranking"][0]["n_images"] == 60
