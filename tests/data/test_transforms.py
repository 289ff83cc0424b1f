"""tl_hub.transforms: specs read from real processors, exported processors that transformers' pipeline()
uses to preprocess exactly like tl_hub's eval transform, and the decode-once training dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.tiny_models import tiny_checkpoint
from tl_hub.data import load_data
from tl_hub.errors import ConfigError
from tl_hub.transforms import ImageClassificationDataset, ImageSpec, export_processor, image_spec, save_processor

LITE0_CFG = dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.875, crop_mode="center",
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _timm_processor(cfg=LITE0_CFG):
    from transformers import TimmWrapperImageProcessor

    return TimmWrapperImageProcessor(pretrained_cfg=dict(cfg), architecture="tf_efficientnet_lite0")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Real photos (scikit-learn's china.jpg and flower.jpg), landscape, portrait and small crops, as JPEG/PNG
    files in two class folders."""
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("photos")
    china, flower = load_sample_images().images
    for name, array in (("china", china), ("flower", flower)):
        (root / name).mkdir()
        Image.fromarray(array).save(root / name / "full.jpg", quality=92)
        Image.fromarray(array[:, 100:380]).save(root / name / "portrait.png")
        Image.fromarray(array[50:103, 200:271]).save(root / name / "small.jpg", quality=92)
    return root


# -- specs -------------------------------------------------------------------------------------------
def test_spec_from_processors():
    from transformers import CLIPImageProcessor, ConvNextImageProcessor, ViTImageProcessor

    vit = image_spec(ViTImageProcessor())
    assert (vit.size, vit.resize_size, vit.resize_mode, vit.backend) == (224, 224, "squash", "torchvision")
    assert vit.interpolation == "bilinear"
    assert image_spec(ViTImageProcessor(), image_size=96).size == 96
    clip = image_spec(CLIPImageProcessor())  # shortest edge 224, centre crop 224
    assert (clip.size, clip.resize_size, clip.resize_mode, clip.interpolation) == (224, 224, "shortest_edge", "bicubic")
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    convnext = image_spec(ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875))
    assert (convnext.size, convnext.resize_size) == (224, 256)
    assert (image_spec(ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875), 112).resize_size) == 128
    timm_spec = image_spec(_timm_processor(), image_size=112)  # TimmWrapperImageProcessor has no .size
    assert (timm_spec.size, timm_spec.resize_size, timm_spec.backend) == (112, 128, "timm")
    assert timm_spec.interpolation == "bicubic"
    assert timm_spec.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="image_size"):
        image_spec(ViTImageProcessor(), image_size=0)
    with pytest.raises(ConfigError, match="resize_size"):
        ImageSpec(size=100, resize_size=50)


def test_spec_from_bundled_lite0_processor():
    from tl_hub.backbone import load_image_processor

    processor = load_image_processor("bundled:efficientnet_lite0")
    spec = image_spec(processor, image_size=112)
    assert (spec.size, spec.resize_size, spec.interpolation, spec.mean, spec.std, spec.backend) == (
        112, 128, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "timm")
    assert image_spec(processor).size == 224 and image_spec(processor).resize_size == 256


# -- exported processors == eval transform, through transformers' pipeline --------------------------------
def _eval_items(folder: Path, spec: ImageSpec) -> dict[str, torch.Tensor]:
    bundle = load_data(str(folder), eval_fraction=0.5)
    out = {}
    for split in (bundle.train, bundle.eval):
        dataset = ImageClassificationDataset(split, spec, train=False)
        for i in range(len(dataset)):
            out[split[i]["id"]] = dataset[i]["pixel_values"]
    assert len(out) == 6
    return out


def _pipeline_inputs(model_dir: Path, paths) -> dict[str, torch.Tensor]:
    from transformers import pipeline

    pipe = pipeline("image-classification", model=str(model_dir), device="cpu")
    return {path: pipe.preprocess(path)["pixel_values"][0] for path in paths}


@pytest.mark.parametrize("kind,image_size", [("vit", 40), ("vit_pil", 36), ("clip", 48), ("convnext", 40)])
def test_pipeline_preprocesses_like_eval_transform_transformers(tmp_path, photo_folder, kind, image_size):
    import transformers
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    processor = {
        "vit": lambda: transformers.ViTImageProcessor(),
        "vit_pil": lambda: ViTImageProcessorPil(),
        "clip": lambda: transformers.CLIPImageProcessor(),
        "convnext": lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875),
    }[kind]()
    spec = image_spec(processor, image_size=image_size)
    model_dir = tiny_checkpoint("vit", tmp_path / "model")
    save_processor(export_processor(processor, spec), model_dir)
    assert (model_dir / "preprocessor_config.json").is_file()
    ours = _eval_items(photo_folder, spec)
    theirs = _pipeline_inputs(model_dir, ours)
    for path, tensor in ours.items():
        assert theirs[path].shape == tensor.shape == (3, image_size, image_size)
        assert float((theirs[path] - tensor).abs().max()) < 1e-5, path


@pytest.mark.parametrize("source", ["config", "bundled"])
def test_pipeline_preprocesses_like_eval_transform_timm(tmp_path, photo_folder, source):
    if source == "bundled":
        from tl_hub.backbone import load_image_processor

        processor = load_image_processor("bundled:efficientnet_lite0")
    else:
        processor = _timm_processor()
    spec = image_spec(processor, image_size=56)
    model_dir = tiny_checkpoint("timm_efficientnet", tmp_path / "model")
    exported = export_processor(processor, spec)
    exported.save_pretrained(model_dir)  # writes pretrained_cfg into the model's config.json
    saved_cfg = json.loads((model_dir / "config.json").read_text())["pretrained_cfg"]
    assert saved_cfg["input_size"] == [3, 56, 56] and saved_cfg["interpolation"] == "bicubic"
    assert saved_cfg["num_classes"] == 5  # other keys of the model's pretrained_cfg are kept
    ours = _eval_items(photo_folder, spec)
    theirs = _pipeline_inputs(model_dir, ours)
    for path, tensor in ours.items():
        assert float((theirs[path] - tensor).abs().max()) < 1e-5, path


def test_save_processor_for_timm_needs_the_model_config(tmp_path):
    from tl_hub.errors import DataError

    spec = image_spec(_timm_processor(), image_size=64)
    with pytest.raises(DataError, match="save_pretrained"):
        save_processor(export_processor(_timm_processor(), spec), tmp_path)


# -- the dataset ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_bundle():
    return load_data("bundled:fashion_mnist", examples_per_label=4)


def test_dataset_eval_items_are_deterministic_and_normalised(small_bundle):
    spec = image_spec(_timm_processor(), image_size=32)
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
    over_budget = ImageClassificationDataset(small_bundle.train, spec, train=False, cache_max_bytes=10)
    assert over_budget.pixels is None and torch.equal(over_budget[3]["pixel_values"], first["pixel_values"])


def test_dataset_train_augmentation(small_bundle):
    spec = image_spec(_timm_processor(), image_size=32)
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
    from tl_hub.transforms import augment_batch

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
