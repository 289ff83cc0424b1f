"""The bad-input matrix (issue 6): one table, one row per bad input, each with its expected outcome.

An outcome is either a clear error (its type, and a message that names the offending item) or
"handled and reported": the run goes on, the item is used (converted) or skipped with a reason, and
every input file/row is accounted for in the DataReport (used for train/eval, or listed as skipped).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers.ports import free_port
from tl_hub.errors import ConfigError, DataError, HubError

LENIENT = {"max_bad_fraction": 0.5, "eval_fraction": 0.34}  # bad files are skipped and reported, not fatal


# ---------------------------------------------------------------------------------------------------
# builders
def png(path: Path, value: int = 0, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = rng.integers(0, 60, (size[1], size[0], 3)).astype(np.uint8) + np.uint8(value % 190)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def folder(root: Path, classes: dict[str, int]) -> Path:
    """root/<label>/<i>.png for each label."""
    for k, (label, count) in enumerate(classes.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            png(root / label / f"{i}.png", value=60 * k + i)
    return root


def base(tmp: Path) -> Path:
    return folder(tmp / "data", {"cat": 3, "dog": 3})


def bomb_png(path: Path) -> Path:
    """A tiny PNG whose header claims 20000 x 20000 pixels (4.5x Pillow's MAX_IMAGE_PIXELS)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """A 12x6 (w x h) JPEG whose EXIF orientation 6 says: show it rotated 90 degrees (6 x 12)."""
    image = Image.new("RGB", (12, 6), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, format="JPEG", exif=exif)
    return path


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """build(tmp) -> (callable that runs the input through tl_hub, the folder holding its files or None)."""

    build: Callable[[Path], tuple[Callable[[], Any], Path | None]]
    error: tuple[type[Exception], str] | None = None  # (type, regex the message must match)
    check: Callable[[Any, Path], None] | None = None  # extra checks on the DataBundle of a handled input


def load(source: Path | str, **kw: Any) -> Callable[[], Any]:
    from tl_hub.data import load_data

    return lambda: load_data(str(source), **{**LENIENT, **kw})


def skipped(bundle: Any, name: str, reason: str) -> None:
    hits = [s for s in bundle.report.skipped if s["id"].endswith(name)]
    assert hits, f"{name} is not reported as skipped: {bundle.report.skipped}"
    assert reason in hits[0]["reason"], hits[0]


def used(bundle: Any, name: str) -> None:
    ids = list(bundle.train["id"]) + list(bundle.eval["id"])
    assert any(i.endswith(name) for i in ids), f"{name} was not used: {ids}"


def with_file(make: Callable[[Path], Any], error: tuple | None = None, *, reason: str | None = None,
              on_bad_image: str = "skip", extra: Callable[[Any, Path], None] | None = None) -> Case:
    """A good two-class folder plus one odd file made by make(folder/'cat')."""

    odd: list[str] = []

    def build(tmp: Path) -> tuple[Callable[[], Any], Path]:
        root = base(tmp)
        before = all_files(root)
        make(root / "cat")
        odd[:] = sorted(all_files(root) - before)
        return load(root, on_bad_image=on_bad_image), root

    def check(bundle: Any, root: Path) -> None:
        assert odd, "the case made no file"
        if reason is not None:
            for item in odd:
                skipped(bundle, Path(item).name, reason)
        if extra is not None:
            extra(bundle, root)

    return Case(build, error, check)


def _cmyk(d: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 200, 200, 0)).save(d / "cmyk.jpg")


def _i16(d: Path) -> None:
    Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(d / "deep.png")


def _palette(d: Path) -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.save(d / "palette.png", transparency=0)


def _opened(name: str, size: tuple[int, int] | None = None, varied: bool = False) -> Callable[[Any, Path], None]:
    def check(bundle: Any, root: Path) -> None:
        from tl_hub.data.images import open_image

        used(bundle, name)
        image = open_image(root / "cat" / name)
        assert image.mode == "RGB"
        if size is not None:
            assert image.size == size, image.size
        if varied:  # a 16-bit image must not collapse to one grey level
            assert np.asarray(image).std() > 10
    return check


