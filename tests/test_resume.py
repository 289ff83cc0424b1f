"""Exact resume (issue 6): SIGKILL a real `finetune` process, resume with `resume_from_checkpoint: latest`,
and compare with an uninterrupted run of the same recipe, bit for bit.

Each run is a subprocess (CPU, 1 thread, tiny ViT, 16 px images) running `tl_hub.finetuning.finetune`
through a small driver that only *observes* and *kills*:
- an optimizer step post-hook logs, per optimizer step, the learning rate of every param group and
  the sample indices of the micro-batches that went into that step (read from the batches the loop
  feeds the model);
- kill points: SIGKILL right after optimizer step K (before its checkpoint), or SIGKILL in the middle
  of writing a file of the N-th checkpoint (half the bytes on disk, in the temporary folder).

Compared with the uninterrupted run: the final weights and the last checkpoint's optimizer and
scheduler files (byte-identical safetensors/JSON), the best model (output model.safetensors), the
LR trajectory and the sequence of sample indices per step (the killed run's log up to the step of the
checkpoint resumed from, then the resumed run's log), and the epoch history (timings excluded).
The kill step is drawn at random (seed printed on failure; set TL_HUB_RESUME_SEED to replay).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.images import write_tinted_folder
from helpers.ports import free_port as _free_port

pytest.importorskip("tl_hub.finetuning", reason="tl_hub.finetune (TRAIN helper) not available yet")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]

SEED = int(os.environ.get("TL_HUB_RESUME_SEED", time.time_ns() % 1_000_000))
RNG = random.Random(SEED)

DRIVER = r'''
import json, os, signal, sys
import torch

torch.set_num_threads(1)
log_path = os.environ["RESUME_LOG"] + f".rank{os.environ.get('RANK', '0')}"
kill_at = int(os.environ.get("KILL_AT_STEP", "0"))            # global optimizer step
step = int(os.environ.get("START_STEP", "0"))
kill_save = int(os.environ.get("KILL_IN_SAVE", "0"))          # n-th checkpoint save of this process
kill_file = os.environ.get("KILL_FILE", "scheduler.json")
only_rank0 = os.environ.get("RANK", "0") == "0"
pending = []
log = open(log_path, "a", buffering=1)

import tl_hub.train as train_mod
import tl_hub.checkpoint as ckpt_mod

real_forward = train_mod.forward_logits
def forward_logits(model, batch, channels_last=False):
    if model.training:
        pending.append([int(i) for i in batch["index"].tolist()])
    return real_forward(model, batch, channels_last)
train_mod.forward_logits = forward_logits

def post_step(optimizer, args, kwargs):
    global step
    if not pending:  # no training forward since the last step: not a training step. (FSDP resume: torch's
        return       # set_optimizer_state_dict makes the optimizer state with a step of zero gradients at lr 0)
    step += 1
    log.write(json.dumps({"step": step, "lr": [g["lr"] for g in optimizer.param_groups], "batches": pending}) + "\n")
    pending.clear()
    if kill_at and step == kill_at and only_rank0:
        os.kill(os.getpid(), signal.SIGKILL)
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(post_step)

saves = 0
real_save = ckpt_mod.save_checkpoint
def save_checkpoint(*a, **kw):
    global saves
    saves += 1
    return real_save(*a, **kw)
ckpt_mod.save_checkpoint = save_checkpoint

real_write_json = ckpt_mod._write_json
real_write_tensors = ckpt_mod._write_tensors
def _half_then_die(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
def write_json(path, data):
    real_write_json(path, data)
    if kill_save and saves == kill_save and path.name == kill_file:
        _half_then_die(path)
def write_tensors(path, tensors, metadata=None):
    real_write_tensors(path, tensors, metadata)
    if kill_save and saves == kill_save and path.name == kill_file:
        _half_then_die(path)
ckpt_mod._write_json = write_json
ckpt_mod._write_tensors = write_tensors

from tl_hub.finetuning import finetune
finetune(json.loads(sys.argv[1]))
'''


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A tiny ViT checkpoint and a 3-class folder of 16 px images (27 files)."""
    from helpers.tiny_models import tiny_checkpoint

    root = tmp_path_factory.mktemp("resume_assets")
    model = tiny_checkpoint("vit", root / "tiny_vit")
    data = root / "data"
    rng = np.random.default_rng(0)
    write_tinted_folder(data, {"red": 9, "green": 9, "blue": 9}, rng)
    uneven = root / "uneven"  # 16 + 4 + 4 images: after the stratified 25 % eval split, 12 / 3 / 3 to train
    write_tinted_folder(uneven, {"red": 16, "green": 4, "blue": 4}, rng)
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    return {"model": model, "data": data, "uneven": uneven, "driver": driver}


