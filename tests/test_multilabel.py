"""Multi-label classification ([6/7]): label lists from JSONL, CSV (label_separator) and a Hub
Sequence(ClassLabel) column; BCE loss; mAP / micro-macro F1 / per-label AP; a finetuned model whose
config makes plain transformers' pipeline apply a sigmoid (fresh process, no tl_hub); predict returns
every label over the threshold; tl-hub evaluate; clear errors; SIGKILL + resume bit-identical."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.images import write_multi_label_table
from tl_hub.data import load_data
from tl_hub.errors import ConfigError, DataError

COLOURS = ["red", "green", "blue"]


# --- data ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("separator", [None, "|"])
def test_label_lists_from_jsonl_and_csv(tmp_path, separator):
    """JSONL lists and CSV cells split by label_separator both become a Sequence(ClassLabel) label column
    holding each image's labels; the report counts an image once per label."""
    table, sets = write_multi_label_table(tmp_path / "d", COLOURS, 40, seed=1, separator=separator)
    bundle = load_data(str(table), label_separator=separator, eval_fraction=0.25, seed=0)
    assert bundle.problem_type == "multi_label_classification" and bundle.labels == sorted(COLOURS)  # names sorted
    assert type(bundle.train.features["label"].feature).__name__ == "ClassLabel"
    by_file = {Path(p).name: s for p, s in zip([f"{i}.png" for i in range(40)], sets)}
    for split in (bundle.train, bundle.eval):
        for row in split:
            assert sorted(bundle.labels[c] for c in row["label"]) == sorted(by_file[Path(row["id"]).name])
    assert len(bundle.train) + len(bundle.eval) == 40
    train_counts = {n: sum(n in by_file[Path(i).name] for i in bundle.train["id"]) for n in COLOURS}
    assert bundle.report.per_label["train"] == train_counts


def test_csv_without_separator_stays_single_label(tmp_path):
    table, _ = write_multi_label_table(tmp_path / "d", COLOURS, 30, seed=2, separator="|")
    bundle = load_data(str(table))  # no label_separator: "red|blue" is one label name
    assert bundle.problem_type == "single_label_classification"
    assert any("|" in name for name in bundle.labels)


def test_hub_sequence_classlabel_dataset(hub, tmp_path):
    """A dataset pushed to the (local) Hub with a Sequence(ClassLabel) column, read by the real datasets client."""
    from datasets import ClassLabel, Dataset, Features, Image as ImageFeature, Sequence
    from PIL import Image

    rng = np.random.default_rng(0)
    sets = [sorted(rng.choice(3, size=int(rng.integers(1, 4)), replace=False).tolist()) for _ in range(24)]
    images = [Image.fromarray(rng.integers(0, 255, (12, 12, 3)).astype(np.uint8)) for _ in sets]
    features = Features({"image": ImageFeature(), "tags": Sequence(ClassLabel(names=COLOURS))})
    repo = hub.new_repo_id("multi-label-images")
    Dataset.from_dict({"image": images, "tags": sets}, features=features).push_to_hub(repo, private=True)
    bundle = load_data(repo, eval_fraction=0.25)
    assert bundle.problem_type == "multi_label_classification" and bundle.labels == COLOURS
    got = {row["id"]: row["label"] for split in (bundle.train, bundle.eval) for row in split}
    assert got == {f"train[{i}]": s for i, s in enumerate(sets)}


def test_clear_errors(tmp_path):
    table, _ = write_multi_label_table(tmp_path / "d", COLOURS, 12, seed=3)
    lines = table.read_text().splitlines()
    lines[4] = json.dumps({"image": "4.png", "labels": []})
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels\.jsonl:5: the 'labels' list is empty.*add its labels, or remove"):
        load_data(str(table))
    lines[4] = json.dumps({"image": "4.png", "labels": ["red"]})
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"has a list of labels.*problem_type is single_label_classification.*"
                                        r"multi_label_classification"):
        load_data(str(table), problem_type="single_label_classification")
    with pytest.raises(DataError, match=r"'gren' \(did you mean 'green'\?\) is not a label"):
        load_data(str(table), labels=["red", "gren"])
    csv_table, _ = write_multi_label_table(tmp_path / "c", COLOURS, 12, seed=3, separator=";")
    text = csv_table.read_text().splitlines()
    text[3] = "2.png, ; "
    csv_table.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"labels\.csv:4: the 'labels' list is empty"):
        load_data(str(csv_table), label_separator=";")
    from tl_hub.config import RecipeConfig

    for key, value, message in [("threshold", 1.5, r"threshold: got 1\.5; must be in \(0, 1\)"),
                                ("threshold", 0, r"threshold: got 0\.0; must be in \(0, 1\)"),
                                ("problem_type", "multi", r"problem_type: got 'multi'; choose one of auto")]:
        with pytest.raises(ConfigError, match=message):
            RecipeConfig(dataset="x", **{key: value})
    overridden = RecipeConfig(dataset="x").apply_overrides(["--threshold", "0.3", "--label_separator", "|",
                                                            "--problem_type", "multi_label_classification"])
    assert (overridden.threshold, overridden.label_separator, overridden.problem_type) == (
        0.3, "|", "multi_label_classification")


