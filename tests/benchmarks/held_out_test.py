"""Held-out test vs selecting on test: the offline quickstart run two ways, each in a fresh process.

  held_out        the default since [6/7]: the best epoch is chosen on a stratified 20 % carve-out of the
                  bundled train part; the 2,000 bundled test images are evaluated once, at the end.
  select_on_test  `eval_split: test` (what the quickstart did before): the best epoch is chosen on the
                  2,000 test images and the same number is reported.

Recorded per arm: the reported test accuracy (macro F1 too), the selection split's accuracy and size, the
best epoch, the images the feature pass embedded and its seconds, and the wall time of the whole command
(imports included). The two arms draw their 1,000 training images from different pools (2,400 rows left
after the carve-out vs all 3,000), so the accuracy difference mixes the optimism of selecting on test with
a different training subset; the selection-vs-test gap inside each arm is the clean part.

Usage (repository root):

    python tests/benchmarks/held_out_test.py --out tests/benchmarks/results/2026-11-27-held-out-test

Example:
    >>> import held_out_test                                                        # doctest: +SKIP
    >>> held_out_test.main(["--out", "bench_results/held_out", "--arms", "held_out"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARMS = {"held_out": [], "select_on_test": ["--eval_split", "test"]}


def run_arm(name: str, workdir: Path) -> dict[str, Any]:
    """`tl-hub quickstart` with the arm's overrides in a fresh process; what its output folder says."""
    out = workdir / name
    cmd = [sys.executable, "-m", "tl_hub.cli", "quickstart", "--output-dir", str(out), *ARMS[name]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TL_HUB_VERBOSITY": "warning"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    info = json.loads((out / "run_info.json").read_text())
    test = metrics.get("test")
    reported = test["final"] if test else metrics["final"]  # what the run reports as its test result
    features = metrics.get("feature_extraction") or {}
    return {
        "arm": name, "overrides": ARMS[name], "wall_s": round(wall, 1),
        "selection_split": info["data"]["eval_split"] or info["data"]["eval_from"],
        "selection_images": metrics["num_eval_examples"], "selection_accuracy": metrics["final"]["accuracy"],
        "best_epoch": metrics["best_epoch"], "epochs": len(metrics["epochs"]),
        "test_split": test["split"] if test else info["data"]["eval_split"],
        "test_images": test["num_examples"] if test else metrics["num_eval_examples"],
        "test_accuracy": reported["accuracy"], "test_f1_macro": reported["f1_macro"],
        "test_never_selected_on": test is not None,
        "feature_images": features.get("images"), "feature_pass_s": round(features.get("seconds", 0.0), 1),
        "train_images": info["data"]["sizes"]["train"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    head = ["arm", "selected on", "sel. images", "sel. accuracy", "best epoch", "test accuracy (images)",
            "test never selected on", "feature images", "feature pass s", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['selection_split']} | {r['selection_images']} | "
                     f"{r['selection_accuracy']:.4f} | {r['best_epoch']}/{r['epochs']} | "
                     f"{r['test_accuracy']:.4f} ({r['test_images']}) | {r['test_never_selected_on']} | "
                     f"{r['feature_images']} | {r['feature_pass_s']} | {r['wall_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--workdir", help="where the runs' output folders go (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tl_hub_held_out_"))
    rows = [run_arm(name, workdir) for name in args.arms]
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "processor": _cpu_model(), "note": "2 vCPUs shared with other jobs (busy)"}
    (out / "results.json").write_text(json.dumps({"machine": machine, "arms": rows}, indent=2) + "\n")
    print(table(rows))
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
