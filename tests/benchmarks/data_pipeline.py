"""Input-pipeline speed next to the model's speed, on this machine: is the data ever what training waits on?

Measures (images/s, median of --repeats):
  * load_data: discovery + one validating decode of every image (bundled Fashion-MNIST, a JPEG folder);
  * decode-once cache: decode + resize into the uint8 cache (ImageClassificationDataset construction);
  * epoch: one pass of a DataLoader over the cached training set (random resized crop + flip + normalise),
    with 0 and 2 workers;
  * model: EfficientNet-Lite0 at the same size, forward only (eval, no_grad) and a full training step
    (forward + backward + SGD), batch 64, fp32 channels_last.

Usage:
    python tests/benchmarks/data_pipeline.py [--image-size 112] [--photos 400] [--repeats 3] [--json out.json]

Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _rate(fn: Callable[[], int], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        count = fn()
        _sync()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def _photo_folder(root: Path, count: int) -> Path:
    """`count` real-photo JPEGs (random 320-480 px crops of scikit-learn's two sample photos), 2 classes."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % 2
        photo = photos[label]
        h, w = int(rng.integers(300, 420)), int(rng.integers(320, 600))
        top, left = int(rng.integers(0, photo.shape[0] - h + 1)), int(rng.integers(0, photo.shape[1] - w + 1))
        path = root / f"class{label}" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[top : top + h, left : left + w]).save(path, quality=90)
    return root


def _processor() -> Any:
    try:
        from tl_hub.backbone import load_image_processor

        return load_image_processor("bundled:efficientnet_lite0")
    except Exception:  # noqa: BLE001 - benchmark fallback when the bundled backbone is unavailable
        from transformers import TimmWrapperImageProcessor

        return TimmWrapperImageProcessor(
            pretrained_cfg=dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.875,
                                crop_mode="center", mean=(0.5,) * 3, std=(0.5,) * 3),
            architecture="tf_efficientnet_lite0",
        )


def _model(num_labels: int) -> torch.nn.Module:
    try:
        from tl_hub.backbone import load_backbone

        return load_backbone("bundled:efficientnet_lite0", [str(i) for i in range(num_labels)])
    except Exception:  # noqa: BLE001 - same architecture, random weights: speed is what is measured
        import timm

        return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_labels)


def _logits(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values=pixels) if hasattr(model, "config") else model(pixels)
    return out.logits if hasattr(out, "logits") else out


