"""The Accelerate training loop: phases, exact resume, checkpoints, evaluation, best model, early stop.

The loop is generic: `model` is any `torch.nn.Module` whose forward takes the batch's input tensors as
keyword arguments (`pixel_values=` for a transformers/timm model, `features=` for a head trained on
cached features) and returns logits (or an output with `.logits`). Datasets yield dicts with the
inputs, `"labels"` (int64) and `"index"` (the row number, used to name bad batches by their ids).

`train` reads as its steps: `_start_phase` (freeze/unfreeze, a fresh optimizer and schedule, or the
checkpoint's), `_micro_batch` (forward, backward, the non-finite check), `_optimizer_step`,
`_end_epoch` (evaluate, best model, early stopping, checkpoint) and `_restore_best`. Where the loop is
lives in one `LoopState`, which is exactly what a checkpoint stores (`state.json`).

Design choices that make a killed-and-resumed run bit-identical to an uninterrupted one (CPU,
deterministic kernels):

- sample order is a permutation seeded by `(seed, epoch)`; each sample's augmentation randomness is
  seeded by `(seed, epoch, index)` and each micro-batch's model randomness (dropout, drop-path) by
  `(seed, epoch, batch, process)` -- nothing depends on how far a previous process got
  (`tl_hub.seeding`);
- mid-epoch resume skips the first N batches of the same permutation (`accelerator.skip_first_batches`);
- checkpoints are taken only at optimizer-step boundaries and hold the full model, optimizer and
  scheduler state and the `LoopState` (safetensors + JSON, see `tl_hub.checkpoint`);
- each phase (e.g. lp-ft's "head" then "full") builds its optimizer deterministically from the model,
  so a checkpoint records which phase its optimizer state belongs to.

`batch_size` is the global batch (split across processes, `split_batches=True`), so a recipe trains the
same model on 1 or N processes.

Example:
    >>> import tempfile, torch
    >>> from tl_hub.freezing import simple_param_groups
    >>> from tl_hub.hardware import make_accelerator
    >>> class Data(torch.utils.data.Dataset):
    ...     def __len__(self): return 8
    ...     def __getitem__(self, i):
    ...         return {"features": torch.full((4,), float(i)), "labels": torch.tensor(i % 2), "index": i}
    >>> class Head(torch.nn.Module):
    ...     def __init__(self): super().__init__(); self.fc = torch.nn.Linear(4, 2)
    ...     def forward(self, features): return self.fc(features)
    >>> out = train(Head(), Data(), Data(), args=TrainArgs(epochs=2, batch_size=4, progress=False),
    ...             accelerator=make_accelerator(), checkpoint_dir=tempfile.mkdtemp(),
    ...             phases=[Phase("train", 2, simple_param_groups)], log=lambda msg: None)
    >>> len(out.history), out.history[-1]["epoch"]
    (2, 2)
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tl_hub import checkpoint as ckpt
from tl_hub.distributed import (Trainable, clip_gradients, gather_optimizer_state, is_fsdp, load_optimizer_state, prepare_trainable,
                                push_master, sync_master)
from tl_hub.errors import CheckpointError, TlHubError
from tl_hub.loss import LossSpec, compute_loss
from tl_hub.metrics import greater_is_better, metric_key
from tl_hub.regularisers import MixSpec, ema_weights_in, make_ema, mix_batch
from tl_hub.reporting import main_process_reporter
from tl_hub.seeding import BalancedEpochSampler, EpochSampler, SeededDataset, mix_seed, sample_seeds

_NON_INPUTS = frozenset({"labels", "index", "id"})


class NonFiniteLossError(TlHubError):
    """The loss became NaN or inf; the message names the step and the ids of the batch's images."""


# ----------------------------------------------------------------------------------------------
# what the loop is given, where it is, what it returns
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainArgs:
    """Numbers the loop needs (finetune builds them from a RecipeConfig).

    `greater_is_better` None follows `tl_hub.metrics.greater_is_better(metric_for_best_model)`.

    Example:
        >>> TrainArgs(epochs=3, batch_size=32).gradient_accumulation_steps
        1
    """

    epochs: int = 3
    batch_size: int = 32  # global: split across processes
    eval_batch_size: int | None = None
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler: str = "cosine"  # cosine | linear | constant
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    seed: int = 0
    checkpointing_steps: int | str | None = "epoch"  # N (every N optimizer steps + epoch ends), "epoch", None = never
    save_total_limit: int | None = 2
    early_stopping_patience: int | None = None
    metric_for_best_model: str = "accuracy"
    greater_is_better: bool | None = None
    skip_nonfinite_batches: bool = False
    num_workers: int = 0
    channels_last: bool = False
    progress: bool = True
    report_every: int = 25  # optimizer steps between reads of the loss (progress bar, trackers): each is a host sync
    compile: bool = False  # torch.compile what trains (checkpoints still hold the plain model's weights)
    loss: LossSpec = field(default_factory=LossSpec)  # which loss trains and evaluates (tl_hub.loss)
    mix: MixSpec = field(default_factory=MixSpec)  # mixup/cutmix of image batches (tl_hub.regularisers)
    ema_decay: float | None = None  # an EMA of the weights is evaluated, kept as best model and checkpointed
    gradient_checkpointing: bool = False  # set on the model by the caller; here for the fingerprint only
    sampler: str = "random"  # random (EpochSampler) | balanced (BalancedEpochSampler over the dataset's `labels`)

    def fingerprint(self) -> dict[str, Any]:
        """The knobs a resumed run must share with the run that wrote the checkpoint."""
        return {
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "seed": self.seed,
            "learning_rate": self.learning_rate,
            "lr_scheduler": self.lr_scheduler,
            **({"loss": self.loss.fingerprint()} if self.loss != LossSpec() else {}),
            **({"mix": self.mix.fingerprint()} if self.mix.active else {}),
            **({"ema_decay": self.ema_decay} if self.ema_decay else {}),
            # recomputing a block in the backward pass updates its BatchNorm statistics a second time
            **({"gradient_checkpointing": True} if self.gradient_checkpointing else {}),
            **({"sampler": self.sampler} if self.sampler != "random" else {}),
        }