def recipe(assets: dict[str, Path], out: Path, **kw) -> dict:
    base = dict(model=str(assets["model"]), dataset=str(assets["data"]), output_dir=str(out), epochs=3,
                batch_size=4, eval_fraction=0.25, image_size=None, num_workers=0, seed=3, policy="full",
                learning_rate=1e-3, warmup_ratio=0.2, lr_scheduler="cosine", checkpointing_steps=2,
                save_total_limit=2, resume_from_checkpoint="latest", feature_cache="off", augment=True,
                mixed_precision="no")
    base.update(kw)
    return base


def launch(assets, config: dict, log: Path, *, procs: int = 1, accelerate_config: Path | None = None,
           **env: str) -> subprocess.Popen:
    """One run of the driver: 1 process, or `procs` processes through `accelerate launch` (plain multi-CPU, or
    the launch config `accelerate_config`, e.g. an FSDP one)."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "RESUME_LOG": str(log), "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])), **env}
    if procs == 1:
        cmd = [sys.executable, str(assets["driver"]), json.dumps(config)]
    elif accelerate_config is not None:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
               "--num_processes", str(procs), "--num_cpu_threads_per_process", "1",
               "--main_process_port", str(_free_port()), str(assets["driver"]), json.dumps(config)]
    else:
        environ["ACCELERATE_USE_CPU"] = "1"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(procs),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(assets["driver"]), json.dumps(config)]
    return subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, *, killed: bool) -> str:
    out, _ = proc.communicate(timeout=400)
    if killed:
        assert proc.returncode != 0, f"the run was supposed to be killed but finished:\n{out[-3000:]}"
    else:
        assert proc.returncode == 0, f"run failed ({proc.returncode}):\n{out[-4000:]}"
    return out


def read_log(log: Path, rank: int = 0) -> list[dict]:
    path = Path(f"{log}.rank{rank}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def latest_step(out: Path) -> int:
    from tl_hub import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(out / "checkpoints")
    return 0 if latest is None else int(ckpt.read_state(latest)["global_step"])


def assert_identical(reference: Path, resumed: Path, ref_log: list[dict], chain_log: list[dict], what: str) -> None:
    from tl_hub import checkpoint as ckpt

    msg = f"{what} (TL_HUB_RESUME_SEED={SEED})"
    assert [r["step"] for r in chain_log] == [r["step"] for r in ref_log], f"{msg}: steps differ"
    assert [r["batches"] for r in chain_log] == [r["batches"] for r in ref_log], f"{msg}: sample order differs"
    assert [r["lr"] for r in chain_log] == [r["lr"] for r in ref_log], f"{msg}: LR trajectory differs"
    last_ref, last_res = ckpt.latest_checkpoint(reference / "checkpoints"), ckpt.latest_checkpoint(resumed / "checkpoints")
    assert last_ref.name == last_res.name, msg
    names = ["model.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json"]
    names += [n for n in ("ema.safetensors",) if (last_ref / n).is_file() or (last_res / n).is_file()]
    for name in names:
        assert (last_ref / name).read_bytes() == (last_res / name).read_bytes(), f"{msg}: final {name} differs"
    assert (reference / "model.safetensors").read_bytes() == (resumed / "model.safetensors").read_bytes(), \
        f"{msg}: the best model differs"
    strip = {"images_per_second", "epoch_time_s"}
    hist = [json.loads((d / "metrics.json").read_text())["epochs"] for d in (reference, resumed)]
    assert [{k: v for k, v in r.items() if k not in strip} for r in hist[0]] == \
        [{k: v for k, v in r.items() if k not in strip} for r in hist[1]], f"{msg}: epoch history differs"


def run_chain(assets, tmp: Path, name: str, config_kw: dict, kills: list[dict], procs: int = 1,
              accelerate_config: Path | None = None) -> None:
    """Uninterrupted reference run || a chain of killed runs, each resumed with `latest`; compare."""
    ref_out, out = tmp / f"{name}-ref", tmp / f"{name}-chain"
    ref_log, log = tmp / f"{name}-ref.jsonl", tmp / f"{name}-chain"
    launch_kw = {"procs": procs, "accelerate_config": accelerate_config}
    reference = launch(assets, recipe(assets, ref_out, **config_kw), ref_log, **launch_kw)
    chain: list[dict] = []
    start = 0
    for i, kill in enumerate(kills):
        run_log = Path(f"{log}-{i}.jsonl")
        proc = launch(assets, recipe(assets, out, **config_kw), run_log, **launch_kw, START_STEP=str(start),
                      **{k: str(v) for k, v in kill.items()})
        text = finish(proc, killed=True)
        steps = read_log(run_log)
        assert steps and (not kill.get("KILL_AT_STEP") or steps[-1]["step"] == kill["KILL_AT_STEP"]), text[-3000:]
        if kill.get("KILL_IN_SAVE"):
            tmp_dirs = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
            assert tmp_dirs, "the kill did not happen inside a checkpoint write"
        resumed_from = latest_step(out)
        chain = [r for r in chain if r["step"] <= start] + [r for r in steps if r["step"] <= resumed_from]
        start = resumed_from
    final_log = Path(f"{log}-final.jsonl")
    text = finish(launch(assets, recipe(assets, out, **config_kw), final_log, **launch_kw, START_STEP=str(start)),
                  killed=False)
    assert f"global step {start}" in text or start == 0, text[-3000:]
    chain += read_log(final_log)
    finish(reference, killed=False)
    assert_identical(ref_out, out, read_log(ref_log), chain, name)
    if procs > 1:  # the other rank saw the same number of steps with its own halves of each batch
        other = read_log(ref_log, 1)
        assert len(other) == len(read_log(ref_log))


# batches/epoch = 5 (20 train images, batch 4); checkpoints every 2 optimizer steps and at epoch ends
def test_resume_kill_mid_checkpoint_write_then_mid_epoch_with_accumulation(assets, tmp_path):
    """GA=2: 3 optimizer steps/epoch (the last of a single batch); checkpoints at steps 2, 3, 4, 6, 8, 9.

    Kill 1: SIGKILL halfway through writing the 2nd checkpoint's scheduler.json (its temporary folder
    stays behind) -> `latest` resumes from step 2 (mid-epoch 1). Kill 2: SIGKILL right after step 5 or
    9 of epoch 2/3 -> resumes mid-epoch from step 4 or 8. Kill 3: halfway through the next checkpoint's
    optimizer.safetensors. The chain must equal the uninterrupted run bit for bit.
    """
    kill_step = RNG.choice([5, 9])
    run_chain(assets, tmp_path, "ga2", {"gradient_accumulation_steps": 2},
              [{"KILL_IN_SAVE": 2, "KILL_FILE": "scheduler.json"}, {"KILL_AT_STEP": kill_step},
               {"KILL_IN_SAVE": 1, "KILL_FILE": "optimizer.safetensors"}])


def test_resume_frozen_feature_path(assets, tmp_path):
    kill_step = RNG.randint(6, 13)
    run_chain(assets, tmp_path, "features", {"policy": "head", "feature_cache": "on"}, [{"KILL_AT_STEP": kill_step}])


def test_resume_lp_ft_across_the_phase_change(assets, tmp_path):
    """lp-ft: 1 head epoch (steps 1-5), then 2 full epochs whose optimizer has more param groups.

    Kill 1 right after step 6 -> resumes from the phase-change checkpoint (step 5: head-phase optimizer,
    full phase next). Kill 2 at step 7 or 9 -> resumes from step 6 or 8, restoring the full phase's
    optimizer and scheduler.
    """
    run_chain(assets, tmp_path, "lpft", {"policy": "lp-ft", "head_epochs_fraction": 0.34},
              [{"KILL_AT_STEP": 6}, {"KILL_AT_STEP": RNG.choice([7, 9])}])


def test_resume_lp_ft_whose_head_phase_trains_on_features(assets, tmp_path):
    """lp-ft with the feature cache: the head phase trains on features computed once, the full phase on
    images. Kill 1 in the full phase's first epoch resumes from the phase-change checkpoint; kill 2 later."""
    run_chain(assets, tmp_path, "lpft-features", {"policy": "lp-ft", "head_epochs_fraction": 0.34,
                                                  "feature_cache": "auto"},
              [{"KILL_AT_STEP": 6}, {"KILL_AT_STEP": RNG.choice([7, 9])}])


