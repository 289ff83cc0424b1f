"""How a run uses the machine: the Accelerator, the precision, the CPU allocator, the memory layout, the
CPU threads and DataLoader workers, the batch of the one-off feature pass; and the words that describe
the device.

Threads: torch starts one intra-op thread per core of the machine, whatever else runs there. Its OpenMP
threads meet at a barrier after every operation, so when other programs keep cores busy the barrier
waits for a thread the kernel has not scheduled (and the waiting threads spin, taking CPU from the
others): a run slows down far more than its fair share. `plan_threads` sizes the run instead: the
cores this process may use (its CPU affinity and cgroup quota), shared among the processes of the run
on this node (`LOCAL_WORLD_SIZE`), less the cores other programs keep busy right now, split between
the DataLoader workers and the main process's threads (workers + threads <= that share; at least one
thread). `configure_threads` applies it after `make_accelerator`; a thread count the user chose
(`OMP_NUM_THREADS`, `MKL_NUM_THREADS`, `torch.set_num_threads`) is left as it is, and a
`ThreadGovernor` keeps following the load during the long feature pass. `prepare_process` (the command
line, before torch is imported) makes OpenMP's idle threads spin briefly and then sleep, which only
works before torch loads its OpenMP runtime (a Python program that imported torch first keeps its own).

Each choice was measured on the machines named in the README's "Benchmarks" section; the numbers live
there, not here.

Example:
    >>> accelerator = make_accelerator()
    >>> accelerator.num_processes, accelerator.split_batches
    (1, True)
    >>> plan_threads(cores=8, processes=2, busy=0.0, workers=1).threads
    3
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tl_hub.reporting import logger

__all__ = ["ThreadGovernor", "ThreadPlan", "augments_batches_on_device", "busy_cores", "configure_threads",
           "default_workers", "describe_device", "feature_batch_size", "local_processes", "make_accelerator", "parse_cpu_max", "plan_threads", "prepare_process",
           "resolve_precision", "tune_cpu_allocator", "tune_cuda", "usable_cores", "wants_channels_last"]

#: environment variables through which a user sets torch's intra-op threads (torch reads both)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


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
    Launches tl_hub does not support (DeepSpeed, FSDP2) stop here with a ConfigError
    (`tl_hub.distributed.check_launch`); an FSDP config on a CPU trains under FSDP.

    Example:
        >>> make_accelerator("no").mixed_precision
        'no'
    """
    import torch
    from accelerate.state import AcceleratorState

    from tl_hub.distributed import check_launch, cpu_fsdp_deferred, enable_fsdp_on_cpu

    check_launch()  # DeepSpeed is refused before accelerate tries to import it
    precision = resolve_precision(mixed_precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state()  # a second run in the same Python process with another precision
    with cpu_fsdp_deferred(cpu=not torch.cuda.is_available()):
        accelerator = _accelerator(precision, log_with, project_dir)
    enable_fsdp_on_cpu(accelerator)  # accelerate drops an FSDP config on a CPU; tl_hub keeps it
    check_launch(accelerator)  # FSDP2 or FSDP without use_orig_params: refused at start
    return accelerator


def _accelerator(precision: str, log_with: Any, project_dir: Any) -> Any:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=precision,
        # accelerate 1.x ignores a plain `split_batches=` argument: it must go through DataLoaderConfiguration
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with=list(log_with) or None,
        project_dir=str(project_dir) if project_dir is not None else None,
    )


