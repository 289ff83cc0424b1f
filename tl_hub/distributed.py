"""The distributed launches tl_hub supports (DDP and FSDP), the checks made at start, and FSDP's side of the loop.

Supported: one process, DDP (`recipes/accelerate_configs/ddp.yaml`, or `cpu.yaml` with `--num_processes N`)
and FSDP version 1 with `fsdp_use_orig_params: true` (`recipes/accelerate_configs/fsdp.yaml`). DeepSpeed
and FSDP2 are refused at start (`check_launch`), with the config files to use instead.

Under FSDP the loop never wraps the model it was given (the "master" module, which checkpoints, the best
model and the output folder are made from): each phase wraps a copy (`prepare_trainable`), made after the
phase's freeze policy was applied and after its optimizer groups were built on it, so the depth map and the
parameter groups always see whole, unsharded parameters. The master stays where it was loaded (the CPU);
the wrapped copy is sharded over the processes' devices. `sync_master` gathers the full state dict of the
wrapped copy collectively (every process calls it; torch's `get_model_state_dict` with
`full_state_dict=True, cpu_offload=True`; on a CPU without the offload, see `prepare_trainable`) into the
master of global rank 0, which then writes the same safetensors and JSON files as a DDP run;
`gather_optimizer_state` does the same for the optimizer, numbering the parameters as
`optimizer.state_dict()` does, and `load_optimizer_state` puts such a state back (every process reads the
files, and keeps its own shard).

Several machines need one shared `output_dir` (global rank 0 writes checkpoints and the best model, every
process reads them): `check_shared_output_dir` stops a run at start when a machine does not see it.

On a CPU accelerate ignores an FSDP launch config (it starts plain multi-CPU data parallel);
`enable_fsdp_on_cpu` turns it on, so `accelerate launch --config_file <an FSDP config with use_cpu: true>`
trains under FSDP over gloo, which is how the tests run FSDP without a GPU.

Example:
    >>> import torch
    >>> from tl_hub.hardware import make_accelerator
    >>> trainable = prepare_trainable(make_accelerator("no"), torch.nn.Linear(2, 2))
    >>> trainable.sharded, trainable.module is trainable.master
    (False, True)
"""

from __future__ import annotations

import contextlib
import copy
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tl_hub.errors import ConfigError

__all__ = ["Trainable", "check_launch", "clip_gradients", "check_shared_output_dir", "cpu_fsdp_deferred", "enable_fsdp_on_cpu", "gather_optimizer_state",
           "is_fsdp", "load_optimizer_state", "prepare_trainable", "push_master", "sync_master"]

_CONFIGS = ("recipes/accelerate_configs/fsdp.yaml (FSDP: sharded parameters, gradients and optimizer state) or "
            "recipes/accelerate_configs/ddp.yaml (DDP)")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def check_launch(accelerator: Any = None) -> None:
    """Refuse, at start, the launches tl_hub cannot train correctly: DeepSpeed (never run with tl_hub's
    loop: DeepSpeed owns the optimizer step, clipping and checkpoints), FSDP2 and FSDP without
    `fsdp_use_orig_params`. Without `accelerator`, only what the launcher put in the environment is read
    (before an Accelerator is built: accelerate itself fails without a message about tl_hub when the
    deepspeed package is missing).

    Example:
        >>> check_launch()  # a plain launch passes
    """
    deepspeed = _env_flag("ACCELERATE_USE_DEEPSPEED")
    if accelerator is not None:
        deepspeed = deepspeed or str(getattr(accelerator, "distributed_type", "")).endswith("DEEPSPEED")
    if deepspeed:
        raise ConfigError(
            "accelerate launch: distributed_type DEEPSPEED is not supported by tl_hub (its loop does the optimizer "
            "step, gradient clipping and exact-resume checkpoints that DeepSpeed would take over). Launch with "
            f"--config_file {_CONFIGS}."
        )
    if accelerator is None or not is_fsdp(accelerator):
        return
    plugin = accelerator.state.fsdp_plugin
    if getattr(plugin, "fsdp_version", 1) != 1:
        raise ConfigError(
            f"accelerate launch: fsdp_version {plugin.fsdp_version} is not supported by tl_hub; set fsdp_version: 1 "
            f"in your accelerate config, as in {_CONFIGS}."
        )
    if not plugin.use_orig_params:
        raise ConfigError(
            "accelerate launch: fsdp_use_orig_params is false; tl_hub's freeze policies need it (frozen and "
            "trainable parameters side by side, per-depth optimizer groups). Set fsdp_use_orig_params: true, as "
            f"in {_CONFIGS}."
        )


def is_fsdp(accelerator: Any) -> bool:
    """Whether the accelerator shards the model with FSDP.

    Example:
        >>> from tl_hub.hardware import make_accelerator
        >>> is_fsdp(make_accelerator("no"))
        False
    """
    return str(getattr(accelerator, "distributed_type", "")).endswith("FSDP")