def _unicode_labels(tmp: Path):
    root = folder(tmp / "data", {"café crème": 3, "日本": 3, "golden retriever": 3})
    return load(root), root


def _slash_labels(tmp: Path):
    root = base(tmp)
    files = sorted(root.rglob("*.png"))
    csv = write_csv(tmp / "labels.csv", "image,label",
                    [f"{p},{'T-shirt/top' if p.parent.name == 'cat' else 'Ankle boot'}" for p in files])
    return load(csv), root


def _singleton(tmp: Path):
    root = folder(tmp / "data", {"cat": 3, "dog": 3, "solo": 1})
    return load(root), root


def _unseen_eval(tmp: Path):
    root = tmp / "data"
    folder(root / "train", {"cat": 2, "dog": 2})
    folder(root / "validation", {"cat": 1, "dog": 1, "zebra": 1})
    return load(root), root


def _empty_class(tmp: Path):
    root = base(tmp)
    (root / "empty_class").mkdir()
    return load(root), root


def _hidden(tmp: Path):
    root = base(tmp)
    png(root / ".ipynb_checkpoints" / "x.png")
    png(root / "cat" / ".thumbnails" / "y.png")
    png(root / "__MACOSX" / "cat" / "z.png")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return load(root), root


def _stray(tmp: Path):
    root = base(tmp)
    png(root / "loose.png")
    (root / "README.md").write_text("my photos")
    return load(root), root


def _csv_missing(tmp: Path):
    root = base(tmp)
    files = sorted(root.rglob("*.png"))
    rows = [f"{p.relative_to(tmp)},{p.parent.name}" for p in files] + ["data/cat/gone.png,cat"]
    return load(write_csv(tmp / "labels.csv", "image,label", rows)), root


def _csv_missing_strict(tmp: Path):
    run, root = _csv_missing(tmp)
    from tl_hub.data import load_data

    return (lambda: load_data(str(tmp / "labels.csv"), on_bad_image="error")), root


