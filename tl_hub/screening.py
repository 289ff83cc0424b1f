"""Cheap first: rank candidate backbones by a linear probe on their frozen features, before any fine-tuning.

`screen_backbones(config, ["bundled:efficientnet_lite0", "bundled:efficientnet_lite1", ...])` draws one
stratified subsample of the recipe's **training** images (at most `max_images`; the eval split and any test
split are never read), splits it again, stratified, into probe-train and probe-val, and for each backbone:

1. runs the frozen backbone once over the subsample (`tl_hub.features.features_for`: the same feature pass,
   eval transform and precision as a `head` run; with `feature_cache_dir` set the features are kept on disk,
   so screening the same backbone on the same subsample again costs no forward pass);
2. fits a linear probe on the probe-train features and scores it on probe-val: the score is the probe's
   accuracy (`BackboneScore.metric` is ``"linear_probe_accuracy"``).

The probe is sklearn's `LogisticRegression` (L2, lbfgs, multinomial) on standardised features, its inverse
regularisation strength C chosen by stratified 3-fold cross-validation on probe-train alone from
`PROBE_CS` (`LogisticRegressionCV`), then scored once on probe-val. L2-regularised logistic regression with C
tuned on held-out data is the linear-evaluation protocol of Kornblith, Shlens & Le, "Do Better ImageNet Models
Transfer Better?" (CVPR 2019), whose probe accuracy tracks fine-tuned accuracy across backbones; tuning C
matters because feature widths and scales differ between backbones (a fixed C favours some of them), and
choosing it on probe-train keeps probe-val an unbiased score.

The result is sorted best first (ties keep the order the backbones were given in); the search driver fine-tunes
only the first few. `head_trial_config` is how `head` trials reuse the feature pass: every trial with the same
backbone, data, image size and precision reads the features the first one wrote.

Example:
    >>> from tl_hub.config import RecipeConfig
    >>> scores = screen_backbones(RecipeConfig(dataset="bundled:fashion_mnist"),
    ...                           ["bundled:efficientnet_lite0", "bundled:efficientnet_lite1"])  # doctest: +SKIP
    >>> [(s.backbone, round(s.score, 3)) for s in scores]  # doctest: +SKIP
    [('bundled:efficientnet_lite1', 0.842), ('bundled:efficientnet_lite0', 0.836)]
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tl_hub.config import RecipeConfig
from tl_hub.errors import ConfigError, DataError
from tl_hub.reporting import logger

__all__ = ["BackboneScore", "ScreenSample", "PROBE_CS", "PROBE_METRIC", "screen_backbones", "screen_sample",
           "backbone_features", "linear_probe", "head_trial_config"]

#: the inverse L2 strengths the probe's cross-validation chooses from (standardised features)
PROBE_CS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
PROBE_METRIC = "linear_probe_accuracy"
#: fraction of the screen's subsample held out (stratified) to score the probe
PROBE_VAL_FRACTION = 0.25


@dataclass(frozen=True)
class BackboneScore:
    """How one backbone did in the screen.

    Attributes:
        backbone: the source as given.
        score: the probe's accuracy on probe-val (0..1).
        metric: what `score` is (`PROBE_METRIC`).
        n_images: images through the backbone (probe-train + probe-val).
        seconds: wall time of this backbone's screen (load, feature pass, probe).
        n_probe_train, n_probe_val: the two parts of the subsample.
        feature_dim: width of the features (the head's input).
        probe_c: the inverse L2 strength the cross-validation chose.
        image_size: the side the images were resized to (the recipe's `image_size`, else the backbone's).

    Example:
        >>> BackboneScore("a", 0.9, PROBE_METRIC, 100, 1.5, 75, 25, 1280, 0.1, 224).score
        0.9
    """

    backbone: str
    score: float
    metric: str
    n_images: int
    seconds: float
    n_probe_train: int
    n_probe_val: int
    feature_dim: int
    probe_c: float
    image_size: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the search's leaderboard).

        Example:
            >>> sorted(BackboneScore("a", 0.9, PROBE_METRIC, 100, 1.5, 75, 25, 1280, 0.1, 224).to_dict())[:3]
            ['backbone', 'feature_dim', 'image_size']
        """
        return dict(self.__dict__)


@dataclass(frozen=True)
class ScreenSample:
    """The screen's images: a stratified subsample of the training split and its probe-train / probe-val rows.

    Attributes:
        images: the subsample (a `datasets.Dataset`, rows of the recipe's train split).
        labels: the label code of each row of `images`.
        probe_train, probe_val: row numbers into `images`.
        label_names: the data's label names.
        key: a digest of the rows chosen (part of the feature cache key).
    """

    images: Any
    labels: np.ndarray
    probe_train: np.ndarray
    probe_val: np.ndarray
    label_names: list[str]
    key: str


def screen_sample(train: Any, label_names: Sequence[str], *, max_images: int = 2000, seed: int = 0) -> ScreenSample:
    """Draw the screen's subsample from a training split (`DataBundle.train`): at most `max_images` rows,
    stratified and seeded (`tl_hub.data.labels.capped_subset`), then split stratified into probe-train and
    probe-val (`PROBE_VAL_FRACTION`; a label with one image stays in probe-train).

    Example:
        >>> from tl_hub.data import load_data
        >>> data = load_data("bundled:fashion_mnist", examples_per_label=20)
        >>> sample = screen_sample(data.train, data.labels, max_images=100, seed=0)
        >>> len(sample.images), len(sample.probe_train), len(sample.probe_val)
        (100, 80, 20)
    """
    from tl_hub.data.labels import capped_subset, stratified_split

    if not isinstance(max_images, int) or isinstance(max_images, bool) or max_images < 2 * len(label_names):
        raise ConfigError(
            f"max_images: got {max_images!r}; the screen needs at least 2 images per label "
            f"({2 * len(label_names)} for {len(label_names)} labels) to fit and score a probe")
    codes = np.asarray(train.with_format("arrow")["label"].to_numpy(), dtype=np.int64)
    rows = np.arange(len(codes))
    chosen = capped_subset(rows, codes, max_images, seed) if len(rows) > max_images else rows
    images = train.select(chosen.tolist())
    labels = codes[chosen]
    fit, held_out, _ = stratified_split(labels, np.arange(len(labels)), PROBE_VAL_FRACTION, seed)
    if len(held_out) == 0 or len(np.unique(labels[fit])) < 2:
        raise DataError(f"screen: {len(labels)} training images are too few to fit and score a probe; "
                        "use more data or a larger max_images")
    key = hashlib.sha256(np.ascontiguousarray(chosen).tobytes() + str(seed).encode()).hexdigest()[:16]
    return ScreenSample(images, labels, fit, held_out, list(label_names), key)


def backbone_features(config: RecipeConfig, source: str, images: Any, label_names: Sequence[str], *,
                      accelerator: Any, key: str = "") -> tuple[np.ndarray, int]:
    """The frozen backbone `source`'s features of `images` (one row each, float32) and the image side used:
    the same feature pass as a `head` run (eval transform, the recipe's `image_size` and precision), cached on
    disk under `feature_cache_dir` when the recipe sets it.

    Example:
        >>> feats, side = backbone_features(config, "bundled:efficientnet_lite0", sample.images, labels,
        ...                                 accelerator=make_accelerator("no"))  # doctest: +SKIP
    """
    from tl_hub.backbone import load_backbone, load_image_processor
    from tl_hub.data.dataset import ImageClassificationDataset
    from tl_hub.data.transforms import image_spec
    from tl_hub.features import features_for
    from tl_hub.hardware import feature_batch_size, wants_channels_last

    model = load_backbone(source, list(label_names), revision=config.revision,
                          trust_remote_code=config.trust_remote_code)
    spec = image_spec(load_image_processor(source, revision=config.revision), config.image_size)
    dataset = ImageClassificationDataset(images, spec, train=False, cache=False)
    device = accelerator.device.type
    feats, _ = features_for(
        model, dataset, accelerator=accelerator, split="screen", cache_dir=config.feature_cache_dir,
        batch_size=feature_batch_size(config.eval_batch_size, config.batch_size, device),
        key_parts=[source, config.revision, key, repr(spec), accelerator.mixed_precision],
        num_workers=0, channels_last=wants_channels_last(model, device), progress=config.progress,
    )
    return feats.reshape(len(feats), -1).numpy(), spec.size


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, *,
                 seed: int = 0) -> tuple[float, float]:
    """(accuracy on the val rows, chosen C) of an L2 logistic-regression probe on standardised features, C
    chosen from `PROBE_CS` by stratified 3-fold cross-validation on the train rows only.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 30); x = rng.normal(size=(60, 5)) + y[:, None] * 3
        >>> accuracy, c = linear_probe(x[::2], y[::2], x[1::2], y[1::2])
        >>> accuracy > 0.9
        True
    """
    try:
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from threadpoolctl import threadpool_limits
    except ImportError as err:
        raise ConfigError("the backbone screen's linear probe needs scikit-learn, which is not installed: run "
                          "`pip install scikit-learn` (or `pip install 'tl-hub[screen]'`)") from err

    smallest = int(np.bincount(train_y)[np.unique(train_y)].min())
    if smallest >= 2:  # stratified folds need two images of every label
        cv = StratifiedKFold(min(3, smallest), shuffle=True, random_state=seed)
        probe: Any = LogisticRegressionCV(Cs=list(PROBE_CS), cv=cv, scoring="accuracy", max_iter=2000,
                                          random_state=seed, **_new_cv_attributes())
    else:  # a label with one training image: no folds; the middle C
        from sklearn.linear_model import LogisticRegression

        probe = LogisticRegression(C=PROBE_CS[len(PROBE_CS) // 2], max_iter=2000, random_state=seed)
    # one BLAS thread: the fits are small, and on a shared CPU a full BLAS pool spin-waits -- measured on 2
    # busy cores, 150 x 1280 features: 35-43 s per fit with the default pool, 0.2-0.6 s with one thread
    with threadpool_limits(limits=1):
        model = make_pipeline(StandardScaler(), probe).fit(train_x, train_y)
        predicted = model.predict(val_x)
    fitted = model[-1]
    chosen = float(np.ravel(fitted.C_)[0]) if hasattr(fitted, "C_") else float(fitted.C)
    return float((predicted == val_y).mean()), chosen


def _new_cv_attributes() -> dict[str, Any]:
    """sklearn 1.8+'s spelling of a plain L2 probe (`l1_ratios=(0,)`, the fitted attributes' new form), where it
    has it; older versions take the defaults (L2 too). Either way no FutureWarning."""
    import inspect

    from sklearn.linear_model import LogisticRegressionCV

    return {"use_legacy_attributes": False, "l1_ratios": (0.0,)} if "use_legacy_attributes" in inspect.signature(
        LogisticRegressionCV).parameters else {}


def screen_backbones(config: RecipeConfig, backbones: Sequence[str], *, max_images: int = 2000, seed: int = 0,
                     data: Any = None, accelerator: Any = None) -> list[BackboneScore]:
    """Score each backbone by a linear probe on its frozen features of one stratified training subsample;
    best first.

    Args:
        config: the recipe (its dataset and data keys, `image_size`, `mixed_precision`, `feature_cache_dir`,
            `eval_batch_size`; its `model` is not used).
        backbones: the candidate sources (Hub ids, folders, `bundled:` names); at least one, no repeats.
        max_images: at most this many training images in the screen (probe-train + probe-val).
        seed: the subsample, the probe split and the probe's folds.
        data: the recipe's `DataBundle` when the caller loaded it already (else `load_data` runs); only its
            `train` split is read.
        accelerator: an `accelerate.Accelerator` (else one for the recipe's precision).

    Example:
        >>> screen_backbones(RecipeConfig(dataset="bundled:fashion_mnist"), [])
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: backbones: got an empty list; give at least one backbone to screen
    """
    backbones = _check_backbones(backbones)
    if data is None:
        from tl_hub.finetuning import load_run_data

        data = load_run_data(config)
    if accelerator is None:
        from tl_hub.hardware import make_accelerator

        accelerator = make_accelerator(config.mixed_precision)
    sample = screen_sample(data.train, data.labels, max_images=max_images, seed=seed)
    scores = [_screen_one(config, source, sample, accelerator, seed) for source in backbones]
    return sorted(scores, key=lambda s: -s.score)  # stable: ties keep the caller's order


def _check_backbones(backbones: Sequence[str]) -> list[str]:
    if isinstance(backbones, (str, os.PathLike)) or not isinstance(backbones, Sequence):
        raise ConfigError(f"backbones: got {backbones!r}; give a list of backbone sources")
    if not backbones:
        raise ConfigError("backbones: got an empty list; give at least one backbone to screen")
    names = [os.fspath(b) if isinstance(b, os.PathLike) else b for b in backbones]
    bad = [b for b in names if not isinstance(b, str) or not b]
    if bad:
        raise ConfigError(f"backbones: got {bad[0]!r}; each backbone is a Hub id, a local folder or a bundled: name")
    repeats = sorted({b for b in names if names.count(b) > 1})
    if repeats:
        raise ConfigError(f"backbones: {repeats} listed more than once; list each backbone once")
    return names


def _screen_one(config: RecipeConfig, source: str, sample: ScreenSample, accelerator: Any, seed: int) -> BackboneScore:
    started = time.perf_counter()
    feats, side = backbone_features(config, source, sample.images, sample.label_names, accelerator=accelerator,
                                    key=sample.key)
    score, c = linear_probe(feats[sample.probe_train], sample.labels[sample.probe_train],
                            feats[sample.probe_val], sample.labels[sample.probe_val], seed=seed)
    seconds = time.perf_counter() - started
    logger.info("screen: %s -- linear probe accuracy %.4f on %d held-out images (C %g, %d-d features, %d px, "
                "%.1f s)", source, score, len(sample.probe_val), c, feats.shape[1], side, seconds)
    return BackboneScore(source, score, PROBE_METRIC, len(sample.labels), seconds, len(sample.probe_train),
                         len(sample.probe_val), int(feats.shape[1]), c, side)


def head_trial_config(config: RecipeConfig, cache_dir: str | os.PathLike | None = None) -> RecipeConfig:
    """The recipe of a `head` trial that reuses the frozen-feature pass: `feature_cache_dir` set (kept when the
    recipe has one; else `cache_dir`, else `$TL_HUB_CACHE/features`), so the first trial on a backbone runs it
    over the train and eval images once and every later trial with the same backbone, data, image size and
    precision reads those features from disk (`tl_hub.features.features_for`: seconds per trial).

    Example:
        >>> head_trial_config(RecipeConfig(dataset="d", policy="head"), "/tmp/f").feature_cache_dir
        '/tmp/f'
    """
    if config.feature_cache_dir:
        return config
    if cache_dir is None:
        from tl_hub.paths import cache_dir as tl_hub_cache

        cache_dir = tl_hub_cache() / "features"
    return config.replace(feature_cache_dir=str(Path(cache_dir)))