def enable_fsdp_on_cpu(accelerator: Any) -> bool:
    """Turn on FSDP for a multi-process CPU launch whose config asks for it (`distributed_type: FSDP`,
    `use_cpu: true`): accelerate starts such a launch as MULTI_CPU and drops the FSDP settings. The plugin is
    built from the launcher's FSDP_* environment, as accelerate builds it on GPUs. Returns whether it did.

    Example:
        >>> from tl_hub.hardware import make_accelerator
        >>> enable_fsdp_on_cpu(make_accelerator("no"))
        False
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if not _env_flag("ACCELERATE_USE_FSDP") or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return False
    # every process loaded the same weights: no broadcast from rank 0 (accelerate's needs a GPU to set up)
    plugin = FullyShardedDataParallelPlugin(sync_module_states=False)
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    state = accelerator.state
    state.fsdp_plugin = plugin
    # the process-wide state too: every later AcceleratorState() (an AcceleratedOptimizer makes one) copies it over
    for shared in (PartialState(), state):
        shared.distributed_type = DistributedType.FSDP
        shared.device = torch.device("cpu")  # FSDP's compute device on a CPU has no index
    return True


@contextlib.contextmanager
def cpu_fsdp_deferred(cpu: bool) -> Iterator[None]:
    """While an Accelerator is built on a CPU, hide the launcher's ACCELERATE_USE_FSDP: accelerate would build
    its FSDP plugin there and fail looking for a GPU (`sync_module_states`); `enable_fsdp_on_cpu` builds it
    afterwards. On a GPU, or without an FSDP launch, nothing changes.

    Example:
        >>> with cpu_fsdp_deferred(cpu=True):
        ...     pass
    """
    if not cpu or "ACCELERATE_USE_FSDP" not in os.environ:
        yield
        return
    saved = os.environ.pop("ACCELERATE_USE_FSDP")
    try:
        yield
    finally:
        os.environ["ACCELERATE_USE_FSDP"] = saved


@dataclass
class Trainable:
    """What trains in a phase: `prepared` (what the loop runs), `module` (the unwrapped module whose
    parameters the optimizer holds: `master` itself, or under FSDP the copy that `prepared` wraps) and
    `names` (id of each of `module`'s parameters -> its name, taken before wrapping)."""

    prepared: Any
    module: torch.nn.Module
    master: torch.nn.Module
    sharded: bool
    names: dict[int, str] = field(default_factory=dict)
    offload: bool = True  # full state dicts gathered to global rank 0's CPU memory (False: on every CPU process)
    extra: Any = None  # what `before_wrap` returned (the optimizer groups)


def prepare_trainable(accelerator: Any, master: torch.nn.Module, *, before_wrap: Any = None) -> Trainable:
    """Prepare `master` for training: wrapped in place (DDP, one process), or under FSDP a copy of it wrapped,
    the master untouched. `before_wrap(module)` runs on the module the optimizer will hold, before any
    wrapping (the optimizer groups are built there: they need whole parameters and the model's depths).

    Example:
        >>> # see the module docstring
    """
    if not is_fsdp(accelerator):
        extra = before_wrap(master) if before_wrap is not None else None
        return Trainable(accelerator.prepare(master), master, master, False, extra=extra)
    module = copy.deepcopy(master)
    extra = before_wrap(module) if before_wrap is not None else None
    names = {id(p): n for n, p in module.named_parameters()}
    # on a CPU, FSDP's "offload to CPU" of a gathered optimizer state is no copy: it reuses one buffer for every
    # state of a parameter (exp_avg would come back holding exp_avg_sq); gathered on every process instead
    offload = torch.device(accelerator.device).type != "cpu"
    return Trainable(accelerator.prepare(module), module, master, True, names, offload, extra)


def clip_gradients(accelerator: Any, prepared: Any, max_norm: float) -> Any:
    """Clip the gradients of the prepared model to `max_norm` (their total norm over all processes). Under FSDP
    the wrapped module clips itself: accelerate's `clip_grad_norm_` looks the model up among every model it
    prepared, comparing parameter lists, which fails once a run has wrapped a second copy (lp-ft's phases).

    Example:
        >>> import torch
        >>> from tl_hub.hardware import make_accelerator
        >>> model = torch.nn.Linear(2, 1); model(torch.ones(1, 2)).sum().backward()
        >>> float(clip_gradients(make_accelerator("no"), model, 1.0)) > 0
        True
    """
    if not is_fsdp(accelerator):
        return accelerator.clip_grad_norm_(prepared.parameters(), max_norm)
    accelerator.unscale_gradients()
    return prepared.clip_grad_norm_(max_norm)


def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def sync_master(trainable: Trainable) -> None:
    """Copy the trained weights into the master (on global rank 0, the process that writes files; on a CPU on
    every process).
    Under FSDP every process must call it (the full state dict is gathered collectively); otherwise a no-op.

    Example:
        >>> # see the module docstring
    """
    if not trainable.sharded:
        return
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(trainable.prepared, options=_options(cpu_offload=trainable.offload))
    if full:  # global rank 0 (every process on a CPU)
        with torch.no_grad():
            trainable.master.load_state_dict(full, strict=True)


def push_master(trainable: Trainable) -> None:
    """Copy the master's weights (which every process holds) into the wrapped module, each process keeping
    its shard. Every process must call it under FSDP; otherwise a no-op (the master is what trains).

    Example:
        >>> # see the module docstring
    """
    if not trainable.sharded:
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    full = {k: v.detach() for k, v in trainable.master.state_dict().items()}
    set_model_state_dict(trainable.prepared, full, options=_options())


def _torch_optimizer(optimizer: Any) -> Any:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it


def _numbering(trainable: Trainable, optimizer: Any) -> list[str]:
    """The name of each parameter of the optimizer, in the order `optimizer.state_dict()` numbers them."""
    return [trainable.names[id(p)] for group in _torch_optimizer(optimizer).param_groups for p in group["params"]]


def gather_optimizer_state(trainable: Trainable, optimizer: Any) -> dict[str, Any]:
    """The optimizer's full state dict, numbered like `optimizer.state_dict()`; under FSDP gathered
    collectively (every process calls it; global rank 0 gets the state, the others an empty dict).

    Example:
        >>> # see the module docstring
    """
    if not trainable.sharded:
        return _torch_optimizer(optimizer).state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(trainable.prepared, _torch_optimizer(optimizer),
                                    options=_options(cpu_offload=trainable.offload))
    if not full:
        return {}
    number = {name: i for i, name in enumerate(_numbering(trainable, optimizer))}
    groups = [{**g, "params": [number[n] for n in g["params"]]} for g in full["param_groups"]]
    # gathered tensors may be views of one buffer: each gets its own storage (safetensors refuses shared ones)
    state = {number[n]: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
             for n, s in full["state"].items()}
    return {"state": state, "param_groups": groups}


class _ShardedOptimizerView:
    """An optimizer as `tl_hub.checkpoint.load_checkpoint` sees it: `param_groups`, and `load_state_dict`
    taking a state numbered like `optimizer.state_dict()`, which goes in by name (each process its shard)."""

    def __init__(self, trainable: Trainable, optimizer: Any) -> None:
        self.trainable, self.optimizer = trainable, _torch_optimizer(optimizer)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        names = _numbering(self.trainable, self.optimizer)
        full = {"state": {names[int(i)]: s for i, s in state["state"].items()},
                "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
        set_optimizer_state_dict(self.trainable.prepared, self.optimizer, full, options=_options())


def load_optimizer_state(trainable: Trainable, optimizer: Any) -> Any:
    """What `tl_hub.checkpoint.load_checkpoint` should load the optimizer state into: the optimizer itself,
    or under FSDP a view that gives each process its shard (every process must load).

    Example:
        >>> # see the module docstring
    """
    return _ShardedOptimizerView(trainable, optimizer) if trainable.sharded else optimizer


def check_shared_output_dir(output_dir: str | os.PathLike, accelerator: Any) -> None:
    """Stop at start unless every machine of a multi-machine run sees the same `output_dir`: global rank 0
    writes a probe file there, the first process of every machine looks for it, and all stop together
    (with a ConfigError naming the folder) when one did not find it. Checkpoints, the best model and resume
    are written by global rank 0 and read by every process, so they need one shared folder.

    Example:
        >>> import tempfile
        >>> from tl_hub.hardware import make_accelerator
        >>> check_shared_output_dir(tempfile.mkdtemp(), make_accelerator("no"))  # one process: nothing to check
    """
    if accelerator.num_processes <= 1:
        return
    folder = Path(output_dir)
    token = _broadcast_token(accelerator)
    probe = folder / ".tl_hub-shared-probe"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text(token, encoding="utf-8")
    accelerator.wait_for_everyone()  # written before any process looks
    seen = True
    if accelerator.is_local_main_process:
        try:
            seen = probe.read_text(encoding="utf-8") == token
        except OSError:
            seen = False
    missing = torch.tensor([0.0 if seen else 1.0], device=accelerator.device)
    missing = accelerator.reduce(missing, "sum")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        probe.unlink(missing_ok=True)
    if float(missing.item()) > 0:
        raise ConfigError(
            f"output_dir: {folder} is not shared by every machine of this run ({int(missing.item())} machine(s) do not "
            "see what global rank 0 wrote there). Checkpoints, the best model and resume are written by global rank 0 "
            "and read on every machine: put output_dir on a filesystem every machine mounts at the same path (NFS, "
            "Lustre, a cloud file share), or train on one machine."
        )


def _broadcast_token(accelerator: Any) -> str:
    """A random token made by global rank 0, the same on every process (sent as a tensor: no pickle)."""
    from accelerate.utils import broadcast

    digits = torch.tensor([int(c, 16) for c in uuid.uuid4().hex], dtype=torch.int64, device=accelerator.device)
    digits = broadcast(digits, from_process=0)
    return "".join(f"{int(d):x}" for d in digits.tolist())
