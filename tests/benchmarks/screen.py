"""The backbone screen against fine-tuning: does the cheap linear probe pick the backbone that fine-tunes best?

On the full Fashion-MNIST (Debian package `dataset-fashion-mnist`): a class-balanced training set of N images
(default 2,000) with a validation split (default 500) and a balanced test subset (default 2,000), saved as one
`datasets` folder. Candidates: the bundled ImageNet EfficientNet-Lite0, Lite1 and Lite2, and a control: Lite0's
architecture and preprocessing with random weights (`helpers.random_init.random_init_copy`).

1. `tl_hub.screening.screen_backbones` on the training split only (at most `--max-images`, default 1,000),
   every backbone at `--image-size` (default 112 px): the ranking, each probe accuracy and its seconds.
2. Each candidate fine-tuned with `tl_hub.finetune(policy="auto")` on the N training images (validation split
   for the best epoch), then scored on the test subset with `tl_hub.evaluate_model` (the saved folder).

Targets: the screen's pick within 0.5 points of the best fine-tuned test accuracy; the control ranks last.
Output: results.json + results.md in --out. About 10 minutes on 2 busy CPU cores with the defaults.

Usage (repository root):
    python tests/benchmarks/screen.py --out tests/benchmarks/results/2026-11-27-screen

Example:
    >>> import screen                                   # doctest: +SKIP
    >>> screen.main(["--n-train", "500", "--out", "/tmp/screen"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # fashion_mnist (benchmarks) and helpers (tests)

PRETRAINED = ["bundled:efficientnet_lite0", "bundled:efficientnet_lite1", "bundled:efficientnet_lite2"]
CONTROL = "lite0 random init (control)"


def build_dataset(folder: Path, n_train: int, n_val: int, n_test: int, seed: int) -> Path:
    """A `save_to_disk` DatasetDict (train / validation / test) of real Fashion-MNIST images, class-balanced;
    train and validation are disjoint rows of the official train split, test rows of the official test split."""
    import datasets
    import numpy as np

    from fashion_mnist import balanced_subset, load_split, to_hf_dataset

    train_x, train_y = load_split("train")
    test_x, test_y = load_split("test")
    picked = balanced_subset(train_y, n_train + n_val, seed=seed)
    rng = np.random.default_rng(seed)
    picked = picked[rng.permutation(len(picked))]
    val_idx = np.sort(np.concatenate([picked[train_y[picked] == c][: n_val // 10] for c in range(10)]))
    train_idx = np.setdiff1d(picked, val_idx)
    test_idx = balanced_subset(test_y, n_test, seed=12345)
    parts = {"train": to_hf_dataset(train_x[train_idx], train_y[train_idx]),
             "validation": to_hf_dataset(train_x[val_idx], train_y[val_idx]),
             "test": to_hf_dataset(test_x[test_idx], test_y[test_idx])}
    datasets.DatasetDict(parts).save_to_disk(str(folder))
    return folder


def fine_tune(source: str, dataset: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """tl_hub's `auto` fine-tune on the training split, then the saved folder on the test split."""
    import tl_hub

    started = time.perf_counter()
    result = tl_hub.finetune(model=source, dataset=str(dataset), eval_split="validation", policy="auto",
                             image_size=args.image_size, epochs=args.epochs, seed=args.seed, output_dir=str(out),
                             progress=False, num_workers=0)
    train_s = time.perf_counter() - started
    evaluation = tl_hub.evaluate_model(str(out), str(dataset), split="test", output_dir=str(out.parent / (out.name + "-test")))
    return {"policy": result.policy.name, "val_accuracy": result.metrics.get("accuracy"),
            "test_accuracy": evaluation.metrics["accuracy"], "test_images": evaluation.num_examples,
            "train_s": train_s}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from helpers.random_init import random_init_copy
    from tl_hub.config import RecipeConfig
    from tl_hub.screening import screen_backbones

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    dataset = build_dataset(work / "fashion", args.n_train, args.n_val, args.n_test, args.seed)
    control = str(random_init_copy(PRETRAINED[0], work / "lite0_random", seed=args.seed))
    names = {control: CONTROL} | {b: b for b in PRETRAINED}
    config = RecipeConfig(dataset=str(dataset), eval_split="validation", image_size=args.image_size,
                          seed=args.seed, progress=False)
    started = time.perf_counter()
    scores = screen_backbones(config, PRETRAINED + [control], max_images=args.max_images, seed=args.seed)
    screen_s = time.perf_counter() - started
    tuned = {}
    for i, source in enumerate(PRETRAINED + [control]):
        tuned[names[source]] = fine_tune(source, dataset, work / f"ft{i}", args)
        print(f"fine-tuned {names[source]}: {tuned[names[source]]}", flush=True)
    ranking = [dict(s.to_dict(), backbone=names[s.backbone]) for s in scores]
    best_tuned = max(tuned.values(), key=lambda r: r["test_accuracy"])["test_accuracy"]
    pick = ranking[0]["backbone"]
    gap = 100 * (best_tuned - tuned[pick]["test_accuracy"])
    return {
        "settings": vars(args), "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "screen": {"seconds": screen_s, "ranking": ranking}, "fine_tuned": tuned,
        "targets": {"pick": pick, "pick_gap_points": gap, "pick_within_0.5": gap <= 0.5,
                    "control_last": ranking[-1]["backbone"] == CONTROL},
    }


def markdown(doc: dict[str, Any]) -> str:
    s, t = doc["settings"], doc["targets"]
    lines = [f"# Backbone screen vs fine-tuning (Fashion-MNIST, {s['image_size']} px)", "",
             f"Screen: {doc['screen']['ranking'][0]['n_images']} training images (probe-train "
             f"{doc['screen']['ranking'][0]['n_probe_train']} / probe-val {doc['screen']['ranking'][0]['n_probe_val']}), "
             f"{doc['screen']['seconds']:.0f} s for all four. Fine-tune: tl_hub `auto`, N = {s['n_train']} "
             f"(validation {s['n_val']}), {s['epochs']} epochs; test: {s['n_test']} balanced test images.", "",
             "| screen rank | backbone | probe accuracy | C | screen s | auto policy | fine-tuned test accuracy | fine-tune s |",
             "|---|---|---|---|---|---|---|---|"]
    for rank, row in enumerate(doc["screen"]["ranking"], 1):
        ft = doc["fine_tuned"][row["backbone"]]
        lines.append(f"| {rank} | {row['backbone']} | {row['score']:.4f} | {row['probe_c']:g} | {row['seconds']:.1f} | "
                     f"{ft['policy']} | {ft['test_accuracy']:.4f} | {ft['train_s']:.0f} |")
    lines += ["", f"Targets: the screen's pick ({t['pick']}) is {t['pick_gap_points']:.2f} points below the best "
              f"fine-tuned test accuracy (target <= 0.5: {'met' if t['pick_within_0.5'] else 'missed'}); "
              f"the control ranks last: {'yes' if t['control_last'] else 'no'}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench_results/screen")
    parser.add_argument("--workdir", default="/tmp/tl_hub_screen_bench")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--max-images", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    doc = run(args)
    doc["total_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "results.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
