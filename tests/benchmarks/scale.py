"""How a run's memory and start-up grow with the data: N = 10,000 vs N = 100,000 colour JPEGs ([4/7]).

For each N a synthetic photo-like colour-JPEG image folder (~160 px, 10 labels) is generated once (cached
under --work; `--arrow` also writes the same images as a `save_to_disk` Arrow dataset, image bytes inside).
Each arm runs `tl_hub.finetune` in a child process: policy `full`, one epoch, a small ResNet built from a
config (no download), 128 px, DataLoader workers, the on-disk image cache in its own TL_HUB_CACHE. It is run
twice on the same data: the first run checks and decodes every image (cache cold), the second finds both
the check record and the decoded-pixel file (cache warm).

Measured per run:
- peak RAM held: Pss_Anon + Pss_Shmem from /proc/PID/smaps_rollup, summed over the run's process and its
  DataLoader workers, sampled every 0.2 s (RSS would count pages shared with forked workers twice; page
  cache, which holds the memory-mapped decoded images, is not the run's memory);
- time to training start: from launch to the loop's first "phase '...': ..." line (imports, data loading and
  checking, model, image cache), and the whole run's wall time.

Targets: peak RAM at N = 100,000 within 1.25x of N = 10,000; warm time to training start <= 10 % of cold.

Example:
    $ python tests/benchmarks/scale.py --ns 10000,100000 --out bench_results/scale --work /tmp/tl_hub_scale
    $ python tests/benchmarks/scale.py --ns 1000 --out /tmp/scale_smoke --work /tmp/scale_smoke_work  # minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

LABELS = [f"class_{i}" for i in range(10)]

_CHILD = r"""
import logging, sys, time, json
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(created).3f %(message)s", force=True)
from transformers import AutoImageProcessor, ResNetConfig, ResNetForImageClassification
import tl_hub
cfg = json.loads(sys.argv[1])
result = tl_hub.finetune(**cfg)
print("RESULT " + json.dumps({"accuracy": result.metrics.get("accuracy")}), flush=True)
"""


def _photo(index: int, side: int) -> np.ndarray:
    """A smooth random colour field (upsampled 6x6 noise) plus fine noise: JPEG-compresses like a photo."""
    from PIL import Image

    rng = np.random.default_rng(index)
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((side, side), Image.BICUBIC), dtype=np.int16)
    return np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)


def _write_chunk(args: tuple[str, int, int, int]) -> None:
    from PIL import Image

    root, start, stop, side = args
    for i in range(start, stop):
        path = Path(root) / LABELS[i % len(LABELS)] / f"{i:07d}.jpg"
        if not path.exists():
            Image.fromarray(_photo(i, side)).save(path, quality=90)


def make_jpeg_folder(work: Path, n: int, side: int = 160) -> Path:
    """`work/jpeg_<n>/<label>/<i>.jpg`, written once (a DONE marker makes reruns free)."""
    root = work / f"jpeg_{n}"
    if (root / "DONE").is_file():
        return root
    for label in LABELS:
        (root / label).mkdir(parents=True, exist_ok=True)
    step = 2000
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_write_chunk, [(str(root), s, min(s + step, n), side) for s in range(0, n, step)]))
    (root / "DONE").write_text(str(n))
    return root


def make_arrow(work: Path, folder: Path, n: int) -> Path:
    """The same images as a `save_to_disk` dataset with the JPEG bytes inside (written in chunks)."""
    from datasets import ClassLabel, Dataset, Features, Image

    out = work / f"arrow_{n}"
    if (out / "dataset_info.json").is_file():
        return out

    def rows():
        for i in range(n):
            path = folder / LABELS[i % len(LABELS)] / f"{i:07d}.jpg"
            yield {"image": {"bytes": path.read_bytes(), "path": path.name}, "label": i % len(LABELS)}

    features = Features(image=Image(), label=ClassLabel(names=LABELS))
    Dataset.from_generator(rows, features=features, cache_dir=str(work / "hf_cache")).save_to_disk(str(out))
    shutil.rmtree(work / "hf_cache", ignore_errors=True)
    return out


def make_model(work: Path) -> Path:
    """A small ResNet (about 0.2 M parameters: the data path, not the model, is what is measured) saved as a Hub-style folder with its image processor."""
    out = work / "small_resnet"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                          num_labels=10)
    ResNetForImageClassification(config).save_pretrained(out)
    ConvNextImageProcessor(size={"shortest_edge": 128}, crop_pct=0.875).save_pretrained(out)
    return out


def _pss_kib(pid: int) -> int:
    """Pss_Anon + Pss_Shmem of one process, KiB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in text.splitlines() if line.startswith(("Pss_Anon:", "Pss_Shmem:")))


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        proc = psutil.Process(pid)
        return [pid, *(c.pid for c in proc.children(recursive=True))]
    except psutil.Error:
        return []


