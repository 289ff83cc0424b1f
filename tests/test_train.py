"""The Accelerate loop (tl_hub.train) on tiny transformers models: training works, resume is bit-exact,
faults are loud (a damaged checkpoint is refused, never a silent fresh start), and a skipped
non-finite batch is counted and named in the result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from helpers.accelerator import cpu_accelerator
from tl_hub import checkpoint as ckpt
from tl_hub.errors import CheckpointError
from tl_hub.freezing import simple_param_groups
from tl_hub.seeding import EpochSampler
from tl_hub.train import LoopState, Phase, TrainArgs, find_resume_checkpoint, train

torch.set_num_threads(1)


class SimulatedCrash(Exception):
    """Raised by a test's callback to stop a run mid-training, as a crash would."""


class TinyImages(torch.utils.data.Dataset):
    """Two learnable classes of 3x16x16 images; random flip as augmentation (torch RNG), logs what it serves."""

    def __init__(self, n: int = 24, seed: int = 0, augment: bool = True, poison: int | None = None) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 2
        base = torch.randn(n, 3, 16, 16, generator=gen) * 0.5
        base[:, 0] += self.labels.view(-1, 1, 1).float() * 1.5 - 0.75
        self.x = base
        self.augment = augment
        self.poison = poison
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        self.seen.append(i)
        x = self.x[i]
        if self.augment and torch.rand(()) < 0.5:
            x = x.flip(-1)
        if self.poison is not None and i == self.poison:
            x = torch.full_like(x, float("nan"))
        return {"pixel_values": x, "labels": self.labels[i], "index": i}


def tiny_vit(seed: int = 0) -> torch.nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=32, num_labels=2, hidden_dropout_prob=0.1)
    return ViTForImageClassification(cfg)


def tiny_resnet(seed: int = 0) -> torch.nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=2)
    return ResNetForImageClassification(cfg)


def _run(tmp: Path, model, args: TrainArgs, *, resume=None, callbacks=(), train_ds=None, phases=None):
    train_ds = train_ds or TinyImages(24, seed=0)
    eval_ds = TinyImages(10, seed=1, augment=False)
    phases = phases or [Phase("train", args.epochs, lambda m: simple_param_groups(m, args.learning_rate, 0.01))]
    out = train(model, train_ds, eval_ds, args=args, accelerator=cpu_accelerator(),
                checkpoint_dir=tmp / "checkpoints", phases=phases, resume_from=resume, callbacks=callbacks,
                log=lambda m: None)
    return out, train_ds


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _strip(history):
    return [{k: v for k, v in r.items() if k not in {"images_per_second", "epoch_time_s"}} for r in history]


def test_loop_learns_and_keeps_best(tmp_path):
    args = TrainArgs(epochs=3, batch_size=8, learning_rate=3e-3, warmup_ratio=0.2, progress=False)
    model = tiny_resnet()
    out, _ = _run(tmp_path, model, args)
    assert len(out.history) == 3
    assert out.history[-1]["train_loss"] < out.history[0]["train_loss"] * 1.5
    assert out.best_eval is not None and len(out.best_eval.labels) == 10  # exact eval count
    best = max(r["eval_accuracy"] for r in out.history)
    assert out.best_metric == best
    # the model returned holds the best epoch's weights, the same as best_model.safetensors
    ref = tiny_resnet(1)
    ckpt.load_best_model(tmp_path / "checkpoints", ref)
    assert _same_weights(model, ref)
    # epoch-end checkpoints, rotation keeps save_total_limit of them
    assert len(ckpt.list_checkpoints(tmp_path / "checkpoints")) == 2


