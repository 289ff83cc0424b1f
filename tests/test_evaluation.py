"""`tl-hub evaluate MODEL DATASET` / `tl_hub.evaluate_model`: a fine-tuned folder (or a pushed repo) on any
`load_data` source gives the metrics training reports, the per-label table and the confusion-matrix PNG,
in a folder; a dataset whose label names are not the model's is a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tl_hub
from helpers.images import write_image_folder
from tl_hub.cli import main
from tl_hub.errors import ConfigError, DataError

LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluation")
    data = write_image_folder(root / "data", LABELS, per_label=8, seed=3)
    out = root / "model"
    tl_hub.finetune(model=str(tiny("vit")), dataset=str(data), image_size=32, epochs=2, batch_size=8,
                    eval_fraction=0.25, output_dir=str(out), num_workers=0, seed=0, policy="full")
    return out, data


def test_evaluating_on_the_training_runs_eval_split_reproduces_its_metrics(trained, tmp_path):
    """The run's own eval images through `evaluate_model` give the run's final metrics (same transform)."""
    out, data = trained
    from tl_hub.data import load_data

    final = json.loads((out / "metrics.json").read_text())["final"]
    held_out = tmp_path / "held_out"  # the run's eval split (same source, fraction and seed) as a folder

    split = load_data(str(data), eval_fraction=0.25, seed=0)
    for row in split.eval:
        target = held_out / split.labels[row["label"]]
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(row["id"], target)
    result = tl_hub.evaluate_model(out, str(held_out), output_dir=tmp_path / "eval")
    assert result.num_examples == len(split.eval) and result.split == "all images"
    assert result.metrics["accuracy"] == pytest.approx(final["accuracy"], abs=1e-6)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(written["per_label"]) == set(LABELS) and np.array(written["confusion_matrix"]).sum() == len(split.eval)
    assert (tmp_path / "eval" / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| label | precision | recall | F1 | support |" in (tmp_path / "eval" / "evaluation.md").read_text()


def test_the_command_line_and_a_subset_of_labels_in_another_order(trained, tmp_path, capsys):
    """A dataset with only some of the model's labels, the folders listed in another order: ids map by name."""
    out, data = trained
    subset = tmp_path / "subset"
    for name in ("blue", "red"):
        shutil.copytree(data / name, subset / name)
    assert main(["evaluate", str(out), str(subset), "--output-dir", str(tmp_path / "e")]) == 0
    printed = capsys.readouterr().out
    assert "all images: 16 images" in printed and "accuracy" in printed and "written:" in printed
    doc = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert doc["labels"] == sorted(LABELS)  # the model's ids, whatever the data's folder order
    assert doc["per_label"]["green"]["support"] == 0 and doc["per_label"]["red"]["support"] == 8
    matrix = np.array(doc["confusion_matrix"])
    assert matrix.sum() == 16 and matrix[doc["labels"].index("green")].sum() == 0


def test_labels_the_model_does_not_know_are_named(trained, tmp_path):
    out, data = trained
    other = write_image_folder(tmp_path / "other", ["red", "purple"], per_label=2, seed=4)
    with pytest.raises(DataError, match=r"has labels the model .* does not know: \['purple'\]\. The model's labels: "
                                        r"\['blue', 'green', 'red'\]"):
        tl_hub.evaluate_model(out, str(other), output_dir=tmp_path / "e")
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_a_folder_holding_other_files_is_not_overwritten(trained, tmp_path):
    out, data = trained
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="holds other files"):
        tl_hub.evaluate_model(out, str(data), output_dir=mine)
    assert (mine / "notes.txt").read_text() == "keep me" and not (mine / "metrics.json").exists()
    first = tl_hub.evaluate_model(out, str(data), output_dir=tmp_path / "again")
    second = tl_hub.evaluate_model(out, str(data), output_dir=tmp_path / "again")  # its own earlier result: fine
    assert first.metrics == second.metrics and first.num_examples == 24
