"""Checkpoint files: atomic, complete-marker last, rotation after completion, loud on corruption, no pickle."""

from __future__ import annotations

import json

import pytest
import torch

from tl_hub import checkpoint as ckpt
from tl_hub.errors import CheckpointError


def _objects(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW([{"params": model[0].parameters(), "lr": 0.1, "name": "a"},
                             {"params": model[2].parameters(), "lr": 0.01, "name": "b"}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    model.train()
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def test_round_trip_is_exact(tmp_path):
    model, opt, sched = _objects()
    path = ckpt.save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched,
                                state={"global_step": 3, "history": [{"x": 0.1}]})
    assert ckpt.is_complete(path) and path.name == "checkpoint-00000003"
    assert not list(path.glob("*.pt")) and not list(path.glob("*.bin")) and not list(path.glob("*.pkl"))
    m2, o2, s2 = _objects(seed=1)
    torch.manual_seed(123)
    state = ckpt.load_checkpoint(path, model=m2, optimizer=o2, scheduler=s2)
    assert state["global_step"] == 3 and state["history"] == [{"x": 0.1}]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
    sa, sb = opt.state_dict(), o2.state_dict()
    for pid in sa["state"]:
        for k, v in sa["state"][pid].items():
            assert torch.equal(v, sb["state"][pid][k])
    assert [g["lr"] for g in sa["param_groups"]] == [g["lr"] for g in sb["param_groups"]]
    assert sched.state_dict()["last_epoch"] == s2.state_dict()["last_epoch"]
    assert s2.get_last_lr() == sched.get_last_lr()


def test_latest_ignores_incomplete_and_rotation_keeps_newest(tmp_path):
    model, opt, sched = _objects()
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched,
                             state={"global_step": step}, save_total_limit=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["checkpoint-00000002", "checkpoint-00000003"]
    # a crash while writing step 4: temp folder without marker, and a renamed folder without marker
    (tmp_path / ".tmp-checkpoint-00000004-dead").mkdir()
    half = tmp_path / "checkpoint-00000005"
    half.mkdir()
    (half / "state.json").write_text(json.dumps({"global_step": 5}))
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-00000003"
    with pytest.raises(CheckpointError, match="COMPLETE"):
        ckpt.read_state(half)
    removed = ckpt.remove_incomplete(tmp_path)
    assert {p.name for p in removed} == {".tmp-checkpoint-00000004-dead", "checkpoint-00000005"}
    # the epoch-end checkpoint of a step sorts after the mid-epoch one
    ckpt.save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched,
                         state={"global_step": 3, "end_of_epoch": True}, save_total_limit=None)
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-00000003-eval"


@pytest.mark.parametrize("victim", [ckpt.OPTIMIZER_TENSORS, ckpt.OPTIMIZER_JSON, ckpt.SCHEDULER_FILE,
                                    ckpt.RNG_TENSORS, ckpt.RNG_JSON, ckpt.MODEL_FILE])
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_file_is_named(tmp_path, victim, damage):
    model, opt, sched = _objects()
    path = ckpt.save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, state={"global_step": 1})
    target = path / victim
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[: max(1, target.stat().st_size // 3)])
    m2, o2, s2 = _objects(1)
    with pytest.raises(CheckpointError, match=victim.replace(".", r"\.")):
        ckpt.load_checkpoint(path, model=m2, optimizer=o2, scheduler=s2)


def test_best_model_file_is_atomic_and_carries_metadata(tmp_path):
    model, _, _ = _objects()
    ckpt.save_best_model(tmp_path, model, {"epoch": 3, "accuracy": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.BEST_MODEL_FILE]
    m2, _, _ = _objects(2)
    assert ckpt.load_best_model(tmp_path, m2) == {"epoch": 3, "accuracy": 0.5}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
