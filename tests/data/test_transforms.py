"""tl_hub.data.transforms: specs read from real processors, and exported processors that transformers'
pipeline() uses to preprocess exactly like tl_hub's eval transform (the decode-once dataset that applies
these transforms is in tests/data/test_dataset.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers.processors import lite0_timm_processor
from helpers.tiny_models import tiny_checkpoint
from tl_hub.data import load_data
from tl_hub.errors import ConfigError
from tl_hub.data.dataset import ImageClassificationDataset
from tl_hub.data.transforms import ImageSpec, export_processor, image_spec, save_processor


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
    timm_spec = image_spec(lite0_timm_processor(), image_size=112)  # TimmWrapperImageProcessor has no .size
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
        processor = lite0_timm_processor()
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

    spec = image_spec(lite0_timm_processor(), image_size=64)
    with pytest.raises(DataError, match="save_pretrained"):
        save_processor(export_processor(lite0_timm_processor(), spec), tmp_path)
