"""Crash-safe training checkpoints: safetensors for tensors, JSON for everything else, no pickle.

A checkpoint is a folder `checkpoints/checkpoint-<step>[-eval]/` holding

- `model.safetensors`      the full state dict of the (unwrapped) model
- `optimizer.safetensors`  every tensor of the optimizer state (`state.<param>.<key>`)
- `optimizer.json`         param groups (lr, betas, ...) and non-tensor state values
- `scheduler.json`         the learning-rate scheduler's state dict
- `rng.safetensors`        torch CPU (and CUDA) generator states of the writing process
- `rng.json`               Python `random` and NumPy generator states
- `state.json`             loop position (phase, epoch, batches done, global step), history, best metric
- `COMPLETE`               written last; a folder without it is ignored (and cleaned up)

It is written into a temporary sibling folder (`.tmp-checkpoint-...`) and renamed into place only
when every file is on disk, so a crash at any moment leaves either the previous checkpoints intact or
a stray temporary folder that the next run removes. `save_total_limit` rotation deletes old
checkpoints only after the new one is complete.

Example:
    >>> import torch
    >>> from tl_hub.checkpoint import save_checkpoint, latest_checkpoint, load_checkpoint
    >>> model = torch.nn.Linear(2, 2)
    >>> opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    >>> import tempfile; root = tempfile.mkdtemp()
    >>> path = save_checkpoint(root, model=model, optimizer=opt, scheduler=sched,
    ...                        state={"global_step": 3, "epoch": 0, "end_of_epoch": False})
    >>> latest_checkpoint(root) == path
    True
    >>> load_checkpoint(path, model=model, optimizer=opt, scheduler=sched)["global_step"]
    3
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tl_hub.errors import CheckpointError

FORMAT_VERSION = 1
COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
SCHEDULER_FILE = "scheduler.json"
RNG_TENSORS = "rng.safetensors"
RNG_JSON = "rng.json"
BEST_MODEL_FILE = "best_model.safetensors"
EMA_FILE = "ema.safetensors"  # the EMA of the weights, when the run keeps one (`ema_decay`)
_TMP_PREFIX = ".tmp-"


# ----------------------------------------------------------------------------------------------
# small atomic writers
# ----------------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True, allow_nan=True)
        fh.flush()
        os.fsync(fh.fileno())


def _write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(clean, str(path), metadata=metadata)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to `path` through a temporary file and `os.replace` (never a half-written file).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.json"); atomic_write_json(p, {"a": 1})
        >>> open(p).read().strip().startswith("{")
        True
    """
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")
    _write_json(tmp, data)
    os.replace(tmp, path)


def _require_file(path: Path, what: str) -> None:
    """Raise CheckpointError naming `path` when it is missing (never a silent fresh start)."""
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint file {path} ({what}) is missing; the checkpoint is incomplete or was edited. "
            "Resume from another checkpoint (resume_from_checkpoint: <path>) or start afresh with "
            "overwrite_output_dir: true."
        )


def _read_json(path: Path, what: str) -> Any:
    _require_file(path, what)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"checkpoint file {path} ({what}) is corrupt ({err}). Resume from another checkpoint "
            "(resume_from_checkpoint: <path>) or start afresh with overwrite_output_dir: true."
        ) from err


def _read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    _require_file(path, what)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint file {path} ({what}) is corrupt ({err}). Resume from another checkpoint "
            "(resume_from_checkpoint: <path>) or start afresh with overwrite_output_dir: true."
        ) from err


# ----------------------------------------------------------------------------------------------
# optimizer / scheduler / RNG <-> (tensors, JSON)
# ----------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a JSON checkpoint file")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def optimizer_to_files(optimizer: torch.optim.Optimizer | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict (or the optimizer's) into safetensors-ready tensors and a JSON-ready dict."""
    sd = optimizer if isinstance(optimizer, Mapping) else optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = _jsonable(value)
    meta = {"param_groups": _jsonable(sd["param_groups"]), "scalars": scalars,
            "tensor_keys": sorted(tensors)}
    return tensors, meta


