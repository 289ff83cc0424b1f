"""How a run uses the machine: the Accelerator, the precision, the CPU allocator, the memory layout, the
DataLoader workers and the batch of the one-off feature pass; and the words that describe the device.

Each choice was measured on the machines named in the README's "Benchmarks" section; the numbers live
there, not here.

Example:
    >>> accelerator = make_accelerator()
    >>> accelerator.num_processes, accelerator.split_batches
    (1, True)
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from typing import Any

from tl_hub.reporting import logger

__all__ = ["augments_batches_on_device", "default_workers", "describe_device", "feature_batch_size", "make_accelerator", "resolve_precision",
           "tune_cpu_allocator", "wants_channels_last"]


def resolve_precision(requested: str | None) -> str:
    """The mixed precision a run uses: the recipe's, else the launcher's (`ACCELERATE_MIXED_PRECISION`), else
    "no". fp16 without CUDA falls back to "no" with a warning (torch ignores fp16 autocast on a CPU).

    Example:
        >>> resolve_precision("bf16"), resolve_precision(None) in ("no", "bf16", "fp16")
        ('bf16', True)
    """
    import torch

    value = str(requested or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no").lower()
    if value == "fp16" and not torch.cuda.is_available():
        if int(os.environ.get("RANK", "0")) == 0:
            logger.warning("mixed_precision: fp16 was requested, but torch ignores fp16 autocast on CPU; training in "
                           "float32 instead (use bf16 on CPUs that support it)")
        return "no"
    return value


def make_accelerator(mixed_precision: str | None = None, *, log_with: list[str] | tuple[str, ...] = (),
                     project_dir: str | os.PathLike | None = None) -> Any:
    """An `accelerate.Accelerator` for tl_hub's loop: the CPU unless CUDA is there, `batch_size` meaning the
    global batch (`split_batches`, so 1 or N processes train the same model), the resolved precision.

    Example:
        >>> make_accelerator("no").mixed_precision
        'no'
    """
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    precision = resolve_precision(mixed_precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state()  # a second run in the same Python process with another precision
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=precision,
        # accelerate 1.x ignores a plain `split_batches=` argument: it must go through DataLoaderConfiguration
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with=list(log_with) or None,
        project_dir=str(project_dir) if project_dir is not None else None,
    )


def tune_cpu_allocator() -> bool:
    """Keep freed activation buffers in the malloc heap during CPU training (Linux/glibc only).

    glibc serves allocations above its mmap threshold with fresh `mmap` pages and unmaps them on free,
    so every training step page-faults its activations in again. Raising the mmap and trim thresholds
    (what `MALLOC_MMAP_THRESHOLD_`/`MALLOC_TRIM_THRESHOLD_` do, set here through `mallopt`) lets the
    heap reuse them: faster CPU training and far fewer page faults, for a few percent more peak memory
    (README, "Benchmarks"). Opt out with TL_HUB_MALLOC_TUNING=0. Returns True when the settings were applied.

    Example:
        >>> isinstance(tune_cpu_allocator(), bool)
        True
    """
    if not sys.platform.startswith("linux") or os.environ.get("TL_HUB_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


def default_workers(num_processes: int) -> int:
    """DataLoader workers when the recipe leaves `num_workers` null: none without CUDA (the decode-once cache
    makes items cheap and forking costs more on few cores), else the cores per process minus one (1 to 8).

    Example:
        >>> default_workers(1) >= 0
        True
    """
    import torch

    if not torch.cuda.is_available():
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // max(1, num_processes) - 1))


def augments_batches_on_device(device_type: str) -> bool:
    """Whether training batches are cropped, flipped and normalised as one batch on the device (uint8 items,
    `augment_batch`) rather than item by item in the DataLoader: on accelerators yes (the CPU only gathers
    bytes); on a CPU no: there the per-item crop and antialiased resize measured faster than the batched
    `roi_align` (README, "Benchmarks").

    Example:
        >>> augments_batches_on_device("cuda"), augments_batches_on_device("cpu")
        (True, False)
    """
    return device_type != "cpu"


def feature_batch_size(eval_batch_size: int | None, batch_size: int, device_type: str) -> int:
    """Batch size of the one forward pass over the data on the feature path.

    An explicit `eval_batch_size` wins. On an accelerator, at least 64 (throughput). On a CPU, at most 16:
    larger batches were no faster there while the activations' peak memory grew with the batch.

    Example:
        >>> feature_batch_size(None, 32, "cpu"), feature_batch_size(None, 32, "cuda"), feature_batch_size(8, 32, "cpu")
        (16, 64, 8)
    """
    if eval_batch_size:
        return eval_batch_size
    return max(batch_size, 64) if device_type != "cpu" else min(batch_size, 16)


def wants_channels_last(model: Any, device_type: str = "cpu") -> bool:
    """channels_last memory format for conv nets (8 or more Conv2d layers) on the CPU, where it is faster.

    Not on CUDA: there tl_hub keeps PyTorch's default layout, like the Trainer (channels_last made the
    depthwise convolutions of EfficientNet slower on a GPU). Not for ViTs, whose only conv is the patch
    embedding.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 1) for _ in range(8)])
        >>> wants_channels_last(net, "cpu"), wants_channels_last(net, "cuda")
        (True, False)
    """
    import torch

    if device_type != "cpu":
        return False
    convs = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return convs >= 8


def describe_device(accelerator: Any) -> str:
    """The device in words for run_info.json and the card: "2 x NVIDIA H100 ..." or "cpu (x86_64, 2 cores)".

    Example:
        >>> describe_device(make_accelerator()).startswith(("cpu", "1 x"))
        True
    """
    import torch

    if accelerator.device.type == "cuda":
        return f"{accelerator.num_processes} x {torch.cuda.get_device_name(accelerator.device)}"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