def model_rates(size: int, batch: int, steps: int, repeats: int, device: str, bf16: bool) -> dict[str, float]:
    model = _model(10).to(device=device, memory_format=torch.channels_last)
    pixels = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)
    model.eval()
    with torch.no_grad(), autocast:
        _logits(model, pixels)

        def forward() -> int:
            for _ in range(steps):
                _logits(model, pixels)
            return steps * batch

        fwd = _rate(forward, repeats)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def train_step() -> int:
        for _ in range(steps):
            with autocast:
                loss = torch.nn.functional.cross_entropy(_logits(model, pixels), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return steps * batch

    train_step()
    return {"model_forward": fwd, "model_train_step": _rate(train_step, repeats)}


def pipeline_rates(source: Any, spec: Any, batch: int, repeats: int, workers: list[int], device: str = "cpu",
                   **load_kwargs: Any) -> dict[str, float]:
    from tl_hub.data import load_data
    from tl_hub.data.dataset import ImageClassificationDataset

    holder: dict[str, Any] = {}

    def load() -> int:
        holder["bundle"] = load_data(source, **load_kwargs)
        return len(holder["bundle"].train) + len(holder["bundle"].eval)

    out = {"load_data": _rate(load, repeats)}
    train = holder["bundle"].train

    def build() -> int:
        holder["dataset"] = ImageClassificationDataset(train, spec, train=True)
        return len(train)

    out["decode_once_cache"] = _rate(build, repeats)
    dataset = holder["dataset"]
    dataset[0]  # import torchvision's functional ops outside the timing
    for count in workers:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=count,
                                             persistent_workers=count > 0, drop_last=False)
        list(loader) if count else None  # warm the worker processes

        def epoch() -> int:
            return sum(int(b["labels"].shape[0]) for b in loader)

        out[f"epoch_workers{count}"] = _rate(epoch, repeats)
    if device != "cpu":  # uint8 items, crop/flip/normalise batched on the device
        fast = ImageClassificationDataset(train, spec, train=True, uint8_items=True)
        for count in workers:
            loader = torch.utils.data.DataLoader(fast, batch_size=batch, shuffle=True, num_workers=count,
                                                 persistent_workers=count > 0, pin_memory=True)

            def device_epoch() -> int:
                seen = 0
                for b in loader:
                    fast.transform_batch(b["pixel_values"].to(device, non_blocking=True))
                    seen += int(b["labels"].shape[0])
                return seen

            device_epoch()
            out[f"device_epoch_workers{count}"] = _rate(device_epoch, repeats)
    out["images"] = len(train)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--photos", type=int, default=400, help="JPEG photos in the folder benchmark (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-steps", type=int, default=3)
    parser.add_argument("--model-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts to time, comma-separated")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the model")
    parser.add_argument("--model-only", action="store_true", help="time only the model")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    from tl_hub.data.transforms import image_spec

    spec = image_spec(_processor(), image_size=args.image_size)
    workers = [int(w) for w in args.workers.split(",")]
    if args.model_only:
        rates = model_rates(args.image_size, args.model_batch_size or args.batch_size, args.model_steps,
                            args.repeats, args.device, args.bf16)
        print(f"Lite0 at {args.image_size} px on {args.device}{' (bf16)' if args.bf16 else ''}: "
              f"forward {rates['model_forward']:.0f} images/s, train step {rates['model_train_step']:.0f} images/s")
        return
    results: dict[str, Any] = {"image_size": args.image_size, "batch_size": args.batch_size, "device": args.device,
                               "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "bf16": args.bf16}
    results["fashion_mnist"] = pipeline_rates("bundled:fashion_mnist", spec, args.batch_size, args.repeats, workers,
                                              args.device)
    if args.photos:
        with tempfile.TemporaryDirectory() as tmp:
            folder = _photo_folder(Path(tmp) / "photos", args.photos)
            results["jpeg_folder"] = pipeline_rates(str(folder), spec, args.batch_size, args.repeats, workers,
                                                    args.device)
    results.update(model_rates(args.image_size, args.model_batch_size or args.batch_size, args.model_steps,
                               args.repeats, args.device, args.bf16))

    print(f"\nimages/s at {args.image_size} px, batch {args.batch_size}, {results['threads']} torch threads, "
          f"{results['cpus']} CPUs, model on {args.device}{' (bf16)' if args.bf16 else ''}")
    print(f"{'':28s}{'load_data':>11s}{'cache':>9s}" + "".join(f"{'epoch w' + str(w):>11s}" for w in workers))
    for name in ("fashion_mnist", "jpeg_folder"):
        if name in results:
            r = results[name]
            print(f"{name + ' (' + str(r['images']) + ' train)':28s}{r['load_data']:11.0f}{r['decode_once_cache']:9.0f}"
                  + "".join(f"{r[f'epoch_workers{w}']:11.0f}" for w in workers))
            if f"device_epoch_workers{workers[0]}" in r:
                print(f"{'  uint8 items + ' + args.device + ' aug':28s}{'':20s}"
                      + "".join(f"{r[f'device_epoch_workers{w}']:11.0f}" for w in workers))
    print(f"{'Lite0 forward (no_grad)':28s}{results['model_forward']:11.0f}")
    print(f"{'Lite0 train step (full)':28s}{results['model_train_step']:11.0f}")
    best = max(workers)
    key = f"device_epoch_workers{best}" if args.device != "cpu" else f"epoch_workers{best}"
    slowest_epoch = min(r[key] for k, r in results.items() if k in ("fashion_mnist", "jpeg_folder"))
    results["epoch_over_train_step"] = slowest_epoch / results["model_train_step"]
    results["epoch_over_forward"] = slowest_epoch / results["model_forward"]
    print(f"pipeline epoch ({key}) / model: {results['epoch_over_train_step']:.1f}x the train step, "
          f"{results['epoch_over_forward']:.1f}x the forward pass (> 1: the model, not the data, is the bottleneck)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