@dataclass
class Phase:
    """One stage of training: `setup(model)` (freeze/unfreeze) then `epochs` epochs with a fresh optimizer.

    `param_groups(module)` returns the optimizer groups (torch `param_groups` dicts, each with "lr") of the
    module that trains (`module`, else the model).

    Example:
        >>> Phase("train", 3, lambda model: [{"params": model.parameters()}]).name
        'train'
    """

    name: str
    epochs: int
    param_groups: Callable[[torch.nn.Module], list[dict]]
    setup: Callable[[torch.nn.Module], Any] | None = None
    learning_rate: float | None = None  # defaults to TrainArgs.learning_rate
    # what trains in this phase and on which data, when not the model and datasets given to `train` (lp-ft's
    # head phase: the head alone, on cached features). Checkpoints always hold the model given to `train`.
    module: torch.nn.Module | None = None
    train_dataset: Dataset | None = None
    eval_dataset: Dataset | None = None
    channels_last: bool | None = None  # defaults to TrainArgs.channels_last
    test_dataset: Dataset | None = None  # the last phase's: the held-out test data in this phase's form


@dataclass
class LoopState:
    """Where the loop is and what it has counted: what every checkpoint stores (`state.json`) and a resumed
    run restores. `to_dict`/`from_dict` round-trip through JSON.

    Example:
        >>> LoopState.from_dict(LoopState(global_step=3, history=[{"epoch": 1}]).to_dict()).global_step
        3
    """

    global_step: int = 0
    epoch: int = 0  # epochs finished, over all phases
    phase_index: int = 0
    phase_epoch: int = 0  # epochs finished in the current phase
    batches_done: int = 0  # batches of the current epoch already trained
    optimizer_phase_index: int = -1  # the phase the optimizer state belongs to
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the last improvement
    nonfinite_skipped: int = 0
    nonfinite_ids: list[str] = field(default_factory=list)
    loss_sum: float = 0.0  # this epoch's running loss
    loss_count: int = 0
    samples_epoch: int = 0
    end_of_epoch: bool = False  # set while the end-of-epoch checkpoint is written
    fingerprint: dict[str, Any] = field(default_factory=dict)  # what a resumed run must share

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        """The state saved in a checkpoint; keys that are not fields (e.g. the file format) are ignored."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class EvalOutput:
    """Gathered evaluation outputs (exactly one row per eval sample, on every process)."""

    logits: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    loss: float

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(-1)


@dataclass
class TrainResult:
    """What the loop returns: per-epoch history, best epoch, and the best model's eval outputs."""

    history: list[dict[str, Any]]
    best_epoch: int | None
    best_metric: float | None
    metric_for_best_model: str
    global_step: int
    best_eval: EvalOutput | None
    best_metrics: dict[str, Any]
    test_eval: EvalOutput | None = None  # the best model on the held-out test data, evaluated once at the end
    test_metrics: dict[str, Any] = field(default_factory=dict)
    nonfinite_skipped: int = 0
    nonfinite_ids: list[str] = field(default_factory=list)
    resumed_from: str | None = None
    train_runtime_s: float = 0.0
    stopped_early: bool = False
    time_to_first_step_s: list[float] = field(default_factory=list)  # per epoch trained by this call: start-up


@dataclass
class _Loop:
    """What every step of one `train` call shares: the fixed setup, and the best evaluation so far."""

    accelerator: Any
    args: TrainArgs
    phases: Sequence[Phase]
    model: torch.nn.Module  # unwrapped: what checkpoints and the best model hold
    datasets: tuple[Dataset, Dataset]  # train's (train, eval): the phases' default data
    checkpoint_root: Path
    metrics_fn: Callable[[EvalOutput], dict[str, Any]]
    metric_name: str
    greater: bool
    ids: Sequence[str] | None
    callbacks: Sequence[Callable[[str, LoopState], None]]
    say: Callable[[str], None]
    ema: Any = None  # timm ModelEmaV3 over `model` when `ema_decay` is set
    test_dataset: Dataset | None = None  # held out: evaluated once with the best model, never for selection
    best_eval: EvalOutput | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    first_step_seconds: list[float] = field(default_factory=list)  # per epoch this call trained
    data: _PhaseData | None = None  # the current phase's
    _data_by_phase: dict[int, _PhaseData] = field(default_factory=dict)

    def use_phase(self, index: int) -> _PhaseData:
        """Make phase `index`'s module and loaders the current ones (built once per phase)."""
        if index not in self._data_by_phase:
            self._data_by_phase[index] = _phase_data(self, self.phases[index])
        self.data = self._data_by_phase[index]
        return self.data

    @property
    def nproc(self) -> int:
        return self.accelerator.num_processes

    @property
    def accumulation(self) -> int:
        return max(1, int(self.args.gradient_accumulation_steps))

    @property
    def batches_per_epoch(self) -> int:
        return len(self.data.train_loader)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.batches_per_epoch / self.accumulation)

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)


@dataclass
class _PhaseData:
    """What trains in a phase, on which data: the module (unwrapped), the datasets, the seeded sampler and
    the two loaders (sharded for the processes)."""

    module: torch.nn.Module
    train_dataset: Dataset
    eval_dataset: Dataset
    sampler: EpochSampler
    train_loader: Any
    eval_loader: Any
    channels_last: bool


def _phase_data(loop: _Loop, phase: Phase) -> _PhaseData:
    train_dataset = phase.train_dataset if phase.train_dataset is not None else loop.datasets[0]
    eval_dataset = phase.eval_dataset if phase.eval_dataset is not None else loop.datasets[1]
    channels_last = loop.args.channels_last if phase.channels_last is None else phase.channels_last
    module = phase.module if phase.module is not None else loop.model
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    if loop.args.compile and is_fsdp(loop.accelerator):
        raise TlHubError("compile: true is not supported under FSDP by tl_hub yet; set compile: false, or launch "
                         "with DDP (recipes/accelerate_configs/ddp.yaml)")
    if loop.args.compile:
        module = torch.compile(module)  # shares the parameters: optimizer, checkpoints and best model see them
    sampler, train_loader, eval_loader = _make_loaders(train_dataset, eval_dataset, loop.args, loop.accelerator)
    return _PhaseData(module, train_dataset, eval_dataset, sampler, train_loader, eval_loader, channels_last)


