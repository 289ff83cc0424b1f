"""tl_hub.data.dataset: the decode-once torch dataset over a load_data split (uint8 cache, greyscale kept
as one plane, deterministic eval items, random crop/flip for training, DataLoader workers sharing the
cache) and `augment_batch`, the training transform on a whole batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.processors import lite0_timm_processor
from tl_hub.data import load_data
from tl_hub.data.dataset import ImageClassificationDataset, augment_batch
from tl_hub.data.transforms import ImageSpec, image_spec


@pytest.fixture(scope="module")
def small_bundle():
    return load_data("bundled:fashion_mnist", examples_per_label=4)


def test_dataset_eval_items_are_deterministic_and_normalised(small_bundle, tmp_path):
    spec = image_spec(lite0_timm_processor(), image_size=32)
    dataset = ImageClassificationDataset(small_bundle.train, spec, train=False)
    assert dataset.pixels.dtype == torch.uint8 and dataset.pixels.shape == (40, 1, 32, 32)  # greyscale: 1 plane
    first, again = dataset[3], dataset[3]
    assert torch.equal(first["pixel_values"], again["pixel_values"])
    assert first["pixel_values"].dtype == torch.float32 and first["pixel_values"].shape == (3, 32, 32)
    assert first["labels"].dtype == torch.int64 and int(first["labels"]) == small_bundle.train[3]["label"]
    assert first["index"] == 3
    values = first["pixel_values"]
    assert -1.0 <= float(values.min()) and float(values.max()) <= 1.0  # mean = std = 0.5
    uncached = ImageClassificationDataset(small_bundle.train, spec, train=False, cache=False)
    assert uncached.pixels is None
    assert torch.equal(uncached[3]["pixel_values"], first["pixel_values"])
    # the budget limits what a build may write (an existing entry is used whatever the budget): a fresh folder
    over_budget = ImageClassificationDataset(small_bundle.train, spec, train=False, cache_max_bytes=10,
                                             cache_dir=tmp_path)
    assert over_budget.pixels is None and torch.equal(over_budget[3]["pixel_values"], first["pixel_values"])


def test_dataset_train_augmentation(small_bundle):
    spec = image_spec(lite0_timm_processor(), image_size=32)
    dataset = ImageClassificationDataset(small_bundle.train, spec, train=True)
    assert dataset.pixels.shape == (40, 1, spec.resize_size, spec.resize_size)
    torch.manual_seed(0)
    draws = [dataset[5]["pixel_values"] for _ in range(4)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert not all(torch.equal(draws[0], d) for d in draws[1:])  # random crops/flips differ
    plain = ImageClassificationDataset(small_bundle.train, spec, train=True, augment=False)
    evaluation = ImageClassificationDataset(small_bundle.train, spec, train=False)
    assert torch.equal(plain[5]["pixel_values"], evaluation[5]["pixel_values"])


def _grey_then_colour(n_grey: int, colour_at: list[int]):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    rng = np.random.default_rng(0)
    images = []
    for i in range(n_grey):
        if i in colour_at:
            images.append(Image.fromarray(rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)))
        else:
            images.append(Image.fromarray(rng.integers(0, 256, (13, 17), dtype=np.uint8)))  # mode L
    return Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n_grey)]},
                             features=Features(image=ImageFeature(), label=ClassLabel(names=["a", "b"])))


@pytest.mark.parametrize("colour_at", [[], [0], [7], [3, 11]])
@pytest.mark.parametrize("train", [False, True])
def test_greyscale_cache_keeps_one_plane_and_items_equal_the_uncached_ones(colour_at, train):
    ds = _grey_then_colour(12, colour_at)
    spec = ImageSpec(size=8, resize_size=10, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    cached = ImageClassificationDataset(ds, spec, train=train, num_threads=3)
    uncached = ImageClassificationDataset(ds, spec, train=train, cache=False)
    side = spec.resize_size if train else spec.size
    assert cached.pixels.shape == (12, 3 if colour_at else 1, side, side)
    for i in range(12):
        assert torch.equal(cached.uint8(i), uncached.uint8(i)), i  # widening to RGB loses nothing
        torch.manual_seed(i)
        a = cached[i]["pixel_values"]
        torch.manual_seed(i)
        b = uncached[i]["pixel_values"]
        assert a.shape == (3, 8, 8) and torch.equal(a, b), i  # same crop/flip draws, same pixels
    loader = torch.utils.data.DataLoader(cached, batch_size=5)
    assert next(iter(loader))["pixel_values"].shape == (5, 3, 8, 8)
    raw = ImageClassificationDataset(ds, spec, train=train, uint8_items=True)
    assert raw[2]["pixel_values"].shape == (3, side, side)


def test_dataset_flip_only_mirrors(tmp_path):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    array = np.zeros((16, 16, 3), np.uint8)
    array[:, :8] = 255  # left half white
    ds = Dataset.from_dict({"image": [Image.fromarray(array)], "label": [0]},
                           features=Features(image=ImageFeature(), label=ClassLabel(names=["a", "b"])))
    spec = ImageSpec(size=16, resize_size=16, mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear")
    dataset = ImageClassificationDataset(ds, spec, train=True, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    seen = set()
    for _ in range(40):
        pixels = dataset[0]["pixel_values"]
        seen.add(float(pixels[0, 8, 0]))
        assert float(pixels[0, 8, 0]) + float(pixels[0, 8, 15]) == pytest.approx(1.0)
    assert seen == {0.0, 1.0}


def test_tiny_images_are_upsampled_and_odd_modes_decoded(tmp_path):
    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
    Image.new("L", (4, 4), 200).save(root / "a" / "tiny.png")
    Image.new("L", (4, 4), 10).save(root / "a" / "tiny2.png")
    Image.fromarray(np.full((30, 20), 32768, np.uint16)).save(root / "b" / "grey16.png")
    Image.fromarray(np.full((30, 20), 32768, np.uint16)).save(root / "b" / "grey16b.png")
    bundle = load_data(str(root), eval_fraction=0.5)
    spec = ImageSpec(size=24, resize_size=24, mean=(0.0,) * 3, std=(1.0,) * 3)
    ids = list(bundle.train["id"])
    dataset = ImageClassificationDataset(bundle.train, spec, train=False)
    for i, ident in enumerate(ids):
        pixels = dataset[i]["pixel_values"]
        assert pixels.shape == (3, 24, 24)
        expected = {"tiny.png": 200, "tiny2.png": 10, "grey16.png": 128, "grey16b.png": 128}[Path(ident).name]
        assert torch.allclose(pixels, torch.full_like(pixels, expected / 255), atol=1.5 / 255), ident


def test_dataloader_workers_share_the_cache(small_bundle):
    spec = ImageSpec(size=16, resize_size=16)
    dataset = ImageClassificationDataset(small_bundle.train, spec, train=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2)
    batches = list(loader)
    indices = torch.cat([b["index"] for b in batches])
    assert sorted(indices.tolist()) == list(range(40))
    assert batches[0]["pixel_values"].shape == (8, 3, 16, 16)


def test_augment_batch_crops_flips_and_normalises():
    pixels = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    spec = ImageSpec(size=20, resize_size=20, mean=(0.5,) * 3, std=(0.25,) * 3)
    identity = augment_batch(pixels, spec, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(identity, spec.normalize(pixels), atol=1e-5)  # full-image crop at the same size
    generator = torch.Generator().manual_seed(1)
    mirrored = augment_batch(pixels, spec, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=generator)
    flipped = [torch.allclose(m, spec.normalize(p).flip(-1), atol=1e-5) for m, p in zip(mirrored, pixels)]
    kept = [torch.allclose(m, spec.normalize(p), atol=1e-5) for m, p in zip(mirrored, pixels)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    small = ImageSpec(size=12, resize_size=20)
    first = augment_batch(pixels, small, generator=torch.Generator().manual_seed(0))
    again = augment_batch(pixels, small, generator=torch.Generator().manual_seed(0))
    other = augment_batch(pixels, small, generator=torch.Generator().manual_seed(1))
    assert first.shape == (6, 3, 12, 12) and torch.equal(first, again) and not torch.equal(first, other)
    constant = torch.full((2, 3, 20, 20), 200, dtype=torch.uint8)  # any crop of a flat image stays flat
    assert torch.allclose(augment_batch(constant, small), small.normalize(constant[:, :, :12, :12]), atol=1e-4)


def test_uint8_items_with_batched_transform(small_bundle):
    spec = ImageSpec(size=16, resize_size=20)
    train = ImageClassificationDataset(small_bundle.train, spec, train=True, uint8_items=True)
    item = train[2]
    assert item["pixel_values"].dtype == torch.uint8 and item["pixel_values"].shape == (3, 20, 20)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=8)))
    out = train.transform_batch(batch["pixel_values"])
    assert out.shape == (8, 3, 16, 16) and out.dtype == torch.float32
    evaluation = ImageClassificationDataset(small_bundle.train, spec, train=False, uint8_items=True)
    eval_batch = next(iter(torch.utils.data.DataLoader(evaluation, batch_size=4)))
    reference = ImageClassificationDataset(small_bundle.train, spec, train=False)
    assert torch.equal(evaluation.transform_batch(eval_batch["pixel_values"])[1], reference[1]["pixel_values"])


def test_an_item_asked_with_its_seed_draws_from_its_own_generator():
    """(index, seed) keys: the per-item augmentation of the CPU path draws from a generator seeded for the
    item (what a global torch.manual_seed(seed) would give), and leaves the global generator alone."""
    import torch

    from tl_hub.data import load_data
    from tl_hub.data.dataset import ImageClassificationDataset
    from tl_hub.data.transforms import ImageSpec
    from tl_hub.seeding import SeededDataset

    bundle = load_data("bundled:fashion_mnist", examples_per_label=2)
    dataset = ImageClassificationDataset(bundle.train, ImageSpec(size=24, resize_size=28), train=True)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    item = SeededDataset(dataset)[(3, 987654321)]
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(987654321)
    assert torch.equal(item["pixel_values"], dataset[3]["pixel_values"])
    assert not torch.equal(item["pixel_values"], dataset[(3, 1234)]["pixel_values"])