def tune_cuda(autotune: bool = True) -> dict[str, bool]:
    """On CUDA, let cuDNN pick the fastest convolution algorithms for the run's shapes (`cudnn.benchmark`) and
    run float32 matmuls and convolutions on TF32 tensor cores; `autotune=False` (the recipe key
    `cuda_autotune: false`) sets exact float32 and a fixed algorithm choice instead. A no-op without CUDA.
    Returns the settings it applied (empty without CUDA).

    Example:
        >>> import torch
        >>> tune_cuda(True) == ({} if not torch.cuda.is_available() else
        ...                     {"cudnn_benchmark": True, "tf32": True})
        True
    """
    import torch

    if not torch.cuda.is_available():
        return {}
    torch.backends.cudnn.benchmark = autotune
    # the allow_tf32 spelling, not torch>=2.9's fp32_precision: accelerate and the Trainer set that one, and
    # torch refuses a mix of the two
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = autotune
    return {"cudnn_benchmark": autotune, "tf32": autotune}


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
    makes items cheap and forking costs more on few cores), else this process's share of the cores it may
    use (`usable_cores` over the processes of the run on this node) minus one for the main process (1 to 8).
    `num_processes` counts the run's processes when the launcher did not say how many run on this node.

    Example:
        >>> default_workers(1) >= 0
        True
    """
    import torch

    if not torch.cuda.is_available():
        return 0
    return _cuda_workers(usable_cores() // local_processes(num_processes))


def _cuda_workers(share: int) -> int:
    return max(1, min(8, share - 1))


# ---------------------------------------------------------------------------------------------------
# CPU threads
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThreadPlan:
    """How many CPU threads and DataLoader workers one process of a run uses, and from what.

    Attributes:
        cores: CPUs this process may use (affinity, cgroup quota).
        processes: processes of the run on this node, sharing those CPUs.
        busy: CPUs that other programs keep busy right now (from the kernel's run queue).
        workers: DataLoader worker processes.
        threads: torch intra-op threads of this process.
    """

    cores: int
    processes: int
    busy: float
    workers: int
    threads: int

    def describe(self) -> str:
        """One line for the log.

        Example:
            >>> ThreadPlan(cores=2, processes=1, busy=4.0, workers=0, threads=1).describe()
            'cpu: 1 torch thread(s), 0 DataLoader worker(s) (2 cores, about 4 kept busy by other programs)'
        """
        parts = [f"{self.cores} cores"]
        if self.processes > 1:
            parts.append(f"{self.processes} processes of this run on this node")
        if self.busy >= 0.5:
            parts.append(f"about {self.busy:.0f} kept busy by other programs")
        return (f"cpu: {self.threads} torch thread(s), {self.workers} DataLoader worker(s) ({', '.join(parts)})")


def plan_threads(cores: int, processes: int = 1, busy: float = 0.0, workers: int | None = None, *,
                 cuda: bool = False) -> ThreadPlan:
    """The sizing rule. This process's share is `cores // processes`; other programs' busy cores reduce what
    it may take now to its part of the cores they leave free (rounded, at least 1); DataLoader workers
    (default: none on a CPU, the share minus one with CUDA) come out of that, and the main process keeps
    the rest as torch threads (at least one). So workers + threads <= the share whenever the share holds
    at least one worker and one thread.

    Example:
        >>> plan_threads(2).threads, plan_threads(2, busy=4.0).threads, plan_threads(2, processes=2).threads
        (2, 1, 1)
        >>> plan = plan_threads(16, processes=2, workers=None, cuda=True)
        >>> plan.workers, plan.threads
        (7, 1)
    """
    cores, processes = max(1, int(cores)), max(1, int(processes))
    share = max(1, cores // processes)
    free = max(0.0, cores - max(0.0, busy)) / processes
    now = max(1, min(share, math.floor(free + 0.5)))
    if workers is None:
        workers = _cuda_workers(share) if cuda else 0
    return ThreadPlan(cores=cores, processes=processes, busy=max(0.0, busy), workers=int(workers),
                      threads=max(1, now - int(workers)))


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask (`taskset`, a container's cpuset), capped by a cgroup
    CPU quota (`docker --cpus`, Kubernetes limits) when there is one.

    Example:
        >>> 1 <= usable_cores() <= (os.cpu_count() or 1)
        True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cgroup_cpu_quota() -> float | None:
    """The CPU quota of this process's cgroup (v2 `cpu.max`, its own group or the root the container sees) in
    CPUs, or None when unlimited or unknown."""
    candidates = [Path("/sys/fs/cgroup/cpu.max")]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                candidates.insert(0, Path("/sys/fs/cgroup") / line[3:].strip().lstrip("/") / "cpu.max")
    except OSError:
        return None
    for path in candidates:
        try:
            return parse_cpu_max(path.read_text())
        except OSError:
            continue
    return None


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 `cpu.max` ("QUOTA PERIOD"; "max PERIOD" is no limit).

    Example:
        >>> parse_cpu_max("150000 100000"), parse_cpu_max("max 100000")
        (1.5, None)
    """
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = float(fields[0]), float(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def local_processes(default: int = 1) -> int:
    """Processes of this run on this node: `LOCAL_WORLD_SIZE` (torchrun, accelerate launch), else `default`.

    Example:
        >>> local_processes() >= 1
        True
    """
    value = os.environ.get("LOCAL_WORLD_SIZE", "")
    return max(1, int(value)) if value.isdigit() else max(1, int(default))


def busy_cores(samples: int = 4, interval_s: float = 0.01, *, cores: int | None = None) -> float:
    """CPUs that other programs keep busy now, counted in this process's `cores` (default `usable_cores()`).

    The kernel's run queue (`/proc/loadavg`: runnable tasks now) less this process's own runnable threads,
    the fewest over a few samples (a program that keeps a core busy is runnable in every sample, a brief
    one is not), scaled from the whole machine to the CPUs this process may use. Not the load average:
    it trails by a minute and counts this process's own past work. 0.0 where there is no /proc.

    Example:
        >>> busy_cores(samples=1) >= 0.0
        True
    """
    cores = usable_cores() if cores is None else cores
    counts = []
    for i in range(max(1, samples)):
        if i:
            time.sleep(interval_s)
        runnable = _runnable_tasks()
        if runnable is None:
            return 0.0
        counts.append(max(0, runnable - _own_runnable_threads()))
    machine = os.cpu_count() or cores
    return min(counts) * min(1.0, cores / max(1, machine))


def _runnable_tasks() -> int | None:
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def _own_runnable_threads() -> int:
    running = 0
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return 1
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2:].startswith("R"):
            running += 1
    return max(1, running)


_APPLIED: dict[str, int] = {}  # the thread count tl_hub set last (so tl_hub may change it again, a user's never)


def configure_threads(accelerator: Any = None, num_workers: int | None = None, *,
                      busy: float | None = None) -> ThreadPlan:
    """Size this process's torch threads by `plan_threads` (busy cores measured now unless given) and apply
    it, unless the user chose a thread count: `OMP_NUM_THREADS`/`MKL_NUM_THREADS` set, or a
    `torch.set_num_threads` that differs from torch's default. tl_hub only ever lowers torch's default;
    a later run in the same process may raise it back to that default. With `accelerator`, the main process
    logs the plan when it uses fewer threads than the process's share of the cores. Returns the plan (its
    `threads` is what torch uses afterwards).

    Example:
        >>> configure_threads(busy=0.0).threads >= 1
        True
    """
    import torch

    cores = usable_cores()
    processes = local_processes(getattr(accelerator, "num_processes", 1))
    cuda = getattr(getattr(accelerator, "device", None), "type", "cpu") == "cuda"
    others = _other_programs(busy_cores(cores=cores) if busy is None else busy, cores, processes)
    plan = plan_threads(cores, processes, others, num_workers, cuda=cuda)
    ceiling = _owned_thread_ceiling()
    if ceiling is None:  # the user's thread count
        return ThreadPlan(plan.cores, plan.processes, plan.busy, plan.workers, torch.get_num_threads())
    plan = ThreadPlan(plan.cores, plan.processes, plan.busy, plan.workers, _apply_threads(min(plan.threads, ceiling)))
    if accelerator is not None and accelerator.is_main_process and plan.threads < cores // processes:
        logger.info(plan.describe())
    return plan


def _other_programs(busy: float, cores: int, processes: int) -> float:
    """Busy cores less those the run's own other processes on this node may be using (their share each)."""
    return max(0.0, busy - (processes - 1) * max(1, cores // processes))


def _owned_thread_ceiling() -> int | None:
    """torch's default thread count when tl_hub may set the threads (torch is at its default, or at the count
    tl_hub set), else None (the user chose them)."""
    import torch

    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return None
    default = _torch_default_threads()
    return default if torch.get_num_threads() in (default, _APPLIED.get("threads")) else None


def _apply_threads(threads: int) -> int:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    _APPLIED["threads"] = threads
    return threads


class ThreadGovernor:
    """Keeps torch's threads sized to the free cores while a long loop runs, since other programs start and
    stop during a run: `tick()` once per batch reads the run queue at most every `interval_s` seconds and
    re-applies `plan_threads` to the fewest busy cores of the last `window` readings (so a brief job does not
    count). It acts only while tl_hub owns the thread count (`configure_threads` set it, or torch is at its
    default); a thread count the user chose is never changed.

    Example:
        >>> governor = ThreadGovernor(interval_s=0.0)
        >>> for _ in range(3):
        ...     governor.tick()
        >>> governor.threads >= 1
        True
    """

    def __init__(self, accelerator: Any = None, num_workers: int = 0, *, interval_s: float = 1.0,
                 window: int = 3) -> None:
        import torch

        self.cores = usable_cores()
        self.processes = local_processes(getattr(accelerator, "num_processes", 1))
        self.num_workers, self.interval_s, self.window = num_workers, interval_s, max(1, window)
        self.readings: list[float] = []
        self.threads = torch.get_num_threads()
        self._next = time.monotonic() + interval_s

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        busy = busy_cores(samples=1, cores=self.cores)
        self.readings = (self.readings + [busy])[-self.window:]
        ceiling = _owned_thread_ceiling()
        if ceiling is None or len(self.readings) < self.window:
            return
        others = max(0.0, _other_programs(min(self.readings), self.cores, self.processes) - self.num_workers)
        wanted = min(plan_threads(self.cores, self.processes, others, self.num_workers).threads, ceiling)
        if wanted != self.threads:
            self.threads = _apply_threads(wanted)


def _torch_default_threads() -> int:
    """torch's own default intra-op thread count: one per physical core among the CPUs of the affinity mask
    (what MKL's and OpenMP's defaults give), read from Linux's CPU topology; else the CPUs of the mask."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return max(1, len(cores))


#: libgomp (the OpenMP runtime of torch's Linux wheels) spins this many times before an idle thread sleeps;
#: its default, 300,000, keeps a waiting thread on a core long enough to starve the thread it waits for
#: whenever other programs share the cores (tests/benchmarks/README.md, "CPU threads on a shared machine")
GOMP_SPINCOUNT = "10000"


def prepare_process(environ: Any = None, *, stream: Any = None) -> dict[str, str]:
    """What the `tl-hub` command sets first, before torch or any Hugging Face library is imported (both read
    these once, when they load): OpenMP's idle threads spin briefly, then sleep (`GOMP_SPINCOUNT`), so a run
    that shares its cores with other programs does not stall on its own spinning threads; and, when the
    output (`stream`, default stderr) is not a terminal, no progress bars
    (`tl_hub.reporting.progress_bars_for`). A value the user set (`GOMP_SPINCOUNT`, `OMP_WAIT_POLICY`,
    `TQDM_DISABLE`) is kept, and once torch is loaded the OpenMP settings are left alone. Returns what it set.

    Example:
        >>> import io
        >>> sorted(prepare_process({"OMP_WAIT_POLICY": "active"}, stream=io.StringIO()))
        ['TQDM_DISABLE']
    """
    from tl_hub.reporting import progress_bars_for

    environ = os.environ if environ is None else environ
    changes = progress_bars_for(sys.stderr if stream is None else stream, environ)
    if "torch" in sys.modules or environ.get("OMP_WAIT_POLICY") or environ.get("GOMP_SPINCOUNT"):
        return changes
    environ["GOMP_SPINCOUNT"] = changes["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    return changes


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