def test_loop_state_is_what_a_checkpoint_stores(tmp_path):
    """The LoopState the callbacks see is exactly the checkpoint's state.json, and round-trips through it."""
    seen: list[dict] = []

    def remember(event, state):
        assert isinstance(state, LoopState)
        if event == "epoch":
            seen.append(json.loads(json.dumps(state.to_dict())))

    args = TrainArgs(epochs=2, batch_size=8, checkpointing_steps="epoch", save_total_limit=None, progress=False)
    _run(tmp_path, tiny_vit(), args, callbacks=[remember])
    stored = [ckpt.read_state(p) for p in ckpt.list_checkpoints(tmp_path / "checkpoints")]
    assert len(stored) == len(seen) == 2
    for saved, state in zip(stored, seen, strict=True):
        assert {k: v for k, v in saved.items() if k != "format"} == {**state, "end_of_epoch": True}
        restored = LoopState.from_dict(saved)
        assert restored.to_dict() == {**state, "end_of_epoch": True}
    assert seen[-1]["epoch"] == 2 and seen[-1]["phase_index"] == 1 and len(seen[-1]["history"]) == 2


def test_epoch_sampler_is_a_seeded_permutation():
    s = EpochSampler(10, seed=3)
    s.set_epoch(0)
    first = [i for i, _ in s]
    s.set_epoch(1)
    second = [i for i, _ in s]
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second
    s.set_epoch(0)
    assert [i for i, _ in s] == first


@pytest.mark.parametrize(
    "kill_at, ga, model_fn",
    [
        (4, 1, tiny_vit),  # mid-epoch 1 (0-based), dropout active
        (7, 2, tiny_resnet),  # gradient accumulation, BatchNorm, a kill in epoch >= 1
    ],
)
def test_killed_and_resumed_run_is_bit_identical(tmp_path, kill_at, ga, model_fn):
    args = TrainArgs(epochs=3, batch_size=4, learning_rate=2e-3, warmup_ratio=0.1, checkpointing_steps=1,
                     gradient_accumulation_steps=ga, save_total_limit=3, progress=False, lr_scheduler="cosine")
    ref_model = model_fn()
    ref, ref_ds = _run(tmp_path / "ref", ref_model, args)

    def crash(event, state):
        if event == "step" and state.global_step == kill_at:
            raise SimulatedCrash("simulated kill")

    killed_model = model_fn()
    with pytest.raises(SimulatedCrash):
        _run(tmp_path / "run", killed_model, args, callbacks=[crash])
    latest = find_resume_checkpoint(tmp_path / "run" / "checkpoints", "latest")
    assert latest is not None and ckpt.read_state(latest)["global_step"] == kill_at
    resumed_model = model_fn(seed=99)  # different init: everything must come from the checkpoint
    res, res_ds = _run(tmp_path / "run", resumed_model, args, resume=latest)
    assert _same_weights(ref_model, resumed_model)
    assert _strip(ref.history) == _strip(res.history)
    assert ref.global_step == res.global_step
    # the resumed run saw exactly the tail of the reference run's sample sequence
    assert ref_ds.seen[-len(res_ds.seen):] == res_ds.seen
    # the optimizer state of the final checkpoints is identical too
    a = ckpt.latest_checkpoint(tmp_path / "ref" / "checkpoints")
    b = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    ta = ckpt._read_tensors(a / ckpt.OPTIMIZER_TENSORS, "")
    tb = ckpt._read_tensors(b / ckpt.OPTIMIZER_TENSORS, "")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert (a / ckpt.SCHEDULER_FILE).read_text() == (b / ckpt.SCHEDULER_FILE).read_text()