def test_whitespace_label_separators_are_separators_not_nulls(tmp_path):
    """A space or a tab (typed as a tab, or as backslash-t on a command line) splits CSV label cells; only an
    empty string means null; a tab in a TSV file, where it separates the columns, is an error naming the file."""
    from tl_hub.config import RecipeConfig
    from tl_hub.data.multilabel import check_label_separator

    for given, meant in [(" ", " "), ("\t", "\t"), ("\\t", "\t")]:
        assert RecipeConfig(dataset="x", label_separator=given).label_separator == meant
        assert RecipeConfig(dataset="x").apply_overrides(["--label_separator", given]).label_separator == meant
    assert RecipeConfig(dataset="x", label_separator="").label_separator is None  # an empty cell: null, as elsewhere
    with pytest.raises(ConfigError, match=r"label_separator: got ''"):
        check_label_separator("")
    for separator in (" ", "\t"):
        table, sets = write_multi_label_table(tmp_path / repr(separator), COLOURS, 12, seed=4, separator=separator)
        bundle = load_data(str(table), label_separator=separator, eval_fraction=0.25, seed=0)
        assert bundle.problem_type == "multi_label_classification" and sorted(bundle.labels) == sorted(COLOURS)
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("image\tlabels\n0.png\tred\n")
    with pytest.raises(DataError, match=r"labels\.tsv: label_separator is a tab, which already separates"):
        load_data(str(tsv), label_separator="\t")


# --- loss and metrics ----------------------------------------------------------------------------------
def test_loss_is_binary_cross_entropy_per_label():
    from tl_hub.loss import LossSpec, compute_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]])
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    p = 1 / (1 + torch.exp(-logits.double()))
    by_hand = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    got = compute_loss(LossSpec(problem_type="multi_label_classification"), logits, target)
    assert abs(float(got) - float(by_hand)) < 1e-6


def _ap_by_hand(truth: np.ndarray, scores: np.ndarray) -> float:
    """Average precision as defined: the mean, over the positives, of the precision at each one's rank."""
    order = np.argsort(-scores, kind="stable")
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if truth[i]:
            hits += 1
            total += hits / rank
    return total / truth.sum()


def test_metrics_against_their_definitions():
    from tl_hub.metrics.multilabel import compute_multilabel_metrics

    rng = np.random.default_rng(5)
    truth = (rng.random((40, 4)) < 0.4).astype(int)
    truth[:, 3] = 0  # a label without positives: AP undefined, left out of mAP
    logits = rng.normal(size=(40, 4)) + 2.0 * truth
    got = compute_multilabel_metrics(logits, truth, ["a", "b", "c", "d"], threshold=0.6)
    probs = 1 / (1 + np.exp(-logits))
    aps = [_ap_by_hand(truth[:, k], probs[:, k]) for k in range(3)]
    assert math.isclose(got["map"], sum(aps) / 3, rel_tol=1e-9)
    assert got["per_label"]["d"]["ap"] is None and math.isclose(got["per_label"]["b"]["ap"], aps[1], rel_tol=1e-9)
    pred = probs >= 0.6
    tp, fp, fn = (pred & (truth == 1)).sum(), (pred & (truth == 0)).sum(), (~pred & (truth == 1)).sum()
    assert math.isclose(got["f1_micro"], 2 * tp / (2 * tp + fp + fn), rel_tol=1e-9)
    f1s = []
    for k in range(4):
        t, f, n = (pred[:, k] & (truth[:, k] == 1)).sum(), (pred[:, k] & (truth[:, k] == 0)).sum(), \
            (~pred[:, k] & (truth[:, k] == 1)).sum()
        f1s.append(2 * t / (2 * t + f + n) if (2 * t + f + n) else 0.0)
    assert math.isclose(got["f1_macro"], float(np.mean(f1s)), rel_tol=1e-9)
    assert math.isclose(got["accuracy"], float((pred == truth.astype(bool)).all(axis=1).mean()))
    assert got["per_label"]["a"]["support"] == int(truth[:, 0].sum())


