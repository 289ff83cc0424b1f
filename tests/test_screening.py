"""The backbone screen: a linear probe on each backbone's frozen features of a stratified training subsample
ranks the real ImageNet Lite0 above the same architecture with random weights (and above a tiny random timm
EfficientNet), reads only the training split, reuses the feature cache, and refuses bad arguments by name."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.random_init import random_init_copy
from tl_hub import features as features_module
from tl_hub.config import RecipeConfig
from tl_hub.data import DataBundle, load_data
from tl_hub.errors import ConfigError
from tl_hub.screening import PROBE_METRIC, head_trial_config, screen_backbones, screen_sample

LITE0 = "bundled:efficientnet_lite0"


@pytest.fixture(scope="module")
def small_fashion():
    """300 real Fashion-MNIST training images (30 per label); the eval split is removed so that any read of
    it fails."""
    data = load_data("bundled:fashion_mnist", examples_per_label=30, seed=0)
    return DataBundle(train=data.train, eval=None, labels=data.labels, report=data.report)


@pytest.fixture(scope="module")
def random_lite0(tmp_path_factory):
    return str(random_init_copy(LITE0, tmp_path_factory.mktemp("screen") / "lite0_random"))


@pytest.mark.slow
def test_pretrained_backbone_ranks_above_random_ones(small_fashion, random_lite0, tiny):
    config = RecipeConfig(dataset="bundled:fashion_mnist", image_size=64, progress=False)
    tiny_cnn = str(tiny("timm_efficientnet"))  # a tiny random timm model built from its config
    scores = screen_backbones(config, [random_lite0, LITE0, tiny_cnn], max_images=200, seed=0, data=small_fashion)
    order = [s.backbone for s in scores]
    assert order[0] == LITE0, [(s.backbone, s.score) for s in scores]
    best, *others = scores
    assert all(best.score >= other.score + 0.1 for other in others), [(s.backbone, s.score) for s in scores]
    assert best.score > 0.6  # ten labels: chance is 0.1
    for s in scores:
        assert s.metric == PROBE_METRIC and s.n_images == 200 and s.n_probe_train + s.n_probe_val == 200
        assert s.n_probe_val == 50 and s.seconds > 0 and s.probe_c > 0
    assert best.feature_dim == 1280 and best.image_size == 64
    assert scores[[s.backbone for s in scores].index(tiny_cnn)].image_size == 64  # the recipe's image_size wins
    # the same seed gives the same screen
    again = screen_backbones(config, [LITE0, random_lite0], max_images=200, seed=0, data=small_fashion)
    assert {s.backbone: s.score for s in again} == {s.backbone: s.score for s in scores if s.backbone != tiny_cnn}


def test_subsample_is_stratified_and_from_train_only(small_fashion):
    sample = screen_sample(small_fashion.train, small_fashion.labels, max_images=100, seed=3)
    assert len(sample.images) == 100
    assert np.bincount(sample.labels).tolist() == [10] * 10
    assert np.bincount(sample.labels[sample.probe_val]).tolist() == [2] * 10  # round(10 * 0.25) per label
    assert not set(sample.probe_train) & set(sample.probe_val)
    train_ids = set(small_fashion.train["id"])
    assert set(sample.images["id"]) <= train_ids
    other = screen_sample(small_fashion.train, small_fashion.labels, max_images=100, seed=4)
    assert set(other.images["id"]) != set(sample.images["id"]) and other.key != sample.key


def test_feature_cache_is_reused(small_fashion, tmp_path, monkeypatch):
    config = RecipeConfig(dataset="bundled:fashion_mnist", image_size=32, progress=False,
                          feature_cache_dir=str(tmp_path / "features"))
    first = screen_backbones(config, [LITE0], max_images=60, data=small_fashion)
    passes = []
    real = features_module.extract_features
    monkeypatch.setattr(features_module, "extract_features", lambda *a, **k: passes.append(1) or real(*a, **k))
    second = screen_backbones(config, [LITE0], max_images=60, data=small_fashion)
    assert passes == [] and second[0].score == first[0].score
    screen_backbones(config, [LITE0], max_images=60, seed=1, data=small_fashion)  # another subsample: a new pass
    assert passes == [1]


def test_head_trials_share_one_feature_cache(tmp_path):
    config = RecipeConfig(dataset="bundled:digits", policy="head")
    assert head_trial_config(config, tmp_path / "f").feature_cache_dir == str(tmp_path / "f")
    own = config.replace(feature_cache_dir=str(tmp_path / "mine"))
    assert head_trial_config(own, tmp_path / "f").feature_cache_dir == str(tmp_path / "mine")
    assert head_trial_config(config).feature_cache_dir.endswith("features")


@pytest.mark.parametrize("backbones,message", [
    ([], "backbones: got an empty list"),
    ("bundled:efficientnet_lite0", "backbones: got 'bundled:efficientnet_lite0'; give a list"),
    ([LITE0, LITE0], r"backbones: \['bundled:efficientnet_lite0'\] listed more than once"),
    ([LITE0, ""], "backbones: got ''"),
])
def test_bad_backbone_lists(backbones, message, small_fashion):
    with pytest.raises(ConfigError, match=message):
        screen_backbones(RecipeConfig(dataset="bundled:fashion_mnist"), backbones, data=small_fashion)


def test_too_few_images_for_a_probe(small_fashion):
    with pytest.raises(ConfigError, match=r"max_images: got 15; .* at least 2 images per label \(20 for 10"):
        screen_backbones(RecipeConfig(dataset="bundled:fashion_mnist"), [LITE0], max_images=15, data=small_fashion)


@pytest.mark.slow
def test_head_trials_reuse_the_feature_pass(tmp_path, tiny, caplog):
    """Two `head` trials on one backbone with different learning rates: the second reads the first's features."""
    import logging

    import tl_hub

    base = RecipeConfig(model=str(tiny("timm_efficientnet")), dataset="bundled:digits", examples_per_label=6,
                        policy="head", epochs=2, image_size=32, progress=False, output_dir=str(tmp_path / "t1"))
    trial = head_trial_config(base, tmp_path / "features")
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        tl_hub.finetune(trial)
        assert not [r for r in caplog.records if "reusing" in r.getMessage()]
        tl_hub.finetune(trial.replace(learning_rate=3e-3, output_dir=str(tmp_path / "t2")))
    reused = [r.getMessage() for r in caplog.records if "feature cache: reusing" in r.getMessage()]
    assert len(reused) == 2 and all(str(tmp_path / "features") in m for m in reused)  # train and eval