def run_arm(source: Path, model: Path, cache: Path, out: Path, *, workers: int, batch: int) -> dict[str, Any]:
    """One `full` epoch in a child process; peak summed PSS, time to the loop's start, wall time."""
    shutil.rmtree(out, ignore_errors=True)
    cfg = {"model": str(model), "dataset": str(source), "policy": "full", "epochs": 1, "image_size": 128,
           "batch_size": batch, "num_workers": workers, "eval_fraction": 0.02, "output_dir": str(out),
           "progress": False, "seed": 0, "learning_rate": 1e-3}
    env = {**os.environ, "TL_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    peak, peak_procs, stop = [0], [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pids = _tree(proc.pid)
            total = sum(_pss_kib(p) for p in pids)
            if total > peak[0]:
                peak[0], peak_procs[0] = total, len(pids)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines, train_start = [], None
    for line in proc.stdout:
        lines.append(line.rstrip())
        if train_start is None and " phase '" in line:  # the loop's first phase starts
            train_start = float(line.split()[0]) - start
    proc.wait()
    wall = time.time() - start
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"arm failed ({proc.returncode}):\n" + "\n".join(lines[-40:]))
    decoded = [l for l in lines if "image cache: decoded" in l or "image check:" in l]
    return {"peak_pss_mib": round(peak[0] / 1024, 1), "processes_at_peak": peak_procs[0],
            "time_to_train_s": round(train_start, 2) if train_start is not None else None, "wall_s": round(wall, 1),
            "log": decoded}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ns", default="10000,100000", help="comma-separated image counts")
    p.add_argument("--work", default="/tmp/tl_hub_scale", help="where the images, models and caches go")
    p.add_argument("--out", default="bench_results/scale")
    p.add_argument("--arrow", action="store_true", help="also run on the Arrow (save_to_disk) copy")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--keep-caches", action="store_true", help="keep the decoded-pixel caches (GBs) afterwards")
    args = p.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    model = make_model(work)
    arms: list[dict[str, Any]] = []
    for n in [int(v) for v in args.ns.split(",")]:
        t0 = time.time()
        folder = make_jpeg_folder(work, n)
        sources = {"folder": folder}
        if args.arrow:
            sources["arrow"] = make_arrow(work, folder, n)
        print(f"N={n}: data ready in {time.time() - t0:.0f} s", flush=True)
        for kind, source in sources.items():
            cache = work / f"cache_{kind}_{n}"
            shutil.rmtree(cache, ignore_errors=True)
            for run in ("cold", "warm"):
                arm = run_arm(source, model, cache, work / "out", workers=args.workers, batch=args.batch)
                arm.update(n=n, source=kind, run=run)
                arms.append(arm)
                print(json.dumps(arm), flush=True)
            if not args.keep_caches:
                shutil.rmtree(cache, ignore_errors=True)
    summary = summarise(arms)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "workers": args.workers,
            "batch": args.batch, "python": sys.version.split()[0]}
    (out / "results.json").write_text(json.dumps({"meta": meta, "arms": arms, "summary": summary}, indent=1))
    (out / "results.md").write_text(markdown(arms, summary, meta))
    print(markdown(arms, summary, meta))


def summarise(arms: list[dict[str, Any]]) -> dict[str, Any]:
    """Memory ratio largest N / smallest N (per source, cold run) and warm/cold time to training start."""
    out: dict[str, Any] = {}
    for kind in sorted({a["source"] for a in arms}):
        cold = sorted((a for a in arms if a["source"] == kind and a["run"] == "cold"), key=lambda a: a["n"])
        if len(cold) >= 2:
            out[f"{kind}_memory_ratio"] = round(cold[-1]["peak_pss_mib"] / cold[0]["peak_pss_mib"], 3)
        for a in cold:
            warm = next(w for w in arms if w["source"] == kind and w["run"] == "warm" and w["n"] == a["n"])
            out[f"{kind}_{a['n']}_warm_over_cold_start"] = round(warm["time_to_train_s"] / a["time_to_train_s"], 3)
    return out


def markdown(arms: list[dict[str, Any]], summary: dict[str, Any], meta: dict[str, Any]) -> str:
    rows = [f"| {a['source']} | {a['n']:,} | {a['run']} | {a['peak_pss_mib']:,.0f} | {a['processes_at_peak']} | "
            f"{a['time_to_train_s']} | {a['wall_s']} |" for a in arms]
    return "\n".join([
        f"Scale: one `full` epoch, small ResNet, 128 px, {meta['workers']} workers, batch {meta['batch']}; "
        f"{meta['cpus']} CPUs ({meta['machine']}).", "",
        "| source | N | run | peak PSS (anon+shmem), MiB | processes | time to training start, s | wall, s |",
        "|---|---|---|---|---|---|---|", *rows, "", "Summary: " + json.dumps(summary), ""])


if __name__ == "__main__":
    main()
