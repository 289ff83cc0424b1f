"""depth_map: every parameter gets a depth, the head is the maximum, blocks follow execution order."""

from __future__ import annotations

import pytest
import torch

from helpers.tiny_models import TINY_ARCHS
from tl_hub.backbone import load_backbone
from tl_hub.depth import BLOCK, HEAD, NECK, STEM, depth_info, depth_map, native_input_size

LABELS = ["a", "b", "c"]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_every_parameter_has_a_depth_and_the_head_is_deepest(tiny, arch):
    model = load_backbone(str(tiny(arch)), LABELS)
    depths = depth_map(model)
    names = [n for n, _ in model.named_parameters()]
    assert set(depths) == set(names)
    top = max(depths.values())
    assert sorted(set(depths.values())) == list(range(top + 1))  # contiguous 0..L
    at_top = {n for n, d in depths.items() if d == top}
    assert set(model.tl_hub_head_names) <= at_top
    info = depth_info(model)
    assert info.kinds[-1] == HEAD and info.kinds.count(HEAD) == 1
    assert info.kinds.count(BLOCK) >= 2, info.units
    assert info.kinds.count(STEM) <= 1 and info.kinds.count(NECK) <= 1
    if STEM in info.kinds:
        assert info.kinds[0] == STEM
    if NECK in info.kinds:
        assert info.kinds[-2] == NECK
    # the head depth holds nothing but the head's unit(s)
    head_units = {info.unit_of[n] for n in model.tl_hub_head_names}
    assert set(info.units[-1]) == head_units


def test_vit_depths_follow_the_layers(tiny):
    model = load_backbone(str(tiny("vit")), LABELS)
    info = depth_info(model)
    depths = info.depth_of
    assert info.kinds == [STEM, BLOCK, BLOCK, BLOCK, NECK, HEAD]
    assert depths["vit.embeddings.cls_token"] == 0
    for name, d in depths.items():
        if ".layers." in name or ".layer." in name:
            index = int(name.split(".layers." if ".layers." in name else ".layer.")[1].split(".")[0])
            assert d == index + 1, name
    assert depths["classifier.weight"] == 5


def test_execution_order_not_registration_order(tiny):
    """PoolFormer registers all patch embeddings before the blocks but runs them interleaved."""
    model = load_backbone(str(tiny("poolformer")), LABELS)
    depths = depth_map(model)

    def first(prefix: str) -> int:
        return min(d for n, d in depths.items() if n.startswith(prefix))

    assert first("poolformer.encoder.patch_embeddings.0.") < first("poolformer.encoder.block.0.")
    assert first("poolformer.encoder.block.0.") < first("poolformer.encoder.patch_embeddings.1.")
    assert first("poolformer.encoder.patch_embeddings.1.") < first("poolformer.encoder.block.1.")


def test_timm_tokens_held_by_the_model_are_stem(tiny):
    model = load_backbone(str(tiny("timm_vit")), LABELS)
    depths = depth_map(model)
    assert depths["timm_model.cls_token"] == depths["timm_model.pos_embed"] == depths["timm_model.patch_embed.proj.weight"] == 0
    assert depths["timm_model.blocks.0.attn.qkv.weight"] == 1
    assert depths["timm_model.norm.weight"] == max(depths.values()) - 1


def test_flat_sequential_backbone_still_gets_blocks(tiny):
    """timm VGG: `features` is one flat Sequential of conv/bn/relu layers; its layers become blocks."""
    model = load_backbone(str(tiny("timm_vgg")), LABELS)
    info = depth_info(model)
    assert info.kinds.count(BLOCK) >= 8
    depths = info.depth_of
    assert depths["timm_model.features.0.weight"] < depths["timm_model.features.26.weight"]


def test_cached_per_model_instance_and_recomputed_when_params_change(tiny, monkeypatch):
    """One computation per model instance, from at most one dummy forward pass; a new parameter redoes both."""
    import tl_hub.depth

    model = load_backbone(str(tiny("resnet")), LABELS)
    computed: list[object] = []
    real_compute = tl_hub.depth._compute

    def counting_compute(*args):
        computed.append(args[0])
        return real_compute(*args)

    monkeypatch.setattr(tl_hub.depth, "_compute", counting_compute)
    forwards: list[object] = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(module))
    first = depth_info(model)
    assert computed == [model] and len(forwards) <= 1  # load_backbone may already have traced the model
    traced = len(forwards)
    assert depth_info(model) is first
    assert computed == [model] and len(forwards) == traced  # served from the cache: no work, no forward
    model.extra = torch.nn.Linear(2, 2)  # a new parameter is not in the cached map
    model.tl_hub_head_names = list(model.tl_hub_head_names)
    again = depth_info(model)
    assert again is not first and "extra.weight" in again.depth_of
    assert computed == [model, model] and len(forwards) == traced + 1  # recomputed from one new forward


def test_native_input_size(tiny):
    assert native_input_size(load_backbone(str(tiny("hiera")), LABELS)) == (3, 32, 32)
    assert native_input_size(load_backbone(str(tiny("timm_vit")), LABELS)) == (3, 32, 32)


def test_wrapped_model_is_unwrapped(tiny):
    from tl_hub.depth import unwrap_model

    model = load_backbone(str(tiny("vit")), LABELS)
    wrapped = torch.nn.DataParallel(model)
    assert unwrap_model(wrapped) is model
    assert depth_map(wrapped) == depth_map(model)
