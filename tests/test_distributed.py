"""Launches tl_hub refuses at start (DeepSpeed, FSDP2, FSDP without use_orig_params), read from the state accelerate
exposes (no deepspeed package needed), and the shared-output_dir check of a multi-machine run: 2 real processes
started as 2 "machines" by two `torchrun --nnodes 2` commands on this host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from helpers.images import write_image_folder
from helpers.ports import free_port
from helpers.tiny_models import tiny_checkpoint
from tl_hub.distributed import check_launch
from tl_hub.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _fake(distributed_type: str, **plugin) -> SimpleNamespace:
    from accelerate.utils import DistributedType

    state = SimpleNamespace(fsdp_plugin=SimpleNamespace(**{"fsdp_version": 1, "use_orig_params": True, **plugin}))
    return SimpleNamespace(distributed_type=getattr(DistributedType, distributed_type), state=state)


def test_a_deepspeed_launch_stops_at_start_naming_the_configs_to_use(monkeypatch):
    """What `accelerate launch` with a DeepSpeed config sets (ACCELERATE_USE_DEEPSPEED) stops tl_hub's accelerator
    before accelerate looks for the deepspeed package; an accelerator in DEEPSPEED mode is refused too."""
    from tl_hub.hardware import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match=r"DEEPSPEED is not supported.*fsdp\.yaml.*ddp\.yaml"):
        make_accelerator("no")
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    with pytest.raises(ConfigError, match=r"DEEPSPEED is not supported.*accelerate_configs/fsdp\.yaml"):
        check_launch(_fake("DEEPSPEED"))
    assert not (ROOT / "recipes" / "accelerate_configs" / "deepspeed_zero2.yaml").exists()


def test_fsdp2_and_fsdp_without_orig_params_are_refused():
    with pytest.raises(ConfigError, match="fsdp_version 2 is not supported.*fsdp_version: 1"):
        check_launch(_fake("FSDP", fsdp_version=2))
    with pytest.raises(ConfigError, match="fsdp_use_orig_params is false.*fsdp_use_orig_params: true"):
        check_launch(_fake("FSDP", use_orig_params=False))
    check_launch(_fake("FSDP"))
    check_launch(_fake("MULTI_CPU"))


@pytest.fixture(scope="module")
def two_machine_recipe(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("nodes")
    data = write_image_folder(tmp / "imgs", ["red", "green", "blue"], per_label=6, seed=0)
    recipe = {"model": str(tiny_checkpoint("vit", tmp / "vit")), "dataset": str(data), "image_size": 32,
              "policy": "partial", "epochs": 1, "batch_size": 4, "eval_fraction": 1 / 3, "seed": 0,
              "num_workers": 0, "checkpointing_steps": 2, "feature_cache": "off"}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _two_machines(recipe: Path, out: list[Path]) -> list[subprocess.CompletedProcess]:
    """`torchrun --nnodes 2 --node_rank k --nproc_per_node 1` twice on this host: 2 processes, each the first (local
    main) process of its "machine", each given its own output_dir."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(k), "--nproc_per_node", "1",
         "--master_addr", "127.0.0.1", "--master_port", str(port), "recipes/finetune.py", "--config", str(recipe),
         "--output_dir", str(out[k])], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for k in range(2)]
    results = []
    for proc in procs:
        text, _ = proc.communicate(timeout=400)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, text, ""))
    return results


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_machines_without_a_shared_output_dir_stop_at_start(two_machine_recipe, tmp_path):
    """Each "machine" writes to a folder the other does not see: both stop before training, saying that output_dir
    must be shared; nothing but the probe's folder is left behind."""
    runs = _two_machines(two_machine_recipe, [tmp_path / "machine0", tmp_path / "machine1"])
    for run in runs:
        assert run.returncode != 0, run.stdout[-3000:]
    joined = runs[0].stdout + runs[1].stdout
    assert "is not shared by every machine of this run (1 machine(s)" in joined, joined[-4000:]
    assert "put output_dir on a filesystem every machine mounts" in joined
    assert "epoch 1/1" not in joined
    assert not (tmp_path / "machine0" / "checkpoints").exists() and not (tmp_path / "machine1").exists()


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_machines_sharing_output_dir_train(two_machine_recipe, tmp_path):
    runs = _two_machines(two_machine_recipe, [tmp_path / "shared", tmp_path / "shared"])
    for run in runs:
        assert run.returncode == 0, run.stdout[-4000:]
    assert (tmp_path / "shared" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "shared" / "run_info.json").read_text())["num_processes"] == 2
    assert not (tmp_path / "shared" / ".tl_hub-shared-probe").exists()
