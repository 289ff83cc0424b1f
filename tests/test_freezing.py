"""Applying a freeze policy (tl_hub.freezing): frozen parameters and BatchNorm statistics stay bit-identical
through real optimizer steps on every tiny architecture, lp-ft's phases, param_groups with layer-wise
LR decay and no weight decay on norms/biases, and the depth summary table."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from helpers.tiny_models import TINY_ARCHS
from tl_hub.backbone import load_backbone
from tl_hub.depth import depth_info, depth_map
from tl_hub.errors import ConfigError
from tl_hub.freezing import apply_policy, is_frozen_module, param_groups
from tl_hub.policy import FreezePolicy

LABELS = ["a", "b", "c"]


def _stat_buffers(model) -> dict[str, tuple[torch.nn.Module, str]]:
    """running_mean/var buffers of norm layers -> (module, buffer name)."""
    out = {}
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._NormBase) and module.track_running_stats:
            for b in ("running_mean", "running_var"):
                if getattr(module, b, None) is not None:
                    out[f"{path}.{b}"] = (module, b)
    return out


def _train_steps(model, steps: int = 2) -> set[str]:
    """Real optimizer steps; returns the names of parameters that got a non-negligible gradient
    (Adam moves those by about the LR; vanishing gradients of tiny random nets would not show)."""
    optimizer = torch.optim.Adam(param_groups(model, 1e-2), lr=1e-2)
    with_grad: set[str] = set()
    model.train()  # what every training loop does: must not unfreeze frozen norms
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # dropout masks: the same steps whatever ran before
    for _ in range(steps):
        x = torch.randn(4, 3, 32, 32, generator=generator)
        loss = model(pixel_values=x, labels=torch.tensor([0, 1, 2, 0])).loss
        optimizer.zero_grad()
        loss.backward()
        with_grad |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().max() > 1e-6}
        optimizer.step()
    return with_grad


@pytest.mark.parametrize("policy_name", ["head", "partial"])
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_frozen_parameters_and_norm_statistics_do_not_move(tiny, arch, policy_name):
    model = load_backbone(str(tiny(arch)), LABELS)
    summary = apply_policy(model, FreezePolicy(policy_name))
    params = dict(model.named_parameters())
    trained = {n for n, p in params.items() if p.requires_grad}
    frozen = set(params) - trained
    depths = depth_map(model)
    top = max(depths.values())
    assert set(model.tl_hub_head_names) <= trained
    assert trained == {n for n, d in depths.items() if d in summary.trained_depths}
    if policy_name == "head":
        assert summary.trained_depths == [top]
    else:
        assert top in summary.trained_depths and 0 not in summary.trained_depths
        assert len(summary.trained_depths) > 1
    assert summary.trainable_params == sum(params[n].numel() for n in trained)
    assert summary.frozen_params == sum(params[n].numel() for n in frozen)

    stats = _stat_buffers(model)
    frozen_stats = {k for k, (m, _) in stats.items() if is_frozen_module(m)}
    before_params = {n: p.detach().clone() for n, p in params.items()}
    before_stats = {k: getattr(m, b).clone() for k, (m, b) in stats.items()}
    with_grad = _train_steps(model)

    for name in frozen:
        assert torch.equal(params[name], before_params[name]), f"frozen {name} moved"
    for key in frozen_stats:
        module, buf = stats[key]
        assert torch.equal(getattr(module, buf), before_stats[key]), f"frozen statistics {key} drifted"
        assert module.training is False
    # every parameter-free norm layer that sits in a frozen depth is locked too
    info = depth_info(model)
    for key, (module, _) in stats.items():
        if not any(True for _ in module.parameters()):
            depth = info.depth_of_module(key.rsplit(".", 1)[0])
            if depth is not None and depth not in summary.trained_depths:
                assert key in frozen_stats
    moved = {n for n in trained if not torch.equal(params[n], before_params[n])}
    assert with_grad <= trained  # autograd never reached a frozen parameter
    assert with_grad <= moved, sorted(with_grad - moved)[:10]
    assert moved & set(model.tl_hub_head_names), "the head did not train"
    if policy_name == "partial":
        assert moved - set(model.tl_hub_head_names), "no backbone parameter trained under partial"


def test_norm_lock_survives_train_deepcopy_and_save(tiny, tmp_path):
    model = load_backbone(str(tiny("timm_efficientnet")), LABELS)
    apply_policy(model, FreezePolicy("head"))
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(is_frozen_module(m) and not m.training for m in bns)
    clone = copy.deepcopy(model)
    clone.train()
    assert all(not m.training for m in clone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    model.save_pretrained(tmp_path / "saved")
    reloaded = load_backbone(str(tmp_path / "saved"), LABELS)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_lp_ft_phases_unfreeze_everything_and_release_norms(tiny):
    model = load_backbone(str(tiny("resnet")), LABELS)
    policy = FreezePolicy("lp-ft")
    first = apply_policy(model, policy)  # phase "head" by default
    assert first.phase == "head" and first.trained_depths == [max(depth_map(model).values())]
    model.train()
    assert any(is_frozen_module(m) for m in model.modules())
    second = apply_policy(model, policy, phase="full")
    assert second.phase == "full" and second.frozen_params == 0
    assert not any(is_frozen_module(m) for m in model.modules())
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.training is True  # follows the model's mode again
    assert type(bn) is torch.nn.BatchNorm2d
    with pytest.raises(ConfigError, match="phase"):
        apply_policy(model, policy, phase="middle")
    with pytest.raises(ConfigError, match="'lp-ft' only"):
        apply_policy(model, FreezePolicy("head"), phase="full")


@pytest.mark.parametrize("name", ["full", "scratch"])
def test_full_and_scratch_train_everything(tiny, name):
    model = load_backbone(str(tiny("convnext")), LABELS, pretrained=FreezePolicy(name).pretrained)
    summary = apply_policy(model, name)
    assert summary.frozen_params == 0 and all(p.requires_grad for p in model.parameters())


def test_partial_train_fraction_controls_depth(tiny):
    model = load_backbone(str(tiny("mobilenet_v2")), LABELS)
    blocks = depth_info(model).kinds.count("block")
    small = apply_policy(model, FreezePolicy("partial", train_fraction=0.1))
    large = apply_policy(model, FreezePolicy("partial", train_fraction=0.8))
    assert small.trainable_params < large.trainable_params
    n_small = sum(1 for r in small.rows if r["trainable"] and r["kind"] == "block")
    assert n_small == max(1, round(0.1 * blocks + 0.49))
    everything = apply_policy(model, FreezePolicy("partial", train_fraction=1.0))
    assert everything.frozen_params == 0


# ---------------------------------------------------------------------------------------------------
# param_groups
# ---------------------------------------------------------------------------------------------------


def test_param_groups_layer_decay_and_no_weight_decay_on_norms_and_biases(tiny):
    model = load_backbone(str(tiny("timm_vit")), LABELS)
    apply_policy(model, FreezePolicy("partial", train_fraction=0.5))
    depths = depth_map(model)
    top = max(depths.values())
    groups = param_groups(model, 1e-3, layer_decay=0.5, weight_decay=0.05)
    seen = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(id(p) for p in trainable)  # each trainable param once, no frozen ones
    assert [g["depths"][0] for g in groups] == sorted(g["depths"][0] for g in groups)
    for g in groups:
        assert g["lr"] == pytest.approx(1e-3 * 0.5 ** (top - g["depths"][0]))
        assert {depths[name] for name in g["param_names"]} == set(g["depths"])
        for name, p in zip(g["param_names"], g["params"]):
            if p.ndim <= 1 or name.endswith(("cls_token", "pos_embed")):
                assert g["weight_decay"] == 0.0, name
            else:
                assert g["weight_decay"] == 0.05, name
    lrs = [g["lr"] for g in groups]
    assert lrs == sorted(lrs) and lrs[-1] == pytest.approx(1e-3)
    assert len({(g["lr"], g["weight_decay"]) for g in groups}) == len(groups)  # one group per (lr, decay)
    torch.optim.AdamW(groups)  # a real optimizer accepts them


def test_without_layer_decay_two_groups_hold_every_trainable_parameter(tiny):
    model = load_backbone(str(tiny("timm_vit")), LABELS)
    apply_policy(model, FreezePolicy("full"))
    groups = param_groups(model, 1e-4, layer_decay=1.0, weight_decay=0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and {g["lr"] for g in groups} == {1e-4}
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    assert len(param_groups(model, 1e-4, layer_decay=1.0, weight_decay=0.0)) == 1


def test_param_groups_rejects_bad_values_and_nothing_to_train(tiny):
    model = load_backbone(str(tiny("resnet")), LABELS)
    with pytest.raises(ConfigError, match="layer_decay"):
        param_groups(model, 1e-3, layer_decay=1.5)
    with pytest.raises(ConfigError, match="learning_rate"):
        param_groups(model, 0)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="nothing would train"):
        param_groups(model, 1e-3)


# ---------------------------------------------------------------------------------------------------
# the depth summary
# ---------------------------------------------------------------------------------------------------


def test_summary_table_and_dict(tiny):
    model = load_backbone(str(tiny("swin")), LABELS)
    summary = apply_policy(model, FreezePolicy("partial"))
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["policy"] == "partial" and len(data["rows"]) == len(depth_info(model).kinds)
    table = summary.table()
    assert table.splitlines()[0] == "| depth | kind | modules | params | status |"
    assert "frozen" in table and "trains" in table
    assert f"{summary.trainable_params:,} of" in table