def test_resume_by_running_the_same_command_again(assets, tmp_path):
    """The default `resume_from_checkpoint: auto` (null in JSON): after a SIGKILL mid-epoch the unchanged command
    resumes the unfinished run from its newest checkpoint, bit for bit."""
    run_chain(assets, tmp_path, "auto", {"resume_from_checkpoint": None}, [{"KILL_AT_STEP": RNG.randint(3, 12)}])


@pytest.mark.parametrize("regulariser", [
    {"label_smoothing": 0.1},
    {"mixup_alpha": 0.4, "cutmix_alpha": 1.0},  # one of the two per batch: both draws must replay
    {"ema_decay": 0.8},  # the EMA (ema.safetensors) is compared too, and the best model is the EMA's
    {"gradient_checkpointing": True},
], ids=["label_smoothing", "mixup_cutmix", "ema", "gradient_checkpointing"])
def test_resume_with_each_regulariser(assets, tmp_path, regulariser):
    """[6/7]: each regulariser on, SIGKILL mid-epoch, resume: bit-identical to the uninterrupted run."""
    run_chain(assets, tmp_path, "reg", regulariser, [{"KILL_AT_STEP": RNG.choice([3, 7, 11])}])


@pytest.mark.multiprocess
def test_resume_two_cpu_processes(assets, tmp_path):
    """2 real processes (gloo), global batch 4 split 2+2: killed (rank 0 SIGKILLed, the launcher stops
    rank 1) and resumed on 2 processes: identical to the uninterrupted 2-process run."""
    kill_step = RNG.randint(3, 8)
    run_chain(assets, tmp_path, "ddp", {}, [{"KILL_AT_STEP": kill_step}], procs=2)


