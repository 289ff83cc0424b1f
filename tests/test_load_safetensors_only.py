"""`tl_hub.load` / `predict` load safetensors weights only: a folder holding only a pickled
`pytorch_model.bin` is refused with a message that says why and how to fix it (never unpickled)."""

from __future__ import annotations

import pytest

import tl_hub
from tl_hub.errors import HubError


def test_a_pickled_checkpoint_is_refused_not_loaded(tiny, tmp_path):
    from transformers import AutoModelForImageClassification

    import shutil

    import torch

    folder = tmp_path / "pickled"
    model = AutoModelForImageClassification.from_pretrained(str(tiny("vit")))
    model.save_pretrained(folder)  # config + processor files as usual, then the weights swapped for a pickle
    shutil.copy(tiny("vit") / "preprocessor_config.json", folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # what an old checkpoint looks like
    assert (folder / "pytorch_model.bin").is_file() and not (folder / "model.safetensors").exists()
    with pytest.raises(HubError, match=r"no model\.safetensors there; tl_hub loads safetensors weights only"):
        tl_hub.load(folder)
    model.save_pretrained(tmp_path / "safe")  # the same model as safetensors loads
    shutil.copy(folder / "preprocessor_config.json", tmp_path / "safe")
    loaded, _ = tl_hub.load(tmp_path / "safe")
    assert loaded.config.id2label == model.config.id2label
