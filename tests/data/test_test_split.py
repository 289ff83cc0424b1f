"""The held-out test split: a train + test source selects on a stratified carve-out of train and keeps its
test split apart (`bundle.test`); a validation split stays the eval split; `eval_split: test` selects on
the split it reports and says so; `test_split` names the split, or "none" leaves it out; bad values are
clear errors. All sources are real image folders (class subfolders under train/validation/test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from helpers.images import write_image_folder
from tl_hub.config import RecipeConfig
from tl_hub.data import load_data
from tl_hub.errors import ConfigError, DataError

LABELS = ["red", "green", "blue"]


def _splits(root: Path, splits: dict[str, int]) -> Path:
    """root/<split>/<label>/<i>.png, `n` real PNGs per label in each split (different pixels per split)."""
    for seed, (split, n) in enumerate(splits.items()):
        write_image_folder(root / split, LABELS, per_label=n, seed=seed)
    return root


def test_train_and_test_only_selects_on_a_carve_out_of_train_and_holds_test_out(tmp_path):
    root = _splits(tmp_path / "ds", {"train": 10, "test": 4})
    bundle = load_data(str(root), eval_fraction=0.2, seed=0)
    report = bundle.report
    assert (len(bundle.train), len(bundle.eval), len(bundle.test)) == (24, 6, 12)
    assert report.eval_split is None and report.eval_from == "stratified 0.2 split of 'train' (seed 0)"
    assert report.test_split == "test" and report.sizes == {"train": 24, "eval": 6, "test": 12}
    assert report.per_label["eval"] == {name: 2 for name in LABELS}
    assert report.per_label["test"] == {name: 4 for name in LABELS}
    assert all("/train/" in i for i in list(bundle.train["id"]) + list(bundle.eval["id"]))
    assert all("/test/" in i for i in bundle.test["id"])
    assert set(bundle.eval["id"]).isdisjoint(bundle.test["id"]) and set(bundle.eval["id"]).isdisjoint(bundle.train["id"])
    assert report.accounted and report.to_dict()["used_test"] == 12 and report.unused_splits == {}
    lines = report.summary().splitlines()
    assert "  test: 12 (the dataset's own 'test' split, held out: evaluated once, after training)" in lines
    assert "  entries found: 42 = 24 train + 6 eval + 12 test + 0 not selected + 0 skipped" in lines
    assert bundle.test.features["label"].names == bundle.labels and bundle.test.column_names == ["image", "label", "id"]
    # the carve-out is a pure function of the seed: the same seed gives the same rows, another seed others
    assert list(load_data(str(root), eval_fraction=0.2, seed=0).eval["id"]) == list(bundle.eval["id"])
    assert list(load_data(str(root), eval_fraction=0.2, seed=1).eval["id"]) != list(bundle.eval["id"])


def test_a_validation_split_stays_the_eval_split_and_test_is_held_out(tmp_path):
    root = _splits(tmp_path / "ds", {"train": 6, "validation": 2, "test": 3})
    bundle = load_data(str(root))
    assert bundle.report.eval_split == "validation" and bundle.report.test_split == "test"
    assert (len(bundle.train), len(bundle.eval), len(bundle.test)) == (18, 6, 9)
    assert all("/validation/" in i for i in bundle.eval["id"]) and all("/test/" in i for i in bundle.test["id"])
    assert not bundle.report.selects_on_test and bundle.report.accounted
    # naming the validation split the test split: eval becomes a carve-out of train
    swapped = load_data(str(root), test_split="validation", eval_fraction=0.5)
    assert swapped.report.eval_split is None and swapped.report.test_split == "validation"
    assert all("/train/" in i for i in swapped.eval["id"]) and swapped.report.unused_splits == {"test": 9}


def test_eval_split_test_selects_on_the_split_it_reports_and_says_so(tmp_path):
    root = _splits(tmp_path / "ds", {"train": 6, "test": 3})
    bundle = load_data(str(root), eval_split="test")
    assert bundle.test is None and bundle.report.test_split is None and len(bundle.eval) == 9
    assert bundle.report.selects_on_test and bundle.report.to_dict()["selects_on_test"] is True
    assert any("the same split the final numbers are reported on" in note for note in bundle.report.notes)


def test_test_split_none_leaves_the_test_split_out(tmp_path):
    root = _splits(tmp_path / "ds", {"train": 6, "test": 3})
    bundle = load_data(str(root), test_split="none")
    assert bundle.test is None and bundle.report.test_split is None and bundle.report.eval_split is None
    assert bundle.report.unused_splits == {"test": 9} and bundle.report.accounted
    assert not any(line.startswith("  test:") for line in bundle.report.summary().splitlines())


def test_bad_test_split_values_are_clear_errors(tmp_path):
    root = _splits(tmp_path / "ds", {"train": 6, "test": 3})
    with pytest.raises(DataError, match=r"test_split: got 'holdout', but .* has splits \['test', 'train'\]; name one"):
        load_data(str(root), test_split="holdout")
    with pytest.raises(ConfigError, match="test_split: got 'train', the same as train_split"):
        load_data(str(root), split="train", test_split="train")
    with pytest.raises(ConfigError, match="test_split: got 'train', the same as the training split"):
        load_data(str(root), test_split="train")
    with pytest.raises(ConfigError, match="test_split: got 'test', the same as eval_split"):
        load_data(str(root), eval_split="test", test_split="test")
    with pytest.raises(ConfigError, match="test_split: got ''"):
        load_data(str(root), test_split="")
    with pytest.raises(ConfigError, match="test_split: got 'test', the same as eval_split"):
        RecipeConfig(dataset=str(root), test_split="test", eval_split="test")
    # the string 'none' (YAML `test_split: none`, `--test_split none`) is "no test split"; null is automatic
    assert RecipeConfig(dataset=str(root), test_split="none").test_split == "none"
    base = RecipeConfig(dataset=str(root))
    assert base.test_split is None and base.apply_overrides(["--test_split", "none"]).test_split == "none"
    assert base.apply_overrides(["--test_split=validation"]).test_split == "validation"
    assert base.apply_overrides(["--test_split", "null"]).test_split is None
    with pytest.raises(ConfigError, match="test_split: got 'train', the same as train_split"):
        base.apply_overrides(["--train_split", "train", "--test_split", "train"])


def test_a_bad_test_image_is_skipped_named_and_accounted(tmp_path):
    root = _splits(tmp_path / "ds", {"train": 6, "test": 3})
    (root / "test" / "red" / "broken.png").write_bytes(b"not a png")
    bundle = load_data(str(root), max_bad_fraction=0.5)
    assert len(bundle.test) == 9 and bundle.report.bad_images == 1 and bundle.report.accounted
    assert [s["id"] for s in bundle.report.skipped if s["kind"] == "bad_image"] == [str(root / "test/red/broken.png")]


def test_test_labels_unseen_in_train_are_an_error(tmp_path):
    root = _splits(tmp_path / "ds", {"train": 6, "test": 3})
    extra = root / "test" / "purple"
    extra.mkdir()
    Image.new("RGB", (8, 8), (120, 0, 120)).save(extra / "0.png")
    with pytest.raises(DataError, match=r"test split 'test' has labels that the training split 'train' does not"):
        load_data(str(root))
