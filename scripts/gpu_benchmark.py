"""Train the quickstart recipe's backbone on a GPU with bf16 and print images/s and peak memory.

Runs tl_hub.finetune with policies head (frozen-feature path), partial and full on the bundled
Fashion-MNIST subset (3,000 train / 2,000 eval) with EfficientNet-Lite0, and prints one line per policy:
feature-pass images/s (head), training images/s per epoch, eval accuracy, and peak GPU memory.

    python scripts/gpu_benchmark.py [--model DIR_OR_SOURCE] [--image-size 112] [--epochs 2] [--batch-size 128]

Example:
    $ python scripts/gpu_benchmark.py --image-size 112
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import time


def main() -> None:
    import torch

    import tl_hub

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="bundled:efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--policies", default="head,partial,full")
    p.add_argument("--out", default="tl_hub_output/gpu_bench")
    a = p.parse_args()
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(json.dumps({"device": dev, "torch": torch.__version__}), flush=True)
    for policy in a.policies.split(","):
        out = f"{a.out}/{policy}"
        shutil.rmtree(out, ignore_errors=True)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            r = tl_hub.finetune(model=a.model, dataset="bundled:fashion_mnist", policy=policy, image_size=a.image_size,
                                epochs=a.epochs, batch_size=a.batch_size, mixed_precision=a.precision,
                                augment=policy != "head", output_dir=out, checkpointing_steps=None, seed=0)
        wall = time.perf_counter() - t0
        info = json.load(open(f"{out}/metrics.json"))
        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        row = {"policy": policy, "precision": a.precision, "image_size": a.image_size, "batch_size": a.batch_size,
               "train_images_per_s_per_epoch": [round(e["images_per_second"], 1) for e in r.history],
               "accuracy": round(r.metrics["accuracy"], 4), "wall_s": round(wall, 1),
               "peak_gpu_mib": round(peak, 1) if peak is not None else None}
        if "feature_extraction" in info:
            row["feature_pass_images_per_s"] = round(info["feature_extraction"]["images_per_second"], 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