def optimizer_from_files(tensors: Mapping[str, torch.Tensor], meta: dict) -> dict:
    """Rebuild the optimizer state dict that `optimizer_to_files` split."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(_from_json(values))
    return {"state": state, "param_groups": _from_json(meta["param_groups"])}


def _rng_files() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = st
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def _restore_rng(tensors: Mapping[str, torch.Tensor], meta: dict, path: Path) -> None:
    try:
        torch.set_rng_state(tensors["torch_cpu"])
        if torch.cuda.is_available():
            cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
        py = meta["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npst = meta["numpy"]
        np.random.set_state((npst[0], np.asarray(npst[1], dtype=np.uint32), npst[2], npst[3], npst[4]))
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint file {path / RNG_JSON} / {RNG_TENSORS} (random generator states) is corrupt ({err!r}); "
            "resume from another checkpoint or start "
            "afresh with overwrite_output_dir: true."
        ) from err


# ----------------------------------------------------------------------------------------------
# model weights
# ----------------------------------------------------------------------------------------------
def model_state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with tied tensors stored once (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int, tuple], str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen[key] = name
        out[name] = tensor
    return out


def load_model_tensors(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Copy `tensors` into `model` in place (shape-checked; tied tensors may be absent)."""
    own = model.state_dict()
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise CheckpointError(
            f"{path} holds weights the model does not have ({unknown[:5]}...): it was written for another "
            "model. Resume with the same recipe, or start afresh with overwrite_output_dir: true."
        )
    with torch.no_grad():
        for name, value in tensors.items():
            target = own[name]
            if target.shape != value.shape:
                raise CheckpointError(
                    f"{path}: weight {name} has shape {tuple(value.shape)}, the model expects "
                    f"{tuple(target.shape)}; the checkpoint belongs to another model/label set."
                )
            target.copy_(value)