def test_resume_with_a_held_out_test_split(assets, tmp_path):
    """A train + test source: eval is a stratified carve-out of train (a pure function of the seed) and the test
    split is evaluated once, at the end; a killed and resumed run equals the uninterrupted one, test included."""
    data = tmp_path / "split"
    rng = np.random.default_rng(1)
    for side, per_label in (("train", 9), ("test", 4)):
        write_tinted_folder(data / side, dict.fromkeys(["red", "green", "blue"], per_label), rng)
    run_chain(assets, tmp_path, "test-split", {"dataset": str(data)}, [{"KILL_AT_STEP": RNG.randint(3, 13)}])
    ref, chain = (json.loads((tmp_path / f"test-split-{w}" / "metrics.json").read_text()) for w in ("ref", "chain"))
    assert chain["test"] == ref["test"] and ref["test"]["split"] == "test" and ref["test"]["num_examples"] == 12
    assert chain["final"] == ref["final"] and ref["num_eval_examples"] == 6  # a 0.25 carve-out of train's 27


# class imbalance (issue [6/7]): the uneven folder trains on 12 / 3 / 3 images (ratio 4 > 3: auto weights on)
def _imbalance_facts(out: Path, log: Path) -> tuple[dict, list[list[int]]]:
    """run_info.json's "imbalance" and the sample indices of each epoch (from the reference run's step log)."""
    info = json.loads((out / "run_info.json").read_text())["imbalance"]
    batches = [i for r in read_log(log) for batch in r["batches"] for i in batch]
    return info, [batches[e * 18:(e + 1) * 18] for e in range(len(batches) // 18)]


def test_resume_with_auto_class_weights(assets, tmp_path):
    """class_weights: auto on uneven labels weights the loss (inverse frequency), and a run killed mid-epoch
    resumes bit for bit; the checkpoint's fingerprint holds the weights."""
    run_chain(assets, tmp_path, "weights", {"dataset": str(assets["uneven"]), "class_weights": "auto"},
              [{"KILL_AT_STEP": RNG.randint(3, 12)}])
    info, _ = _imbalance_facts(tmp_path / "weights-ref", tmp_path / "weights-ref.jsonl")
    assert info["ratio"] == 4.0 and info["class_weights"] == {"blue": 2.0, "green": 2.0, "red": 0.5}, info
    from tl_hub import checkpoint as ckpt

    state = ckpt.read_state(ckpt.latest_checkpoint(tmp_path / "weights-chain" / "checkpoints"))
    assert state["fingerprint"]["loss"]["class_weights"] == [2.0, 2.0, 0.5]


def test_resume_with_the_balanced_sampler(assets, tmp_path):
    """sampler: balanced (draws with replacement, augmentation on): killed mid-epoch, resumed bit for bit;
    an epoch keeps its 18 samples and repeats some (a permutation never would)."""
    run_chain(assets, tmp_path, "balanced", {"dataset": str(assets["uneven"]), "sampler": "balanced"},
              [{"KILL_AT_STEP": RNG.randint(3, 12)}])
    info, epochs = _imbalance_facts(tmp_path / "balanced-ref", tmp_path / "balanced-ref.jsonl")
    assert info["sampler"] == "balanced" and info["class_weights"] is None
    assert len(epochs) == 3 and all(len(set(e)) < len(e) for e in epochs), epochs


def test_resume_with_both_on_the_feature_path(assets, tmp_path):
    """policy head on cached features with class_weights auto and the balanced sampler."""
    run_chain(assets, tmp_path, "both-features", {"dataset": str(assets["uneven"]), "class_weights": "auto",
                                                  "sampler": "balanced", "policy": "head", "feature_cache": "on"},
              [{"KILL_AT_STEP": RNG.randint(3, 12)}])


@pytest.mark.multiprocess
def test_resume_balanced_sampler_two_cpu_processes(assets, tmp_path):
    """2 processes: the balanced sampler gives every rank the same global order (accelerate splits each global
    batch 2 + 2, as with the random sampler); killed and resumed, identical to the uninterrupted 2-process run."""
    run_chain(assets, tmp_path, "ddp-balanced", {"dataset": str(assets["uneven"]), "sampler": "balanced",
                                                 "class_weights": "auto"},
              [{"KILL_AT_STEP": RNG.randint(3, 8)}], procs=2)
