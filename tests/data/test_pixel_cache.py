"""The decoded-image cache on disk (tl_hub.data.pixel_cache through ImageClassificationDataset): decoded once,
reused by a second dataset, a second process and the other rank of an `accelerate launch`, one plane for
greyscale, memory-mapped (no copy in process memory), small when pickled for spawned workers, bad images
recorded while it is built, and a budget beyond which images are decoded per item with a message."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.images import write_image_folder
from tl_hub.data import load_data
from tl_hub.data.dataset import ImageClassificationDataset
from tl_hub.data.images import BadImageError
from tl_hub.data.pixel_cache import obtain_pixels
from tl_hub.data.transforms import ImageSpec

ROOT = Path(__file__).resolve().parents[2]
SPEC = ImageSpec(size=24, resize_size=28)


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("colour") / "imgs", ["red", "green", "blue"], per_label=8,
                              seed=0)


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.u8"))


def test_decoded_once_then_reused_without_decoding(colour_folder, tmp_path):
    bundle = load_data(str(colour_folder), eval_fraction=0.25)
    first = ImageClassificationDataset(bundle.train, SPEC, train=True, cache_dir=tmp_path)
    assert first.cache_info["decoded"] == len(bundle.train) and first.cache_info["planes"] == 3
    (entry,) = _entries(tmp_path)
    assert entry.stat().st_size == len(bundle.train) * 3 * 28 * 28
    stamp = (entry.stat().st_ino, entry.stat().st_mtime_ns)
    second = ImageClassificationDataset(bundle.train, SPEC, train=True, cache_dir=tmp_path)
    assert second.cache_info["decoded"] == 0 and second.cache_info["path"] == str(entry)
    assert (entry.stat().st_ino, entry.stat().st_mtime_ns) == stamp  # not rewritten
    uncached = ImageClassificationDataset(bundle.train, SPEC, train=True, cache=False)
    for i in range(len(bundle.train)):
        assert torch.equal(second.uint8(i), uncached.uint8(i)), i
    # another geometry (eval) is another entry; the same rows loaded again map the same one
    ImageClassificationDataset(bundle.train, SPEC, train=False, cache_dir=tmp_path)
    assert len(_entries(tmp_path)) == 2
    again = load_data(str(colour_folder), eval_fraction=0.25)
    assert ImageClassificationDataset(again.train, SPEC, train=True, cache_dir=tmp_path).cache_info["decoded"] == 0


def test_a_changed_image_file_is_a_new_entry(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", ["a", "b"], per_label=3, seed=1)
    bundle = load_data(str(folder), eval_fraction=0.34)
    ImageClassificationDataset(bundle.train, SPEC, train=True, cache_dir=tmp_path / "cache")
    path = Path(bundle.train[0]["id"])
    Image.new("RGB", (30, 30), (1, 2, 3)).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    bundle = load_data(str(folder), eval_fraction=0.34)
    fresh = ImageClassificationDataset(bundle.train, SPEC, train=True, cache_dir=tmp_path / "cache")
    assert fresh.cache_info["decoded"] == len(bundle.train)
    assert fresh.uint8(0)[:, 5, 5].tolist() == [1, 2, 3]


def test_a_second_process_maps_the_file_without_decoding(colour_folder, tmp_path):
    code = (
        "import json, sys\n"
        "from tl_hub.data import load_data\n"
        "from tl_hub.data.dataset import ImageClassificationDataset\n"
        "from tl_hub.data.transforms import ImageSpec\n"
        "b = load_data(sys.argv[1], eval_fraction=0.25)\n"
        "d = ImageClassificationDataset(b.train, ImageSpec(size=24, resize_size=28), train=True, cache_dir=sys.argv[2])\n"
        "sys.stdout.write(json.dumps(d.cache_info))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    runs = [json.loads(subprocess.run([sys.executable, "-c", code, str(colour_folder), str(tmp_path)], env=env,
                                      capture_output=True, text=True, check=True, timeout=300).stdout)
            for _ in range(2)]
    assert runs[0]["decoded"] == 18 and runs[1]["decoded"] == 0 and runs[0]["path"] == runs[1]["path"]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_ranks_build_one_cache(colour_folder, tmp_path):
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_cpu_threads_per_process", "1",
           "tests/helpers/cache_ranks.py", str(colour_folder), str(tmp_path / "cache"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert sorted(r["decoded"] for r in ranks) == [0, 18]  # one rank decoded, the other waited and mapped
    assert ranks[0]["path"] == ranks[1]["path"] and ranks[0]["first"] == ranks[1]["first"]
    assert len(_entries(tmp_path / "cache")) == 1 and not list((tmp_path / "cache").glob("*tmp*"))


def test_greyscale_is_one_plane_on_disk(tmp_path):
    bundle = load_data("bundled:fashion_mnist", examples_per_label=2)
    dataset = ImageClassificationDataset(bundle.train, SPEC, train=True, cache_dir=tmp_path)
    (entry,) = _entries(tmp_path)
    assert dataset.cache_info["planes"] == 1 and entry.stat().st_size == 20 * 1 * 28 * 28
    assert dataset.uint8(3).shape == (3, 28, 28)


def test_pixels_are_a_file_mapping_not_process_memory(colour_folder, tmp_path):
    bundle = load_data(str(colour_folder), eval_fraction=0.25)
    dataset = ImageClassificationDataset(bundle.train, SPEC, train=True, cache_dir=tmp_path)
    pointer = dataset.pixels.data_ptr()
    (entry,) = _entries(tmp_path)
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= pointer < end:
            mapped.append(fields[5] if len(fields) > 5 else "")
    assert mapped == [str(entry.resolve())]
    # a spawned worker gets the path, not the pixels
    assert len(pickle.dumps(dataset)) < dataset.pixels.numel()
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone.uint8(5), dataset.uint8(5))


def test_over_budget_decodes_per_item_with_a_message(colour_folder, tmp_path, caplog):
    bundle = load_data(str(colour_folder), eval_fraction=0.25)
    with caplog.at_level(logging.WARNING, logger="tl_hub"):
        dataset = ImageClassificationDataset(bundle.train, SPEC, train=True, cache_dir=tmp_path, cache_max_bytes=1000)
    assert dataset.pixels is None and "image cache budget" in dataset.cache_info["off"]
    assert "decoding every image per item" in caplog.text and "image_cache_max_gb" in caplog.text
    assert not _entries(tmp_path)
    assert dataset[2]["pixel_values"].shape == (3, 24, 24)


def test_colour_data_that_only_fits_as_greyscale_falls_back(tmp_path, caplog):
    """The budget is checked for one plane first; the first colour image asks for three, which do not fit."""
    decode = lambda index, row: np.full((3, 8, 8), row, np.uint8)  # noqa: E731
    rows = [(i, np.array([i, i + 1, i])[:, None, None] * np.ones((3, 8, 8), np.uint8)) for i in range(10)]
    colour = lambda index, row: row  # noqa: E731
    got = obtain_pixels(tmp_path, ["colour"], rows, colour, count=10, side=8, max_bytes=10 * 8 * 8 * 2)
    assert got.pixels is None and "3 planes" in got.reason and not list(tmp_path.glob("*.u8*"))
    grey = obtain_pixels(tmp_path, ["grey"], [(i, i) for i in range(10)], decode, count=10, side=8,
                         max_bytes=10 * 8 * 8 * 2)
    assert grey.pixels is not None and grey.pixels.planes == 1


def test_a_bad_image_is_recorded_while_the_cache_is_built(tmp_path):
    def decode(index, row):
        if row is None:
            raise BadImageError(f"row {index}", "truncated image (image file is truncated)")
        return np.full((3, 4, 4), row, np.uint8)

    rows = [(0, 5), (1, None), (2, 7)]
    got = obtain_pixels(tmp_path, ["bad"], rows, decode, count=3, side=4)
    assert got.pixels.bad == {1: "truncated image (image file is truncated)"}
    assert got.pixels.array()[:, 0, 0, 0].tolist() == [5, 0, 7]
    again = obtain_pixels(tmp_path, ["bad"], rows, decode, count=3, side=4)
    assert again.decoded == 0 and again.pixels.bad == got.pixels.bad  # the header keeps them


def test_the_build_shows_a_progress_bar_unless_told_not_to(tmp_path, capsys):
    rows = [(i, i) for i in range(40)]

    def decode(index, row):
        return np.full((3, 4, 4), row, dtype=np.uint8)

    obtain_pixels(tmp_path / "on", ["bar"], rows, decode, count=40, side=4, progress=True)
    assert "image cache" in capsys.readouterr().err
    obtain_pixels(tmp_path / "off", ["bar"], rows, decode, count=40, side=4, progress=False)
    assert "image cache" not in capsys.readouterr().err