@dataclass
class _Optimizing:
    """The prepared model, optimizer and schedule of the current phase, and what the current accumulation
    group left on the device (read by the host once per optimizer step)."""

    model: Any
    optimizer: Any
    scheduler: Any
    loss_sum: Any = None
    trainable: Trainable | None = None  # what `model` wraps, and the master it is copied to (FSDP)  # float64 tensor on the device: the epoch's running sum of finite losses
    group: list[tuple[torch.Tensor, torch.Tensor, list[str], int]] = field(default_factory=list)
    # per micro-batch of the group: (loss over all processes, is-finite flag, its image ids, batch number)
    pending: _GroupCheck | None = None  # on a GPU: the last step's flags, read at the next step


@dataclass
class _GroupCheck:
    """One optimizer step's (is-finite flag, loss) pairs on their way to the host, and what names them."""

    values: torch.Tensor  # [micro-batches, 2] float64: on the host, or being copied there
    ready: Any  # the CUDA event recorded after that copy; None when `values` is already readable
    batches: list[tuple[Any, int]]  # per micro-batch: (its image indices, its batch number in the epoch)
    epoch: int
    step: int  # the optimizer step, counted from 1
    reporting: bool  # whether this step's loss goes to the progress bar and the trackers


# ----------------------------------------------------------------------------------------------
# forward and evaluation
# ----------------------------------------------------------------------------------------------
def _inputs(batch: dict, channels_last: bool) -> dict[str, Any]:
    inputs = {k: v for k, v in batch.items() if k not in _NON_INPUTS}
    if channels_last and "pixel_values" in inputs and inputs["pixel_values"].ndim == 4:
        inputs["pixel_values"] = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
    return inputs


def forward_logits(model: torch.nn.Module, batch: dict, channels_last: bool = False) -> torch.Tensor:
    """Run `model` on the batch's inputs (everything but labels/index/id) and return the logits.

    Example:
        >>> forward_logits(torch.nn.Linear(2, 3), {"input": torch.zeros(4, 2), "labels": None}).shape
        torch.Size([4, 3])
    """
    out = model(**_inputs(batch, channels_last))
    return out.logits if hasattr(out, "logits") else out