def _csv_columns(tmp: Path):
    root = base(tmp)
    rows = [f"{p},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
    return load(write_csv(tmp / "labels.csv", "picture_file,kind_of_thing", rows)), root


def _csv_empty_label(tmp: Path):
    root = base(tmp)
    rows = [f"{p},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
    rows[0] = rows[0].split(",")[0] + ","
    return load(write_csv(tmp / "labels.csv", "image,label", rows)), root


def _int_labels(tmp: Path):
    root = base(tmp)
    rows = [f"{p},{1 if p.parent.name == 'dog' else 0}" for p in sorted(root.rglob("*.png"))]
    return load(write_csv(tmp / "labels.csv", "image,label", rows)), root


def _too_many_bad(tmp: Path):
    root = base(tmp)
    for i in range(3):
        (root / "dog" / f"broken{i}.jpg").write_bytes(b"garbage" * 10)
    from tl_hub.data import load_data

    return (lambda: load_data(str(root), max_bad_fraction=0.2)), root


def _config(data: dict) -> Callable[[Path], tuple[Callable[[], Any], None]]:
    def build(tmp: Path):
        from tl_hub.config import RecipeConfig

        return (lambda: RecipeConfig.from_dict(data)), None
    return build


def _yaml_typo(tmp: Path):
    from tl_hub.config import RecipeConfig

    path = tmp / "recipe.yaml"
    path.write_text("dataset: bundled:digits\nepochs: 2\nlearnig_rate: 0.001\n")
    return (lambda: RecipeConfig.from_yaml(path)), None


def _missing_model(tmp: Path):
    from tl_hub.backbone import load_backbone

    return (lambda: load_backbone("tester/no-such-model-xyz", ["a", "b"])), None


def _missing_dataset(tmp: Path):
    from tl_hub.data import load_data

    return (lambda: load_data("tester/no-such-dataset-xyz")), None


@contextlib.contextmanager
def _hub_off_or_away(offline: bool) -> Iterator[str]:
    """HF_HUB_OFFLINE=1, or huggingface_hub's endpoint on a local port nothing listens on."""
    import huggingface_hub.constants

    endpoint, saved = huggingface_hub.constants.ENDPOINT, os.environ.get("HF_HUB_OFFLINE")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    else:
        huggingface_hub.constants.ENDPOINT = f"http://127.0.0.1:{free_port()}"
    try:
        yield huggingface_hub.constants.ENDPOINT
    finally:
        huggingface_hub.constants.ENDPOINT = endpoint
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def _dataset_path_typo(tmp: Path):
    base(tmp)  # tmp/data/{cat,dog}
    return load(f"{tmp}/dta/"), None


def _model_path_typo(tmp: Path):
    from tl_hub.backbone import load_backbone

    (tmp / "my_model").mkdir()
    return (lambda: load_backbone(f"{tmp}/my_modle", ["a", "b"])), None


def _dataset_id_offline(tmp: Path):
    def run() -> Any:
        with _hub_off_or_away(offline=True):
            return load("tester/no-such-dataset-xyz")()
    return run, None


def _model_id_unreachable(tmp: Path):
    from tl_hub.backbone import load_backbone

    def run() -> Any:
        with _hub_off_or_away(offline=False):
            return load_backbone("tester/no-such-model-xyz", ["a", "b"])
    return run, None


def _labels_subset(tmp: Path):
    root = folder(tmp / "data", {"bird": 3, "cat": 3, "dog": 3})
    return load(root, labels=["dog", "cat"]), root


def _labels_subset_check(bundle: Any, root: Path) -> None:
    report = bundle.report
    assert bundle.labels == ["dog", "cat"] and report.labels_left_out == {"bird": 3}, report.to_dict()
    assert any("3 image(s) of the 1 other label(s) left out" in line for line in report.summary().splitlines())


def _labels_typo(tmp: Path):
    return load(base(tmp), labels=["dgo", "cat"]), None


def _csv_split_column(tmp: Path):
    root = base(tmp)
    files = sorted(root.rglob("*.png"))
    rows = [f"{p},{p.parent.name},{'validation' if p.stem == '0' else 'train'}" for p in files]
    return load(write_csv(tmp / "labels.csv", "image,label,split", rows)), root


def _csv_split_check(bundle: Any, root: Path) -> None:
    assert sorted(Path(i).stem for i in bundle.eval["id"]) == ["0", "0"]
    assert bundle.report.eval_from == "the dataset's own 'validation' split", bundle.report.eval_from


def _csv_split_bad(tmp: Path):
    root = base(tmp)
    rows = [f"{p},{p.parent.name},train" for p in sorted(root.rglob("*.png"))]
    rows[1] = rows[1].rsplit(",", 1)[0] + ",tset"
    return load(write_csv(tmp / "labels.csv", "image,label,split", rows)), root


def _bad_named_in_summary(bundle: Any, root: Path) -> None:
    assert "    cat/corrupt.jpg: not an image Pillow can identify (corrupt, or not an image file)" in \
        bundle.report.summary().splitlines()


def _truncated(d: Path) -> None:
    png(d / "whole.png", size=(32, 32))
    data = (d / "whole.png").read_bytes()
    (d / "whole.png").unlink()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])


def _exif_check(bundle: Any, root: Path) -> None:
    _opened("rotated.jpg", size=(6, 12))(bundle, root)


