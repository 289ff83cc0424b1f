"""Freeze policies decided: choose_policy's thresholds and reasons, FreezePolicy and its knobs, one list of
policies, what a run uses (resolve_policy, peak_learning_rate, plan_phases, uses_feature_cache), and
`tl-hub policy`. Applying a policy to a model is tests/test_freezing.py."""

from __future__ import annotations

import json

import pytest

from tl_hub.cli import main as cli_main
from tl_hub.errors import ConfigError
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
    assert uses_feature_cache("lp-ft", "auto") and uses_feature_cache("lp-ft", "on")  # its head phase
    assert not uses_feature_cache("lp-ft", "off")
    for policy in ("partial", "full", "scratch"):
        with pytest.raises(ConfigError, match=f"feature_cache: 'on' with policy '{policy}'"):
            uses_feature_cache(policy, "on")


# ---------------------------------------------------------------------------------------------------
# `tl-hub policy`
# ---------------------------------------------------------------------------------------------------


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
