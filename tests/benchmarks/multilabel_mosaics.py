"""Multi-label benchmark: Fashion-MNIST 2x2 mosaics, tl_hub's head vs a one-vs-rest logistic-regression probe.

Each example is a 56x56 mosaic of four Fashion-MNIST images (drawn without replacement); its labels are the
set of classes present (1 to 4 of the 10). Training mosaics come from the 60,000 training images (N of
them), test mosaics from the 10,000 test images (2,500 mosaics, each test image used once).

Arms, on the same frozen features (the bundled ImageNet EfficientNet-Lite0 at `--image-size`, eval transform):
- tl_hub: `tl_hub.finetune(policy=head)` on the N mosaics saved as a `datasets` folder with a
  `Sequence(ClassLabel)` column: multi-label detected, BCE, best epoch by mAP on its own 20 % validation split
  (so it trains on 0.8 N); the saved head is then scored on the test mosaics.
- probe: scikit-learn `OneVsRestClassifier(LogisticRegression)` (standardised features, C = 1, no tuning)
  trained on all N mosaics' features (read back from tl_hub's own feature cache: its train + validation files).
Both are scored by `tl_hub.metrics.multilabel.compute_multilabel_metrics` (mAP, micro/macro F1 at 0.5).

    python tests/benchmarks/multilabel_mosaics.py --sizes 2000 10000 --out tests/benchmarks/results/DATE-multilabel
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
from fashion_mnist import LABELS, load_split  # noqa: E402


def mosaics(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, list[list[int]]]:
    """`count` 2x2 mosaics of distinct images (a seeded permutation) and each one's sorted set of classes."""
    order = np.random.default_rng(seed).permutation(len(images))[: 4 * count].reshape(count, 4)
    tiles = images[order]  # [count, 4, 28, 28]
    top = np.concatenate([tiles[:, 0], tiles[:, 1]], axis=2)
    bottom = np.concatenate([tiles[:, 2], tiles[:, 3]], axis=2)
    return np.concatenate([top, bottom], axis=1), [sorted(set(labels[row].tolist())) for row in order]


