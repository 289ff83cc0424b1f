"""A command's wall time beside busy-loop processes (a shared machine), paired across source trees.

Runs COMMAND (e.g. `tl-hub quickstart --output-dir {out}`) REPEATS times per tree, trees alternating
(A B, B A, ...), with `--busy K` busy-loop processes (`while :; do :; done`) running beside it: from before
the command starts, or `--busy-delay S` seconds after it started (load that arrives mid-run). Each tree is
put first on PYTHONPATH, so the same command runs two versions of tl_hub (e.g. a `git worktree` of the
starting commit and the working tree). `--wait-quiet S` first waits (up to S seconds) until no other program
is runnable. Per run it records the wall time, the command's CPU time, the CPU the busy loops got and the
CPU that *other* programs took meanwhile (from /proc/stat), in cores, so a noisy measurement shows as one.
Linux only. Output: results.json and results.md in --out, and a summary line per tree.

Example:
    $ git worktree add /tmp/tl_hub_before <start commit>
    $ python tests/benchmarks/contention.py --trees /tmp/tl_hub_before . --busy 4 --repeats 3 \\
          --out bench_results/contention -- tl-hub quickstart --output-dir {out}
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def _process_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _others_runnable() -> int:
    return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1


def wait_quiet(max_s: float, quiet_s: float = 4.0) -> float:
    """Seconds waited until no other task was runnable for `quiet_s` seconds (-1: gave up after max_s)."""
    started, calm = time.monotonic(), 0.0
    while time.monotonic() - started < max_s:
        calm = calm + 0.5 if _others_runnable() <= 0 else 0.0
        if calm >= quiet_s:
            return time.monotonic() - started
        time.sleep(0.5)
    return -1.0


def _loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["bash", "-c", "while :; do :; done"]) for _ in range(count)]


def _stop(loops: list[subprocess.Popen]) -> float:
    cpu = sum(_process_cpu_seconds(p.pid) for p in loops)
    for proc in loops:
        proc.kill()
        proc.wait()
    return cpu


def run_once(command: list[str], tree: str, busy: int, delay: float, out: Path) -> dict[str, Any]:
    """One run of `command` (with {out} and {tree} filled in) beside `busy` loops; the measured numbers."""
    argv = [a.replace("{out}", str(out)).replace("{tree}", tree) for a in command]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    loops = [] if delay else _loops(busy)
    if loops:
        time.sleep(1.0)  # spinning before the command starts
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    loops_cpu0 = sum(_process_cpu_seconds(p.pid) for p in loops)
    busy0, load0, started = _busy_cpu_seconds(), os.getloadavg()[0], time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if delay:
        time.sleep(delay)
        loops = _loops(busy)
    output = child.communicate()[0]
    wall = time.perf_counter() - started
    busy1 = _busy_cpu_seconds()
    loops_cpu = _stop(loops) - loops_cpu0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # the command (+ late loops)
    cpu = reaped - (loops_cpu if delay else 0.0)
    return {"tree": tree, "wall_s": wall, "cpu_s": cpu, "loops_cores": loops_cpu / wall,
            "others_cores": max(0.0, busy1 - busy0 - cpu - loops_cpu) / wall, "load1_start": load0,
            "returncode": child.returncode, "output_tail": output[-1500:] if child.returncode else ""}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} s (min {min(values):.1f}, max {max(values):.1f}; n = {len(values)})"


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args_list:
        print("usage: contention.py [options] -- COMMAND ...", file=sys.stderr)
        return 2
    split = args_list.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", nargs="+", default=["."], help="source trees put first on PYTHONPATH, in turn")
    p.add_argument("--busy", type=int, default=4, help="busy-loop processes beside the command")
    p.add_argument("--busy-delay", type=float, default=0.0, help="start the loops this many s after the command")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--wait-quiet", type=float, default=0.0, help="first wait up to this many s for a quiet machine")
    p.add_argument("--out", default="bench_results/contention")
    args = p.parse_args(args_list[:split])
    command = args_list[split + 1:]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    trees = [str(Path(t).resolve()) for t in args.trees]
    waited = wait_quiet(args.wait_quiet) if args.wait_quiet else 0.0
    work = Path(tempfile.mkdtemp(prefix="tl_hub_contention_"))
    records = []
    try:
        for rep in range(args.repeats):
            for tree in (trees if rep % 2 == 0 else trees[::-1]):
                record = run_once(command, tree, args.busy, args.busy_delay, work / f"run-{rep}-{len(records)}")
                records.append({"repeat": rep, **record})
                print(f"{Path(tree).name:>20s} repeat {rep}: wall {record['wall_s']:.1f} s, cpu {record['cpu_s']:.1f} s,"
                      f" loops {record['loops_cores']:.2f} cores, others {record['others_cores']:.2f} cores,"
                      f" exit {record['returncode']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [f"# `{' '.join(command)}` beside {args.busy} busy loop(s)"
             + (f" started {args.busy_delay:g} s after it" if args.busy_delay else ""), "",
             f"{os.cpu_count()} logical CPUs; waited {waited:.0f} s for a quiet machine; {args.repeats} repeat(s).", "",
             "| tree | wall, median (min, max) | CPU s, median | others' CPU (cores), max |", "|---|---|---|---|"]
    for tree in trees:
        mine = [r for r in records if r["tree"] == tree and r["returncode"] == 0]
        if mine:
            lines.append(f"| {tree} | {_spread([r['wall_s'] for r in mine])} | "
                         f"{statistics.median(r['cpu_s'] for r in mine):.1f} | "
                         f"{max(r['others_cores'] for r in mine):.2f} |")
    (out_dir / "results.json").write_text(json.dumps({"command": command, "busy": args.busy,
                                                      "busy_delay_s": args.busy_delay, "records": records}, indent=2))
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["returncode"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
