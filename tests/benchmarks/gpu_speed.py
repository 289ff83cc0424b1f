"""GPU training speed: tl_hub's loop against the transformers Trainer and against a synthetic on-device loop.

For each model (the bundled ImageNet EfficientNet-Lite0, and a ViT-B/16-sized model with random weights)
and each policy (`partial`, `full`), three arms train the same parameters at the same image size, batch,
precision (bf16) and learning rate, each in its own process:

- `tl_hub`:    `tl_hub.finetune` on the bundled Fashion-MNIST subset (uint8 batches, augmented on the GPU,
               DataLoader workers on): the steady-state training images/s of its last epoch;
- `trainer`:   the Trainer set up as in transformers' `run_image_classification.py` (tests/benchmarks/
               trainer_baseline.py: per-item torchvision transforms, the same workers): images/s of its
               last epoch;
- `ceiling`:   a bare loop over random tensors already on the GPU (same model, policy, fused AdamW, bf16):
               what the GPU can do when nothing else waits.

Targets: tl_hub >= 1.5x the Trainer's images/s and >= 90 % of the ceiling. Every arm runs at least
`--steps` optimizer steps. Results go to `--out` (default $OUT or bench_results/gpu_speed) as
results.json, rewritten after every arm, and a table is printed. The whole run is sized for < 8 minutes on
one H100/H200; `--time-limit` stops before an arm that would start after it.

Usage (repository root, on the GPU machine; CPU dry run with --allow-cpu and small sizes):

    python tests/benchmarks/gpu_speed.py
    python tests/benchmarks/gpu_speed.py --allow-cpu --models lite0 --policies partial --image-size 32 \\
        --batch-size 8 --steps 4 --out /tmp/gpu_speed_dry

Example:
    >>> import gpu_speed                                                   # doctest: +SKIP
    >>> gpu_speed.main(["--allow-cpu", "--steps", "4", "--out", "/tmp/g"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODELS = ("lite0", "vit-b16")
POLICIES = ("partial", "full")
ARMS = ("ceiling", "tl_hub", "trainer")
LEARNING_RATE = 1e-4


# ----------------------------------------------------------------------------------------------------
# models and data
# ----------------------------------------------------------------------------------------------------


def model_source(name: str, work: Path, image_size: int) -> str:
    """A source tl_hub and the Trainer both load: the bundled Lite0, or a random ViT-B/16 saved to `work`."""
    if name == "lite0":
        from tl_hub.bundled import resolve_bundled_backbone

        return resolve_bundled_backbone("bundled:efficientnet_lite0")
    folder = work / "vit-b16"
    if not (folder / "config.json").is_file():
        import torch
        from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

        torch.manual_seed(0)
        ViTForImageClassification(ViTConfig(image_size=image_size, num_labels=10)).save_pretrained(folder)
        ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
                          image_std=[0.5] * 3).save_pretrained(folder)
    return str(folder)


def trainable_names(source: str, labels: list[str], policy: str) -> list[str]:
    """The parameters tl_hub's policy trains, so the Trainer and the ceiling train exactly those."""
    from tl_hub.backbone import load_backbone
    from tl_hub.freezing import apply_policy

    model = load_backbone(source, labels)
    apply_policy(model, policy)
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ----------------------------------------------------------------------------------------------------
# arms (each runs in its own process: `--arm SPEC.json`)
# ----------------------------------------------------------------------------------------------------