def device_batch(batch: dict, dataset: Any, device: Any, seeds: Any = None, keep_on_host: tuple[str, ...] = ()) -> dict:
    """The batch's tensors on `device` (copied asynchronously from pinned memory), `keep_on_host` ones left
    where they are; a dataset of uint8 items (`uint8_items`) turns its pixels into model inputs there, as
    one batch (`transform_batch`: augmentation from the samples' `seeds`, or normalisation only).

    Example:
        >>> device_batch({"x": torch.ones(2), "index": torch.arange(2)}, None, "cpu", keep_on_host=("index",))["x"]
        tensor([1., 1.])
    """
    out = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) and k not in keep_on_host else v)
           for k, v in batch.items()}
    if getattr(dataset, "uint8_items", False) and "pixel_values" in out:
        out["pixel_values"] = dataset.transform_batch(out["pixel_values"], seeds=seeds)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, accelerator: Any, channels_last: bool = False,
             dataset: Any = None, loss_spec: LossSpec | None = None, progress: bool = False) -> EvalOutput:
    """Evaluate on a prepared loader; outputs gathered with `gather_for_metrics` (exact sample count).
    `dataset` (the loader's) turns uint8 batches into inputs on the device (`device_batch`); `progress`: a
    bar on the local main process (tqdm; also off with TQDM_DISABLE=1).

    Example:
        >>> ev = evaluate(model, eval_loader, accelerator)  # doctest: +SKIP
        >>> ev.predictions.shape == ev.labels.shape  # doctest: +SKIP
        True
    """
    was_training = model.training
    model.eval()
    logits_all, labels_all, index_all = [], [], []
    from tqdm.auto import tqdm

    shown = progress and accelerator.is_local_main_process  # disable=False would override TQDM_DISABLE=1
    bar = tqdm(loader, desc="evaluate", unit="batch", leave=False, dynamic_ncols=True, mininterval=0.5,
               **({} if shown else {"disable": True}))
    for batch in bar:
        batch = device_batch(batch, dataset, accelerator.device)
        logits = forward_logits(model, batch, channels_last).float()
        logits, labels, index = accelerator.gather_for_metrics((logits, batch["labels"], batch["index"]))
        logits_all.append(logits.cpu())
        labels_all.append(labels.cpu())
        index_all.append(index.cpu())
    if was_training:
        model.train()
    logits = torch.cat(logits_all) if logits_all else torch.zeros(0, 0)
    labels = torch.cat(labels_all) if labels_all else torch.zeros(0, dtype=torch.long)
    loss = float(compute_loss(loss_spec or LossSpec(), logits, labels).item()) if len(labels) else float("nan")
    return EvalOutput(logits.numpy(), labels.numpy(), torch.cat(index_all).numpy() if index_all else np.zeros(0), loss)


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
def train(
    model: torch.nn.Module,
    train_dataset: Dataset,
    eval_dataset: Dataset,
    *,
    args: TrainArgs,
    accelerator: Any,
    checkpoint_dir: str | Path,
    phases: Sequence[Phase],
    metrics_fn: Callable[[EvalOutput], dict[str, Any]] | None = None,
    resume_from: str | Path | None = None,
    ids: Sequence[str] | None = None,
    callbacks: Sequence[Callable[[str, LoopState], None]] = (),
    log: Callable[[str], None] | None = None,
    test_dataset: Dataset | None = None,
) -> TrainResult:
    """Train `model` through its phases; evaluate every epoch; keep the best model in memory at the end.

    Args:
        model: unprepared module (the loop prepares it with `accelerator`).
        train_dataset / eval_dataset: map-style datasets of dicts ("labels", "index" + model inputs).
        args: loop numbers (TrainArgs).
        accelerator: an `accelerate.Accelerator` with `DataLoaderConfiguration(split_batches=True)`
            (`tl_hub.hardware.make_accelerator` builds one).
        checkpoint_dir: where checkpoints and `best_model.safetensors` go (main process writes).
        phases: e.g. `[Phase("train", epochs, groups)]`, or lp-ft's head + full phases.
        metrics_fn: EvalOutput -> metrics dict (scalars become `eval_<name>` in the history);
            defaults to accuracy.
        resume_from: a complete checkpoint folder to resume from (see tl_hub.checkpoint), or None.
        ids: id of every training row (names the images of a batch with a NaN/inf loss).
        callbacks: called as `cb(event, state)` with the `LoopState`, for event "step" (after each
            optimizer step and any checkpoint) and "epoch" (after each epoch's checkpoint). Raising stops
            training.
        log: receives one-line messages; default: the `tl_hub` logger on the main process.
        test_dataset: held-out data (like `eval_dataset`; a phase's `test_dataset` overrides it for the last
            phase) evaluated once, with the best model, after training: never used to select or stop.

    Returns:
        TrainResult; `model` holds the best epoch's weights when it returns; `test_eval`/`test_metrics` hold
        the test evaluation when there was test data.

    Example:
        >>> # see the module docstring
    """
    _check_batch_size(args, accelerator)
    metric_name = metric_key(args.metric_for_best_model)
    greater = args.greater_is_better if args.greater_is_better is not None else greater_is_better(metric_name)
    loop = _Loop(
        accelerator=accelerator, args=args, phases=phases, model=model, datasets=(train_dataset, eval_dataset),
        checkpoint_root=Path(checkpoint_dir), ids=ids, callbacks=callbacks,
        metrics_fn=metrics_fn or _accuracy_only, metric_name=metric_name, greater=greater,
        say=log or main_process_reporter(accelerator), test_dataset=test_dataset,
    )
    # the eval rows choose the best epoch and when to stop: a resumed run must select on the same number of them
    fingerprint = {**args.fingerprint(), "train_size": len(train_dataset), "eval_size": len(eval_dataset),
                   "phases": [[p.name, p.epochs] for p in phases]}
    state = _initial_state(loop, fingerprint, resume_from)
    _start_ema(loop, resume_from)
    pending_resume = resume_from
    start_time = time.perf_counter()
    trainable = None
    while state.phase_index < len(phases):
        phase = phases[state.phase_index]
        run = _start_phase(loop, state, phase, pending_resume)
        pending_resume, trainable = None, run.trainable
        phase_index = state.phase_index
        while state.phase_index == phase_index and state.phase_epoch < phase.epochs:
            _end_epoch(loop, state, run, phase, _train_epoch(loop, state, run))
        if state.phase_index == phase_index:  # a phase with 0 epochs
            _next_phase(state)
    accelerator.wait_for_everyone()
    if trainable is None:  # resumed a finished run: nothing left to train
        if pending_resume is not None:
            ckpt.load_checkpoint(pending_resume, model=model, optimizer=None, scheduler=None)
        trainable = prepare_trainable(accelerator, loop.use_phase(len(phases) - 1).module)
    _restore_best(loop, state, trainable)
    test_eval = _evaluate_test(loop, trainable)
    return TrainResult(
        history=state.history, best_epoch=state.best_epoch, best_metric=state.best_metric,
        metric_for_best_model=metric_name, global_step=state.global_step, best_eval=loop.best_eval,
        best_metrics=loop.best_metrics, test_eval=test_eval,
        test_metrics=loop.metrics_fn(test_eval) if test_eval is not None else {}, nonfinite_skipped=state.nonfinite_skipped,
        nonfinite_ids=list(state.nonfinite_ids), resumed_from=str(resume_from) if resume_from else None,
        train_runtime_s=time.perf_counter() - start_time, stopped_early=loop.stopped_early,
        time_to_first_step_s=loop.first_step_seconds,
    )


def _start_ema(loop: _Loop, resume_from: str | Path | None) -> None:
    """The EMA of the weights (`ema_decay`): a copy of the model now, or the checkpoint's EMA on a resume."""
    if not loop.args.ema_decay:
        return
    if is_fsdp(loop.accelerator):
        raise TlHubError("ema_decay: not supported under FSDP by tl_hub (each process holds only a shard of the "
                         "weights the EMA would average); set ema_decay: null, or launch with DDP "
                         "(recipes/accelerate_configs/ddp.yaml)")
    loop.ema = make_ema(loop.model, loop.args.ema_decay)
    if resume_from is not None:
        ckpt.load_extra_tensors(resume_from, ckpt.EMA_FILE, loop.ema.module, "EMA weights")


def _ema_in(loop: _Loop) -> Any:
    """A context in which `loop.model` holds the EMA weights (nothing changes without an EMA)."""
    return ema_weights_in(loop.model, loop.ema) if loop.ema is not None else contextlib.nullcontext()


def _accuracy_only(ev: EvalOutput) -> dict[str, Any]:
    return {"accuracy": float((ev.predictions == ev.labels).mean())}


def _check_batch_size(args: TrainArgs, accelerator: Any) -> None:
    nproc = accelerator.num_processes
    if args.batch_size % nproc:
        raise TlHubError(
            f"batch_size: got {args.batch_size}, not divisible by the {nproc} processes; batch_size is the global "
            f"batch (split across processes). Use a multiple of {nproc}."
        )
    if nproc > 1 and not accelerator.split_batches:
        raise TlHubError(
            "accelerator: split_batches is off, so batch_size would be per process and results would depend "
            "on the process count; build it with Accelerator(dataloader_config=DataLoaderConfiguration("
            "split_batches=True))"
        )