def test_two_phase_resume_across_phase_change(tmp_path):
    """lp-ft style: head-only phase, then everything; kill right after the phase change."""

    def head_only(m):
        for n, p in m.named_parameters():
            p.requires_grad = n.startswith("classifier")

    def everything(m):
        for p in m.parameters():
            p.requires_grad = True

    def phases(args):
        groups = lambda m: simple_param_groups(m, args.learning_rate, 0.0)  # noqa: E731
        return [Phase("head", 1, groups, setup=head_only), Phase("full", 2, groups, setup=everything)]

    args = TrainArgs(epochs=3, batch_size=8, learning_rate=2e-3, checkpointing_steps=2, progress=False,
                     save_total_limit=None)
    ref_model = tiny_vit()
    ref, _ = _run(tmp_path / "ref", ref_model, args, phases=phases(args))
    assert [r["phase"] for r in ref.history] == ["head", "full", "full"]

    def crash(event, state):
        if event == "step" and state.global_step == 4:  # 3 steps per epoch: inside phase "full"
            raise SimulatedCrash

    m = tiny_vit()
    with pytest.raises(SimulatedCrash):
        _run(tmp_path / "run", m, args, phases=phases(args), callbacks=[crash])
    resumed = tiny_vit(5)
    res, _ = _run(tmp_path / "run", resumed, args, phases=phases(args),
                  resume=find_resume_checkpoint(tmp_path / "run" / "checkpoints", "latest"))
    assert _same_weights(ref_model, resumed)
    assert _strip(ref.history) == _strip(res.history)


def test_skipped_nonfinite_batch_is_counted_named_and_kept_out_of_the_loss(tmp_path):
    """Loop level: skip_nonfinite_batches leaves the batch holding a NaN image out of the epoch loss and
    reports it in the result by its images' ids (tests/test_nonfinite.py: the same through finetune,
    and the default, stopping with an error that names the step and the batch's files)."""
    args = TrainArgs(epochs=1, batch_size=4, progress=False, skip_nonfinite_batches=True)
    ids = [f"img_{i}.png" for i in range(8)]
    out = train(tiny_vit(), TinyImages(8, poison=5), TinyImages(4, augment=False), args=args,
                accelerator=cpu_accelerator(), checkpoint_dir=tmp_path,
                phases=[Phase("train", 1, simple_param_groups)], ids=ids, log=lambda m: None)
    assert out.nonfinite_skipped == 1 and "img_5.png" in out.nonfinite_ids
    assert math.isfinite(out.history[0]["train_loss"])


def test_resume_refuses_a_corrupt_or_missing_file(tmp_path):
    """train(resume_from=a damaged checkpoint) raises naming the file: the loop never silently starts afresh."""
    args = TrainArgs(epochs=1, batch_size=8, checkpointing_steps=1, progress=False, save_total_limit=None)
    _run(tmp_path, tiny_vit(), args)
    first, second, third = ckpt.list_checkpoints(tmp_path / "checkpoints")[:3]
    assert ckpt.read_state(first)["global_step"] == 1  # mid-run (step 1 of 3)
    (first / ckpt.SCHEDULER_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="scheduler.json"):
        _run(tmp_path, tiny_vit(), args, resume=first)
    (first / ckpt.OPTIMIZER_TENSORS).unlink()
    with pytest.raises(CheckpointError, match="optimizer.safetensors"):
        _run(tmp_path, tiny_vit(), args, resume=first)
    (third / ckpt.RNG_JSON).write_text(json.dumps({"python": [], "numpy": []}))  # valid JSON, wrong content
    with pytest.raises(CheckpointError, match=ckpt.RNG_JSON):
        _run(tmp_path, tiny_vit(), args, resume=third)
    # a different recipe is refused, not silently mixed
    with pytest.raises(CheckpointError, match="batch_size"):
        _run(tmp_path, tiny_vit(), TrainArgs(epochs=1, batch_size=4, progress=False), resume=second)


def test_evaluation_shows_a_progress_bar_unless_told_not_to(capsys):
    from tl_hub.train import evaluate

    loader = torch.utils.data.DataLoader(TinyImages(10, seed=1, augment=False), batch_size=4)
    model = tiny_resnet()
    quiet = evaluate(model, loader, cpu_accelerator(), progress=False)
    assert "evaluate" not in capsys.readouterr().err
    shown = evaluate(model, loader, cpu_accelerator(), progress=True)
    assert "evaluate" in capsys.readouterr().err
    assert quiet.loss == shown.loss and len(shown.labels) == 10
