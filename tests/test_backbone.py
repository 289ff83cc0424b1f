"""load_backbone / load_image_processor: fresh labelled heads on tiny real checkpoints of many
architectures, the known loading traps, and clear errors for bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers.tiny_models import ORIGINAL_LABELS, TINY_ARCHS
from tl_hub.backbone import load_backbone, load_image_processor, resolve_source
from tl_hub.depth import head_parameter_names
from tl_hub.errors import CheckpointError, ConfigError, DataError, HubError, TlHubError

LABELS = ["cat", "dog", "bird"]


def _checkpoint_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_fresh_head_sized_and_named_for_labels(tiny, arch):
    folder = tiny(arch)
    model = load_backbone(str(folder), LABELS)
    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "cat", 1: "dog", 2: "bird"}
    assert model.config.label2id == {"cat": 0, "dog": 1, "bird": 2}
    head = model.tl_hub_head_names
    params = dict(model.named_parameters())
    assert head and set(head) <= set(params)
    weight = next(params[n] for n in head if params[n].ndim >= 2)
    assert weight.shape[0] == 3
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32)).logits
    assert logits.shape == (2, 3)
    if arch == "deit_distilled":
        assert type(model).__name__ == "DeiTForImageClassification"
    # every backbone tensor is the checkpoint's, bit for bit (reference: a plain transformers load)
    if arch != "timm_vit_numclasses":  # plain from_pretrained cannot load that one (the trap)
        from transformers import AutoModelForImageClassification

        reference = dict(AutoModelForImageClassification.from_pretrained(folder).named_parameters())
        backbone = [n for n in params if n not in set(head)]
        assert backbone and all(torch.equal(params[n], reference[n]) for n in backbone)


@pytest.mark.parametrize("arch", ["vit", "resnet", "timm_efficientnet", "levit"])
def test_same_label_count_other_names_reinitialises_head(tiny, arch):
    folder = tiny(arch)
    other = ["p", "q", "r", "s", "t"]  # 5 labels, like the checkpoint, but other names
    model = load_backbone(str(folder), other)
    saved = _checkpoint_tensors(folder)
    params = dict(model.named_parameters())
    for name in model.tl_hub_head_names:
        key = name.removeprefix("timm_model.")
        assert params[name].shape == saved[key].shape
        if name.endswith("weight"):
            assert not torch.equal(params[name].detach(), saved[key]), f"{name} kept the old head"
    assert model.config.id2label[0] == "p"


@pytest.mark.parametrize("arch", ["vit", "timm_vit", "resnet"])
def test_identical_labels_keep_the_trained_head(tiny, arch):
    """A checkpoint that already has exactly these labels (a tl_hub model trained before) keeps its head."""
    folder = tiny(arch)
    model = load_backbone(str(folder), ORIGINAL_LABELS)
    saved = _checkpoint_tensors(folder)
    params = dict(model.named_parameters())
    for name in model.tl_hub_head_names:
        assert torch.equal(params[name].detach(), saved[name.removeprefix("timm_model.")])
    # a different order is a different head
    reordered = load_backbone(str(folder), list(reversed(ORIGINAL_LABELS)))
    weight = [n for n in reordered.tl_hub_head_names if n.endswith("weight")][0]
    assert not torch.equal(dict(reordered.named_parameters())[weight].detach(), saved[weight.removeprefix("timm_model.")])


@pytest.mark.parametrize("arch", ["vit", "timm_vit_numclasses", "timm_resnet"])
def test_labels_survive_save_and_reload(tiny, arch, tmp_path):
    model = load_backbone(str(tiny(arch)), LABELS)
    model.save_pretrained(tmp_path / "out")
    again = load_backbone(str(tmp_path / "out"), LABELS)
    assert again.config.id2label == {0: "cat", 1: "dog", 2: "bird"}
    for name, p in model.named_parameters():
        assert torch.equal(p, dict(again.named_parameters())[name]), name
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "num_classes" not in (config.get("model_args") or {})
    saved_labels = config.get("label_names") or [config["id2label"][str(i)] for i in range(3)]
    assert saved_labels == LABELS


def test_timm_model_args_num_classes_trap(tiny):
    folder = tiny("timm_vit_numclasses")
    assert json.loads((folder / "config.json").read_text())["model_args"]["num_classes"] == 5
    model = load_backbone(str(folder), LABELS)
    assert model.timm_model.num_classes == 3
    assert "num_classes" not in (model.config.model_args or {})


def test_timm_checkpoint_without_label_names(tiny, tmp_path):
    """No label_names in a timm config: transformers would name the head LABEL_i; we name and size it."""
    folder = tiny("timm_resnet")
    target = tmp_path / "ckpt"
    target.mkdir()
    config = json.loads((folder / "config.json").read_text())
    config.pop("label_names", None)
    (target / "config.json").write_text(json.dumps(config))
    (target / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    model = load_backbone(str(target), LABELS)
    assert model.config.num_labels == 3 and model.timm_model.get_classifier().out_features == 3


@pytest.mark.parametrize("arch", ["vit", "timm_convnext", "resnet"])
def test_pretrained_false_is_same_architecture_random_weights(tiny, arch):
    folder = tiny(arch)
    scratch = load_backbone(str(folder), LABELS, pretrained=False)
    pretrained = load_backbone(str(folder), LABELS)
    a, b = dict(scratch.named_parameters()), dict(pretrained.named_parameters())
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert scratch.config.id2label == pretrained.config.id2label
    differ = sum(not torch.equal(a[k], b[k]) for k in a if a[k].ndim >= 2)
    assert differ >= len([k for k in a if a[k].ndim >= 2]) - 1


def test_loading_is_quiet_but_real_problems_are_logged(tiny, tmp_path, capfd, caplog):
    folder = tiny("vit")
    load_backbone(str(folder), LABELS)
    out, err = capfd.readouterr()
    assert "Loading weights" not in err + out and "LOAD REPORT" not in err + out
    # a checkpoint missing a backbone tensor: that is worth a warning
    target = tmp_path / "broken"
    target.mkdir()
    (target / "config.json").write_text((folder / "config.json").read_text())
    tensors = _checkpoint_tensors(folder)
    missing = next(k for k in tensors if k.endswith("0.layernorm_after.weight"))
    del tensors[missing]
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="tl_hub"):
        load_backbone(str(target), LABELS)
    # (saved key names may be the legacy ones: compare the layer suffix)
    assert "0.layernorm_after.weight" in caplog.text and "randomly initialised" in caplog.text


@pytest.mark.parametrize(
    "labels, fragment",
    [
        (["cat"], "at least 2"),
        ([], "at least 2"),
        (["cat", "dog", "cat"], "duplicate"),
        (["cat", " "], "empty"),
        ("cat,dog", "list of label names"),
        (["cat", 3], "not strings"),
    ],
)
def test_bad_labels(tiny, labels, fragment):
    with pytest.raises(DataError, match=fragment):
        load_backbone(str(tiny("vit")), labels)


def test_not_an_image_classifier(tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    BertModel(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(ConfigError, match="'bert' checkpoint.*not an image classifier"):
        load_backbone(str(tmp_path / "bert"), LABELS)


def test_local_folder_errors(tmp_path):
    (tmp_path / "my_model").mkdir()
    with pytest.raises(ConfigError) as err:
        load_backbone(str(tmp_path / "my_modle"), LABELS)
    assert str(err.value) == (f"model: no such local folder: '{tmp_path}/my_modle' (did you mean "
                              f"'{tmp_path}/my_model/'?); check the path")
    with pytest.raises(ConfigError, match="no such local folder: .*nothing of that name in"):
        load_image_processor(str(tmp_path / "zzzz" / "qqqq"))
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file; pass the folder that holds config.json"):
        load_backbone(str(tmp_path / "weights.safetensors"), LABELS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_backbone(str(tmp_path / "empty"), LABELS)
    with pytest.raises(ConfigError, match="unknown bundled backbone"):
        load_backbone("bundled:resnet9000", LABELS)


def test_config_without_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(CheckpointError, match="names no known model type"):
        load_backbone(str(tmp_path), LABELS)


def test_pickle_only_checkpoint_is_refused(tiny, tmp_path):
    folder = tiny("vit")
    target = tmp_path / "bin_only"
    target.mkdir()
    (target / "config.json").write_text((folder / "config.json").read_text())
    torch.save(_checkpoint_tensors(folder), target / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_backbone(str(target), LABELS)


def test_hub_repo_id_revision_and_errors(hub, tiny):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=hub.token)
    repo_id = hub.new_repo_id("tiny-vit")
    api.create_repo(repo_id, private=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(tiny("vit")))
    api.create_tag(repo_id, tag="v1")
    model = load_backbone(repo_id, LABELS, revision="v1")
    assert model.config.id2label[2] == "bird"
    with pytest.raises(HubError, match="revision: 'nope' does not exist"):
        load_backbone(repo_id, LABELS, revision="nope")
    with pytest.raises(HubError, match="no model repo 'tester/does-not-exist'"):
        load_backbone("tester/does-not-exist", LABELS)


def test_processor_for_checkpoints(tiny, tmp_path, caplog):
    processor = load_image_processor(str(tiny("timm_vit")))
    assert type(processor).__name__ == "TimmWrapperImageProcessor"
    assert load_image_processor(str(tiny("resnet"))).size == {"height": 32, "width": 32}
    bare = tmp_path / "no_processor"
    bare.mkdir()
    (bare / "config.json").write_text((tiny("vit") / "config.json").read_text())
    with caplog.at_level(logging.WARNING, logger="tl_hub"):
        default = load_image_processor(str(bare))
    assert default.size == {"height": 32, "width": 32} and "no preprocessor_config.json" in caplog.text


def test_processor_from_saved_folder_uses_fast_backend(tmp_path):
    from transformers import AutoImageProcessor, ViTImageProcessor

    ViTImageProcessor(size={"height": 40, "width": 40}).save_pretrained(tmp_path)
    processor = load_image_processor(str(tmp_path))
    assert processor.size["height"] == 40
    assert type(processor) is type(AutoImageProcessor.from_pretrained(tmp_path))
    assert getattr(processor, "backend", None) == "torchvision"  # the fast backend of transformers 5


def test_head_parameter_names_without_attribute(tiny):
    model = load_backbone(str(tiny("levit")), LABELS)
    recorded = model.tl_hub_head_names
    del model.tl_hub_head_names
    assert head_parameter_names(model) == recorded == ["classifier.linear.weight", "classifier.linear.bias"]


def test_resolve_source_and_errors_are_tl_hub_errors():
    assert resolve_source("org/name") == "org/name"
    assert issubclass(HubError, TlHubError) and issubclass(DataError, TlHubError)