def _make_loaders(train_dataset: Dataset, eval_dataset: Dataset, args: TrainArgs,
                  accelerator: Any) -> tuple[EpochSampler, Any, Any]:
    """The seeded training loader and the eval loader, prepared (sharded) for the processes."""
    sampler = _train_sampler(train_dataset, args)
    loader_kw = {"num_workers": args.num_workers, "pin_memory": torch.cuda.is_available(),
                 "persistent_workers": args.num_workers > 0}
    train_loader = DataLoader(SeededDataset(train_dataset), batch_size=args.batch_size, sampler=sampler, **loader_kw)
    # sharded for the processes, but moved to the device by the loop (`device_batch`): the sample indices
    # stay on the host, where the augmentation seeds and the names of a bad batch are made without a sync
    return (sampler, accelerator.prepare_data_loader(train_loader, device_placement=False),
            _eval_loader(eval_dataset, args, accelerator, persistent=True))


def _eval_loader(dataset: Dataset, args: TrainArgs, accelerator: Any, persistent: bool) -> Any:
    """An evaluation loader in dataset order, sharded for the processes (`evaluate` gathers every row once)."""
    nproc = accelerator.num_processes
    eval_bs = args.eval_batch_size or args.batch_size
    eval_bs = max(nproc, eval_bs - eval_bs % nproc)
    loader = DataLoader(dataset, batch_size=eval_bs, shuffle=False, num_workers=args.num_workers,
                        pin_memory=torch.cuda.is_available(), persistent_workers=persistent and args.num_workers > 0)
    return accelerator.prepare_data_loader(loader, device_placement=False)


def _train_sampler(train_dataset: Dataset, args: TrainArgs) -> EpochSampler:
    """The seeded order of the training samples: a permutation per epoch, or label-balanced draws."""
    if args.sampler == "random":
        return EpochSampler(len(train_dataset), args.seed, shuffle=True)
    if args.sampler != "balanced":
        raise TlHubError(f"sampler: got {args.sampler!r}; choose random or balanced")
    labels = getattr(train_dataset, "labels", None)
    if labels is None or len(labels) != len(train_dataset):
        raise TlHubError(f"sampler: balanced needs the training dataset's `labels` (one per item); "
                         f"{type(train_dataset).__name__} has none. Use sampler: random")
    return BalancedEpochSampler(labels, args.seed)


def _initial_state(loop: _Loop, fingerprint: dict[str, Any], resume_from: str | Path | None) -> LoopState:
    """A fresh state, or the checkpoint's (refused when it was written by a run with other knobs)."""
    if resume_from is None:
        return LoopState(fingerprint=fingerprint)
    saved = ckpt.read_state(resume_from)
    saved_fp = saved.get("fingerprint", {})
    diff = {k: (saved_fp.get(k), v) for k, v in fingerprint.items() if saved_fp.get(k) != v}
    if diff:
        raise CheckpointError(
            f"checkpoint {resume_from} was written by a different run: "
            + ", ".join(f"{k} saved {a!r} now {b!r}" for k, (a, b) in diff.items())
            + ". Resume with the same recipe, or start afresh (overwrite_output_dir: true)."
        )
    state = LoopState.from_dict({**saved, "fingerprint": fingerprint})
    state.end_of_epoch = False  # a flag of the checkpoint being written, not of the position to resume from
    loop.use_phase(min(state.phase_index, len(loop.phases) - 1))
    loop.say(f"resuming from {resume_from}: epoch {state.epoch + 1}, "
             f"{state.batches_done}/{loop.batches_per_epoch} batches done, global step {state.global_step}")
    return state


def _start_phase(loop: _Loop, state: LoopState, phase: Phase, resume_from: str | Path | None) -> _Optimizing:
    """Freeze/unfreeze for the phase, prepare what trains, build its optimizer and schedule; when resuming,
    load the checkpoint (its optimizer and schedule only if they belong to this phase)."""
    model, args = loop.model, loop.args
    module = loop.use_phase(state.phase_index).module
    if phase.setup is not None:
        phase.setup(model)
    sharded = is_fsdp(loop.accelerator)
    if resume_from is not None and sharded:  # the master takes the weights before its copy is wrapped
        ckpt.load_checkpoint(resume_from, model=model, optimizer=None, scheduler=None)
    # the groups are built on the unwrapped module (FSDP: the copy it wraps): whole parameters, the model's depths
    trainable = prepare_trainable(loop.accelerator, module, before_wrap=phase.param_groups)
    optimizer = make_optimizer(trainable.extra, phase.learning_rate or args.learning_rate)
    total = loop.steps_per_epoch * phase.epochs
    scheduler = _make_scheduler(args.lr_scheduler, optimizer, math.ceil(args.warmup_ratio * total), total)
    if resume_from is not None:
        same_phase = state.optimizer_phase_index == state.phase_index  # as restored from the checkpoint
        ckpt.load_checkpoint(resume_from, model=None if sharded else model,
                             optimizer=load_optimizer_state(trainable, optimizer) if same_phase else None,
                             scheduler=scheduler if same_phase else None)
    optimizer = loop.accelerator.prepare(optimizer)
    state.optimizer_phase_index = state.phase_index
    loss_sum = torch.tensor(state.loss_sum, dtype=torch.float64, device=loop.accelerator.device)
    n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    loop.say(f"phase {phase.name!r}: {phase.epochs} epoch(s), {loop.steps_per_epoch} optimizer steps/epoch, "
             f"{n_train:,} trainable parameters" + (f" (FSDP, sharded over {loop.nproc} processes)" if sharded else ""))
    return _Optimizing(trainable.prepared, optimizer, scheduler, loss_sum, trainable=trainable)


def make_optimizer(groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """AdamW over the groups: fused (one kernel for every parameter) where the parameters' device has the
    fused kernel, else `foreach` (one kernel per group and step), never a Python loop over parameters.

    Example:
        >>> opt = make_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2))]}], 1e-3)
        >>> opt.defaults["fused"] or opt.defaults["foreach"]
        True
    """
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_floating_point() for p in params) and \
        len({p.device.type for p in params}) == 1 and params[0].device.type in _FUSED_ADAMW_DEVICES
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=fused, foreach=None if fused else True)
    except RuntimeError:  # a dtype/device mix the fused kernel refuses: the foreach one takes anything
        return torch.optim.AdamW(groups, lr=lr, foreach=True)