def arm_ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    """Random tensors on the device, the same model/policy/optimizer: the GPU's own limit."""
    import torch
    import torch.nn.functional as F

    from tl_hub.backbone import load_backbone
    from tl_hub.freezing import apply_policy, param_groups
    from tl_hub.train import make_optimizer

    device = torch.device(spec["device"])
    model = load_backbone(spec["source"], spec["labels"]).to(device)
    apply_policy(model, spec["policy"])
    optimizer = make_optimizer(param_groups(model, LEARNING_RATE, weight_decay=0.01), LEARNING_RATE)
    generator = torch.Generator(device=device).manual_seed(0)
    size, batch = spec["image_size"], spec["batch_size"]
    x = torch.randn(batch, 3, size, size, device=device, generator=generator)
    y = torch.randint(0, len(spec["labels"]), (batch,), device=device, generator=generator)
    model.train()
    warmup = max(2, spec["steps"] // 10)
    start = None
    for step in range(spec["steps"] + warmup):
        if step == warmup:
            _synchronize(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["bf16"]):
            loss = F.cross_entropy(model(pixel_values=x).logits.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _synchronize(device)
    seconds = time.perf_counter() - start
    return {"images_per_second": spec["steps"] * batch / seconds, "steps": spec["steps"], "seconds": seconds}


def arm_tl_hub(spec: dict[str, Any]) -> dict[str, Any]:
    """tl_hub.finetune on the bundled data: the steady-state images/s of the last epoch."""
    import tl_hub

    epochs = max(2, math.ceil(spec["steps"] * spec["batch_size"] / spec["train_size"]))
    result = tl_hub.finetune(
        model=spec["source"], dataset="bundled:fashion_mnist", policy=spec["policy"], image_size=spec["image_size"],
        batch_size=spec["batch_size"], epochs=epochs, learning_rate=LEARNING_RATE, seed=0,
        mixed_precision="bf16" if spec["bf16"] else "no", checkpointing_steps=None,
        output_dir=spec["work"] + "/tl_hub_out", overwrite_output_dir=True, num_workers=spec["num_workers"],
    )
    last = result.history[-1]
    steps = sum(math.ceil(spec["train_size"] / spec["batch_size"]) for _ in result.history)
    return {"images_per_second": last["images_per_second"], "steps": steps, "epochs": epochs,
            "epoch_images_per_second": [r["images_per_second"] for r in result.history]}


def arm_trainer(spec: dict[str, Any]) -> dict[str, Any]:
    """The Trainer as run_image_classification.py sets it up: images/s of its last epoch."""
    sys.path.insert(0, str(HERE))
    from trainer_baseline import TrainerRun, run_trainer

    from tl_hub.data import load_data

    train = load_data("bundled:fashion_mnist").train.select_columns(["image", "label"])
    steps_per_epoch = math.ceil(len(train) / spec["batch_size"])
    epochs = max(2, math.ceil(spec["steps"] / steps_per_epoch))
    out = run_trainer(
        TrainerRun(model_path=spec["source"], trainable=spec["trainable"], epochs=epochs, batch_size=spec["batch_size"],
                   learning_rate=LEARNING_RATE, image_size=spec["image_size"], bf16=spec["bf16"],
                   num_workers=spec["num_workers"], use_cpu=spec["device"] == "cpu"),
        train, None, output_dir=spec["work"] + "/trainer_out",
    )
    rates = [e["images_per_second"] for e in out["epochs"] if e.get("images_per_second")]
    return {"images_per_second": rates[-1] if rates else None, "steps": epochs * steps_per_epoch, "epochs": epochs,
            "epoch_images_per_second": rates}


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_arm(spec_file: Path, result_file: Path) -> int:
    spec = json.loads(spec_file.read_text())
    started = time.perf_counter()
    result = {"ceiling": arm_ceiling, "tl_hub": arm_tl_hub, "trainer": arm_trainer}[spec["arm"]](spec)
    result["wall_s"] = time.perf_counter() - started
    import torch

    if torch.cuda.is_available():
        result["gpu_peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result_file.write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                            "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return info


def steady_rate(record: dict[str, Any]) -> float | None:
    """An arm's images/s: for the two tools, the median over their epochs after the first (one epoch of the
    bundled data is only ~24 steps, so a single epoch's rate is noisy; the first holds worker start-up and
    cuDNN's autotuning); for the ceiling, its one timed stretch.

    Example:
        >>> steady_rate({"images_per_second": 9.0, "epoch_images_per_second": [1.0, 4.0, 6.0, 5.0]})
        5.0
        >>> steady_rate({"images_per_second": 9.0})
        9.0
    """
    epochs = record.get("epoch_images_per_second") or []
    return statistics.median(epochs[1:]) if len(epochs) >= 2 else record.get("images_per_second")


def summarise(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Ratios per (model, policy) (of `steady_rate`) and a Markdown table with the targets met or missed."""
    rows, lines = [], ["| model | policy | ceiling img/s | tl_hub img/s | Trainer img/s | tl_hub / Trainer "
                       "(target >= 1.5x) | tl_hub / ceiling (target >= 0.90) |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["model"], r["policy"]) for r in results}, key=lambda k: (MODELS.index(k[0]), k[1]))
    for model, policy in keys:
        runs: dict[str, list[float]] = {}
        for r in results:
            if (r["model"], r["policy"]) == (model, policy) and "error" not in r and steady_rate(r):
                runs.setdefault(r["arm"], []).append(steady_rate(r))
        rate = {arm: statistics.median(values) for arm, values in runs.items()}  # repeated arms: their median
        vs_trainer = rate.get("tl_hub") / rate["trainer"] if rate.get("tl_hub") and rate.get("trainer") else None
        vs_ceiling = rate.get("tl_hub") / rate["ceiling"] if rate.get("tl_hub") and rate.get("ceiling") else None
        rows.append({"model": model, "policy": policy, **{f"{a}_images_per_second": rate.get(a) for a in ARMS},
                     "runs": {arm: values for arm, values in runs.items()},
                     "tl_hub_vs_trainer": vs_trainer, "tl_hub_vs_ceiling": vs_ceiling})

        def show(value: float | None, target: float, fmt: str) -> str:
            return "–" if value is None else (fmt.format(value) + ("" if value >= target else " **missed**"))

        lines.append(f"| {model} | {policy} | " + " | ".join("–" if rate.get(a) is None else f"{rate[a]:.0f}"
                                                          for a in ARMS)
                     + f" | {show(vs_trainer, 1.5, '{:.2f}x')} | {show(vs_ceiling, 0.9, '{:.2f}')} |")
    return rows, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per arm, at least")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers for both tools (default: cores - 2, at most 12)")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a dry run of the script)")
    p.add_argument("--time-limit", type=float, default=450.0, help="seconds: no arm starts after this")
    p.add_argument("--out", default=os.environ.get("OUT", "bench_results/gpu_speed"))
    p.add_argument("--summarise", nargs="+", metavar="RESULTS_JSON",
                   help="no run: merge these results.json files (later arms replace earlier ones) into --out")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--arm-result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.arm:
        return run_arm(Path(a.arm), Path(a.arm_result))
    if a.summarise:
        return merge_results([Path(f) for f in a.summarise], Path(a.out))
    import torch

    if not torch.cuda.is_available() and not a.allow_cpu:
        print("gpu_speed: no CUDA device; pass --allow-cpu for a dry run", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_speed_"))
    from tl_hub.data import load_data

    bundle = load_data("bundled:fashion_mnist")
    labels, train_size = list(bundle.labels), len(bundle.train)
    workers = a.num_workers if a.num_workers is not None else max(0, min(12, (os.cpu_count() or 2) - 2))
    doc: dict[str, Any] = {"environment": environment(), "settings": vars(a) | {"num_workers": workers}, "arms": []}
    print(json.dumps(doc["environment"]), flush=True)
    started = time.perf_counter()
    for model in a.models.split(","):
        source = model_source(model, work, a.image_size)
        for policy in a.policies.split(","):
            trainable = trainable_names(source, labels, policy)
            for arm in a.arms.split(","):
                if time.perf_counter() - started > a.time_limit:
                    print(f"time limit: {arm} {model} {policy} not started", flush=True)
                    continue
                spec = {"arm": arm, "model": model, "policy": policy, "source": source, "labels": labels,
                        "trainable": trainable, "image_size": a.image_size, "batch_size": a.batch_size,
                        "steps": a.steps, "bf16": not a.no_bf16, "num_workers": workers, "train_size": train_size,
                        "device": "cuda" if torch.cuda.is_available() else "cpu", "work": str(work / f"{model}-{policy}-{arm}")}
                doc["arms"].append(_run_in_process(spec, work))
                rows, table = summarise(doc["arms"])
                doc["summary"] = rows
                (out / "results.json").write_text(json.dumps(doc, indent=1))
    print(table, flush=True)
    (out / "results.md").write_text(f"# GPU training speed\n\n{json.dumps(doc['environment'])}\n\n{table}\n")
    print(f"written: {out / 'results.json'}, {out / 'results.md'}")
    return 0


def merge_results(files: list[Path], out: Path) -> int:
    """Several sessions' results.json as one, re-summarised (an arm measured twice counts by its median)."""
    docs = [json.loads(f.read_text()) for f in files]
    merged = {"environment": docs[0]["environment"], "sources": [str(f) for f in files],
              "settings": [doc["settings"] for doc in docs], "arms": [r for doc in docs for r in doc["arms"]]}
    merged["summary"], table = summarise(merged["arms"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(merged, indent=1))
    (out / "results.md").write_text(f"# GPU training speed\n\n{json.dumps(merged['environment'])}\n\n{table}\n")
    print(table)
    return 0


def _run_in_process(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    spec_file, result_file = work / f"{spec['arm']}-{spec['model']}-{spec['policy']}.json", work / "result.json"
    spec_file.write_text(json.dumps(spec))
    result_file.unlink(missing_ok=True)
    print(f"-> {spec['arm']:8s} {spec['model']:8s} {spec['policy']}", flush=True)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--arm", str(spec_file), "--arm-result",
                           str(result_file)], capture_output=True, text=True)
    record = {k: spec[k] for k in ("arm", "model", "policy")}
    if proc.returncode != 0 or not result_file.is_file():
        record["error"] = (proc.stdout[-1500:] + proc.stderr[-3000:]).strip()
        print(f"   failed:\n{record['error']}", flush=True)
        return record
    record.update(json.loads(result_file.read_text()))
    print(f"   {record['images_per_second']:.0f} img/s ({record['wall_s']:.0f} s)", flush=True)
    return record


if __name__ == "__main__":
    sys.exit(main())
