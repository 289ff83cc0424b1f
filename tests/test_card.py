"""Model card: golden rendering for a fixed run, graceful degradation, metadata rules, plots, validation,
and the template shipping inside the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tl_hub.card import (CARD_HASH_KEY, card_was_edited, render_model_card, template_path, write_model_card,
                         write_plots)

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_RUN = GOLDEN / "card_run"  # fixed run_info.json / metrics.json / recipe.yaml / config.json
GOLDEN_CARD = GOLDEN / "model_card.md"


def _copy_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(GOLDEN_RUN, out)
    return out


def test_golden_card(tmp_path):
    """The rendered card of a fixed run equals the reviewed golden file (TL_HUB_UPDATE_GOLDEN=1 rewrites)."""
    out = _copy_run(tmp_path)
    text = str(render_model_card(out, repo_id="tester/colours-vit", plots=["confusion_matrix.png",
                                                                          "training_curves.png"]))
    if os.environ.get("TL_HUB_UPDATE_GOLDEN") == "1":
        GOLDEN_CARD.write_text(text, encoding="utf-8")
    assert text == GOLDEN_CARD.read_text(encoding="utf-8")


def test_card_metadata_and_sections(tmp_path):
    out = _copy_run(tmp_path)
    card = render_model_card(out, repo_id="tester/colours-vit")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"
    assert data["base_model"] == "google/vit-base-patch16-224-in21k"
    assert data["tags"] == ["tl-hub", "transfer-learning", "image-classification", "policy-full"]
    assert "datasets" not in data  # a local folder is not a Hub dataset
    metrics = json.loads((out / "metrics.json").read_text())
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["accuracy"] == pytest.approx(metrics["final"]["accuracy"], abs=1e-6)
    text = card.text
    for heading in ("## Base model and what changed", "## Freeze policy", "## Training data",
                    "## Training hyperparameters", "## Results", "## How to use", "## How to reproduce",
                    "## Framework versions", "## Limitations"):
        assert heading in text
    assert 'pipeline("image-classification", model="tester/colours-vit")' in text
    assert "tl-hub predict tester/colours-vit" in text
    assert "(best)" in text and run_command(out) in text
    assert "UnidentifiedImageError" in text  # skipped images and why
    assert not card_was_edited(str(card)) and card_was_edited(str(card).replace("## Limitations", "## Caveats"))


def run_command(out: Path) -> str:
    return json.loads((out / "run_info.json").read_text())["command"]


def test_minimal_run_info_degrades_gracefully(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_info.json").write_text(json.dumps({"labels": ["a", "b"], "base_model": "bundled:efficientnet_lite0"}))
    path = write_model_card(out, repo_id="tester/minimal")
    card_text = path.read_text()
    from huggingface_hub import ModelCard

    card = ModelCard(card_text)
    assert card.data.base_model is None  # bundled weights: not claimed as a Hub id
    assert "timm/tf_efficientnet_lite0.in1k" in card.text and "not recorded" in card.text
    assert card.data.eval_results is None and card.data.license == "apache-2.0"
    assert not (out / "confusion_matrix.png").exists()
    assert getattr(card.data, CARD_HASH_KEY)


def test_parent_model_and_hub_dataset_in_metadata(tmp_path):
    out = _copy_run(tmp_path)
    run_info = json.loads((out / "run_info.json").read_text())
    run_info.update(command="pytest -x tests", parent_model="tester/colours-v1", data={**run_info["data"], "source": "hub:tester/colour-images",
                                                            "source_type": "hub"})
    (out / "run_info.json").write_text(json.dumps(run_info))
    card = render_model_card(out, repo_id="tester/colours-v2")
    assert card.data.base_model == "tester/colours-v1" and card.data.datasets == ["tester/colour-images"]
    assert "continues training from the tl_hub model [`tester/colours-v1`]" in card.text
    assert "google/vit-base-patch16-224-in21k" in card.text
    assert "pytest" not in card.text and "tl-hub train recipe.yaml" in card.text  # not a re-runnable command


def test_plots_are_pngs(tmp_path):
    out = _copy_run(tmp_path)
    written = write_plots(out)
    assert written == ["confusion_matrix.png", "training_curves.png"]
    for name in written:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_leave_pyplot_and_the_callers_backend_alone(tmp_path):
    """The plots draw on their own Agg canvas: pyplot is not imported (a fixed cost of every run) and a
    program's chosen matplotlib backend stays what it was."""
    out = _copy_run(tmp_path)
    code = ("import sys, matplotlib\n"
            "matplotlib.use('svg')\n"
            "from tl_hub.card import write_plots\n"
            f"print(write_plots({str(out)!r}), matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["['confusion_matrix.png',", "'training_curves.png']", "svg", "False"]
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_card_validates_and_round_trips_through_hub(hub, tmp_path):
    from huggingface_hub import HfApi, ModelCard

    out = _copy_run(tmp_path)
    repo_id = hub.new_repo_id("card")
    card = render_model_card(out, repo_id=repo_id)
    card.validate()  # POST /api/validate-yaml on the local Hub
    HfApi().create_repo(repo_id)
    card.push_to_hub(repo_id)
    assert ModelCard.load(repo_id).data == card.data
    assert hub.files(repo_id)["README.md"].decode() == str(card)


def test_template_ships_in_wheel(tmp_path):
    pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling in the environment")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("tl_hub-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        assert "tl_hub/model_cards/image_classification.md" in zf.namelist()
        zf.extractall(tmp_path / "site")
    code = "import tl_hub.card as c; print(c.template_path())"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    found = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert Path(found) == tmp_path / "site" / "tl_hub" / "model_cards" / "image_classification.md"
    assert template_path().read_text() == Path(found).read_text()


def test_card_accounts_for_the_labels_left_out(tmp_path):
    """A recipe's `labels` naming a subset: the card's data sentence says how many rows of which other labels
    were left out (the console's data report says the same)."""
    out = _copy_run(tmp_path)
    info = json.loads((out / "run_info.json").read_text())
    data = info["data"]
    data.update(entries_found=57, used_train=40, used_eval=10, not_selected=7,
                labels_left_out={"purple": 4, "orange": 3})
    (out / "run_info.json").write_text(json.dumps(info))
    text = render_model_card(out, repo_id="tester/colours-vit").text
    assert "7 of labels not in `labels`: orange (3), purple (4)" in text


def test_card_metric_types_are_distinct_and_the_hyperparameters_say_what_ran(tmp_path):
    """Top-5 accuracy is its own model-index type (not a second `accuracy`); the card lists the optimizer and
    the augmentation that really ran (run_info's words, written by `finetuning.run_facts`)."""
    out = _copy_run(tmp_path)
    card = render_model_card(out, repo_id="tester/colours-vit")
    types = [r.metric_type for r in card.data.eval_results]
    assert len(types) == len(set(types)) and "top_5_accuracy" in types
    assert "| `optimizer` | AdamW" in card.text and "| `augmentation` | random resized crop" in card.text
    assert "`augment`" not in card.text


def test_card_says_how_uneven_the_labels_were_and_what_was_done(tmp_path):
    """run_info's "imbalance" (what `finetuning.run_facts` writes: `tl_hub.imbalance.ImbalancePlan.to_dict`) is
    one line of the card's data section, with the loss weights; a run_info without it (older runs) has none."""
    from tl_hub.imbalance import plan_imbalance

    out = _copy_run(tmp_path)
    assert "Class balance" not in render_model_card(out, repo_id="tester/colours-vit").text
    info = json.loads((out / "run_info.json").read_text())
    info["imbalance"] = plan_imbalance("auto", "balanced", ["red", "green", "blue"], [40, 8, 4]).to_dict()
    (out / "run_info.json").write_text(json.dumps(info))
    text = render_model_card(out, repo_id="tester/colours-vit").text
    line = next(line for line in text.splitlines() if line.startswith("- **Class balance:**"))
    assert "largest/smallest label ratio 10.0 (red: 40, blue: 4), above 3: class_weights auto" in line
    assert "sampler balanced (each label drawn equally often, with replacement)" in line
    assert "Loss weights: `red` 0.4333, `green` 2.1667, `blue` 4.3333." in line