_FUSED_ADAMW_DEVICES = ("cuda", "cpu", "xpu", "mps")


def _make_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int) -> Any:
    from transformers import get_scheduler

    kind = {"constant": "constant_with_warmup"}.get(name, name)
    if kind not in {"cosine", "linear", "constant_with_warmup", "cosine_with_restarts", "polynomial"}:
        raise TlHubError(f"lr_scheduler: got {name!r}; use one of cosine, linear, constant")
    return get_scheduler(kind, optimizer, num_warmup_steps=warmup, num_training_steps=max(total, 1))


@dataclass
class _EpochRun:
    """What one epoch's pass over the data measured (all processes' samples)."""

    samples: int
    seconds: float
    to_first_step: float  # from the epoch's start to the end of its first optimizer step (worker start-up included)
    steady_samples: int  # samples trained after that first step
    steady_seconds: float

    @property
    def images_per_second(self) -> float:
        """Steady-state throughput: after the first step, so DataLoader start-up does not count."""
        if self.steady_samples and self.steady_seconds > 0:
            return self.steady_samples / self.steady_seconds
        return self.samples / max(self.seconds, 1e-9)


def _train_epoch(loop: _Loop, state: LoopState, run: _Optimizing) -> _EpochRun:
    """Train the rest of the current epoch (all of it, or what a resumed checkpoint left)."""
    epoch, skip = state.epoch, state.batches_done
    loop.data.sampler.set_epoch(epoch)
    loader = loop.accelerator.skip_first_batches(loop.data.train_loader, skip) if skip else loop.data.train_loader
    loader.set_epoch(epoch)  # DataLoaderShard re-applies its own epoch counter on every __iter__
    run.model.train()
    bar = _progress_bar(loop, epoch, skip)
    start, first_step_end, samples, steady = time.perf_counter(), None, 0, 0
    for batch in loader:
        _, group_size, sync = _accumulation_position(loop, state.batches_done)
        _micro_batch(loop, state, run, batch, group_size, sync)
        n = int(batch["labels"].shape[0]) * loop.nproc
        state.samples_epoch += n
        samples += n
        steady += n if first_step_end is not None else 0
        state.batches_done += 1
        if sync:
            rate = steady / max(time.perf_counter() - (first_step_end or start), 1e-9)
            _optimizer_step(loop, state, run, bar, rate)
            first_step_end = first_step_end or time.perf_counter()
        if bar is not None:
            bar.update(1)
    _flush_check(loop, run)
    if bar is not None:
        bar.close()
    end = time.perf_counter()
    return _EpochRun(samples, end - start, (first_step_end or end) - start, steady, end - (first_step_end or end))


def _accumulation_position(loop: _Loop, batch_index: int) -> tuple[int, int, bool]:
    """(batches before this one in its accumulation group, the group's size, whether it ends the group).
    The last group of an epoch may be shorter."""
    ga = loop.accumulation
    group_start = (batch_index // ga) * ga
    group_end = min(group_start + ga, loop.batches_per_epoch)
    return batch_index - group_start, group_end - group_start, batch_index + 1 == group_end


def _progress_bar(loop: _Loop, epoch: int, skip: int) -> Any:
    if not (loop.args.progress and loop.accelerator.is_local_main_process):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=loop.batches_per_epoch, initial=skip, desc=f"epoch {epoch + 1}", leave=False,
                dynamic_ncols=True, mininterval=0.5)


def _micro_batch(loop: _Loop, state: LoopState, run: _Optimizing, batch: dict, group_size: int, sync: bool) -> None:
    """Forward and backward of one micro-batch (its uint8 images augmented on the device, gradients scaled for
    the accumulation group). Whether its loss is finite stays on the device until `_optimizer_step` reads the
    group's flags: one host sync per optimizer step. Only `skip_nonfinite_batches` reads it at once (a bad
    batch must not reach backward), which costs a sync per micro-batch."""
    accelerator, args = loop.accelerator, loop.args
    batch_index = state.batches_done
    dataset = loop.data.train_dataset
    seeds = sample_seeds(args.seed, state.epoch, batch["index"]) if _augments_batches(dataset) else None
    batch = device_batch(batch, dataset, accelerator.device, seeds, keep_on_host=("index",))
    targets = batch["labels"]
    if args.mix.active and getattr(batch.get("pixel_values"), "ndim", 0) == 4:  # images, not cached features
        batch["pixel_values"], targets = mix_batch(
            args.mix, batch["pixel_values"], targets, mix_seed(args.seed, state.epoch, batch_index, accelerator.process_index, 11))
    torch.manual_seed(mix_seed(args.seed, state.epoch, batch_index, accelerator.process_index, 7))
    no_sync = accelerator.no_sync(run.model) if not sync and loop.nproc > 1 else contextlib.nullcontext()
    with no_sync:
        logits = forward_logits(run.model, batch, loop.data.channels_last)
        loss = compute_loss(args.loss, logits, targets, training=True)
        # the mean over all processes: what the loss of the global batch is (NaN anywhere -> NaN)
        loss_all = accelerator.reduce(loss.detach().clone(), "mean") if loop.nproc > 1 else loss.detach()
        finite = bool(torch.isfinite(loss_all).item()) if args.skip_nonfinite_batches else None
        if finite is not False:
            accelerator.backward(loss / group_size)
    if finite is not False:
        run.group.append((loss_all, torch.isfinite(loss_all), batch["index"], batch_index))
        run.loss_sum += loss_all.double()
        state.loss_count += 1
        return
    bad = _batch_ids(batch, loop.ids)
    state.nonfinite_skipped += 1
    state.nonfinite_ids.extend(bad[:64])
    loop.say(f"skipped a batch with non-finite loss at epoch {state.epoch + 1}, batch {batch_index + 1}: {bad[:8]}")


def _augments_batches(dataset: Any) -> bool:
    return bool(getattr(dataset, "uint8_items", False) and getattr(dataset, "augment", False))


