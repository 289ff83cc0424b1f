"""Validation is the image cache's decode ([4/7]): a run that trains on images decodes every image once.

`finetune` asks `load_data` to leave the image check pending; building the on-disk image cache decodes every
train/eval/test image, and what it could not decode settles the check (`settle_image_checks`): the bad images
leave their split and are reported by name, every file is still accounted for, and `on_bad_image` /
`max_bad_fraction` still stop the run. Real pieces: PNG folders with a corrupt file, a tiny ViT, the real loop.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import tl_hub
import tl_hub.data
from helpers.images import write_image_folder
from tl_hub.errors import DataError

LABELS = ["red", "green", "blue"]


def _folder(root: Path, broken: int = 1) -> Path:
    folder = write_image_folder(root, LABELS, per_label=14, seed=0)
    for i in range(broken):
        (folder / LABELS[i % 3] / f"broken-{i}.png").write_bytes(b"not a png")
    return folder


def _run(vit: Path, folder: Path, out: Path, **keys: object) -> tl_hub.FinetuneResult:
    recipe = {"model": str(vit), "dataset": str(folder), "policy": "full", "epochs": 2, "image_size": 32,
              "batch_size": 8, "num_workers": 0, "eval_fraction": 0.25, "seed": 0, "output_dir": str(out),
              "progress": False, "max_bad_fraction": 0.2, **keys}
    return tl_hub.finetune(**recipe)


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Count the check's decodes (`check_image`) and the image cache's (`_decode_row`), in a fresh cache."""
    import tl_hub.data.checks as checks
    from tl_hub.data.dataset import ImageClassificationDataset

    monkeypatch.setenv("TL_HUB_CACHE", str(tmp_path / "cache"))
    calls = {"check": 0, "cache": 0}
    real_check, real_decode = checks.check_image, ImageClassificationDataset._decode_row

    def check(value, where=None):
        calls["check"] += 1
        return real_check(value, where=where)

    def decode(self, index, row):
        calls["cache"] += 1
        return real_decode(self, index, row)

    monkeypatch.setattr(checks, "check_image", check)
    monkeypatch.setattr(ImageClassificationDataset, "_decode_row", decode)
    return calls


def test_a_first_run_decodes_every_image_once_and_still_reports_the_bad_one(tmp_path, tiny, counted):
    folder = _folder(tmp_path / "imgs")
    _run(tiny("vit"), folder, tmp_path / "out")
    assert counted == {"check": 0, "cache": 43}  # 42 good + 1 corrupt, each decoded once, by the cache build
    report = json.loads((tmp_path / "out" / "run_info.json").read_text())["data"]
    assert report["bad_images"] == 1 and report["images_checked"] == 43 and report["images_pending"] == 0
    assert report["accounted"] and report["used_train"] + report["used_eval"] == 42
    (bad,) = [s for s in report["skipped"] if s["kind"] == "bad_image"]
    assert bad["id"].endswith("broken-0.png") and "Pillow" in bad["reason"]
    assert "skipped 1 bad image(s)" in (tmp_path / "out" / "README.md").read_text()

    counted.update(check=0, cache=0)  # a second run: the cache (and with it the check) is already there
    _run(tiny("vit"), folder, tmp_path / "again")
    assert counted == {"check": 0, "cache": 0}


def test_the_model_is_the_one_an_up_front_check_gives(tmp_path, tiny, monkeypatch):
    """Dropping the bad rows after the cache build trains exactly what checking them first (the split, then the
    check, as `load_data` does without deferring) trains: the same weights, bit for bit."""
    monkeypatch.setenv("TL_HUB_CACHE", str(tmp_path / "cache"))
    folder = _folder(tmp_path / "imgs", broken=2)
    _run(tiny("vit"), folder, tmp_path / "deferred")
    real = tl_hub.data.load_data
    monkeypatch.setattr(tl_hub.data, "load_data", lambda *a, **k: real(*a, **{**k, "defer_image_check": False}))
    _run(tiny("vit"), folder, tmp_path / "up_front")
    a = load_file(tmp_path / "deferred" / "model.safetensors")
    b = load_file(tmp_path / "up_front" / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    reports = [json.loads((tmp_path / d / "run_info.json").read_text())["data"] for d in ("deferred", "up_front")]
    for key in ("used_train", "used_eval", "bad_images", "images_checked", "per_label"):
        assert reports[0][key] == reports[1][key], key
    # the carve-out of the 44 files is 32 train + 12 eval, and both corrupt files fell in train: rows left the
    # training split after its image cache was built, the case where the two paths could part
    assert (reports[0]["used_train"], reports[0]["used_eval"]) == (30, 12)


def test_too_many_bad_images_still_stop_the_run(tmp_path, tiny, counted):
    folder = _folder(tmp_path / "imgs", broken=3)
    with pytest.raises(DataError, match=r"3 of 45 images are bad \(6\.7% > max_bad_fraction=0\.05\).*broken-"):
        _run(tiny("vit"), folder, tmp_path / "out", max_bad_fraction=0.05)
    with pytest.raises(DataError, match=r"3 bad image\(s\) with on_bad_image='error'.*broken-"):
        _run(tiny("vit"), folder, tmp_path / "out2", on_bad_image="error")
    assert counted["check"] == 0


def test_the_feature_path_checks_before_its_pass(tmp_path, tiny, counted):
    """`head` reads each image once through the frozen backbone, with no image cache: the pending check runs
    first (decoding each image once, as `load_data` would have), and the corrupt file is skipped and reported."""
    folder = _folder(tmp_path / "imgs")
    _run(tiny("vit"), folder, tmp_path / "out", policy="head")
    assert counted["check"] == 43 and counted["cache"] == 0
    report = json.loads((tmp_path / "out" / "run_info.json").read_text())["data"]
    assert report["bad_images"] == 1 and report["accounted"]


def test_keep_serves_the_kept_rows_of_the_cache(tmp_path, monkeypatch):
    from tl_hub.data import load_data
    from tl_hub.data.dataset import ImageClassificationDataset
    from tl_hub.data.transforms import ImageSpec

    monkeypatch.setenv("TL_HUB_CACHE", str(tmp_path / "cache"))
    data = load_data(str(write_image_folder(tmp_path / "imgs", LABELS, per_label=4, seed=1)), eval_fraction=0.25)
    ds = ImageClassificationDataset(data.eval, ImageSpec(size=8, resize_size=8), train=False)
    full = [ds[i]["pixel_values"] for i in range(len(ds))]
    labels, ids = ds.labels.clone(), list(ds.ids)
    keep = np.array([2, 0])
    ds.keep(keep)
    assert len(ds) == 2 and ds.ids == [ids[2], ids[0]] and ds.labels.tolist() == labels[keep].tolist()
    assert all(bool((ds[i]["pixel_values"] == full[k]).all()) for i, k in enumerate(keep))
