"""timm loads every output folder tl_hub builds on a timm backbone (the bundled Lite0 of the quickstart
included), from the folder (`local-dir:`) and from the Hub (`hf-hub:`, through the local test Hub), with the
same logits as transformers' TimmWrapper (issue [5/7]: `"model_args": null` broke timm's loader)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tl_hub
from helpers.images import write_image_folder


def _finetuned(tmp_path: Path, model: str, image_size: int) -> Path:
    out = tmp_path / "out"
    data = write_image_folder(tmp_path / "data", ["red", "green", "blue"], per_label=4, seed=0)
    tl_hub.finetune(model=model, dataset=str(data), eval_fraction=0.25, epochs=1, image_size=image_size,
                    policy="head", output_dir=str(out), num_workers=0, seed=0)
    return out


def _timm_logits(spec: str, pixels: torch.Tensor) -> torch.Tensor:
    import timm

    model = timm.create_model(spec, pretrained=True).eval()
    with torch.no_grad():
        return model(pixels)


def _transformers_logits(source: str, pixels: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(source).eval()
    with torch.no_grad():
        return model(pixel_values=pixels).logits


@pytest.mark.parametrize("backbone", ["tiny timm efficientnet", "bundled:efficientnet_lite0"])
def test_timm_loads_the_output_folder_and_the_pushed_repo(hub, tiny, tmp_path, backbone):
    model = str(tiny("timm_efficientnet")) if backbone.startswith("tiny") else backbone
    size = 32 if backbone.startswith("tiny") else 64
    out = _finetuned(tmp_path, model, size)
    config = json.loads((out / "config.json").read_text())
    assert isinstance(config.get("model_args", {}), dict)  # never null: timm calls .get on it
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = _transformers_logits(str(out), pixels)
    local = _timm_logits(f"local-dir:{out}", pixels)
    assert local.shape == (2, 3)
    torch.testing.assert_close(local, expected, atol=1e-5, rtol=0)
    repo_id = hub.new_repo_id("timm-out")
    tl_hub.push_to_hub(out, repo_id)
    torch.testing.assert_close(_timm_logits(f"hf-hub:{repo_id}", pixels), expected, atol=1e-5, rtol=0)
