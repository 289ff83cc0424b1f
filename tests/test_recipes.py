"""recipes/: every config parses, accelerate configs load with accelerate's loader, finetune.py is thin and wired."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from tl_hub.config import RecipeConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
CONFIGS = sorted((RECIPES / "configs").glob("*.yaml"))
ACCEL = RECIPES / "accelerate_configs"


def _load_script():
    spec = importlib.util.spec_from_file_location("recipes_finetune", RECIPES / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- recipe configs -------------------------------------------------------------------------------------


def test_the_expected_recipes_exist():
    by_model = {RecipeConfig.from_yaml(p).model: RecipeConfig.from_yaml(p).dataset for p in CONFIGS}
    assert by_model["bundled:efficientnet_lite0"] == "bundled:fashion_mnist"
    assert by_model["google/vit-base-patch16-224-in21k"].endswith("beans")
    assert by_model["facebook/convnext-tiny-224"].endswith("food101")
    assert by_model["microsoft/resnet-50"].endswith("cifar10")
    assert by_model["facebook/dinov2-small"] == "timm/oxford-iiit-pet"
    assert any(model.startswith("timm/") and "eurosat" in data.lower() for model, data in by_model.items())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_and_documents_itself(path):
    config = RecipeConfig.from_yaml(path)
    text = path.read_text()
    # the header shows the exact command that runs this very file
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    rel = path.relative_to(ROOT).as_posix()
    assert re.search(rf"(python|accelerate launch)[^\n]* recipes/finetune\.py --config {re.escape(rel)}\b", header), header
    # every knob carries a one-line comment
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.match(r"^\w+: .*\S\s+# \S", line), f"{path.name}: knob without a comment: {line!r}"
    # the YAML sets only real keys (from_yaml would have raised) and nothing secret
    assert not ({"token", "hub_token"} & set(yaml.safe_load(text)))
    assert config.output_dir.startswith("tl_hub_output/")


def test_quickstart_recipe():
    c = RecipeConfig.from_yaml(RECIPES / "configs" / "quickstart.yaml")
    assert (c.model, c.dataset, c.policy, c.image_size) == (
        "bundled:efficientnet_lite0",
        "bundled:fashion_mnist",
        "auto",
        112,
    )
    assert c.output_dir == "tl_hub_output/quickstart" and 1 <= c.epochs <= 20 and not c.push_to_hub


# --- accelerate configs -----------------------------------------------------------------------------------


EXPECTED = {
    "cpu.yaml": ("NO", True, 1),
    "single_gpu.yaml": ("NO", False, 1),
    "ddp.yaml": ("MULTI_GPU", False, None),
    "fsdp.yaml": ("FSDP", False, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_configs_load_with_accelerates_loader(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    path = ACCEL / name
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    dist, use_cpu, procs = EXPECTED[name]
    assert config.distributed_type.value == dist
    assert config.use_cpu is use_cpu
    assert config.num_machines == 1 and config.compute_environment.value == "LOCAL_MACHINE"
    if procs is not None:
        assert config.num_processes == procs
    else:
        assert config.num_processes > 1
    assert config.mixed_precision in ("no", "bf16")
    assert path.read_text().startswith("#")  # a comment with the command to use it
    assert "recipes/finetune.py" in path.read_text()


def test_fsdp_config_keeps_original_params_through_the_launcher():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    config = load_config_from_file(str(ACCEL / "fsdp.yaml"))
    assert config.fsdp_config["fsdp_use_orig_params"] is True
    assert "use_orig_params" in (ACCEL / "fsdp.yaml").read_text().split("compute_environment")[0]  # explained
    args = launch_command_parser().parse_args(["--config_file", str(ACCEL / "fsdp.yaml"), "train.py"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_USE_ORIG_PARAMS"] == "true"


def test_there_is_no_deepspeed_config():
    """DeepSpeed is refused at start (tests/test_distributed.py); no launch config offers it."""
    assert sorted(p.name for p in ACCEL.glob("*.yaml")) == sorted(EXPECTED)
    assert not [p for p in ACCEL.glob("*.yaml") if "deepspeed" in p.read_text().lower()]


# --- finetune.py ------------------------------------------------------------------------------------------


def test_script_is_thin_and_documents_the_three_launch_commands():
    source = (RECIPES / "finetune.py").read_text()
    assert len(source.splitlines()) < 80
    doc = _load_script().__doc__
    assert "python recipes/finetune.py --config recipes/configs/" in doc
    assert "accelerate launch recipes/finetune.py --config recipes/configs/" in doc
    assert "accelerate launch --config_file recipes/accelerate_configs/" in doc
    assert "--num_cpu_threads_per_process" in doc
    for ref in re.findall(r"recipes/[\w/]+\.yaml", doc):  # every file the docstring names exists
        assert (ROOT / ref).is_file(), ref


def test_main_calls_tl_hub_finetune_with_the_parsed_config(monkeypatch):
    calls = []
    fake = types.ModuleType("tl_hub.finetuning")
    fake.finetune = calls.append
    monkeypatch.setitem(sys.modules, "tl_hub.finetuning", fake)
    quick = str(RECIPES / "configs" / "quickstart.yaml")
    assert _load_script().main(["--config", quick, "--epochs", "2", "seed=3"]) == 0
    assert calls == [RecipeConfig.from_yaml(quick).replace(epochs=2, seed=3)]


def test_main_reports_config_errors_without_traceback(capsys):
    script = _load_script()
    quick = str(RECIPES / "configs" / "quickstart.yaml")
    assert script.main(["--config", quick, "--epocs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("finetune.py: error: unknown key 'epocs' (did you mean 'epochs'?)")
    assert script.main(["--config", "no/such.yaml"]) == 2
    assert "not found" in capsys.readouterr().err


def test_script_runs_as_a_file_with_help():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "recipes/finetune.py", "--help"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for name, help_text in RecipeConfig.field_help().items():  # every key, with its help
        assert f"--{name} " in out.stdout and help_text in out.stdout


def test_script_runs_under_accelerate_launch():
    """The script starts under `accelerate launch` with a config file and parses its recipe there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", "recipes/accelerate_configs/cpu.yaml", "--num_cpu_threads_per_process", "1",
        "recipes/finetune.py", "--config", "recipes/configs/quickstart.yaml", "--epochs", "0",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0
    assert "finetune.py: error: epochs: got 0; must be in [1, inf]" in out.stderr


def test_recipes_readme_is_in_sync():
    text = (RECIPES / "README.md").read_text()
    assert text.rstrip().endswith(RecipeConfig.format_markdown())  # the generated key table is current
    for path in CONFIGS:
        assert f"`configs/{path.name}`" in text, path.name
    for path in sorted(ACCEL.glob("*.yaml")):
        assert f"| `{path.name}` |" in text, path.name
    for ref in re.findall(r"recipes/[\w/]+\.(?:yaml|py)", text):
        assert (ROOT / ref).is_file(), ref


def test_quickstart_config_is_the_recipe_file_and_ships_in_the_wheel():
    import tomllib

    from tl_hub.config import quickstart_config, quickstart_path

    assert quickstart_path().resolve() == (RECIPES / "configs" / "quickstart.yaml").resolve()
    assert quickstart_config() == RecipeConfig.from_yaml(RECIPES / "configs" / "quickstart.yaml")
    c = quickstart_config(["--epochs", "2"], output_dir="elsewhere")
    assert (c.epochs, c.output_dir) == (2, "elsewhere")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include["recipes/configs/quickstart.yaml"] == "tl_hub/recipes/quickstart.yaml"
