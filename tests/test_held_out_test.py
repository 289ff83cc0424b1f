"""A run on a train + test source selects its best epoch (and stops early) on a stratified carve-out of train
and evaluates the held-out test split once, at the end, with the saved model; metrics.json, the end-of-run
lines, the card and its model-index report the two apart. A validation split stays the eval split;
`eval_split: test` selects on the split it reports and says so; `test_split: none` leaves the test out.
Real runs: a tiny ViT checkpoint on real PNG folders (train/, validation/, test/)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import tl_hub
from helpers.images import write_image_folder
from tl_hub.data import load_data

LABELS = ["a", "b", "c", "d", "e", "f"]  # 6 labels: colour and pattern (helpers.images), not all learnt at once


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("held_out")
    train_test = root / "train_test"
    write_image_folder(train_test / "train", LABELS, per_label=5, seed=0)
    write_image_folder(train_test / "test", LABELS, per_label=3, seed=1)
    three = root / "three"
    write_image_folder(three / "train", LABELS, per_label=4, seed=2)
    write_image_folder(three / "validation", LABELS, per_label=2, seed=3)
    write_image_folder(three / "test", LABELS, per_label=3, seed=4)
    return {"train_test": train_test, "three": three}


def _run(tiny, dataset: Path, out: Path, **kw) -> tl_hub.FinetuneResult:
    recipe = dict(model=str(tiny("vit")), dataset=str(dataset), image_size=32, epochs=3, batch_size=8,
                  eval_fraction=0.3, output_dir=str(out), num_workers=0, seed=0, policy="full", learning_rate=3e-3)
    return tl_hub.finetune(**{**recipe, **kw})


def _read(out: Path) -> tuple[dict, dict]:
    return json.loads((out / "metrics.json").read_text()), json.loads((out / "run_info.json").read_text())


@pytest.mark.parametrize("policy", ["full", "head"])  # the images through the loop; the head on cached features
def test_train_and_test_selects_on_a_carve_out_and_reports_test_apart(tiny, sources, tmp_path, policy, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        result = _run(tiny, sources["train_test"], out, policy=policy)
    metrics, info = _read(out)
    assert info["data"]["eval_split"] is None and info["data"]["test_split"] == "test"
    assert info["data"]["sizes"] == {"train": 18, "eval": 12, "test": 18}
    # selection: every epoch and the saved model's `final` are on the 12 carve-out images...
    assert metrics["num_eval_examples"] == 12
    best = next(e for e in metrics["epochs"] if e["epoch"] == metrics["best_epoch"])
    assert best["eval_accuracy"] == metrics["final"]["accuracy"]
    # ...the test section is the saved model on the 18 test images, apart from them
    test = metrics["test"]
    assert test["split"] == "test" and test["num_examples"] == 18 and sum(map(sum, test["confusion_matrix"])) == 18
    assert sum(map(sum, metrics["confusion_matrix"])) == 12 and set(test["per_label"]) == set(LABELS)
    assert metrics["results"]["test_accuracy"] == test["final"]["accuracy"]
    assert metrics["results"]["eval_accuracy"] == metrics["final"]["accuracy"]
    assert not any(k.startswith("test_") for e in metrics["epochs"] for k in e)  # never looked at while training
    assert result.test_split == "test" and result.test_metrics["accuracy"] == test["final"]["accuracy"]
    # the test rows are not eval rows: the run's split rebuilt the way load_data makes it (a function of the seed)
    bundle = load_data(str(sources["train_test"]), eval_fraction=0.3, seed=0)
    assert len(bundle.eval) == 12 and set(bundle.test["id"]).isdisjoint(bundle.eval["id"])
    # the test numbers are the saved model on exactly the test images: `tl-hub evaluate` reproduces them
    again = tl_hub.evaluate_model(out, str(sources["train_test"]), output_dir=tmp_path / "evaluation")
    assert again.split == "test" and again.num_examples == 18
    assert again.metrics["accuracy"] == pytest.approx(test["final"]["accuracy"], abs=1e-6)
    lines = [r.getMessage() for r in caplog.records]
    assert sum(line.startswith("test ('test' split, held out, evaluated once") for line in lines) == 1
    assert any(line.startswith("final eval:") and "on 12 images" in line for line in lines)
    card = (out / "README.md").read_text()
    assert "### Test: the held-out `test` split" in card and "split: test" in card
    assert f"| Accuracy | {test['final']['accuracy']:.4f} |" in card


def test_a_validation_split_selects_and_the_test_split_is_held_out(tiny, sources, tmp_path):
    out = tmp_path / "run"
    _run(tiny, sources["three"], out, epochs=2)
    metrics, info = _read(out)
    assert (info["data"]["eval_split"], info["data"]["test_split"]) == ("validation", "test")
    assert metrics["num_eval_examples"] == 12 and metrics["test"]["num_examples"] == 18
    assert "- **Evaluation split:** the dataset's own 'validation' split (12 images); it chose the best epoch" in \
        (out / "README.md").read_text()


def test_eval_split_test_selects_on_the_split_it_reports_and_says_so(tiny, sources, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        _run(tiny, sources["train_test"], out, epochs=2, eval_split="test")
    metrics, info = _read(out)
    assert "test" not in metrics and metrics["num_eval_examples"] == 18 and info["data"]["selects_on_test"]
    assert any(r.getMessage().startswith("note: these numbers are on 'test', the split that selected the best epoch")
               for r in caplog.records)
    card = (out / "README.md").read_text()
    assert "(`eval_split` names a test\nsplit), so these numbers are optimistic" in card and "split: test" in card


def test_test_split_none_leaves_the_test_split_out_and_the_test_split_never_changes_training(tiny, sources, tmp_path):
    out, with_test = tmp_path / "run", tmp_path / "with_test"
    result = _run(tiny, sources["train_test"], out, epochs=2, test_split="none")
    _run(tiny, sources["train_test"], with_test, epochs=2)
    metrics, info = _read(out)
    # the held-out split changes nothing of training or selection: same epochs, same best epoch, same weights
    timing = {"images_per_second", "epoch_time_s"}
    assert [{k: v for k, v in e.items() if k not in timing} for e in metrics["epochs"]] == \
        [{k: v for k, v in e.items() if k not in timing} for e in _read(with_test)[0]["epochs"]]
    assert (out / "model.safetensors").read_bytes() == (with_test / "model.safetensors").read_bytes()
    assert "test" in _read(with_test)[0]
    assert "test" not in metrics and result.test_metrics == {} and result.test_split is None
    assert info["data"]["test_split"] is None and info["data"]["unused_splits"] == {"test": 18}
    assert metrics["num_eval_examples"] == 12  # still a carve-out of train: the test split is never the eval split
    card = (out / "README.md").read_text()
    assert "### Test:" not in card and "split: eval" in card
