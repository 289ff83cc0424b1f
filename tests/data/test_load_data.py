"""tl_hub.data.load_data: every source, labels and splits, bad images and a report that accounts for
every input file. All sources are real files/datasets built in tmp folders (the Hub one on the local
test Hub server)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_hub.data import DataBundle, load_data
from tl_hub.errors import ConfigError, DataError


def _img(path: Path, value: int = 100, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode != "RGB" else (value, value // 2, 255 - value)).save(path)
    return path


def _folder(root: Path, counts: dict[str, int], start: int = 0) -> Path:
    for label, n in counts.items():
        for i in range(n):
            _img(root / label / f"{label}_{start + i}.png", value=(start + i * 7) % 250)
    return root


def _check_columns(bundle: DataBundle) -> None:
    from datasets import ClassLabel
    from datasets import Image as ImageFeature

    for split in (bundle.train, bundle.eval, *([bundle.test] if bundle.test is not None else [])):
        assert split.column_names == ["image", "label", "id"]
        assert isinstance(split.features["image"], ImageFeature)
        assert isinstance(split.features["label"], ClassLabel)
        assert split.features["label"].names == bundle.labels
    assert bundle.report.accounted, bundle.report.to_dict()
    json.dumps(bundle.report.to_dict())


# -- image folders -------------------------------------------------------------------------------------
def test_image_folder_labels_split_and_hidden_files(tmp_path):
    root = _folder(tmp_path / "pets", {"dog": 10, "cat": 10, "bird": 5})
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00")
    (root / "cat" / "._cat_0.png").write_bytes(b"resource fork")
    _img(root / ".ipynb_checkpoints" / "cat_0-checkpoint.png")
    _img(root / "__MACOSX" / "cat" / "._x.png")
    _img(root / "dog" / ".hidden_dir" / "d.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    _img(root / "loose.png")
    bundle = load_data(str(root), eval_fraction=0.2, seed=0)
    _check_columns(bundle)
    assert bundle.labels == ["bird", "cat", "dog"]  # sorted; no hidden folder became a class
    assert (len(bundle.train), len(bundle.eval)) == (20, 5)
    assert bundle.report.per_label["eval"] == {"bird": 1, "cat": 2, "dog": 2}  # stratified
    ids = set(bundle.train["id"]) | set(bundle.eval["id"])
    assert len(ids) == 25 and all(Path(i).is_file() and ".ipynb" not in i and "__MACOSX" not in i for i in ids)
    assert not any(Path(i).name.startswith(".") for i in ids)
    skipped = {Path(s["id"]).name: s["reason"] for s in bundle.report.skipped}
    assert skipped[".DS_Store"] == "hidden file"
    assert skipped["._cat_0.png"] == "hidden file"
    assert "hidden folder" in skipped["cat_0-checkpoint.png"] and "hidden folder" in skipped["._x.png"]
    assert "hidden folder" in skipped["d.png"]
    assert "not an image file" in skipped["notes.txt"]
    assert "not inside a class folder" in skipped["loose.png"]
    report = bundle.report
    assert report.entries_found == 25 + len(report.skipped) == 25 + 8
    assert report.bad_images == 0 and report.eval_from.startswith("stratified")
    for name in ("train", "eval"):
        for row in getattr(bundle, name).select(range(3)):
            assert Path(row["id"]).parent.name == bundle.labels[row["label"]]  # label matches its folder
    assert "33" in report.summary() and "skipped" in report.summary()


def test_split_is_seeded_and_stable(tmp_path):
    root = _folder(tmp_path / "d", {"a": 10, "b": 10})
    first = load_data(str(root), seed=1)
    again = load_data(str(root), seed=1)
    other = load_data(str(root), seed=2)
    assert list(first.eval["id"]) == list(again.eval["id"])
    assert list(first.eval["id"]) != list(other.eval["id"])
    assert set(first.train["id"]).isdisjoint(first.eval["id"])


def test_split_folders_are_used(tmp_path):
    root = tmp_path / "ds"
    _folder(root / "train", {"a": 4, "b": 4})
    _folder(root / "validation", {"a": 2, "b": 1}, start=100)
    _folder(root / "test", {"a": 3, "b": 3}, start=200)
    bundle = load_data(str(root))
    _check_columns(bundle)
    assert (len(bundle.train), len(bundle.eval)) == (8, 3)
    assert bundle.report.eval_split == "validation" and "own" in bundle.report.eval_from
    assert bundle.report.unused_splits == {} and bundle.report.test_split == "test" and len(bundle.test) == 6
    assert all("/validation/" in i for i in bundle.eval["id"])
    assert all("/test/" in i for i in bundle.test["id"])
    test_bundle = load_data(str(root), eval_split="test")
    assert len(test_bundle.eval) == 6
    with pytest.raises(DataError, match="splits"):
        load_data(str(root), eval_split="holdout")


def test_eval_labels_missing_from_train_are_named(tmp_path):
    root = tmp_path / "ds"
    _folder(root / "train", {"a": 3, "b": 3})
    _folder(root / "val", {"a": 1, "b": 1, "zebra": 2}, start=50)
    with pytest.raises(DataError, match=r"zebra"):
        load_data(str(root))


def test_empty_class_folder_is_an_error(tmp_path):
    root = _folder(tmp_path / "ds", {"a": 3, "b": 3})
    (root / "empty_class").mkdir()
    (root / "empty_class" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataError, match=r"empty_class.*no training images"):
        load_data(str(root))


def test_folder_without_class_folders_and_multilabel_targets(tmp_path):
    for i in range(3):
        _img(tmp_path / "flat" / f"{i}.png")
    with pytest.raises(DataError, match=r"no images to train on.*not inside a class folder.*<root>/<label>"):
        load_data(str(tmp_path / "flat"))
    arrays = [np.zeros((4, 4), np.uint8)] * 4
    with pytest.raises(DataError, match=r"in-memory.*has a list of labels.*problem_type is single_label_classification"):
        load_data((arrays, [["a", "b"], ["a"], ["b"], ["a"]]), problem_type="single_label_classification")
    multi = load_data((arrays, [["a", "b"], ["a"], ["b"], ["a"]]), eval_fraction=0.25)  # lists: multi-label ([6/7])
    assert multi.problem_type == "multi_label_classification" and multi.labels == ["a", "b"]


def test_singleton_classes_do_not_crash_the_split(tmp_path):
    root = _folder(tmp_path / "ds", {"many": 10, "few": 3, "one": 1})
    bundle = load_data(str(root), eval_fraction=0.3)
    assert bundle.report.singleton_labels == ["one"]
    assert bundle.report.per_label["train"]["one"] == 1 and bundle.report.per_label["eval"]["one"] == 0
    assert bundle.report.per_label["eval"]["few"] == 1 and bundle.report.per_label["eval"]["many"] == 3
    assert any("single example" in n for n in bundle.report.notes)


# -- bad images ----------------------------------------------------------------------------------------
def _with_bad_files(root: Path) -> Path:
    _folder(root, {"a": 20, "b": 20})
    (root / "a" / "zero.jpg").write_bytes(b"")
    (root / "b" / "text.png").write_text("hello, not an image")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    (root / "b" / "truncated.png").write_bytes(buffer.getvalue()[:300])
    return root


def test_bad_images_are_skipped_and_reported_by_path(tmp_path):
    root = _with_bad_files(tmp_path / "ds")
    bundle = load_data(str(root), max_bad_fraction=0.2)
    report = bundle.report
    bad = {Path(s["id"]).name: s["reason"] for s in report.skipped if s["kind"] == "bad_image"}
    assert bad.keys() == {"zero.jpg", "text.png", "truncated.png"}
    assert bad["zero.jpg"] == "zero-byte file" and "truncated" in bad["truncated.png"]
    assert report.bad_images == 3 and report.images_checked == 43
    assert len(bundle.train) + len(bundle.eval) == 40 and report.accounted
    assert not any(Path(i).name in bad for i in list(bundle.train["id"]) + list(bundle.eval["id"]))
    for split in (bundle.train, bundle.eval):
        for row in split:  # every image that made it decodes
            row["image"].load()


def test_too_many_bad_images_or_on_bad_image_error_raise(tmp_path):
    root = _with_bad_files(tmp_path / "ds")
    with pytest.raises(DataError, match=r"3 of 43 images are bad .*max_bad_fraction") as info:
        load_data(str(root))  # default 1 %
    assert "truncated.png" in str(info.value)
    with pytest.raises(DataError, match="on_bad_image='error'"):
        load_data(str(root), on_bad_image="error", max_bad_fraction=1.0)
    with pytest.raises(ConfigError, match="on_bad_image"):
        load_data(str(root), on_bad_image="ignore")


# -- CSV / JSONL ------------------------------------------------------------------------------------------
def test_csv_with_relative_paths_missing_files_and_custom_columns(tmp_path):
    images = tmp_path / "imgs"
    rows = []
    for i in range(12):
        name = f"sub/{i}.png"
        _img(images / name, value=i * 10)
        rows.append({"file": f"imgs/{name}", "kind": ["ant", "bee", "cow"][i % 3]})
    rows.append({"file": "imgs/sub/missing.png", "kind": "ant"})
    rows.append({"file": "imgs/sub/0.png", "kind": ""})
    table = tmp_path / "meta.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "kind"])
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match="label"):
        load_data(str(table))  # neither column has a standard name
    bundle = load_data(str(table), image_column="file", label_column="kind", eval_fraction=0.25, max_bad_fraction=0.2)
    _check_columns(bundle)
    assert bundle.labels == ["ant", "bee", "cow"] and len(bundle.train) + len(bundle.eval) == 12
    reasons = {s["id"]: s["reason"] for s in bundle.report.skipped}
    assert any(k.endswith("missing.png") and "not found" in v for k, v in reasons.items())
    assert any(k.endswith("meta.csv:15") and "no label" in v for k, v in reasons.items())
    assert bundle.report.bad_images == 1
    assert all(Path(i).is_absolute() and Path(i).is_file() for i in bundle.train["id"])
    with pytest.raises(DataError, match="missing.png"):
        load_data(str(table), image_column="file", label_column="kind")  # 1 of 13 > 1 %


def test_csv_integer_labels_keep_their_meaning(tmp_path):
    table = tmp_path / "data.csv"
    lines = ["image,label"]
    for i in range(9):
        _img(tmp_path / f"{i}.png", value=i)
        lines.append(f"{i}.png,{[2, 0, 1][i % 3]}")
    table.write_text("\n".join(lines) + "\n")
    bundle = load_data(str(table), labels=["zero", "one", "two"], eval_fraction=0.34)
    assert bundle.labels == ["zero", "one", "two"]
    rows = {Path(r["id"]).name: r["label"] for r in list(bundle.train) + list(bundle.eval)}
    assert rows["0.png"] == 2 and rows["1.png"] == 0 and rows["2.png"] == 1
    plain = load_data(str(table))
    assert plain.labels == ["0", "1", "2"]


def test_jsonl_source(tmp_path):
    with (tmp_path / "data.jsonl").open("w") as handle:
        for i in range(10):
            _img(tmp_path / "pics" / f"{i}.jpg", value=20 * i)
            handle.write(json.dumps({"image": f"pics/{i}.jpg", "label": "odd" if i % 2 else "even"}) + "\n")
    bundle = load_data(str(tmp_path / "data.jsonl"))
    _check_columns(bundle)
    assert bundle.labels == ["even", "odd"] and bundle.report.source_type == "jsonl"
    assert (len(bundle.train), len(bundle.eval)) == (8, 2)


def _split_table(tmp_path: Path, splits: list[str], suffix: str = ".csv") -> Path:
    """One image per split value, labels alternating a/b; a CSV (image,label,split) or JSONL file."""
    rows = []
    for i, split in enumerate(splits):
        _img(tmp_path / "imgs" / f"{i}.png", value=i * 9)
        rows.append({"image": f"imgs/{i}.png", "label": "ab"[i % 2], "split": split})
    table = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        table.write_text("image,label,split\n" + "".join(f"{r['image']},{r['label']},{r['split']}\n" for r in rows))
    else:
        table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return table


SPLITS = ["train", "TRAIN", "training", "train", "train", "train", "val", "valid", "test", "testing"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_split_column_puts_rows_in_its_splits(tmp_path, suffix):
    table = _split_table(tmp_path, SPLITS, suffix)
    bundle = load_data(str(table))
    _check_columns(bundle)
    name = lambda ids: sorted(Path(i).name for i in ids)  # noqa: E731
    assert name(bundle.train["id"]) == [f"{i}.png" for i in range(6)]
    assert name(bundle.eval["id"]) == ["6.png", "7.png"]
    report = bundle.report
    assert (report.eval_split, report.eval_from) == ("validation", "the dataset's own 'validation' split")
    assert report.unused_splits == {} and report.test_split == "test"
    assert name(bundle.test["id"]) == ["8.png", "9.png"]
    assert "split column 'split': rows train 6, validation 2, test 2" in report.notes
    on_test = load_data(str(table), eval_split="test")
    assert name(on_test.eval["id"]) == ["8.png", "9.png"] and on_test.report.unused_splits == {"validation": 2}


def test_empty_or_unknown_split_values_are_errors_naming_the_rows(tmp_path):
    table = _split_table(tmp_path, ["train", "", "tarin", "train", "holdout", "val"])
    with pytest.raises(DataError) as err:
        load_data(str(table))
    assert str(err.value) == (
        f"{table}: the 'split' column must name a split in every row: row 3 is empty, row 4 has 'tarin' (did you "
        "mean 'train'?), row 6 has 'holdout'; allowed values: train/training; validation/valid/val/dev/eval/"
        "evaluation; test/testing. Fix those rows, or remove the 'split' column to hold out a random "
        "eval_fraction of the rows")
    jsonl = _split_table(tmp_path, ["train", "train", None, "val"], ".jsonl")
    with pytest.raises(DataError, match=r"data\.jsonl: the 'split' column must name a split in every row: row 3 is "
                                        r"empty; allowed"):
        load_data(str(jsonl))


# -- in-memory -----------------------------------------------------------------------------------------
def test_in_memory_pil_arrays_and_paths(tmp_path):
    pil = [Image.new("RGBA", (9, 9), (255, 0, 0, 0)) for _ in range(4)]
    arrays = [np.full((9, 9), 32768, np.uint16) for _ in range(4)]
    paths = [str(_img(tmp_path / f"p{i}.png", value=50)) for i in range(4)]
    labels = ["pil"] * 4 + ["array"] * 4 + ["path"] * 4
    bundle = load_data((pil + arrays + paths, labels), eval_fraction=0.25)
    _check_columns(bundle)
    assert bundle.labels == ["array", "path", "pil"]
    rows = list(bundle.train) + list(bundle.eval)
    by_label = {bundle.labels[r["label"]]: r for r in rows}
    assert by_label["pil"]["image"].convert("RGB").getpixel((0, 0)) == (255, 255, 255)  # alpha composited
    assert by_label["array"]["image"].convert("RGB").getpixel((0, 0)) == (128, 128, 128)  # 16-bit scaled
    assert by_label["path"]["id"] in paths
    assert all(r["id"].startswith("train[") for r in rows if bundle.labels[r["label"]] != "path")
    as_dict = load_data({"image": arrays + arrays, "label": [0, 1] * 4})
    assert as_dict.labels == ["0", "1"]
    with pytest.raises(DataError, match="8 images but 3 labels"):
        load_data((arrays + arrays, [0, 1, 0]))


def test_integer_labels_without_names_and_unknown_names(tmp_path):
    arrays = [np.zeros((4, 4), np.uint8)] * 6
    with pytest.raises(DataError, match=r"\['1'\] have no training images"):
        load_data((arrays, [0, 2, 0, 2, 0, 2]))  # integers keep their meaning: class 1 is empty
    subset = load_data((arrays, ["a", "b", "c", "a", "b", "c"]), labels=["a", "b"], eval_fraction=0.5)
    assert subset.labels == ["a", "b"] and subset.report.labels_left_out == {"c": 2}
    bundle = load_data((arrays, ["a", "b"] * 3), labels=["b", "a"])
    assert bundle.labels == ["b", "a"]
    with pytest.raises(DataError, match="at least 2"):
        load_data((arrays, ["a"] * 6))


def test_subsampling_is_balanced_and_seeded():
    arrays = [np.full((4, 4), i % 255, np.uint8) for i in range(300)]
    labels = ["a"] * 200 + ["b"] * 80 + ["c"] * 20
    balanced = load_data((arrays, labels), examples_per_label=10, seed=3)
    assert balanced.report.per_label["train"] == {"a": 10, "b": 10, "c": 10}
    assert balanced.report.per_label["eval"] == {"a": 40, "b": 16, "c": 4}  # eval untouched
    assert list(load_data((arrays, labels), examples_per_label=10, seed=3).train["id"]) == list(balanced.train["id"])
    capped = load_data((arrays, labels), max_train_samples=24)
    assert len(capped.train) == 24 and min(capped.report.per_label["train"].values()) >= 1
    counts = capped.report.per_label["train"]
    assert counts["a"] > counts["b"] > counts["c"]  # stratified
    assert capped.report.not_selected == 240 - 24 and capped.report.accounted
    with pytest.raises(ConfigError, match="max_train_samples"):
        load_data((arrays, labels), max_train_samples=2)
    with pytest.raises(ConfigError, match="examples_per_label"):
        load_data((arrays, labels), examples_per_label=0)


# -- `labels`: a subset of the data's labels, in the order given -----------------------------------------
def test_labels_pick_a_subset_of_a_classlabel_dataset_in_their_order():
    everything = load_data("bundled:fashion_mnist")
    name_of = {i: everything.labels[c] for split in (everything.train, everything.eval, everything.test)
               for i, c in zip(split["id"], split["label"])}
    bundle = load_data("bundled:fashion_mnist", labels=["Bag", "Trouser"])
    _check_columns(bundle)
    assert bundle.labels == ["Bag", "Trouser"]  # the model's id2label, in the given order
    for split in (bundle.train, bundle.eval, bundle.test):  # every image keeps its own label, under its new class id
        assert all(name_of[i] == bundle.labels[c] for i, c in zip(split["id"], split["label"]))
    report = bundle.report
    assert report.per_label == {"train": {"Bag": 240, "Trouser": 240}, "eval": {"Bag": 60, "Trouser": 60},
                                "test": {"Bag": 200, "Trouser": 200}}
    others = [n for n in FASHION_NAMES if n not in ("Bag", "Trouser")]
    assert report.labels_left_out == {n: 500 for n in others}  # per left-out label, in the data's order
    assert (report.entries_found, report.not_selected, report.skipped) == (5000, 4000, [])
    assert report.accounted and report.to_dict()["labels_left_out"]["Coat"] == 500
    assert report.summary().splitlines()[2:] == [
        "  test: 400 (the dataset's own 'test' split, held out: evaluated once, after training)",
        "  entries found: 5000 = 480 train + 120 eval + 400 test + 4000 not selected + 0 skipped",
        "  note: Fashion-MNIST subset (Zalando, MIT license): first 300 per class of the train file, first 200 per "
        "class of the t10k file",
        "  note: labels=['Bag', 'Trouser'] uses 2 of the data's labels: 4000 image(s) of the 8 other label(s) left "
        "out (counted as not selected): 'T-shirt/top' 500, 'Pullover' 500, 'Dress' 500, 'Coat' 500, 'Sandal' 500, "
        "'Shirt' 500, 'Sneaker' 500, 'Ankle boot' 500",
    ]


def test_labels_pick_a_subset_of_folder_labels_and_integer_ids(tmp_path):
    root = _folder(tmp_path / "pets", {"bird": 4, "cat": 6, "dog": 6})
    bundle = load_data(str(root), labels=["dog", "cat"], eval_fraction=0.5, examples_per_label=2)
    _check_columns(bundle)
    assert bundle.labels == ["dog", "cat"] and bundle.report.labels_left_out == {"bird": 4}
    assert all(Path(i).parent.name == bundle.labels[c] for i, c in zip(bundle.train["id"], bundle.train["label"]))
    assert bundle.report.per_label == {"train": {"dog": 2, "cat": 2}, "eval": {"dog": 3, "cat": 3}}
    assert bundle.report.not_selected == 4 + 2  # bird left out + the rows examples_per_label did not draw
    table = tmp_path / "data.csv"
    table.write_text("image,label\n" + "".join(f"{p},{i % 3}\n" for i, p in enumerate(sorted(root.rglob("*.png")))))
    ids = load_data(str(table), labels=["2", "0"], eval_fraction=0.4)
    assert ids.labels == ["2", "0"] and ids.report.labels_left_out == {"1": 5} and ids.report.accounted
    with pytest.raises(DataError) as err:
        load_data(str(table), labels=["zero", "one"])
    assert str(err.value) == (f"labels: got ['zero', 'one'] (2 names), but the labels of {table} are the integer ids "
                              "['0', '1', '2'] (3); give the ids to use, in the order you want, or one name per id, "
                              "in id order")


def test_a_requested_label_the_data_does_not_have_is_named_with_the_closest_one(tmp_path):
    with pytest.raises(DataError) as err:
        load_data("bundled:fashion_mnist", labels=["Bagg", "Trouser"])
    assert str(err.value) == (
        "labels: 'Bagg' (did you mean 'Bag'?) is not a label of bundled:fashion_mnist; its labels are ['T-shirt/top', "
        "'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']; give names "
        "from that list, in the order you want")
    root = _folder(tmp_path / "pets", {"cat": 2, "dog": 2})
    with pytest.raises(DataError, match=r"^labels: 'cats' \(did you mean 'cat'\?\), 'horse' are not labels of "):
        load_data(str(root), labels=["cats", "horse", "dog"])
    with pytest.raises(ConfigError, match="duplicate names"):
        load_data(str(root), labels=["cat", "cat"])


# -- Hugging Face datasets -----------------------------------------------------------------------------
def _hf_dataset_dict():
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature

    features = Features({"img": ImageFeature(), "labels": ClassLabel(names=["zebra", "apple"])})
    make = lambda n, offset: {  # noqa: E731
        "img": [Image.new("RGB", (8, 8), (i * 9 % 255, 0, 0)) for i in range(offset, offset + n)],
        "labels": [i % 2 for i in range(n)],
    }
    return DatasetDict({
        "train": Dataset.from_dict(make(10, 0), features=features),
        "validation": Dataset.from_dict(make(4, 50), features=features),
    })


def test_dataset_objects_saved_dirs_and_parquet(tmp_path):
    dd = _hf_dataset_dict()
    bundle = load_data(dd)
    _check_columns(bundle)
    assert bundle.labels == ["zebra", "apple"]  # ClassLabel order, not sorted
    assert bundle.report.image_column == "img" and bundle.report.label_column == "labels"
    assert bundle.eval["id"][:2] == ["validation[0]", "validation[1]"] and len(bundle.eval) == 4
    dd.save_to_disk(str(tmp_path / "saved"))
    saved = load_data(str(tmp_path / "saved"))
    assert saved.labels == ["zebra", "apple"] and len(saved.eval) == 4
    dd["train"].to_parquet(str(tmp_path / "train.parquet"))
    parquet = load_data(str(tmp_path / "train.parquet"))
    assert len(parquet.train) + len(parquet.eval) == 10


def test_hub_dataset_id(hub, tmp_path):
    """A dataset repo on the local Hub server, loaded by id through datasets.load_dataset."""
    from huggingface_hub import HfApi

    repo_id = hub.new_repo_id("pets-data")
    dd = _hf_dataset_dict()
    api = HfApi(endpoint=hub.url, token=hub.token)
    api.create_repo(repo_id, repo_type="dataset")
    staging = tmp_path / "upload"
    (staging / "data").mkdir(parents=True)
    for split, ds in dd.items():
        ds.to_parquet(str(staging / "data" / f"{split}-00000-of-00001.parquet"))
    first_commit = api.upload_folder(folder_path=str(staging), repo_id=repo_id, repo_type="dataset").oid
    bigger = dd["train"].select(list(range(10)) * 2)
    bigger.to_parquet(str(staging / "data" / "train-00000-of-00001.parquet"))
    api.upload_folder(folder_path=str(staging), repo_id=repo_id, repo_type="dataset")
    bundle = load_data(repo_id)
    _check_columns(bundle)
    assert bundle.report.source_type == "hub" and bundle.report.eval_split == "validation"
    assert len(bundle.train) == 20 and len(bundle.eval) == 4
    assert bundle.train["id"][0] == "train[0]"
    pinned = load_data(repo_id, revision=first_commit)
    assert len(pinned.train) == 10 and first_commit in pinned.report.source
    with pytest.raises(DataError, match="cannot load"):
        load_data(hub.new_repo_id("does-not-exist"))


def test_unknown_sources_are_clear_errors(tmp_path):
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "nope" / "data.csv"))
    assert str(err.value) == f"dataset: no such local file: '{tmp_path}/nope/data.csv' (nothing of that name in {tmp_path}); check the path"
    with pytest.raises(DataError, match="bundled"):
        load_data("bundled:imagenet")
    with pytest.raises(DataError, match="source"):
        load_data(42)
    with pytest.raises(ConfigError, match="eval_fraction"):
        load_data("bundled:fashion_mnist", eval_fraction=1.5)


# -- bundled -------------------------------------------------------------------------------------------
FASHION_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


def test_bundled_fashion_mnist_offline_with_real_names():
    bundle = load_data("bundled:fashion_mnist")
    _check_columns(bundle)
    assert bundle.labels == FASHION_NAMES
    # train + test only: eval is a stratified 0.2 carve-out of train, the test split is held out
    assert (len(bundle.train), len(bundle.eval), len(bundle.test)) == (2400, 600, 2000)
    assert set(bundle.report.per_label["train"].values()) == {240}
    assert set(bundle.report.per_label["eval"].values()) == {60}
    assert set(bundle.report.per_label["test"].values()) == {200}
    assert bundle.report.eval_split is None and bundle.report.test_split == "test"
    row = bundle.train[0]
    assert row["image"].size == (28, 28) and row["id"].startswith("train[")
    source = Path("/usr/share/datasets/fashion-mnist")
    if (source / "train-images-idx3-ubyte.gz").is_file():  # pixels and labels equal the original rows
        raw = gzip.open(source / "train-images-idx3-ubyte.gz").read()
        labels = gzip.open(source / "train-labels-idx1-ubyte.gz").read()
        for i in (0, 1234, 2399):
            item = bundle.train[i]
            original = int(item["id"][len("train["):-1])
            pixels = np.frombuffer(raw, np.uint8, 784, 16 + 784 * original).reshape(28, 28)
            assert np.array_equal(np.asarray(item["image"]), pixels)
            assert labels[8 + original] == item["label"]


def test_bundled_digits():
    bundle = load_data("bundled:digits", seed=0)
    assert bundle.labels == [str(i) for i in range(10)]
    assert len(bundle.train) + len(bundle.eval) == 1797
    assert Counter(bundle.eval["label"]).most_common()[-1][1] >= 30
    image = np.asarray(bundle.train[0]["image"])
    assert image.shape == (8, 8) and image.max() > 200


def test_unlabelled_rows_and_unlabelled_test_split():
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["x", "y"])})
    images = [Image.new("L", (5, 5), i) for i in range(12)]
    dd = DatasetDict({
        "train": Dataset.from_dict({"image": images, "label": [0, 1] * 5 + [-1, -1]}, features=features),
        "test": Dataset.from_dict({"image": images[:4], "label": [-1] * 4}, features=features),  # Hub-style
    })
    bundle = load_data(dd)
    assert bundle.report.eval_split is None and bundle.report.unused_splits == {"test": 4}
    assert len(bundle.train) + len(bundle.eval) == 10
    no_label = [s["id"] for s in bundle.report.skipped if s["kind"] == "no_label"]
    assert no_label == ["train[10]", "train[11]"] and bundle.report.accounted


def test_bundled_digits_without_scikit_learn_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import of it now raises ImportError
    with pytest.raises(DataError, match="pip install scikit-learn"):
        load_data("bundled:digits")


def test_bad_images_in_a_subset_are_replaced_by_good_ones(tmp_path):
    root = _folder(tmp_path / "ds", {"a": 5, "b": 6})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    reported = 0
    for seed in range(6):
        bundle = load_data(str(root), examples_per_label=2, eval_fraction=0.2, seed=seed, max_bad_fraction=0.5)
        assert bundle.report.per_label["train"] == {"a": 2, "b": 2}, seed
        assert bundle.report.accounted, bundle.report.to_dict()
        bad = [s["id"] for s in bundle.report.skipped if s["kind"] == "bad_image"]
        assert all(i.endswith("broken.png") for i in bad)
        assert not any(i.endswith("broken.png") for i in list(bundle.train["id"]) + list(bundle.eval["id"]))
        reported += len(bad)
    assert reported >= 1  # the broken file was drawn (and replaced) for some seed


def test_splits_and_subsamples_are_index_lists_over_the_source_table(tmp_path):
    """Carving the eval split and a subsample copies no row: both splits read the source's Arrow file (no new
    cache file, the table is the whole source) through an indices mapping, with the right labels."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from datasets import load_from_disk

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)) for _ in range(60)]
    labels = [i % 3 for i in range(60)]
    Dataset.from_dict({"image": images, "label": labels},
                      features=Features(image=ImageFeature(), label=ClassLabel(names=["a", "b", "c"]))
                      ).save_to_disk(str(tmp_path / "saved"))
    source = load_from_disk(str(tmp_path / "saved"))
    source_files = sorted(f["filename"] for f in source.cache_files)
    bundle = load_data(str(tmp_path / "saved"), examples_per_label=5, eval_fraction=0.25)
    assert (len(bundle.train), len(bundle.eval)) == (15, 15)
    for split in (bundle.train, bundle.eval):
        assert sorted(f["filename"] for f in split.cache_files) == source_files  # nothing written
        assert split.data.num_rows == 60  # the source's table, read through an index list
        for row in split.select(range(5)):
            index = int(row["id"].split("[")[1].rstrip("]"))
            assert row["label"] == labels[index]
            assert np.array_equal(np.asarray(row["image"]), np.asarray(images[index]))
