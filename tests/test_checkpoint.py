"""tl_hub.checkpoint: checkpoints are exact and safe (issue 6).

Exact: a save/load round trip restores model, optimizer and scheduler bit for bit; the best model file
carries its metadata. Safe: atomic (temporary sibling + rename, completion marker last), the newest
*complete* one is resumed, incomplete ones are refused and removed, rotation deletes only after the new
one is complete, a missing or corrupt file fails loudly naming it, and no pickle anywhere.

Real SIGKILLs inside a checkpoint write are in tests/test_resume.py (here the crash is an exception
thrown at each point of the write); the training loop refusing a damaged checkpoint is in
tests/test_train.py.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch

from tl_hub import checkpoint as ckpt
from tl_hub.errors import CheckpointError
from tl_hub.train import find_resume_checkpoint

PACKAGE = Path(ckpt.__file__).parent
FILES = [ckpt.MODEL_FILE, ckpt.OPTIMIZER_TENSORS, ckpt.OPTIMIZER_JSON, ckpt.SCHEDULER_FILE, ckpt.RNG_TENSORS,
         ckpt.RNG_JSON, ckpt.STATE_FILE, ckpt.COMPLETE_MARKER]


class Crash(Exception):
    pass


def make_objects(seed: int = 0):
    """A model with BatchNorm, an AdamW with two named param groups, a LambdaLR; all after 3 real steps."""
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


def save(root: Path, step: int, *, limit: int | None = None, end_of_epoch: bool = False, seed: int = 0) -> Path:
    model, opt, sched = make_objects(seed)
    return ckpt.save_checkpoint(root, model=model, optimizer=opt, scheduler=sched,
                                state={"global_step": step, "epoch": 0, "end_of_epoch": end_of_epoch},
                                save_total_limit=limit)


def test_round_trip_is_exact(tmp_path):
    model, opt, sched = make_objects()
    path = ckpt.save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched,
                                state={"global_step": 3, "history": [{"x": 0.1}]})
    assert ckpt.is_complete(path) and path.name == "checkpoint-00000003"
    assert not list(path.glob("*.pt")) and not list(path.glob("*.bin")) and not list(path.glob("*.pkl"))
    m2, o2, s2 = make_objects(seed=1)
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


def test_best_model_file_is_atomic_and_carries_metadata(tmp_path):
    model, _, _ = make_objects()
    ckpt.save_best_model(tmp_path, model, {"epoch": 3, "accuracy": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.BEST_MODEL_FILE]
    m2, _, _ = make_objects(2)
    assert ckpt.load_best_model(tmp_path, m2) == {"epoch": 3, "accuracy": 0.5}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))


# ---------------------------------------------------------------------------------------------------
# atomic writes, crashes, rotation
def test_written_in_a_temporary_sibling_marker_last_then_renamed(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    writes: list[tuple[str, str, bool]] = []
    real_json, real_tensors = ckpt._write_json, ckpt._write_tensors
    final = root / "checkpoint-00000007"

    def spy(real):
        def write(path, *a, **kw):
            writes.append((path.parent.name, path.name, final.exists()))
            return real(path, *a, **kw)
        return write

    monkeypatch.setattr(ckpt, "_write_json", spy(real_json))
    monkeypatch.setattr(ckpt, "_write_tensors", spy(real_tensors))
    path = save(root, 7)
    assert path == final and ckpt.is_complete(path)
    assert {d for d, _, _ in writes} == {next(d for d, _, _ in writes)} and writes[0][0].startswith(".tmp-")
    assert not any(existed for _, _, existed in writes), "the final folder existed before every file was written"
    assert [name for _, name, _ in writes][-1] == ckpt.COMPLETE_MARKER, "the completion marker is not written last"
    assert sorted(name for _, name, _ in writes) == sorted(FILES)
    assert sorted(p.name for p in root.iterdir()) == [final.name]  # no temporary folder left


@pytest.mark.parametrize("crash_at", FILES)
def test_a_crash_at_any_file_keeps_the_previous_checkpoints(tmp_path, monkeypatch, crash_at):
    root = tmp_path / "checkpoints"
    first, second = save(root, 2, limit=2), save(root, 4, limit=2)
    before = {p.name: (p / ckpt.MODEL_FILE).read_bytes() for p in (first, second)}
    real_json, real_tensors = ckpt._write_json, ckpt._write_tensors

    def crashing(real):
        def write(path, *a, **kw):
            if path.name == crash_at:
                real(path, *a, **kw)
                path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])  # half on disk
                raise Crash(crash_at)
            return real(path, *a, **kw)
        return write

    monkeypatch.setattr(ckpt, "_write_json", crashing(real_json))
    monkeypatch.setattr(ckpt, "_write_tensors", crashing(real_tensors))
    with pytest.raises(Crash):
        save(root, 6, limit=2, seed=1)
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(root) == second, "an interrupted checkpoint was picked"
    assert [p.name for p in ckpt.list_checkpoints(root)] == [first.name, second.name], "rotation ran too early"
    assert {p.name: (p / ckpt.MODEL_FILE).read_bytes() for p in (first, second)} == before
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers and [p.name for p in ckpt.remove_incomplete(root)] == leftovers
    assert sorted(p.name for p in root.iterdir()) == sorted(before)


def test_rotation_deletes_only_after_the_new_checkpoint_is_complete(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    for step in (2, 4):
        save(root, step, limit=2)
    deleted: list[str] = []
    real_rmtree = shutil.rmtree

    def rmtree(path, *a, **kw):
        path = Path(path)
        if not path.name.startswith(".tmp-"):
            assert ckpt.is_complete(root / "checkpoint-00000006"), "an old checkpoint was deleted first"
            deleted.append(path.name)
        return real_rmtree(path, *a, **kw)

    monkeypatch.setattr(ckpt.shutil, "rmtree", rmtree)
    save(root, 6, limit=2)
    assert deleted == ["checkpoint-00000002"]
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["checkpoint-00000004", "checkpoint-00000006"]


def test_newest_complete_checkpoint_is_picked(tmp_path):
    """The newest complete checkpoint is resumed; an incomplete one (renamed without its marker, or a
    temporary folder) is never picked, refused when named, and removed by remove_incomplete."""
    root = tmp_path / "checkpoints"
    save(root, 9)
    newest = save(root, 10, end_of_epoch=True)  # ordered by state.json, not by folder name
    save(root, 10)  # same step mid-epoch sorts before the epoch-end one
    assert newest.name == "checkpoint-00000010-eval"
    incomplete = save(root, 12)
    (incomplete / ckpt.COMPLETE_MARKER).unlink()
    temporary = shutil.copytree(newest, root / ".tmp-checkpoint-00000014-abcd")
    assert find_resume_checkpoint(root, "latest") == newest
    with pytest.raises(CheckpointError, match=r"checkpoint-00000012 has no COMPLETE marker: it was interrupted"):
        find_resume_checkpoint(root, str(incomplete))
    assert find_resume_checkpoint(tmp_path / "none-yet", "latest") is None  # a first run starts fresh
    assert {p.name for p in ckpt.remove_incomplete(root)} == {incomplete.name, temporary.name}
    assert find_resume_checkpoint(root, "latest") == newest


# ---------------------------------------------------------------------------------------------------
# damaged files
DAMAGE = {
    "missing": lambda p: p.unlink(),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: p.write_bytes(b"\x80\x04garbage not a checkpoint file"),
    "valid-json-wrong-content": lambda p: p.write_text("{}") if p.suffix == ".json" else p.unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("name", FILES[:-1])
def test_a_missing_or_corrupt_file_fails_loudly_naming_it(tmp_path, name, damage):
    path = save(tmp_path / "checkpoints", 3)
    DAMAGE[damage](path / name)
    model, opt, sched = make_objects(5)
    with pytest.raises(CheckpointError) as err:
        ckpt.load_checkpoint(path, model=model, optimizer=opt, scheduler=sched)
    assert name in str(err.value), f"the error does not name {name}: {err.value}"


# ---------------------------------------------------------------------------------------------------
# no pickle
def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def test_no_pickle_in_the_package():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                bad = [n for n in names if n and n.split(".")[0] in {"pickle", "cPickle", "dill", "joblib", "cloudpickle"}]
                if bad:
                    problems.append(f"{path.name}:{node.lineno} imports {bad}")
        for node, owner, name in _calls(tree):
            where = f"{path.name}:{node.lineno}"
            if owner == "torch" and name == "load":
                ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in node.keywords)
                if not ok:
                    problems.append(f"{where} torch.load without weights_only=True")
            if owner == "torch" and name == "save":
                problems.append(f"{where} torch.save (pickle); use safetensors")
            if name in {"save_state", "load_state"}:
                problems.append(f"{where} accelerate {name} (writes pickles: optimizer.bin, random_states_*.pkl)")
            if owner == "np" and name == "load":
                ok = not any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                             for k in node.keywords)
                if not ok:
                    problems.append(f"{where} np.load with allow_pickle")
    assert not problems, problems


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path):
    from safetensors import safe_open

    path = save(tmp_path / "checkpoints", 1)
    for file in path.iterdir():
        data = file.read_bytes()
        assert not data.startswith(b"\x80"), f"{file.name} looks like a pickle"
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt"):
                pass
        else:
            json.loads(data)
