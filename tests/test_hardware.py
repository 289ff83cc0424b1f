"""tl_hub.hardware's CPU sizing: the rule (threads + workers within this process's share of the cores it may
use, less what other programs keep busy), where its inputs come from (affinity, cgroup quota, the processes
of the run on this node, the run queue), and what it leaves alone (a thread count the user chose, OpenMP
settings once torch is loaded). No timings here: the speed it buys is measured by the benchmarks."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
import time

import pytest
import torch

from tl_hub import hardware
from tl_hub.hardware import (
    ThreadPlan,
    busy_cores,
    configure_threads,
    local_processes,
    parse_cpu_max,
    plan_threads,
    prepare_process,
    usable_cores,
)


@pytest.mark.parametrize(
    ("cores", "processes", "busy", "workers", "cuda", "expected"),
    [
        (2, 1, 0.0, None, False, (0, 2)),   # an idle 2-core machine: torch's own default
        (2, 1, 1.0, None, False, (0, 1)),   # one core taken by another program
        (2, 1, 4.0, None, False, (0, 1)),   # 4 busy loops on 2 cores: one thread, never zero
        (2, 2, 0.0, None, False, (0, 1)),   # two processes of the run share the 2 cores
        (16, 1, 0.0, 3, False, (3, 13)),    # explicit workers come out of the share
        (16, 1, 8.0, None, False, (0, 8)),  # half the machine busy
        (8, 2, 4.0, None, False, (0, 2)),   # the free half, split between the run's 2 processes
        (16, 2, 0.0, None, True, (7, 1)),   # CUDA: workers take the share but one thread
        (4, 1, 0.0, 8, False, (8, 1)),      # more workers than cores (the user's choice): still one thread
        (1, 1, 0.0, None, False, (0, 1)),
        (2, 1, 0.4, None, False, (0, 2)),   # a brief blip is not a busy core
    ],
)
def test_plan_threads(cores, processes, busy, workers, cuda, expected):
    plan = plan_threads(cores, processes, busy, workers, cuda=cuda)
    assert (plan.workers, plan.threads) == expected
    assert (plan.cores, plan.processes, plan.busy) == (cores, processes, busy)


def test_workers_and_threads_never_exceed_the_share():
    for cores, processes, busy, workers, cuda in itertools.product(
            range(1, 33), (1, 2, 3, 4, 8), (0.0, 0.5, 1.0, 3.0, 7.5, 40.0), (None, 0, 1, 2, 5), (False, True)):
        plan = plan_threads(cores, processes, busy, workers, cuda=cuda)
        share = max(1, cores // processes)
        assert plan.threads >= 1 and plan.workers >= 0
        if share >= plan.workers + 1:  # the share holds the workers and one thread
            assert plan.workers + plan.threads <= share, plan
        if busy == 0.0 and workers in (None, 0) and not cuda:
            assert plan.threads == share  # an idle machine keeps the whole share


def test_usable_cores_follow_affinity_and_cgroup_quota(monkeypatch):
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(hardware, "_cgroup_cpu_quota", lambda: None)
    assert usable_cores() == 4
    monkeypatch.setattr(hardware, "_cgroup_cpu_quota", lambda: 1.5)  # docker --cpus 1.5
    assert usable_cores() == 2
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: {3})  # taskset -c 3
    assert usable_cores() == 1
    assert parse_cpu_max("200000 100000\n") == 2.0 and parse_cpu_max("max 100000") is None
    assert parse_cpu_max("garbage") is None and parse_cpu_max("0 100000") is None


def test_local_processes(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert local_processes() == 1 and local_processes(4) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun / accelerate launch on this node
    assert local_processes(8) == 2


def test_busy_cores_takes_the_fewest_others_and_scales_to_this_process(monkeypatch):
    runnable = iter([7, 3, 5])
    monkeypatch.setattr(hardware, "_runnable_tasks", lambda: next(runnable))
    monkeypatch.setattr(hardware, "_own_runnable_threads", lambda: 1)
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 8)
    assert busy_cores(samples=3, interval_s=0, cores=8) == 2.0  # 3 runnable, one of them this process
    runnable = iter([5, 5])
    assert busy_cores(samples=2, interval_s=0, cores=2) == 1.0  # 4 others on 8 CPUs, 2 of them ours
    monkeypatch.setattr(hardware, "_runnable_tasks", lambda: None)  # no /proc
    assert busy_cores(samples=2, interval_s=0, cores=2) == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_busy_loops_are_seen_as_busy_cores():
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(1.0)  # started and spinning
        assert busy_cores(samples=4, cores=hardware.os.cpu_count()) >= 2
    finally:
        for proc in loops:
            proc.kill()
            proc.wait()


@pytest.fixture
def torch_default_threads(monkeypatch):
    """torch at its own default thread count (other test files set 1 at import), restored afterwards."""
    before = torch.get_num_threads()
    for name in hardware.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hardware, "_torch_default_threads", lambda: 4)
    monkeypatch.setattr(hardware, "usable_cores", lambda: 4)
    monkeypatch.setattr(hardware, "_APPLIED", {})
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def test_configure_threads_lowers_the_default_under_load_and_raises_it_back(torch_default_threads):
    assert configure_threads(busy=8.0).threads == 1 and torch.get_num_threads() == 1
    assert configure_threads(busy=0.0).threads == 4 and torch.get_num_threads() == 4  # tl_hub's own 1, not the user's
    assert configure_threads(busy=2.0).threads == 2 and torch.get_num_threads() == 2


def test_configure_threads_respects_the_users_choice(torch_default_threads, monkeypatch):
    torch.set_num_threads(3)  # torch.set_num_threads by the user
    assert configure_threads(busy=8.0).threads == 3 and torch.get_num_threads() == 3
    torch.set_num_threads(4)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert configure_threads(busy=8.0).threads == 4 and torch.get_num_threads() == 4


def test_configure_threads_logs_only_a_reduced_plan(torch_default_threads, caplog):
    class Main:
        is_main_process, num_processes = True, 1

        class device:  # noqa: N801 - stands for torch.device
            type = "cpu"

    with caplog.at_level("INFO", logger="tl_hub"):
        configure_threads(Main(), busy=0.0)
        assert "cpu:" not in caplog.text
        configure_threads(Main(), busy=3.0)
    assert "cpu: 1 torch thread(s), 0 DataLoader worker(s) (4 cores, about 3 kept busy by other programs)" in caplog.text


def test_describe():
    plan = ThreadPlan(cores=16, processes=2, busy=0.0, workers=7, threads=1)
    assert plan.describe() == "cpu: 1 torch thread(s), 7 DataLoader worker(s) (16 cores, 2 processes of this run on this node)"


def test_prepare_process_sets_only_what_the_user_did_not(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")  # as in `tl-hub` before its first torch import
    env: dict[str, str] = {}
    assert prepare_process(env, stream=io.StringIO()) == {"TQDM_DISABLE": "1", "GOMP_SPINCOUNT": "10000"}
    assert env == {"TQDM_DISABLE": "1", "GOMP_SPINCOUNT": "10000"}
    for user in ({"OMP_WAIT_POLICY": "ACTIVE", "TQDM_DISABLE": "0"}, {"GOMP_SPINCOUNT": "300000", "TQDM_DISABLE": ""}):
        before = dict(user)
        assert prepare_process(user, stream=io.StringIO()) == {} and user == before

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert prepare_process({}, stream=Terminal()) == {"GOMP_SPINCOUNT": "10000"}  # bars stay on a terminal


def test_prepare_process_leaves_openmp_alone_once_torch_is_loaded():
    assert "torch" in sys.modules
    assert prepare_process({}, stream=io.StringIO()) == {"TQDM_DISABLE": "1"}


def test_cuda_autotune_sets_cudnn_benchmark_and_tf32_and_the_recipe_key_turns_them_off(monkeypatch):
    """`cuda_autotune` (default true): cudnn.benchmark + TF32 on CUDA; false: exact float32, fixed algorithms.
    (CUDA's presence is faked: the flags are plain torch settings, also readable without a GPU.)"""
    import torch

    from tl_hub.config import RecipeConfig
    from tl_hub.hardware import tune_cuda

    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        assert RecipeConfig(dataset="bundled:fashion_mnist").cuda_autotune is True
        assert tune_cuda(True) == {"cudnn_benchmark": True, "tf32": True}
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert tune_cuda(False) == {"cudnn_benchmark": False, "tf32": False}
        assert not (torch.backends.cudnn.benchmark or torch.backends.cuda.matmul.allow_tf32
                    or torch.backends.cudnn.allow_tf32)
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]
