"""Freeze policies: frozen parameters and BatchNorm statistics stay bit-identical through real optimizer
steps on every tiny architecture; choose_policy thresholds; param_groups; `tl-hub policy`."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from helpers.tiny_models import TINY_ARCHS
from tl_hub.backbone import load_backbone
from tl_hub.cli import main as cli_main
from tl_hub.depth import depth_info, depth_map
from tl_hub.errors import ConfigError
from tl_hub.freezing import apply_policy, is_frozen_module, param_groups
from tl_hub.policy import (
    FULL_MIN_PER_LABEL,
    FULL_MIN_TOTAL,
    HEAD_MAX_PER_LABEL,
    POLICIES,
    FreezePolicy,
    RecipePolicy,
    choose_policy,
    peak_learning_rate,
    plan_phases,
    resolve_policy,
    uses_feature_cache,
)

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
# choose_policy and FreezePolicy
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "examples, labels, expected",
    [
        (20, 10, "head"),
        (1_000, 10, "head"),  # 100 per label: the measured frozen-backbone win
        (HEAD_MAX_PER_LABEL * 10 - 10, 10, "head"),
        (HEAD_MAX_PER_LABEL * 10, 10, "partial"),
        (10_000, 10, "partial"),  # 1,000 per label: the measured re-train-last-stages win
        (FULL_MIN_PER_LABEL * 5, 5, "partial"),  # plenty per label but only 25k in total
        (FULL_MIN_PER_LABEL * 10, 10, "full"),
        (FULL_MIN_TOTAL * 20, 100, "full"),
    ],
)
def test_choose_policy_thresholds(examples, labels, expected):
    policy = choose_policy(examples, labels)
    assert policy.name == expected
    assert f"{examples:,}" in policy.reason and f"{labels} labels" in policy.reason
    assert "\n" not in policy.reason and len(policy.reason) > 100


def test_choose_policy_partial_trains_more_with_more_data():
    low = choose_policy(10_000, 10)
    mid = choose_policy(30_000, 10)
    assert low.train_fraction == 0.3 and 0.3 < mid.train_fraction <= 0.6
    with_depths = choose_policy(10_000, 10, num_depths=19)
    assert "19 depths" in with_depths.reason


@pytest.mark.parametrize("args", [(0, 10), (100, 1), (100.5, 10), (True, 3)])
def test_choose_policy_rejects_bad_sizes(args):
    with pytest.raises(ConfigError):
        choose_policy(*args)


def test_freeze_policy_construction_and_round_trip():
    assert FreezePolicy("partial").train_fraction == 0.3
    assert FreezePolicy("LP_FT").name == "lp-ft"
    policy = FreezePolicy("lp-ft", head_epochs_fraction=0.25, reason="because")
    data = json.loads(json.dumps(policy.to_dict()))
    assert FreezePolicy.from_dict(data) == policy
    assert not FreezePolicy("scratch").pretrained and FreezePolicy("full").pretrained
    with pytest.raises(ConfigError, match="choose one of"):
        FreezePolicy("freeze-some")
    with pytest.raises(ConfigError, match="partial' only"):
        FreezePolicy("head", train_fraction=0.5)
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        FreezePolicy("partial", train_fraction=0)
    with pytest.raises(ConfigError, match="unknown keys"):
        FreezePolicy.from_dict({"name": "head", "fraction": 1})


def test_one_list_of_policies_for_recipes_and_freeze_policies():
    import typing

    from tl_hub.config import RecipeConfig

    assert typing.get_args(RecipePolicy) == ("auto", *POLICIES)
    assert typing.get_type_hints(RecipeConfig)["policy"] == RecipePolicy
    for name in POLICIES:
        assert FreezePolicy(name).name == name


def test_resolve_policy_auto_and_requested():
    auto = resolve_policy("auto", num_examples=20_000, num_labels=10, train_fraction=0.5)
    assert auto.name == "partial" and auto.train_fraction == 0.5 and "per label" in auto.reason
    assert resolve_policy("auto", num_examples=1_000, num_labels=10, train_fraction=0.5).name == "head"
    requested = resolve_policy("lp-ft", num_examples=10, num_labels=2, head_epochs_fraction=0.25)
    assert requested.head_epochs_fraction == 0.25 and requested.reason == "set in the recipe (policy: lp-ft)"
    with pytest.raises(ConfigError, match="train_fraction: got 0.5 with policy 'full'"):
        resolve_policy("full", num_examples=10, num_labels=2, train_fraction=0.5)


def test_peak_learning_rate_by_policy_and_phase():
    assert peak_learning_rate("head") == 1e-3 and peak_learning_rate("scratch") == 1e-3
    assert peak_learning_rate("full") == 1e-4 and peak_learning_rate("partial") == 1e-4
    assert peak_learning_rate("lp-ft", "head") == 1e-3 and peak_learning_rate("lp-ft", "full") == 1e-4
    assert peak_learning_rate("head", None, 5e-5) == 5e-5
    with pytest.raises(ConfigError, match="resolved policy"):
        peak_learning_rate("auto")


@pytest.mark.parametrize("epochs, head, full", [(1, 1, 0), (2, 1, 1), (5, 2, 3), (10, 5, 5)])
def test_lp_ft_phase_plan(epochs, head, full):
    plan = plan_phases(FreezePolicy("lp-ft"), epochs)
    assert [(p.name, p.epochs, p.lp_ft_phase) for p in plan] == [("head", head, "head"), ("full", full, "full")]
    assert [p.learning_rate for p in plan] == [1e-3, 1e-4]
    single = plan_phases(FreezePolicy("partial"), epochs, learning_rate=3e-4)
    assert [(p.name, p.epochs, p.learning_rate, p.lp_ft_phase) for p in single] == [("partial", epochs, 3e-4, None)]


def test_feature_cache_rule():
    assert uses_feature_cache("head", "auto") and uses_feature_cache("head", "on")
    assert not uses_feature_cache("head", "off") and not uses_feature_cache("partial", "auto")
    assert not uses_feature_cache("auto", "on")  # decided again once auto has picked a policy
    for policy in ("partial", "full", "scratch", "lp-ft"):
        with pytest.raises(ConfigError, match=f"feature_cache: 'on' with policy '{policy}'"):
            uses_feature_cache(policy, "on")


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
    assert [g["depth"] for g in groups] == sorted(g["depth"] for g in groups)
    for g in groups:
        assert g["lr"] == pytest.approx(1e-3 * 0.5 ** (top - g["depth"]))
        for name, p in zip(g["param_names"], g["params"]):
            if p.ndim <= 1 or name.endswith(("cls_token", "pos_embed")):
                assert g["weight_decay"] == 0.0, name
            else:
                assert g["weight_decay"] == 0.05, name
    lrs = [g["lr"] for g in groups]
    assert lrs == sorted(lrs) and lrs[-1] == pytest.approx(1e-3)
    torch.optim.AdamW(groups)  # a real optimizer accepts them


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
# summary and `tl-hub policy`
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


def test_policy_command_without_and_with_model(tiny, capsys):
    assert cli_main(["policy", "--examples", "1000", "--labels", "10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("policy: head") and "100 per label" in out

    assert cli_main(["policy", "--examples", "20000", "--labels", "4", "--model", str(tiny("resnet"))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("policy: partial") and "| depth | kind | modules | params | status |" in out
    assert "stages.0.layers.0" in out and "classifier" in out

    assert cli_main(["policy", "--examples", "500", "--labels", "5", "--model", str(tiny("vit")), "--policy", "lp-ft"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("policy: lp-ft") and "was requested" in out and "phase 'head'" in out

    assert cli_main(["policy", "--examples", "10", "--labels", "1"]) == 2
    assert "at least 2 labels" in capsys.readouterr().err