def _batch_ids(batch: dict, ids: Sequence[str] | None) -> list[str]:
    index = batch.get("index")
    if index is None:
        return []
    idx = index.tolist() if isinstance(index, torch.Tensor) else list(index)
    if ids is None:
        return [f"row {i}" for i in idx]
    return [str(ids[i]) for i in idx]


def _optimizer_step(loop: _Loop, state: LoopState, run: _Optimizing, bar: Any, images_per_second: float) -> None:
    """Read the group's losses (the step's one host sync: a NaN/inf stops the run naming its batch), clip,
    step, advance the schedule, report every `report_every` steps; checkpoint every `checkpointing_steps`;
    run the callbacks."""
    args, accelerator = loop.args, loop.accelerator
    check = _queue_check(loop, state, run)
    if defers_checks(accelerator.device):  # read the step before this one: its copy is long done
        check, run.pending = run.pending, check
    loss, reported_step = (_resolve_check(loop, check), check.step) if check is not None else (None, None)
    if args.max_grad_norm and args.max_grad_norm > 0:
        clip_gradients(accelerator, run.model, args.max_grad_norm)
    run.optimizer.step()
    if not accelerator.optimizer_step_was_skipped:
        run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if loop.ema is not None:
        loop.ema.update(loop.model)
    state.global_step += 1
    lr = max(run.scheduler.get_last_lr())
    if loss is not None and bar is not None:
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_second:.0f}", refresh=False)
    if loss is not None and getattr(accelerator, "trackers", None):
        accelerator.log({"train_loss": loss, "learning_rate": lr}, step=reported_step)
    every = args.checkpointing_steps
    if isinstance(every, int) and every > 0 and state.global_step % every == 0:
        _save_checkpoint(loop, state, run)
    for callback in loop.callbacks:
        callback("step", state)


def defers_checks(device: Any) -> bool:
    """Whether an optimizer step's non-finite check is read one step later: on a GPU, where reading it at
    once would make the host wait for the step's backward pass, leaving the GPU idle while the next batch
    is prepared. The error still names the right step and images, and every checkpoint, evaluation and the
    end of each epoch first read what is pending, so no non-finite step is ever saved or evaluated.

    Example:
        >>> defers_checks(torch.device("cpu"))
        False
    """
    return torch.device(device).type == "cuda"


def _queue_check(loop: _Loop, state: LoopState, run: _Optimizing) -> _GroupCheck | None:
    """The accumulation group's (finite flag, loss) pairs as one tensor, copied to the host without waiting
    (on a GPU: into pinned memory, an event marks when it has arrived). None when every micro-batch of the
    group was skipped (`skip_nonfinite_batches` keeps only those already found finite)."""
    if not run.group:
        return None
    values = torch.stack([torch.stack([flag.double(), loss.double()]) for loss, flag, _, _ in run.group])
    ready = None
    if values.device.type == "cuda":
        values = values.to("cpu", non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
    batches = [(index, batch_index) for _, _, index, batch_index in run.group]
    run.group = []
    return _GroupCheck(values, ready, batches, state.epoch, state.global_step + 1,
                       reporting=state.global_step % max(1, loop.args.report_every) == 0)


def _resolve_check(loop: _Loop, check: _GroupCheck) -> float | None:
    """Read a queued check (the one host sync of a step): raises NonFiniteLossError naming the first bad
    micro-batch; returns the group's last loss when that step reports, else None."""
    if check.ready is not None:
        check.ready.synchronize()
    values = check.values.tolist()
    for (finite, value), (index, batch_index) in zip(values, check.batches):
        if not finite:
            raise NonFiniteLossError(
                f"loss is {value} at epoch {check.epoch + 1}, batch {batch_index + 1}, optimizer step "
                f"{check.step}; images of this batch (this process): {_batch_ids({'index': index}, loop.ids)}. "
                "Lower learning_rate, check these images, or set skip_nonfinite_batches: true to skip "
                "such batches (they are counted and reported)."
            )
    return values[-1][1] if check.reporting else None


def _flush_check(loop: _Loop, run: _Optimizing) -> None:
    """Read the check a GPU step left pending, before anything is saved or evaluated."""
    pending, run.pending = run.pending, None
    if pending is not None:
        _resolve_check(loop, pending)


def _end_epoch(loop: _Loop, state: LoopState, run: _Optimizing, phase: Phase, timing: _EpochRun) -> None:
    """Evaluate, record the epoch, keep the best model, decide early stopping, advance the counters,
    write the epoch's checkpoint and run the callbacks."""
    state.loss_sum = float(run.loss_sum.item())
    with _ema_in(loop):  # with an EMA, its weights are what is evaluated (and kept as the best model)
        ev = evaluate(run.model, loop.data.eval_loader, loop.accelerator, loop.data.channels_last,
                      loop.data.eval_dataset, loop.args.loss, progress=loop.args.progress)
    metrics = loop.metrics_fn(ev)
    scalars = _scalar_metrics(metrics)
    scalars.setdefault("loss", ev.loss)
    if loop.metric_name not in scalars:
        raise TlHubError(
            f"metric_for_best_model: got {loop.args.metric_for_best_model!r}; the evaluation produced "
            f"{sorted(scalars)}. Use one of those."
        )
    value = scalars[loop.metric_name]
    improved = _is_better(value, state.best_metric, loop.greater)
    record = {
        "epoch": state.epoch + 1, "phase": phase.name, "step": state.global_step,
        "train_loss": state.loss_sum / max(state.loss_count, 1),
        "learning_rate": max(run.scheduler.get_last_lr()),
        "images_per_second": timing.images_per_second,  # steady state: from the end of the first step
        "epoch_time_s": timing.seconds,
        **{f"eval_{k}": v for k, v in scalars.items()},
    }
    state.history.append(record)
    loop.first_step_seconds.append(timing.to_first_step)
    if improved:
        state.best_metric, state.best_epoch, state.bad_epochs = value, state.epoch + 1, 0
        loop.best_eval, loop.best_metrics = ev, metrics
        sync_master(run.trainable)  # FSDP: every process (the same `improved` everywhere: gathered metrics)
        if loop.accelerator.is_main_process:
            best = loop.ema.module if loop.ema is not None else loop.model
            ckpt.save_best_model(loop.checkpoint_root, best, {"epoch": state.epoch + 1, loop.metric_name: value})
    else:
        state.bad_epochs += 1
    if getattr(loop.accelerator, "trackers", None):
        loop.accelerator.log({k: v for k, v in record.items() if isinstance(v, float)}, step=state.global_step)
    loop.say(_epoch_line(record, loop.total_epochs, loop.metric_name, improved))
    stop = bool(loop.args.early_stopping_patience) and state.bad_epochs >= loop.args.early_stopping_patience
    if stop:
        loop.stopped_early = True
        loop.say(f"early stopping: eval_{loop.metric_name} did not improve for {state.bad_epochs} epoch(s) "
                 f"(best {state.best_metric:.4f} at epoch {state.best_epoch})")
    state.epoch += 1
    state.phase_epoch += 1
    state.batches_done, state.loss_sum, state.loss_count, state.samples_epoch = 0, 0.0, 0, 0
    run.loss_sum.zero_()
    if stop or state.phase_epoch >= phase.epochs:
        _next_phase(state)
    state.end_of_epoch = True
    if loop.args.checkpointing_steps is not None:
        _save_checkpoint(loop, state, run)
    state.end_of_epoch = False
    for callback in loop.callbacks:
        callback("epoch", state)


def _next_phase(state: LoopState) -> None:
    state.phase_index += 1
    state.phase_epoch, state.bad_epochs = 0, 0


def _is_better(value: float, best: float | None, greater: bool) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return not math.isnan(value)
    return value > best if greater else value < best


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, bool)}