CASES: dict[str, Case] = {
    # ---- files that are not (whole) images: skipped and reported, or an error naming the file
    "corrupt-file": with_file(lambda d: (d / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg" * 4),
                              reason="not an image Pillow can identify"),
    "truncated-png": with_file(_truncated, reason="truncated image"),
    "zero-byte-file": with_file(lambda d: (d / "empty.png").write_bytes(b""), reason="zero-byte file"),
    "non-image-file": with_file(lambda d: (d / "notes.txt").write_text("hello"), reason="not an image file"),
    "corrupt-file-strict": with_file(lambda d: (d / "corrupt.jpg").write_bytes(b"garbage" * 4),
                                     (DataError, r"corrupt\.jpg.*not an image Pillow can identify"),
                                     on_bad_image="error"),
    "decompression-bomb": with_file(lambda d: bomb_png(d / "bomb.png"), reason="decompression bomb"),
    "too-many-bad-images": Case(_too_many_bad, (DataError, r"broken0\.jpg")),
    # ---- unusual but valid images: converted to RGB and used
    "cmyk-jpeg": with_file(_cmyk, extra=_opened("cmyk.jpg")),
    "16-bit-grey-I;16": with_file(_i16, extra=_opened("deep.png", varied=True)),
    "palette-with-transparency": with_file(_palette, extra=_opened("palette.png")),
    "1x1-image": with_file(lambda d: png(d / "tiny.png", size=(1, 1)), extra=_opened("tiny.png", size=(1, 1))),
    "exif-rotated-photo": with_file(lambda d: exif_rotated_jpeg(d / "rotated.jpg"), extra=_exif_check),
    # ---- labels and folder structure
    "unicode-and-space-labels": Case(_unicode_labels, check=lambda b, r: (
        None if b.labels == sorted(["café crème", "日本", "golden retriever"]) else pytest.fail(str(b.labels)))),
    "slash-in-label-names": Case(_slash_labels, check=lambda b, r: (
        None if set(b.labels) == {"T-shirt/top", "Ankle boot"} else pytest.fail(str(b.labels)))),
    "class-with-one-image": Case(_singleton, check=lambda b, r: (
        None if b.report.singleton_labels == ["solo"] and b.report.per_label["train"]["solo"] == 1
        else pytest.fail(str(b.report.to_dict())))),
    "eval-label-unseen-in-train": Case(_unseen_eval, (DataError, r"labels that the training split .* does not: "
                                                                 r"\['zebra'\]")),
    "empty-class-folder": Case(_empty_class, (DataError, r"labels \['empty_class'\] have no training images")),
    "hidden-folders-and-files": Case(_hidden, check=lambda b, r: (
        skipped(b, "x.png", "hidden folder '.ipynb_checkpoints'"), skipped(b, "y.png", "hidden folder '.thumbnails'"),
        skipped(b, "z.png", "hidden folder '__MACOSX'"), skipped(b, ".DS_Store", "hidden file"),
        None if b.labels == ["cat", "dog"] else pytest.fail(str(b.labels)))),
    "files-outside-class-folders": Case(_stray, check=lambda b, r: (
        skipped(b, "loose.png", "not inside a class folder"), skipped(b, "README.md", "not inside a class folder"))),
    # ---- CSV sources
    "csv-path-missing": Case(_csv_missing, check=lambda b, r: skipped(b, "gone.png", "file not found (row 8")),
    "csv-path-missing-strict": Case(_csv_missing_strict, (DataError, r"gone\.png.*file not found")),
    "csv-wrong-column-names": Case(_csv_columns, (DataError, r"labels\.csv: cannot tell which column holds the "
                                                             r"image; columns are \['picture_file', 'kind_of_thing'\]")),
    "csv-empty-label-cell": Case(_csv_empty_label, check=lambda b, r: skipped(b, "labels.csv:2", "no label")),
    "integer-labels": Case(_int_labels, check=lambda b, r: (
        None if b.labels == ["0", "1"] and b.report.per_label["train"]["1"] > 0 else pytest.fail(str(b.labels)))),
    # ---- configuration
    "config-misspelled-key": Case(_config({"dataset": "bundled:digits", "learning_rte": 0.1}),
                                  (ConfigError, r"unknown key 'learning_rte' \(did you mean 'learning_rate'\?\)")),
    "config-wrong-type": Case(_config({"dataset": "bundled:digits", "epochs": "many"}),
                              (ConfigError, r"epochs: expected an integer, got 'many'")),
    "config-out-of-range": Case(_config({"dataset": "bundled:digits", "batch_size": -3}),
                                (ConfigError, r"batch_size: got -3")),
    "yaml-misspelled-key": Case(_yaml_typo, (ConfigError, r"learnig_rate.*did you mean 'learning_rate'")),
    # ---- Hub ids (against the local Hub server)
    "model-repo-does-not-exist": Case(_missing_model, (HubError, r"no model repo 'tester/no-such-model-xyz'")),
    "dataset-id-does-not-exist": Case(_missing_dataset, (DataError, r"dataset 'tester/no-such-dataset-xyz'.*"
                                                                    r"check the id")),
    # ---- where a source lives: decided before any network call (tests/test_locations.py has the rest)
    "dataset-path-typo": Case(_dataset_path_typo, (DataError, r"^dataset: no such local folder: '.*/dta/' \(did you "
                                                              r"mean '.*/data/'\?\); check the path$")),
    "model-path-typo": Case(_model_path_typo, (ConfigError, r"^model: no such local folder: '.*/my_modle' \(did you "
                                                            r"mean '.*/my_model/'\?\); check the path$")),
    "dataset-id-with-hub-offline": Case(_dataset_id_offline, (HubError, r"^dataset: 'tester/no-such-dataset-xyz' is "
                                                                        r"neither a local folder or file .* the Hub is "
                                                                        r"disabled \(HF_HUB_OFFLINE=1\)")),
    "model-id-with-hub-unreachable": Case(_model_id_unreachable, (HubError, r"^model: 'tester/no-such-model-xyz' is "
                                                                            r"neither .* cannot be reached at http://"
                                                                            r"127\.0\.0\.1:\d+ \(connection refused\)")),
    # ---- `labels`, split columns, bad images named on the console
    "labels-pick-a-subset": Case(_labels_subset, check=_labels_subset_check),
    "labels-name-not-in-data": Case(_labels_typo, (DataError, r"^labels: 'dgo' \(did you mean 'dog'\?\) is not a "
                                                              r"label of .*/data; its labels are \['cat', 'dog'\]")),
    "csv-split-column": Case(_csv_split_column, check=_csv_split_check),
    "csv-split-unknown-value": Case(_csv_split_bad, (DataError, r"labels\.csv: the 'split' column must name a split "
                                                                r"in every row: row 3 has 'tset' \(did you mean "
                                                                r"'test'\?\); allowed values: train/training;")),
    "bad-image-named-on-the-console": with_file(lambda d: (d / "corrupt.jpg").write_bytes(b"garbage" * 4),
                                                reason="not an image Pillow", extra=_bad_named_in_summary),
}


def all_files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, hub):
    case = CASES[name]
    run, root = case.build(tmp_path)
    if case.error is not None:
        kind, pattern = case.error
        with pytest.raises(kind, match=pattern):
            run()
        return
    bundle = run()
    report = bundle.report
    assert report.accounted, report.summary()
    if root is not None:  # every file under the input folder is used or listed as skipped, with a reason
        seen = set(bundle.train["id"]) | set(bundle.eval["id"]) | {s["id"] for s in report.skipped}
        missing = all_files(root) - seen
        left_out = {m for m in missing if Path(m).parent.name in report.labels_left_out}  # counted per label
        assert len(left_out) == sum(report.labels_left_out.values()), report.labels_left_out
        if not name.startswith(("csv", "slash", "integer")):  # CSV sources account for rows, not folders
            assert not missing - left_out, f"files not accounted for: {sorted(missing - left_out)}"
        assert all(s.get("reason") for s in report.skipped)
    if case.check is not None:
        case.check(bundle, root)


def test_the_matrix_is_big_enough():
    assert len(CASES) >= 20


def test_a_mistyped_dataset_is_one_console_line(tmp_path, monkeypatch, capsys, hub):
    """What `tl-hub train` prints: one line, the closest existing folder, no Hub retry lines."""
    from tl_hub.cli import main

    monkeypatch.chdir(tmp_path)
    base(tmp_path)  # ./data/{cat,dog}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("dataset: dta/\nmodel: bundled:efficientnet_lite0\noutput_dir: out\n")
    seen = len(hub.requests)
    assert main(["train", str(recipe)]) == 2
    assert capsys.readouterr().err == ("tl-hub train: error: dataset: no such local folder: 'dta/' (did you mean "
                                       "'data/'?); check the path\n")
    assert len(hub.requests) == seen
