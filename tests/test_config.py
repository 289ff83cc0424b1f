"""RecipeConfig: YAML + overrides, type coercion, validation errors, round trip, help text."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest
import yaml

import tl_hub.config
from tl_hub.config import RecipeConfig, parse_overrides
from tl_hub.errors import ConfigError


def cfg(**kw):
    kw.setdefault("dataset", "beans")
    return RecipeConfig(**kw)


# --- defaults and required fields ----------------------------------------------------------------


def test_defaults_are_cpu_friendly_and_need_only_a_dataset():
    c = cfg()
    assert c.model == "bundled:efficientnet_lite0"
    assert c.policy == "auto" and c.image_size is None and c.mixed_precision is None
    assert c.hub_private is True and c.push_to_hub is False
    assert c.metrics == [] and c.log_with == []
    assert cfg().metrics is not c.metrics  # no shared mutable default


def test_dataset_is_required():
    with pytest.raises(ConfigError, match=r"dataset: missing.*--dataset"):
        RecipeConfig()


def test_every_field_has_a_one_line_help_and_group():
    for f in dataclasses.fields(RecipeConfig):
        text = f.metadata.get("help", "")
        assert text and "\n" not in text, f.name
        assert f.metadata.get("group"), f.name
    assert set(RecipeConfig.field_help()) == {f.name for f in dataclasses.fields(RecipeConfig)}


def test_issue_knobs_exist():
    names = {f.name for f in dataclasses.fields(RecipeConfig)}
    required = """model revision dataset dataset_config image_column label_column policy epochs batch_size
    learning_rate layer_decay weight_decay warmup_ratio gradient_accumulation_steps mixed_precision seed
    image_size output_dir checkpointing_steps resume_from_checkpoint early_stopping_patience
    metric_for_best_model log_with push_to_hub hub_model_id hub_private max_train_samples
    examples_per_label eval_split eval_fraction on_bad_image augment train_fraction lr_scheduler
    max_grad_norm save_total_limit feature_cache feature_cache_dir num_workers metrics trust_remote_code
    eval_batch_size skip_nonfinite_batches overwrite_output_dir""".split()
    assert set(required) <= names, set(required) - names


def test_no_environment_variable_defaults():
    source = inspect.getsource(tl_hub.config)
    assert "os.environ" not in source and "getenv" not in source and "import os" not in source


# --- unknown keys, secrets -------------------------------------------------------------------------


def test_unknown_key_lists_valid_keys_and_closest_match():
    with pytest.raises(ConfigError) as err:
        RecipeConfig.from_dict({"dataset": "beans", "learning_rat": 1e-3})
    msg = str(err.value)
    assert "'learning_rat'" in msg and "did you mean 'learning_rate'" in msg
    assert "Valid keys:" in msg and "warmup_ratio" in msg and "hub_private" in msg


def test_keys_from_other_tools_get_a_rename_hint():
    with pytest.raises(ConfigError, match=r"num_train_epochs.*tl_hub calls it 'epochs'"):
        RecipeConfig.from_dict({"dataset": "beans", "num_train_epochs": 3})
    with pytest.raises(ConfigError, match=r"report_to.*'log_with'"):
        RecipeConfig.from_args(["--dataset", "beans", "--report_to", "tensorboard"])


@pytest.mark.parametrize("key", ["token", "hub_token", "HF_TOKEN", "use_auth_token"])
def test_token_keys_are_refused_with_where_tokens_come_from(key):
    with pytest.raises(ConfigError) as err:
        RecipeConfig.from_dict({"dataset": "beans", key: "hf_abc"})
    assert "HF_TOKEN" in str(err.value) and "hf auth login" in str(err.value)


def test_token_like_values_are_refused():
    with pytest.raises(ConfigError, match="looks like an access token"):
        cfg(hub_model_id="hf_abcdefghijklmnopqrstuvwxyz0123")


def test_dashes_and_leading_dashes_in_keys():
    c = RecipeConfig.from_dict({"dataset": "beans", "batch-size": 8, "--epochs": 2})
    assert (c.batch_size, c.epochs) == (8, 2)
    with pytest.raises(ConfigError, match="batch_size: given twice"):
        RecipeConfig.from_dict({"dataset": "beans", "batch-size": 8, "batch_size": 16})


def test_command_line_wins_over_any_yaml_spelling(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("dataset: beans\nbatch-size: 8\n")
    assert RecipeConfig.from_yaml(path, ["--batch_size", "4"]).batch_size == 4


# --- overrides ---------------------------------------------------------------------------------------


def test_parse_overrides_all_forms():
    assert parse_overrides(
        ["--epochs", "3", "--lr_scheduler=linear", "seed=1", "--push_to_hub", "--learning_rate", "-1", "--augment"]
    ) == {
        "epochs": "3",
        "lr_scheduler": "linear",
        "seed": "1",
        "push_to_hub": "true",
        "learning_rate": "-1",
        "augment": "true",
    }
    assert parse_overrides(["--epochs", "3", "--epochs", "4"]) == {"epochs": "4"}  # last wins


def test_parse_overrides_rejects_stray_words():
    with pytest.raises(ConfigError, match=r"unexpected argument 'oops'.*--key value"):
        parse_overrides(["--epochs", "3", "oops"])
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        parse_overrides(["--epoch", "3"])


def test_from_args_with_and_without_config(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("dataset: beans\nepochs: 7\nbatch_size: 16\n")
    c = RecipeConfig.from_args(["--config", str(path), "--epochs", "2", "learning_rate=3e-4"])
    assert (c.epochs, c.batch_size, c.learning_rate) == (2, 16, 3e-4)
    c = RecipeConfig.from_args([f"--config={path}"])
    assert c.epochs == 7
    c = RecipeConfig.from_args(["--dataset", "./imgs", "--policy", "head"])
    assert (c.dataset, c.policy) == ("./imgs", "head")
    with pytest.raises(ConfigError, match="--config: missing"):
        RecipeConfig.from_args(["--config"])


def test_format_help_lists_every_field():
    out = RecipeConfig.format_help()
    for f in dataclasses.fields(RecipeConfig):
        assert f"--{f.name} " in out
        assert f.metadata["help"] in out
    assert "(default: bundled:efficientnet_lite0)" in out and "{auto,head,partial,full,scratch,lp-ft}" in out


# --- type coercion --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("epochs", "3", 3),
        ("epochs", "3.0", 3),
        ("learning_rate", "1e-4", 1e-4),
        ("learning_rate", "null", None),
        ("layer_decay", "1", 1.0),
        ("push_to_hub", "yes", True),
        ("push_to_hub", "No", False),
        ("push_to_hub", "1", True),
        ("push_to_hub", "off", False),
        ("augment", "false", False),
        ("image_size", "None", None),
        ("image_size", "112", 112),
        ("revision", "0123", "0123"),
        ("metrics", "matthews_correlation, ./m.py", ["matthews_correlation", "./m.py"]),
        ("metrics", "[a, b]", ["a", "b"]),
        ("metrics", "none", []),
        ("log_with", "tensorboard", ["tensorboard"]),
        ("policy", "LP-FT", "lp-ft"),
        ("mixed_precision", "BF16", "bf16"),
        ("mixed_precision", "none", None),
        ("checkpointing_steps", "500", 500),
        ("checkpointing_steps", "epoch", "epoch"),
        ("checkpointing_steps", "null", None),
        ("resume_from_checkpoint", "latest", "latest"),
    ],
)
def test_overrides_are_coerced_by_annotation(key, raw, expected):
    c = cfg().apply_overrides([f"--{key}", raw])
    assert getattr(c, key) == expected
    assert type(getattr(c, key)) is type(expected)


def test_yaml_scalars_keep_their_meaning(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("dataset: beans\nmixed_precision: no\nlabels: [1, 2, cat]\ndataset_config: 2019\nhub_private: no\n")
    c = RecipeConfig.from_yaml(path)
    assert c.mixed_precision == "no"  # YAML 1.1 reads a bare `no` as false
    assert c.labels == ["1", "2", "cat"] and c.dataset_config == "2019" and c.hub_private is False


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("epochs", "three", "epochs: expected an integer, got 'three'"),
        ("epochs", 2.5, "epochs: expected an integer, got 2.5"),
        ("batch_size", True, "batch_size: expected an integer, got True"),
        ("learning_rate", "fast", "learning_rate: expected a number (e.g. 1e-4), got 'fast'"),
        ("push_to_hub", "maybe", "push_to_hub: expected true or false"),
        ("policy", "heads", "policy: got 'heads'; choose one of auto, head, partial, full, scratch, lp-ft (did you mean 'head'?)"),
        ("mixed_precision", "fp32", "mixed_precision: got 'fp32'; choose one of no, bf16, fp16"),
        ("checkpointing_steps", "often", "checkpointing_steps: expected INT|{epoch}|null, got 'often'"),
        ("metrics", {"a": 1}, "metrics: expected a list"),
        ("model", None, "model: may not be null"),
        ("model", ["a"], "model: expected a string"),
        ("epochs", None, "epochs: may not be null"),
    ],
)
def test_wrong_types_name_key_and_value(key, value, needle):
    with pytest.raises(ConfigError) as err:
        RecipeConfig.from_dict({"dataset": "beans", key: value})
    assert needle in str(err.value)


# --- ranges and cross-field checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("eval_batch_size", 0),
        ("gradient_accumulation_steps", 0),
        ("learning_rate", 0.0),
        ("learning_rate", -1e-3),
        ("layer_decay", 0.0),
        ("layer_decay", 1.5),
        ("weight_decay", -0.1),
        ("warmup_ratio", 1.0),
        ("warmup_ratio", -0.1),
        ("max_grad_norm", 0.0),
        ("seed", -1),
        ("eval_fraction", 0.0),
        ("eval_fraction", 1.0),
        ("max_train_samples", 0),
        ("examples_per_label", 0),
        ("max_bad_fraction", 1.5),
        ("image_size", 8),
        ("num_workers", -1),
        ("train_fraction", 0.0),
        ("train_fraction", 1.1),
        ("head_epochs_fraction", 1.0),
        ("early_stopping_patience", 0),
        ("save_total_limit", 0),
        ("checkpointing_steps", 0),
    ],
)
def test_range_checks(key, value):
    with pytest.raises(ConfigError) as err:
        RecipeConfig.from_dict({"dataset": "beans", key: value})
    assert str(err.value).startswith(f"{key}: got {value!r}; must be in ")


def test_range_boundaries_that_are_allowed():
    c = cfg(layer_decay=1.0, warmup_ratio=0.0, weight_decay=0.0, train_fraction=1.0, max_bad_fraction=0.0)
    assert c.layer_decay == 1.0


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="train_fraction.*policy 'head'"):
        cfg(policy="head", train_fraction=0.5)
    assert cfg(policy="partial", train_fraction=0.5).train_fraction == 0.5
    with pytest.raises(ConfigError, match="head_epochs_fraction.*policy 'full'"):
        cfg(policy="full", head_epochs_fraction=0.2)
    with pytest.raises(ConfigError, match="feature_cache: 'on' with policy 'full'"):
        cfg(policy="full", feature_cache="on")
    assert cfg(policy="head", feature_cache="on").feature_cache == "on"
    with pytest.raises(ConfigError, match="hub_model_id: got 'a/b/c'"):
        cfg(hub_model_id="a/b/c")
    assert cfg(hub_model_id="me/vit-beans").hub_model_id == "me/vit-beans"


def test_metric_for_best_model():
    assert cfg(metric_for_best_model="eval_f1_macro").metric_for_best_model == "f1_macro"
    with pytest.raises(ConfigError, match=r"metric_for_best_model: got 'acuracy'.*did you mean 'accuracy'"):
        cfg(metric_for_best_model="acuracy")
    # a key an extra metric provides is accepted (checked when the metric runs)
    assert cfg(metrics=["matthews_correlation"], metric_for_best_model="matthews_correlation")


def test_policy_knob_rules_are_the_policy_modules():
    """A recipe and a FreezePolicy refuse the same knob with the same message (one rule, in tl_hub.policy)."""
    from tl_hub.policy import FreezePolicy

    with pytest.raises(ConfigError) as from_recipe:
        cfg(policy="lp-ft", train_fraction=0.5)
    with pytest.raises(ConfigError) as from_policy:
        FreezePolicy("lp-ft", train_fraction=0.5)
    assert str(from_recipe.value) == str(from_policy.value)
    with pytest.raises(ConfigError, match="feature_cache: 'on' with policy 'scratch'"):
        cfg(policy="scratch", feature_cache="on")
    assert cfg(policy="lp-ft", feature_cache="on").feature_cache == "on"  # its head phase trains on features
    assert cfg(policy="auto", feature_cache="on").feature_cache == "on"  # decided once auto has picked


# --- replace, dict and YAML round trips -----------------------------------------------------------------


def test_replace_validates_and_reports_unknown_keys():
    c = cfg()
    assert c.replace(epochs=2, policy="head").epochs == 2
    assert c.epochs == 5  # original unchanged
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        c.replace(epoch=2)
    with pytest.raises(ConfigError, match="epochs: got 0"):
        c.replace(epochs=0)


def _non_default_config() -> RecipeConfig:
    return RecipeConfig(
        model="org/model-x",
        revision="abc123",
        dataset="org/data",
        dataset_config="full",
        labels=["cat", "dog", "yes", "1", "a: b"],
        image_column="img",
        label_column="fine_label",
        max_train_samples=1000,
        on_bad_image="error",
        image_size=96,
        augment=False,
        num_workers=0,
        policy="lp-ft",
        head_epochs_fraction=0.25,
        feature_cache="off",
        feature_cache_dir="/tmp/features",
        epochs=3,
        batch_size=8,
        eval_batch_size=64,
        gradient_accumulation_steps=4,
        learning_rate=3e-5,
        layer_decay=0.65,
        weight_decay=0.0,
        lr_scheduler="linear",
        warmup_ratio=0.0,
        max_grad_norm=None,
        skip_nonfinite_batches=False,
        seed=7,
        mixed_precision="no",
        metric_for_best_model="f1_macro",
        metrics=["matthews_correlation"],
        early_stopping_patience=2,
        checkpointing_steps=250,
        save_total_limit=None,
        resume_from_checkpoint="latest",
        log_with=["tensorboard", "wandb"],
        output_dir="out/run 1",
        overwrite_output_dir=True,
        push_to_hub=True,
        hub_model_id="me/model",
        hub_private=False,
    )


def test_yaml_round_trip(tmp_path):
    for original in (cfg(), _non_default_config()):
        path = tmp_path / "recipe.yaml"
        text = original.to_yaml(path, header="resolved recipe\nreproduce: tl-hub train recipe.yaml")
        assert RecipeConfig.from_yaml(path) == original
        assert RecipeConfig.from_dict(original.to_dict()) == original
        assert text.startswith("# resolved recipe\n# reproduce: tl-hub train recipe.yaml")
        # every key is preceded by its help comment
        lines = text.splitlines()
        for name, help_text in RecipeConfig.field_help().items():
            idx = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
            assert lines[idx - 1] == f"# {help_text}"
        assert yaml.safe_load(text) == original.to_dict()


def test_saved_recipe_holds_no_token(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SENTINELsentinelSENTINEL000")
    text = _non_default_config().to_yaml(tmp_path / "r.yaml")
    assert "SENTINEL" not in text and "token" not in text.lower()


# --- YAML errors --------------------------------------------------------------------------------------


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        RecipeConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [beans\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RecipeConfig.from_yaml(bad)
    seq = tmp_path / "seq.yaml"
    seq.write_text("- dataset\n- beans\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        RecipeConfig.from_yaml(seq)
    dup = tmp_path / "dup.yaml"
    dup.write_text("dataset: beans\nepochs: 3\nepochs: 4\n")
    with pytest.raises(ConfigError, match=r"key 'epochs' appears twice \(line 3\)"):
        RecipeConfig.from_yaml(dup)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    assert RecipeConfig.from_yaml(empty, ["--dataset", "beans"]).dataset == "beans"


def test_importing_config_does_not_import_heavy_libraries():
    code = "import sys, tl_hub.config, tl_hub.metrics; print(sorted({'torch', 'evaluate', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_train_help_lists_every_recipe_key(capsys):
    from tl_hub.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(f"--{name} " in out for name in RecipeConfig.field_help())