# --- end to end ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    """policy auto (-> head, on cached features) on a tiny ViT and 60 multi-label images."""
    from helpers.tiny_models import tiny_checkpoint
    from tl_hub.finetuning import finetune

    root = tmp_path_factory.mktemp("multi_run")
    model = tiny_checkpoint("vit", root / "vit")
    table, _ = write_multi_label_table(root / "data", COLOURS, 60, seed=4)
    result = finetune(model=str(model), dataset=str(table), output_dir=str(root / "out"), epochs=3, batch_size=8,
                      learning_rate=3e-2, num_workers=0, seed=0, threshold=0.4, progress=False)
    return Path(result.output_dir), result, table


def test_finetune_writes_a_multi_label_model(multi_run):
    out, result, _ = multi_run
    assert result.policy.name == "head" and result.feature_cache_used
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["multi_label_threshold"] == 0.4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metric_for_best_model"] == "map" and metrics["problem_type"] == "multi_label_classification"
    assert {"map", "f1_micro", "f1_macro", "accuracy"} <= set(metrics["final"])
    assert set(metrics["per_label"]) == set(COLOURS) and all("ap" in v for v in metrics["per_label"].values())
    assert "confusion_matrix" not in metrics and not (out / "confusion_matrix.png").exists()
    assert all("eval_map" in e for e in metrics["epochs"])
    card = (out / "README.md").read_text()
    assert "multi-label (`problem_type: multi_label_classification`" in card and "**0.4**" in card
    assert "mAP (macro average precision)" in card and "| label | AP | precision |" in card


def test_predict_returns_every_label_over_the_threshold(multi_run):
    import tl_hub

    out, _, table = multi_run
    images = [str(table.parent / f"{i}.png") for i in range(6)]
    model, processor = tl_hub.load(out)
    with torch.no_grad():
        probs = model(**processor(images=[__import__("PIL.Image").Image.open(p) for p in images],
                                  return_tensors="pt")).logits.sigmoid()
    got = tl_hub.predict(out, images)
    for row, p in zip(got, probs, strict=True):
        want = {model.config.id2label[k] for k in range(3) if p[k] >= 0.4}
        assert {x["label"] for x in row} == want
        assert [x["score"] for x in row] == sorted((x["score"] for x in row), reverse=True)
    everything = tl_hub.predict(out, images, threshold=1e-9)
    assert all(len(row) == 3 for row in everything)


def test_the_predict_command_takes_a_threshold(multi_run, capsys):
    """`tl-hub predict --threshold`: every label over it per image ("(no label)" when none is); a threshold
    for a single-label model is refused, not ignored."""
    from tl_hub.cli import main as cli_main

    out, _, table = multi_run
    images = [str(table.parent / f"{i}.png") for i in range(3)]
    capsys.readouterr()
    assert cli_main(["predict", str(out), *images, "--threshold", "0.000001", "--json"]) == 0
    assert all(len(row["predictions"]) == 3 for row in json.loads(capsys.readouterr().out))
    assert cli_main(["predict", str(out), *images, "--threshold", "0.999999"]) == 0
    assert capsys.readouterr().out.count("(no label)") == 3


def test_plain_pipeline_applies_a_sigmoid_in_a_fresh_process(hub, multi_run, tmp_path):
    """Pushed, then read by plain transformers in a process that never imports tl_hub: the scores are the
    sigmoid of each logit (they do not sum to 1), the same as tl_hub.predict's."""
    import tl_hub
    from test_hub import fresh_pipeline

    out, _, table = multi_run
    repo = hub.new_repo_id("multi-label-model")
    tl_hub.push_to_hub(out, repo)
    images = [str(table.parent / f"{i}.png") for i in range(3)]
    expected = tl_hub.predict(out, images, threshold=1e-9)
    got = fresh_pipeline(hub, repo, images, 3, tmp_path)
    for want, have in zip(expected, got, strict=True):
        assert {w["label"]: round(w["score"], 5) for w in want} == {h["label"]: round(h["score"], 5) for h in have}
        assert abs(sum(h["score"] for h in have) - 1.0) > 1e-3


def test_tl_hub_evaluate_on_multi_label_data(multi_run, tmp_path):
    from tl_hub.evaluation import evaluate_model

    out, _, table = multi_run
    result = evaluate_model(out, str(table), output_dir=tmp_path / "eval")
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert doc["problem_type"] == "multi_label_classification" and doc["num_examples"] == 60
    assert 0 <= result.metrics["map"] <= 1 and set(doc["per_label"]) == set(COLOURS)
    assert "| label | AP |" in (tmp_path / "eval" / "evaluation.md").read_text()
    from tl_hub.cli import main as cli_main

    csv_table, _ = write_multi_label_table(tmp_path / "csv", COLOURS, 20, seed=9, separator=";")
    assert cli_main(["evaluate", str(out), str(csv_table), "--label-separator", ";", "--output-dir",
                     str(tmp_path / "eval-csv")]) == 0
    doc = json.loads((tmp_path / "eval-csv" / "metrics.json").read_text())
    assert doc["num_examples"] == 20 and "map" in doc["final"]