def _epoch_line(record: dict[str, Any], total_epochs: int, metric: str, improved: bool) -> str:
    shown = {f"eval_{metric}", "eval_loss", "eval_accuracy", "eval_f1_macro"}
    evals = "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("eval_") and k in shown)
    star = "  *best*" if improved else ""
    return (f"epoch {record['epoch']}/{total_epochs} [{record['phase']}]  train_loss {record['train_loss']:.4f}  "
            f"lr {record['learning_rate']:.2e}  {evals}  {record['images_per_second']:.0f} img/s  "
            f"{record['epoch_time_s']:.1f} s{star}")


def _save_checkpoint(loop: _Loop, state: LoopState, run: _Optimizing) -> None:
    _flush_check(loop, run)  # a non-finite step is never saved
    state.loss_sum = float(run.loss_sum.item())  # the running sum lives on the device between checkpoints
    # under FSDP every process takes part in gathering the full model and optimizer state; rank 0 writes them
    sync_master(run.trainable)
    optimizer_state = gather_optimizer_state(run.trainable, run.optimizer)
    if loop.accelerator.is_main_process:
        extra = {ckpt.EMA_FILE: ckpt.model_state_tensors(loop.ema.module)} if loop.ema is not None else None
        ckpt.save_checkpoint(loop.checkpoint_root, model=loop.model, optimizer=optimizer_state,
                             scheduler=run.scheduler, state=state.to_dict(), save_total_limit=loop.args.save_total_limit,
                             extra_tensors=extra)
    loop.accelerator.wait_for_everyone()


def _restore_best(loop: _Loop, state: LoopState, trainable: Trainable) -> None:
    """Leave the best epoch's weights in the model (from `best_model.safetensors` unless the last epoch was
    the best; under FSDP always, as only global rank 0's master follows training), and its evaluation in
    `loop` (evaluated again when this process did not see it: a resume)."""
    best_file = loop.checkpoint_root / ckpt.BEST_MODEL_FILE
    if state.best_epoch is None or not best_file.is_file():
        sync_master(trainable)  # FSDP: rank 0's master takes the last weights
        return
    last_epoch = state.history[-1]["epoch"] if state.history else None
    # with an EMA the model holds the raw weights, the best file the EMA's: always load it
    if trainable.sharded or loop.best_eval is None or state.best_epoch != last_epoch or loop.ema is not None:
        ckpt.load_best_model(loop.checkpoint_root, loop.model)
    if loop.best_eval is None:
        push_master(trainable)  # FSDP: the wrapped copy evaluates the best weights
        loop.best_eval = evaluate(trainable.prepared, loop.data.eval_loader, loop.accelerator,
                                  loop.data.channels_last, loop.data.eval_dataset, loop.args.loss)
        loop.best_metrics = loop.metrics_fn(loop.best_eval)


def _evaluate_test(loop: _Loop, trainable: Trainable) -> EvalOutput | None:
    """The best model (restored by `_restore_best`) on the held-out test data, once; every process takes part
    and every process gets all rows (`evaluate` gathers them). None when there is no test data."""
    phase = loop.phases[-1]
    dataset = phase.test_dataset if phase.test_dataset is not None else loop.test_dataset
    if dataset is None:
        return None
    push_master(trainable)  # FSDP: the wrapped copy evaluates the best weights (a no-op otherwise)
    loader = _eval_loader(dataset, loop.args, loop.accelerator, persistent=False)
    return evaluate(trainable.prepared, loader, loop.accelerator, loop.data.channels_last, dataset, loop.args.loss,
                    progress=loop.args.progress)


def find_resume_checkpoint(checkpoint_dir: str | Path, resume_from_checkpoint: str | None) -> Path | None:
    """Resolve `resume_from_checkpoint` ("latest", a path, or None) to a complete checkpoint folder.

    "latest" with no checkpoint yet returns None (a fresh start: the same command works for the first
    run and every restart). An explicit path that is missing or incomplete raises CheckpointError.

    Example:
        >>> import tempfile
        >>> find_resume_checkpoint(tempfile.mkdtemp(), "latest") is None
        True
    """
    if not resume_from_checkpoint:
        return None
    if str(resume_from_checkpoint) == "latest":
        return ckpt.latest_checkpoint(checkpoint_dir)
    path = Path(resume_from_checkpoint)
    ckpt.read_state(path)  # raises with a clear message when missing/incomplete
    return path
