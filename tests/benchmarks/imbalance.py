"""Class-imbalance benchmark (issue [6/7]): Fashion-MNIST with 5 labels at 1,000 training images and 5 at 50,
scored on the full 10,000-image test set; `class_weights: none` vs `auto` (and `sampler: balanced`), 2 seeds.

Per seed: the training subset (seeded) is written as an image folder with a balanced validation split (50 per
label, from training images no subset uses: the best epoch is chosen on it, never on the test set). Each arm is
a real `tl_hub.finetune` with `policy: auto` (which picks `head` here: the 10th-percentile label has 50
images), the quickstart's head settings (112 px, 15 epochs, batch 64, lr 3e-3, no augmentation) and features
cached on disk, shared by the arms of a seed. The test set goes through the frozen backbone once (the same
for every arm: the backbone is frozen under `head`), and each arm's saved head scores those features.

    python tests/benchmarks/imbalance.py --out tests/benchmarks/results/2026-11-27-imbalance
    python tests/benchmarks/imbalance.py --seeds 0 --arms none,auto --epochs 2 --per-label 100,10 --n-test 500 --out /tmp/x  # smoke

Not collected by pytest; needs the full Fashion-MNIST (tests/benchmarks/fashion_mnist.py says how to get it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fashion_mnist as fm  # noqa: E402

#: the labels that get few training images: every other one, so both groups hold easy and hard labels
#: (T-shirt/top, Pullover, Coat, Shirt, Bag are few; Trouser, Dress, Sandal, Sneaker, Ankle boot are many)
MINORITY = (0, 2, 4, 6, 8)
ARMS = {"none": {"class_weights": "none"}, "auto": {"class_weights": "auto"},
        "balanced-sampler": {"class_weights": "none", "sampler": "balanced"}}
VAL_PER_LABEL = 50


def folder_label(name: str) -> str:
    return name.replace("/", "-")


def write_data(root: Path, seed: int, many: int, few: int) -> dict[str, int]:
    """root/train/<label>/*.png (many or few per label, seeded) and root/validation/<label>/*.png (50 each)."""
    from PIL import Image

    images, labels = fm.load_split("train")
    val_idx = fm.balanced_subset(labels, VAL_PER_LABEL * 10, seed=999)
    rest = np.setdiff1d(np.arange(len(labels)), val_idx)
    rng = np.random.default_rng(seed)
    train_idx = np.concatenate([rng.permutation(rest[labels[rest] == c])[:few if c in MINORITY else many]
                                for c in range(10)])
    for split, idx in (("train", train_idx), ("validation", val_idx)):
        for i in idx:
            path = root / split / folder_label(fm.LABELS[labels[i]]) / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(path)
    return {folder_label(fm.LABELS[c]): int((labels[train_idx] == c).sum()) for c in range(10)}


def test_features(image_size: int, n_test: int | None = None) -> tuple[Any, np.ndarray, list[str]]:
    """The 10,000 test images (or a balanced n_test of them, for a smoke run) through the frozen bundled Lite0
    once (the eval transform of the runs)."""
    from tl_hub.backbone import load_backbone
    from tl_hub.config import RecipeConfig
    from tl_hub.data.dataset import ImageClassificationDataset
    from tl_hub.features import extract_features
    from tl_hub.finetuning import load_preprocessing
    from tl_hub.hardware import make_accelerator

    names = [folder_label(n) for n in fm.LABELS]
    images, labels = fm.load_split("test")
    if n_test:
        keep = fm.balanced_subset(labels, n_test, seed=12345)
        images, labels = images[keep], labels[keep]
    model = load_backbone("bundled:efficientnet_lite0", names)
    _, spec = load_preprocessing(RecipeConfig(dataset="unused", model="bundled:efficientnet_lite0",
                                              image_size=image_size))
    ds = ImageClassificationDataset(fm.to_hf_dataset(images, labels, names), spec, train=False, cache=False)
    features, _ = extract_features(model, ds, accelerator=make_accelerator("no"), batch_size=16, progress=False)
    return features, labels, names


def score(output_dir: Path, features: Any, labels: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The saved model's head on the test features: macro-F1, accuracy, per-label recall, minority recall."""
    import torch

    from tl_hub.features import HeadOnFeatures, head_module
    from tl_hub.hub import load
    from tl_hub.metrics import compute_metrics

    model, _ = load(str(output_dir))
    model_labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    to_model = np.array([model_labels.index(n) for n in names])
    with torch.no_grad():
        logits = HeadOnFeatures(head_module(model).eval())(features.float()).numpy()
    metrics = compute_metrics(None, to_model[labels], model_labels, logits=logits)
    recall = {n: metrics["per_label"][n]["recall"] for n in names}
    minority = [folder_label(fm.LABELS[c]) for c in MINORITY]
    return {"f1_macro": metrics["f1_macro"], "accuracy": metrics["accuracy"], "recall_per_label": recall,
            "minority_recall_mean": float(np.mean([recall[n] for n in minority])),
            "minority_recall_min": float(min(recall[n] for n in minority)),
            "majority_recall_mean": float(np.mean([recall[n] for n in names if n not in minority]))}


def run_arm(data: Path, out: Path, cache: Path, seed: int, arm: str, epochs: int, image_size: int) -> dict[str, Any]:
    from tl_hub.finetuning import finetune

    started = time.perf_counter()
    result = finetune(model="bundled:efficientnet_lite0", dataset=str(data), eval_split="validation", policy="auto",
                      image_size=image_size, epochs=epochs, batch_size=64, learning_rate=0.003, augment=False,
                      seed=seed, checkpointing_steps=None, feature_cache_dir=str(cache), output_dir=str(out),
                      num_workers=0, progress=False, **ARMS[arm])
    info = json.loads((out / "run_info.json").read_text())
    return {"wall_s": round(time.perf_counter() - started, 1), "policy": result.policy.name,
            "policy_reason": result.policy.reason, "imbalance": info["imbalance"], "best_epoch": result.best_epoch,
            "val_f1_macro": result.metrics["f1_macro"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--n-test", type=int, default=None, help="a balanced subset of the test set (smoke runs only)")
    p.add_argument("--per-label", default="1000,50", help="training images of the majority, minority labels")
    args = p.parse_args(argv)
    many, few = (int(x) for x in args.per_label.split(","))
    seeds, arms = [int(s) for s in args.seeds.split(",")], args.arms.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    features, labels, names = test_features(args.image_size, args.n_test)
    records = []
    with tempfile.TemporaryDirectory(prefix="tl_hub_imbalance_") as tmp:
        for seed in seeds:
            data = Path(tmp) / f"data-{seed}"
            counts = write_data(data, seed, many, few)
            for arm in arms:
                out = Path(tmp) / f"run-{seed}-{arm}"
                record = {"seed": seed, "arm": arm, "train_counts": counts,
                          **run_arm(data, out, Path(tmp) / "features", seed, arm, args.epochs, args.image_size),
                          **score(out, features, labels, names)}
                records.append(record)
                print(f"seed {seed} {arm:>16}: policy {record['policy']}, test f1_macro {record['f1_macro']:.4f}, "
                      f"minority recall {record['minority_recall_mean']:.4f} (min {record['minority_recall_min']:.4f}), "
                      f"majority recall {record['majority_recall_mean']:.4f}", flush=True)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {platform.node()}", "cpu": _cpu(),
            "command": " ".join(["python", *sys.argv]), "total_wall_s": round(time.perf_counter() - started, 1),
            "minority_labels": [folder_label(fm.LABELS[c]) for c in MINORITY], "test_images": int(len(labels)),
            "validation_per_label": VAL_PER_LABEL, "epochs": args.epochs, "image_size": args.image_size}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    (args.out / "results.md").write_text(to_markdown(meta, records))
    print((args.out / "results.md").read_text())
    return 0


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            import os

            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    return platform.machine()


def to_markdown(meta: dict[str, Any], records: list[dict[str, Any]]) -> str:
    arms = list(dict.fromkeys(r["arm"] for r in records))
    lines = [f"# Class imbalance: Fashion-MNIST, 5 labels x 1,000 + 5 x 50 training images, "
             f"{meta['test_images']:,} test images", "",
             f"Machine: {meta['cpu']} (shared, busy). Command: `{meta['command']}`. Total {meta['total_wall_s']} s.",
             f"Minority labels: {', '.join(meta['minority_labels'])}. Best epoch chosen on a balanced validation "
             f"split ({meta['validation_per_label']} per label, not the test set).", "",
             "| arm | policy (auto) | test macro-F1 per seed | mean | minority recall (mean of 5) per seed | mean | "
             "majority recall mean | accuracy mean |", "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        rows = [r for r in records if r["arm"] == arm]
        f1s = [r["f1_macro"] for r in rows]
        mins = [r["minority_recall_mean"] for r in rows]
        lines.append(f"| {arm} | {rows[0]['policy']} | {', '.join(f'{v:.4f}' for v in f1s)} | {np.mean(f1s):.4f} | "
                     f"{', '.join(f'{v:.4f}' for v in mins)} | {np.mean(mins):.4f} | "
                     f"{np.mean([r['majority_recall_mean'] for r in rows]):.4f} | "
                     f"{np.mean([r['accuracy'] for r in rows]):.4f} |")
    lines += ["", "Per-label test recall (mean over seeds):", "",
              "| label | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for name in records[0]["recall_per_label"]:
        values = [np.mean([r["recall_per_label"][name] for r in records if r["arm"] == arm]) for arm in arms]
        star = " (few)" if name in meta["minority_labels"] else ""
        lines.append(f"| {name}{star} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    auto = next((r for r in records if r["arm"] == "auto"), None)
    if auto:
        lines += ["", f"What `class_weights: auto` did: {auto['imbalance']['reason']}", "",
                  f"Why `policy: auto` picked {auto['policy']}: {auto['policy_reason']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