# --- exact resume --------------------------------------------------------------------------------------
def _resume_assets(tmp_path: Path) -> dict[str, Path]:
    import test_resume
    from helpers.tiny_models import tiny_checkpoint

    model = tiny_checkpoint("vit", tmp_path / "vit")
    table, _ = write_multi_label_table(tmp_path / "data", COLOURS, 27, seed=6)
    driver = tmp_path / "driver.py"
    driver.write_text(test_resume.DRIVER)
    return {"model": model, "data": table, "driver": driver}


@pytest.mark.slow
def test_resume_multi_label_lp_ft_bit_identical(tmp_path):
    """SIGKILL + resume of a multi-label lp-ft run (head phase on cached features, then the images) equals the
    uninterrupted run bit for bit (the drivers and comparisons of tests/test_resume.py)."""
    import test_resume

    test_resume.run_chain(_resume_assets(tmp_path), tmp_path, "multi",
                          {"policy": "lp-ft", "head_epochs_fraction": 0.34, "feature_cache": "auto"},
                          [{"KILL_AT_STEP": test_resume.RNG.choice([4, 7, 9])}])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_resume_multi_label_two_cpu_processes(tmp_path):
    """2 real processes (gloo): multi-hot labels gathered across ranks; killed and resumed bit for bit."""
    import test_resume

    test_resume.run_chain(_resume_assets(tmp_path), tmp_path, "multi-ddp", {},
                          [{"KILL_AT_STEP": test_resume.RNG.randint(3, 8)}], procs=2)


def test_single_label_model_from_a_multi_label_parent(multi_run):
    """Fine-tuning a multi-label model on single-label data: the new config says single-label, no threshold."""
    from tl_hub.backbone import load_backbone

    out, _, _ = multi_run
    parent = load_backbone(str(out), sorted(COLOURS))
    assert parent.config.problem_type == "multi_label_classification"
    child = load_backbone(str(out), sorted(COLOURS), problem_type="single_label_classification")
    assert child.config.problem_type == "single_label_classification"
    assert "multi_label_threshold" not in child.config.to_dict()


def test_class_balance_keys_in_a_multi_label_run(tmp_path):
    """class_weights auto (the default) leaves BCE unweighted; a weight mapping or the balanced sampler is a
    clear error naming the key and the fix."""
    from tl_hub.config import RecipeConfig
    from tl_hub.finetuning import plan_class_balance

    table, _ = write_multi_label_table(tmp_path / "d", COLOURS, 20, seed=8)
    data = load_data(str(table))
    plan = plan_class_balance(RecipeConfig(dataset=str(table)), data)
    assert plan.loss_weights is None and plan.sampler == "random"
    with pytest.raises(ConfigError, match=r"class_weights: .* multi-label run.*class_weights: none"):
        plan_class_balance(RecipeConfig(dataset=str(table), class_weights={"red": 2.0}), data)
    with pytest.raises(ConfigError, match=r"sampler: got 'balanced' in a multi-label run.*sampler: random"):
        plan_class_balance(RecipeConfig(dataset=str(table), sampler="balanced"), data)


def test_regularisers_in_a_multi_label_run(tmp_path):
    """label_smoothing moves each BCE target towards 1/2 in training only; mixup/cutmix (one label per image)
    are refused for label lists, naming the keys and the fix."""
    from helpers.tiny_models import tiny_checkpoint
    from tl_hub.finetuning import finetune
    from tl_hub.loss import LossSpec, compute_loss

    logits, target = torch.tensor([[1.5, -0.5]]), torch.tensor([[1.0, 0.0]])
    spec = LossSpec(problem_type="multi_label_classification", label_smoothing=0.2)
    smoothed = torch.tensor([[0.9, 0.1]])
    p = torch.sigmoid(logits.double())
    by_hand = -(smoothed * torch.log(p) + (1 - smoothed) * torch.log(1 - p)).mean()
    assert abs(float(compute_loss(spec, logits, target, training=True)) - float(by_hand)) < 1e-6
    plain = LossSpec(problem_type="multi_label_classification")
    assert float(compute_loss(spec, logits, target)) == float(compute_loss(plain, logits, target))
    table, _ = write_multi_label_table(tmp_path / "d", COLOURS, 20, seed=10)
    with pytest.raises(ConfigError, match=r"mixup_alpha/cutmix_alpha: got 0\.2/0\.0 in a multi-label run.*Set both to 0"):
        finetune(model=str(tiny_checkpoint("vit", tmp_path / "vit")), dataset=str(table), mixup_alpha=0.2, policy="full",
                 output_dir=str(tmp_path / "out"), epochs=1, num_workers=0, progress=False)
