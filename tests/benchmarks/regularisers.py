"""Do label smoothing and an EMA of the weights help `partial` fine-tuning on Fashion-MNIST? ([6/7])

Arms (each a fresh subprocess through run.py's `Runner` and `arm_tlhub`: tl_hub.finetune on a class-balanced
subset written as an image folder, then the saved output folder scored on the test set through its own
processor): `baseline` (no regulariser), `label_smoothing` (0.1), `ema` (ema_decay), for each seed; the
same data, policy, learning rate and epochs otherwise. The arms alternate within a seed.

Usage (repository root):

    python tests/benchmarks/regularisers.py                       # the issue's setting: N = 10,000, 112 px, 5 epochs
    python tests/benchmarks/regularisers.py --n 2000 --image-size 64 --epochs 3 --batch-size 32 \
        --ema-decay 0.97 --n-val 500 --n-test 2000 --out tests/benchmarks/results/2026-11-27-regularisers

`--ema-decay`: pick it for the run's number of optimizer steps (an EMA averages over about 1 / (1 - decay)
steps; 0.998 for the 780 steps of the full setting, 0.97 for the ~190 of the reduced one).

Example:
    >>> import regularisers                                        # doctest: +SKIP
    >>> regularisers.main(["--n", "200", "--epochs", "1", "--out", "/tmp/reg"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (run.py's Runner and arms; it sits next to this file)


def arms(label_smoothing: float, ema_decay: float) -> dict[str, dict[str, Any]]:
    """The recipe keys of each arm (on top of the shared ones)."""
    return {"baseline": {}, "label_smoothing": {"label_smoothing": label_smoothing}, "ema": {"ema_decay": ema_decay}}


def run_benchmark(args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    """Every (seed, arm) run; returns the records and a per-arm summary (mean test accuracy, per seed)."""
    cfg = bench.BenchConfig(mode="regularisers", image_size=args.image_size, batch_size=args.batch_size,
                            n_val=args.n_val, n_test=args.n_test, data=args.data, num_workers=args.num_workers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runner = bench.Runner(cfg, out, log)
    table = arms(args.label_smoothing, args.ema_decay)
    for seed in range(args.seeds):
        order = list(table) if seed % 2 == 0 else list(reversed(table))
        for arm in order:
            spec = runner.spec("tlhub", n_train=args.n, policy="partial", epochs=args.epochs, seed=seed,
                               learning_rate=None, tlhub_overrides={"progress": False, **table[arm]})
            runner.run(spec, {"section": "regularisers", "arm_name": arm, "seed": seed})
    summary = {}
    for arm in table:
        accs = [r["result"].get("test_accuracy") for r in runner.records if r["arm_name"] == arm]
        accs = [a for a in accs if a is not None]
        walls = [r["result"].get("wall_s") for r in runner.records if r["arm_name"] == arm and "wall_s" in r["result"]]
        summary[arm] = {"test_accuracy": accs, "mean": statistics.mean(accs) if accs else None,
                        "wall_s": walls, "keys": table[arm]}
    base = summary["baseline"]["mean"]
    for arm in table:
        mean = summary[arm]["mean"]
        summary[arm]["vs_baseline_points"] = None if mean is None or base is None else round(100 * (mean - base), 2)
    setting = {k: getattr(args, k.replace("-", "_")) for k in (
        "n", "image_size", "epochs", "batch_size", "seeds", "n_val", "n_test", "label_smoothing", "ema_decay", "data")}
    doc = {"setting": setting, "machine": {"platform": platform.platform(), "python": platform.python_version()},
           "summary": summary, "records": runner.records}
    (out / "results.json").write_text(json.dumps(doc, indent=2, default=str))
    (out / "results.md").write_text(markdown(doc))
    return doc


def markdown(doc: dict[str, Any]) -> str:
    """The results table: per arm, the test accuracy of each seed, their mean and the difference to baseline."""
    s = doc["setting"]
    test = "the full 10,000-image test set" if not s["n_test"] else f"a balanced {s['n_test']}-image test subset"
    lines = [f"# Regularisers, policy partial, Fashion-MNIST N = {s['n']:,}",
             "", f"{s['image_size']} px, {s['epochs']} epochs, batch {s['batch_size']}, {s['seeds']} seed(s), "
             f"validation {s['n_val']} images (picks the best epoch), test: {test}; tl_hub's default learning rate "
             f"for partial; label_smoothing {s['label_smoothing']}, ema_decay {s['ema_decay']}.", "",
             "| arm | test accuracy per seed | mean | vs baseline (points) | train wall s per seed |", "|---|---|---|---|---|"]
    for arm, row in doc["summary"].items():
        accs = ", ".join(f"{a:.4f}" for a in row["test_accuracy"])
        mean = f"{row['mean']:.4f}" if row["mean"] is not None else "-"
        walls = ", ".join(f"{w:.0f}" for w in row["wall_s"])
        lines.append(f"| {arm} | {accs} | {mean} | {row['vs_baseline_points']:+.2f} | {walls} |"
                     if row["vs_baseline_points"] is not None else f"| {arm} | {accs} | {mean} | - | {walls} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="training images (class-balanced)")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n-val", type=int, default=1000, help="validation images, disjoint from training")
    p.add_argument("--n-test", type=int, default=None, help="balanced test subset (default: all 10,000)")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.998)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--data", choices=("full", "bundled"), default="full")
    p.add_argument("--out", default="bench_results/regularisers")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    doc = run_benchmark(args)
    print(markdown(doc))
    print(f"total {time.perf_counter() - started:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