def hf_split(images: np.ndarray, sets: list[list[int]], prefix: str) -> Any:
    import datasets
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "labels": datasets.Sequence(datasets.ClassLabel(names=LABELS)),
                                  "id": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in images], "labels": sets,
                                       "id": [f"{prefix}[{i}]" for i in range(len(sets))]}, features=features)


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> tuple[np.ndarray, float]:
    """Logits of a one-vs-rest logistic regression (standardised features) and its fit time."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    model = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=2000)))
    model.fit(train_x, train_y.astype(int))
    seconds = time.perf_counter() - started
    p = np.clip(model.predict_proba(test_x), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p)), seconds


def run_size(n: int, test: tuple[np.ndarray, list[list[int]]], train_pool: tuple[np.ndarray, np.ndarray],
             work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import tl_hub
    from tl_hub.backbone import load_backbone
    from tl_hub.data.dataset import ImageClassificationDataset
    from tl_hub.features import HeadOnFeatures, extract_features, head_module, load_cached
    from tl_hub.hardware import make_accelerator
    from tl_hub.metrics.multilabel import compute_multilabel_metrics
    from tl_hub.data.multilabel import multi_hot
    from tl_hub.data.transforms import image_spec

    train_images, train_sets = mosaics(*train_pool, n, seed=args.seed)
    hf_split(train_images, train_sets, "train").save_to_disk(str(work / f"data-{n}"))
    cache = work / f"features-{n}"
    started = time.perf_counter()
    result = tl_hub.finetune(model="bundled:efficientnet_lite0", dataset=str(work / f"data-{n}"),
                             output_dir=str(work / f"run-{n}"), policy="head", epochs=args.epochs,
                             batch_size=64, image_size=args.image_size, feature_cache_dir=str(cache),
                             seed=args.seed, progress=False, num_workers=0)
    tl_seconds = time.perf_counter() - started
    out = Path(result.output_dir)
    files = sorted(cache.glob("*/*.safetensors"))
    parts = [load_cached(f) for f in files]
    train_x = torch.cat([p[0] for p in parts]).numpy()
    train_y = torch.cat([p[1] for p in parts]).numpy()
    assert len(train_x) == n, (len(train_x), n, files)
    model = load_backbone(str(out), list(LABELS), problem_type="multi_label_classification")
    _, processor = tl_hub.load(out)
    spec = image_spec(processor, args.image_size)
    test_ds = ImageClassificationDataset(hf_split(*test, "test").rename_column("labels", "label"), spec,
                                         train=False, cache=False)
    started = time.perf_counter()
    test_x, test_y = extract_features(model, test_ds, accelerator=make_accelerator("no"), batch_size=128,
                                      progress=False)
    test_seconds = time.perf_counter() - started
    with torch.no_grad():
        head_logits = HeadOnFeatures(head_module(model))(features=test_x).float().numpy()
    assert np.array_equal(test_y.numpy(), multi_hot(test[1], len(LABELS)))
    tl = compute_multilabel_metrics(head_logits, test_y.numpy(), LABELS)
    probe_logits, probe_seconds = probe(train_x, train_y, test_x.half().float().numpy())
    lr = compute_multilabel_metrics(probe_logits, test_y.numpy(), LABELS)
    keys = ("map", "f1_micro", "f1_macro", "accuracy")
    return {"n_train_mosaics": n, "tl_hub": {k: tl[k] for k in keys}, "probe": {k: lr[k] for k in keys},
            "tl_hub_per_label_ap": {k: v["ap"] for k, v in tl["per_label"].items()},
            "probe_per_label_ap": {k: v["ap"] for k, v in lr["per_label"].items()},
            "tl_hub_best_epoch": result.best_epoch, "tl_hub_val_map": result.metrics.get("map"),
            "tl_hub_run_seconds": round(tl_seconds, 1), "test_feature_seconds": round(test_seconds, 1),
            "probe_fit_seconds": round(probe_seconds, 1), "feature_dim": int(train_x.shape[1]),
            "mean_labels_per_mosaic": float(np.mean([len(s) for s in train_sets]))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="full", help="full (Debian package) or bundled (smoke only)")
    parser.add_argument("--test-mosaics", type=int, default=2500)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    train_pool = load_split("train", args.source)
    test_images, test_labels = load_split("test", args.source)
    test = mosaics(test_images, test_labels, min(args.test_mosaics, len(test_images) // 4), seed=args.seed + 1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            results.append(run_size(n, test, train_pool, Path(tmp), args))
            print(json.dumps(results[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "multilabel_mosaics", "machine": f"{platform.processor() or platform.machine()}, "
           f"{__import__('os').cpu_count()} vCPU (shared)", "epochs": args.epochs, "image_size": args.image_size,
           "seed": args.seed, "source": args.source, "test_mosaics": len(test[1]), "results": results}
    (args.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = ["| N train mosaics | tl_hub mAP | probe mAP | tl_hub F1 micro | probe F1 micro | tl_hub F1 macro | "
            "probe F1 macro | tl_hub run (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        t, p = r["tl_hub"], r["probe"]
        rows.append(f"| {r['n_train_mosaics']:,} | {t['map']:.4f} | {p['map']:.4f} | {t['f1_micro']:.4f} | "
                    f"{p['f1_micro']:.4f} | {t['f1_macro']:.4f} | {p['f1_macro']:.4f} | {r['tl_hub_run_seconds']} |")
    (args.out / "results.md").write_text("\n".join([
        "# Multi-label: Fashion-MNIST 2x2 mosaics", "",
        f"Test: {len(test[1]):,} mosaics of the 10,000 test images; frozen Lite0 features at {args.image_size} px; "
        f"tl_hub head {args.epochs} epochs (best by validation mAP, trained on 80 % of N); probe: one-vs-rest "
        "LogisticRegression (C=1, standardised) on all N. Threshold 0.5. Machine: " + doc["machine"] + ".", "",
        *rows, ""]))


if __name__ == "__main__":
    main()
