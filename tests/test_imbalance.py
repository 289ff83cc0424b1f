"""Class imbalance (issue [6/7]): `class_weights` and `sampler`, the balanced sampler's purity, the loss
weights, the auto policy's reading of the smallest labels, the card line and a real run that uses them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import tl_hub
from tl_hub.config import RecipeConfig
from tl_hub.errors import ConfigError
from tl_hub.imbalance import IMBALANCE_RATIO_THRESHOLD, inverse_frequency_weights, plan_imbalance
from tl_hub.loss import LossSpec, compute_loss
from tl_hub.policy import choose_policy, small_label_count
from tl_hub.seeding import BalancedEpochSampler, EpochSampler, mix_seed
from helpers.images import write_image_folder

LABELS = ["cat", "dog", "fox"]


# --- the weights ----------------------------------------------------------------------------------
def test_auto_weights_are_scikit_learns_balanced_weights():
    from sklearn.utils.class_weight import compute_class_weight

    counts = [1000, 1000, 50, 7]
    y = np.repeat(np.arange(len(counts)), counts)
    expected = compute_class_weight("balanced", classes=np.arange(len(counts)), y=y)
    assert inverse_frequency_weights(counts) == pytest.approx(expected.tolist(), abs=1e-4)
    # normalised: the weights average 1 over the training images
    assert float(np.dot(inverse_frequency_weights(counts), counts)) == pytest.approx(sum(counts), rel=1e-4)


def test_auto_turns_on_only_above_the_threshold():
    at = plan_imbalance("auto", "random", LABELS, [30, 30, int(30 / IMBALANCE_RATIO_THRESHOLD)])
    assert at.ratio == IMBALANCE_RATIO_THRESHOLD and at.class_weights is None and at.loss_weights is None
    assert "not above 3" in at.reason
    above = plan_imbalance("auto", "random", LABELS, [31, 30, 10])
    assert above.loss_weights == tuple(inverse_frequency_weights([31, 30, 10]))
    assert "ratio 3.1" in above.reason and "fox: 10" in above.reason and "inverse label frequency" in above.reason
    assert plan_imbalance("none", "random", LABELS, [300, 30, 3]).class_weights is None


def test_a_mapping_names_some_labels_and_the_rest_keep_1():
    plan = plan_imbalance({"fox": 4}, "balanced", LABELS, [10, 10, 10])
    assert plan.loss_weights == (1.0, 1.0, 4.0) and plan.requested == "mapping"
    assert "sampler balanced" in plan.reason


@pytest.mark.parametrize("value, words", [
    ({"wolf": 2.0}, ["'wolf'", "cat, dog, fox"]),
    ({"cat": -1}, ["'cat'", "-1", "positive"]),
    ({"cat": 0}, ["'cat'", "0", "positive"]),
    ({"cat": "heavy"}, ["'cat'", "heavy", "positive"]),
    ({"cat": float("inf")}, ["'cat'", "inf"]),
    ("balanced", ["'balanced'", "auto, none"]),
])
def test_bad_class_weights_name_the_key_the_value_and_the_fix(value, words):
    with pytest.raises(ConfigError) as err:
        plan_imbalance(value, "random", LABELS, [5, 5, 5])
    text = str(err.value)
    assert text.startswith("class_weights:") and all(w in text for w in words), text


def test_class_weights_refused_in_a_multi_label_run():
    with pytest.raises(ConfigError, match="class_weights.*multi-label"):
        plan_imbalance("auto", "random", LABELS, [50, 5, 5], multi_label=True)
    with pytest.raises(ConfigError, match="class_weights.*multi_label_classification"):
        LossSpec(problem_type="multi_label_classification", class_weights=(1.0, 2.0))
    assert plan_imbalance("none", "random", LABELS, [50, 5, 5], multi_label=True).class_weights is None


def test_weighted_loss_is_the_weighted_mean_of_the_per_image_losses():
    logits, labels = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 0, 0, 0, 1, 2])
    weights = (0.5, 2.0, 2.0)
    per_image = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    w = torch.tensor(weights)[labels]
    got = compute_loss(LossSpec(class_weights=weights), logits, labels)
    assert float(got) == pytest.approx(float((per_image * w).sum() / w.sum()), rel=1e-6)
    assert float(got) != pytest.approx(float(compute_loss(LossSpec(), logits, labels)), rel=1e-3)


# --- the recipe keys ------------------------------------------------------------------------------
def test_recipe_keys_from_the_command_line_and_yaml(tmp_path):
    cfg = RecipeConfig.from_args(["--dataset", "x", "--class_weights", "{cat: 2, dog: 0.5}", "--sampler=balanced"])
    assert cfg.class_weights == {"cat": 2, "dog": 0.5} and cfg.sampler == "balanced"
    assert RecipeConfig.from_args(["--dataset", "x", "--class_weights", "auto"]).class_weights == "auto"
    cfg.to_yaml(tmp_path / "r.yaml")
    assert RecipeConfig.from_yaml(tmp_path / "r.yaml") == cfg
    help_text = RecipeConfig.field_help()
    assert "inverse label frequency" in help_text["class_weights"] and "balanced" in help_text["sampler"]


@pytest.mark.parametrize("kw, words", [
    ({"class_weights": "atuo"}, ["class_weights", "'atuo'", "did you mean 'auto'"]),
    ({"class_weights": {"cat": -2}}, ["class_weights", "'cat'", "-2", "positive"]),
    ({"class_weights": {"wolf": 2}, "labels": ["cat", "dog"]}, ["'wolf'", "cat, dog"]),
    ({"sampler": "balance"}, ["sampler", "'balance'", "did you mean 'balanced'"]),
])
def test_bad_recipe_values_are_refused_at_once(kw, words):
    with pytest.raises(ConfigError) as err:
        RecipeConfig(dataset="x", **kw)
    assert all(w in str(err.value) for w in words), str(err.value)


# --- the balanced sampler -------------------------------------------------------------------------
def test_balanced_sampler_is_a_pure_function_of_seed_and_epoch():
    labels = [0] * 90 + [1] * 9 + [2] * 3

    def order(seed, epoch):
        s = BalancedEpochSampler(labels, seed)
        s.set_epoch(epoch)
        return [i for i, _ in s]

    assert order(1, 4) == order(1, 4)  # a fresh sampler (a resumed run, another rank) draws the same
    assert order(1, 4) != order(1, 5) and order(1, 4) != order(2, 4)
    assert len(order(1, 4)) == len(labels) == len(BalancedEpochSampler(labels, 1))
    s = BalancedEpochSampler(labels, 1)
    s.set_epoch(4)
    # an item's augmentation seed is what the batched augmentation computes from its index
    assert all(seed == mix_seed(1, 4, i) for i, seed in s)


def test_balanced_sampler_draws_every_label_equally_often():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    s = BalancedEpochSampler(labels.tolist(), 0)
    drawn = []
    for epoch in range(20):
        s.set_epoch(epoch)
        drawn += s.order()
    shares = np.bincount(labels[drawn], minlength=3) / len(drawn)
    assert np.all(np.abs(shares - 1 / 3) < 0.02), shares  # 20,000 draws: 3 sigma is about 0.01
    random_order = EpochSampler(len(labels), 0)
    random_order.set_epoch(0)
    assert sorted(random_order.order()) == list(range(len(labels)))  # the default sampler is unchanged


# --- the auto policy reads the smallest labels ----------------------------------------------------
def test_auto_policy_decides_on_the_10th_percentile_label():
    uneven = [1000] * 5 + [50] * 5
    assert small_label_count(uneven) == 50 and small_label_count(list(range(1, 101))) == 10
    plain = choose_policy(sum(uneven), 10)
    chosen = choose_policy(sum(uneven), 10, label_counts=uneven)
    assert plain.name == "partial" and chosen.name == "head"
    assert "10th-percentile label has 50 images" in chosen.reason and "smallest 50" in chosen.reason
    even = choose_policy(5_000, 10, label_counts=[500] * 10)
    assert even.name == "partial" and even.reason == choose_policy(5_000, 10).reason  # balanced data: as before
    with pytest.raises(ConfigError, match="label_counts"):
        choose_policy(100, 10, label_counts=[10] * 9)


# --- a real run: console, run_info.json, card ------------------------------------------------------
@pytest.fixture(scope="module")
def uneven_folder(tmp_path_factory) -> Path:
    root = write_image_folder(tmp_path_factory.mktemp("uneven"), LABELS, per_label=24, seed=0)
    for name in ("dog", "fox"):  # 24 cats, 4 dogs, 4 foxes
        for path in sorted((root / name).iterdir())[4:]:
            path.unlink()
    return root


def test_a_run_with_auto_weights_and_the_balanced_sampler(tmp_path, tiny, uneven_folder, caplog):
    cfg = RecipeConfig(model=str(tiny("vit")), dataset=str(uneven_folder), image_size=32, epochs=2, batch_size=8,
                       eval_fraction=0.25, seed=0, output_dir=str(tmp_path / "out"), num_workers=0, augment=False,
                       class_weights="auto", sampler="balanced")
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        result = tl_hub.finetune(cfg)
    out = Path(result.output_dir)
    info = json.loads((out / "run_info.json").read_text())
    balance = info["imbalance"]
    assert balance["counts"] == {"cat": 18, "dog": 3, "fox": 3} and balance["ratio"] == 6.0
    assert balance["class_weights"] == {"cat": pytest.approx(0.4444), "dog": 2.6667, "fox": 2.6667}
    assert balance["sampler"] == "balanced"
    assert info["hyperparameters"]["class_weights"] == "auto" and info["hyperparameters"]["sampler"] == "balanced"
    assert "10th-percentile label has 3 images" in info["policy"]["reason"]  # the auto policy read them too
    assert "class balance: largest/smallest label ratio 6.0" in caplog.text
    assert "per-label recall (lowest first):" in caplog.text
    card = (out / "README.md").read_text()
    assert "**Class balance:** largest/smallest label ratio 6.0 (cat: 18, dog: 3)" in card
    assert "Loss weights: `cat` 0.4444, `dog` 2.6667, `fox` 2.6667" in card
    metrics = json.loads((out / "metrics.json").read_text())
    assert "f1_macro" in metrics["final"] and all("recall" in v for v in metrics["per_label"].values())
    state = json.loads(next((out / "checkpoints").glob("checkpoint-*/state.json")).read_text())
    assert state["fingerprint"]["sampler"] == "balanced" and state["fingerprint"]["loss"]["class_weights"]


def test_a_label_in_class_weights_that_the_data_lacks_is_named(tmp_path, tiny, uneven_folder):
    cfg = RecipeConfig(model=str(tiny("vit")), dataset=str(uneven_folder), image_size=32, epochs=1, batch_size=8,
                       output_dir=str(tmp_path / "out"), num_workers=0, class_weights={"wolf": 3})
    with pytest.raises(ConfigError, match=r"'wolf' is not a label of this dataset; its labels are: cat, dog, fox"):
        tl_hub.finetune(cfg)


def test_policy_command_reads_label_counts(capsys):
    from tl_hub.cli import main

    counts = ",".join(["1000"] * 5 + ["50"] * 5)
    assert main(["policy", "--examples", "5250", "--labels", "10", "--label-counts", counts]) == 0
    out = capsys.readouterr().out
    assert out.startswith("policy: head") and "10th-percentile label has 50 images" in out
    assert main(["policy", "--examples", "5250", "--labels", "10", "--label-counts", "1000,50"]) != 0
    assert "label_counts: got 2 counts; expected one per label (10)" in capsys.readouterr().err