def save_best_model(checkpoint_root: str | os.PathLike, model: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    """Atomically (temp file + `os.replace`) write the best model's weights with their metadata."""
    root = Path(checkpoint_root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / BEST_MODEL_FILE
    tmp = root / f"{_TMP_PREFIX}{BEST_MODEL_FILE}.{uuid.uuid4().hex[:8]}"
    _write_tensors(tmp, model_state_tensors(model), metadata={"tl_hub": json.dumps(metadata)})
    os.replace(tmp, target)
    _fsync_dir(root)
    return target


def load_best_model(checkpoint_root: str | os.PathLike, model: torch.nn.Module) -> dict[str, Any]:
    """Load `best_model.safetensors` into `model`; return its metadata (epoch, metric)."""
    path = Path(checkpoint_root) / BEST_MODEL_FILE
    tensors = _read_tensors(path, "best model weights")
    load_model_tensors(model, tensors, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta.get("tl_hub", "{}"))


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def checkpoint_name(state: Mapping[str, Any]) -> str:
    """Folder name for a checkpoint (for humans; the truth is state.json)."""
    name = f"checkpoint-{int(state['global_step']):08d}"
    return name + "-eval" if state.get("end_of_epoch") else name


def save_checkpoint(
    checkpoint_root: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | Mapping[str, Any],
    scheduler: Any,
    state: dict[str, Any],
    save_total_limit: int | None = None,
    extra_tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write one complete checkpoint atomically; return its final path.

    Args:
        checkpoint_root: the `checkpoints/` folder (created if needed).
        model: the unwrapped model (its full state dict is saved).
        optimizer: the optimizer (or accelerate's wrapper: anything with state_dict()), or its full state
            dict (FSDP: gathered from every process, numbered like `optimizer.state_dict()`).
        scheduler: the LR scheduler (anything with a JSON-able state_dict()).
        state: JSON-able loop state; must hold "global_step" (and "end_of_epoch" for epoch ends).
        save_total_limit: keep at most this many complete checkpoints (oldest removed after the new one
            is complete); None or <= 0 keeps all.
        extra_tensors: more safetensors files of the checkpoint, {file name: tensors} (e.g. `EMA_FILE`).

    Example:
        >>> # see the module docstring
    """
    root = Path(checkpoint_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(state)
    tmp = root / f"{_TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    _write_tensors(tmp / MODEL_FILE, model_state_tensors(model))
    for name, tensors in (extra_tensors or {}).items():
        _write_tensors(tmp / name, tensors)
    opt_tensors, opt_meta = optimizer_to_files(optimizer)
    _write_tensors(tmp / OPTIMIZER_TENSORS, opt_tensors)
    _write_json(tmp / OPTIMIZER_JSON, opt_meta)
    _write_json(tmp / SCHEDULER_FILE, _jsonable(scheduler.state_dict()))
    rng_tensors, rng_meta = _rng_files()
    _write_tensors(tmp / RNG_TENSORS, rng_tensors)
    _write_json(tmp / RNG_JSON, rng_meta)
    _write_json(tmp / STATE_FILE, {"format": FORMAT_VERSION, **_jsonable(state)})
    _write_json(tmp / COMPLETE_MARKER, {"files": sorted(p.name for p in tmp.iterdir())})
    _fsync_dir(tmp)
    if final.exists():  # same step saved twice (e.g. resumed run): replace it only now
        trash = root / f"{_TMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    if save_total_limit and save_total_limit > 0:
        complete = list_checkpoints(root)
        for old in complete[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def is_complete(path: str | os.PathLike) -> bool:
    """True when the folder has its completion marker (written last)."""
    return (Path(path) / COMPLETE_MARKER).is_file()


def _order_key(path: Path) -> tuple[int, int, str]:
    try:
        with open(path / STATE_FILE, encoding="utf-8") as fh:
            state = json.load(fh)
        return int(state["global_step"]), int(bool(state.get("end_of_epoch"))), path.name
    except (OSError, ValueError, KeyError, TypeError):
        return -1, 0, path.name


def list_checkpoints(checkpoint_root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `checkpoint_root`, oldest first (ordered by their state.json)."""
    root = Path(checkpoint_root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(_TMP_PREFIX) and is_complete(p)]
    return sorted(found, key=_order_key)


def latest_checkpoint(checkpoint_root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint, or None when there is none."""
    found = list_checkpoints(checkpoint_root)
    return found[-1] if found else None


def remove_incomplete(checkpoint_root: str | os.PathLike) -> list[Path]:
    """Delete temporary/incomplete checkpoint folders left by a crash; return what was removed."""
    root = Path(checkpoint_root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        if p.name.startswith(_TMP_PREFIX) or (p.is_dir() and not is_complete(p)):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The loop state (state.json) of a complete checkpoint; CheckpointError if incomplete/corrupt."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"resume_from_checkpoint: {path} does not exist. Give the path of a checkpoint folder "
            "(output_dir/checkpoints/checkpoint-...) or 'latest'."
        )
    if not is_complete(path):
        raise CheckpointError(
            f"checkpoint {path} has no {COMPLETE_MARKER} marker: it was interrupted while being written. "
            "Use resume_from_checkpoint: latest (picks the newest complete one) or another checkpoint."
        )
    state = _from_json(_read_json(path / STATE_FILE, "loop state"))
    if not isinstance(state, dict) or "global_step" not in state:
        raise CheckpointError(f"checkpoint file {path / STATE_FILE} (loop state) has no global_step; it is corrupt.")
    return state


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a complete checkpoint into the given objects; return its loop state.

    Every file is required: a missing or corrupt one raises CheckpointError naming it (never a silent
    fresh start).

    Example:
        >>> # see the module docstring
    """
    path = Path(path)
    state = read_state(path)
    if model is not None:
        load_model_tensors(model, _read_tensors(path / MODEL_FILE, "model weights"), path / MODEL_FILE)
    # every file is read (and so verified) even when the caller does not need it
    tensors = _read_tensors(path / OPTIMIZER_TENSORS, "optimizer tensors")
    meta = _read_json(path / OPTIMIZER_JSON, "optimizer param groups")
    sched = _from_json(_read_json(path / SCHEDULER_FILE, "learning-rate scheduler"))
    if optimizer is not None:
        try:
            sd = optimizer_from_files(tensors, meta)
            if len(sd["param_groups"]) != len(optimizer.param_groups):
                raise ValueError(
                    f"{len(sd['param_groups'])} param groups saved, {len(optimizer.param_groups)} in the optimizer"
                )
            optimizer.load_state_dict(sd)
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(
                f"checkpoint file {path / OPTIMIZER_JSON} / {OPTIMIZER_TENSORS} (optimizer) does not match "
                f"this run ({err}); resume with the same recipe or start afresh with overwrite_output_dir: true."
            ) from err
    if scheduler is not None:
        try:
            scheduler.load_state_dict(sched)
        except (KeyError, ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"checkpoint file {path / SCHEDULER_FILE} (learning-rate scheduler) is corrupt ({err})."
            ) from err
    rng_tensors = _read_tensors(path / RNG_TENSORS, "random generator states")
    rng_meta = _read_json(path / RNG_JSON, "random generator states")
    if restore_rng:
        _restore_rng(rng_tensors, rng_meta, path)
    return state


def load_extra_tensors(path: str | os.PathLike, name: str, module: torch.nn.Module, what: str) -> None:
    """Load the checkpoint's extra tensors file `name` (see `save_checkpoint`) into `module`'s state;
    CheckpointError naming the file when it is missing, corrupt or does not fit.

    Example:
        >>> load_extra_tensors("/nonexistent", EMA_FILE, torch.nn.Linear(1, 1), "EMA weights")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_hub.errors.CheckpointError: checkpoint file /nonexistent/ema.safetensors (EMA weights) is missing...
    """
    file = Path(path) / name
    load_model_tensors(module, _read_tensors(file, what), file)
