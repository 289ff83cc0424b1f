"""tl_hub vs the transformers Trainer on the real ImageNet EfficientNet-Lite0 and the full Fashion-MNIST.

Usage (from the repository root; see tests/benchmarks/README.md):

    python tests/benchmarks/run.py --quick            # minutes: N = 1,000, few epochs, few steps
    python tests/benchmarks/run.py                    # full: N = 1,000 / 10,000, all policies, seeds
    python tests/benchmarks/run.py --sections speed --out bench_results/speed

Sections (each comparison measured in the same run, arms alternating, reported as ratios):
  speed       head policy: tl_hub (cached features) vs Trainer with the same frozen backbone, batch, LR,
              epochs; plus the physical floor: one no-grad forward pass over the same images.
  throughput  partial and full fine-tuning: training images/s of tl_hub's loop vs the Trainer.
  quality     test accuracy of head / partial / full / scratch / lp-ft / auto on the 10k test set.
  fixed       a run's fixed cost: the quickstart's head run (the data bundled with tl_hub, N = 1,000,
              10 epochs, every epoch evaluated on a 600-image carve-out of train, the 2,000 held-out
              test images once at the end) timed in a process that imported only torch, against the
              floor measured after it in the same process: the backbone's forward pass over those
              3,600 images as ready tensors (no decoding).
  loop        the loop's own cost on the CPU (loop_overhead.py, one arm): tl_hub's steady-state images/s
              with a trivial model against a bare PyTorch loop over the same uint8 tensors and batched
              augmentation (target >= 0.8x), and the input pipeline alone in images/s per worker core at
              224 px colour (target >= 8,000). Lite0 partial / full against the Trainer is `throughput`.
  memory      peak RSS of every arm (each arm is its own process), tl_hub vs Trainer.

Every arm runs in a fresh subprocess (`run.py --arm SPEC.json`) so its peak RSS and its imports are its
own; the timed part of an arm starts after the imports. Output: results.json + results.md in --out.

Example:
    >>> import run                                                 # doctest: +SKIP
    >>> run.main(["--quick", "--out", "bench_results/quick"])      # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

POLICIES = ("head", "partial", "full", "scratch", "lp-ft", "auto")
DEFAULT_MODEL = "bundled:efficientnet_lite0"


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    """Every knob of one benchmark run (the modes below fill it)."""

    mode: str = "full"
    model: str = DEFAULT_MODEL
    device: str = "cpu"
    image_size: int = 112
    batch_size: int = 64
    sections: tuple[str, ...] = ("speed", "throughput", "quality", "fixed", "loop")
    # speed (head policy)
    speed_ns: tuple[int, ...] = (1000, 10000)
    speed_epochs: int = 10
    speed_repeats: int = 3
    head_lr: float = 1e-3
    # throughput (partial / full)
    tp_policies: tuple[str, ...] = ("partial", "full")
    tp_steps: int = 20  # optimizer steps per epoch; the last epoch is the one compared
    tp_epochs: int = 2
    tp_repeats: int = 3
    tp_lr: float = 1e-4
    precision: str = "auto"  # auto: fp32 on CPU, bf16 on CUDA
    num_workers: int = 0
    malloc_tuning: bool = False
    first_repeat: int = 0  # repeat indices start here (a later run adds repeats to an earlier one: --merge)
    # fixed cost (the quickstart's head run on the bundled data vs its forward pass over ready tensors)
    fixed_examples_per_label: int = 100
    fixed_epochs: int = 10
    fixed_repeats: int = 3
    # the loop's own cost on the CPU (loop_overhead.py): (a) tl_hub vs a bare loop, trivial model
    loop_images: int = 2048  # random colour images, decoded once to uint8 at loop_side px, random crop loop_crop
    loop_side: int = 128
    loop_crop: int = 112
    loop_batch: int = 32
    loop_epochs: int = 2  # the last epoch (from its second step) is the one timed
    loop_repeats: int = 5  # tl_hub and the bare loop alternate inside the arm, `loop_repeats` times each
    # (b) the input pipeline alone (gather + collate [+ pinned copy]), no augmentation, per worker core
    loop_pipeline_images: int = 1024
    loop_pipeline_side: int = 256
    loop_pipeline_crop: int = 224
    loop_pipeline_batch: int = 128
    loop_pipeline_batches: int = 40  # timed batches, after 2 untimed ones
    loop_pipeline_workers: int = 1
    # quality
    quality_ns: tuple[int, ...] = (100, 1000, 10000)
    quality_policies: tuple[str, ...] = POLICIES
    quality_epochs: dict[int, int] = field(default_factory=lambda: {100: 30, 1000: 10, 10000: 5, 60000: 3})
    quality_lr: float | None = None  # None: tl_hub's own default learning rate, per policy
    seeds_small: int = 2  # seeds for N <= 1000
    seeds_large: int = 1
    # evaluation sets
    n_val: int = 1000  # validation images (disjoint from every training subset) for tl_hub's per-epoch eval
    n_test: int | None = None  # None = the full 10,000-image test set
    keep_work: bool = False  # keep every arm's images and outputs (else only its log and result)
    data: str = "full"  # "full": the Debian package's 70k images; "bundled": tl_hub's 5k subset (smoke only)
    in_process: bool = False  # run arms inside this process (smoke test only: RSS is then shared)
    arm_timeout_s: int = 4 * 3600

    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        return "bf16" if self.device == "cuda" else "fp32"


def quick_config(**kw: Any) -> BenchConfig:
    """A few minutes on 2 quiet CPU cores: N = 1,000 only, one seed, 2 quality epochs, 1k test images; the
    loop section on 512 images, 3 repeats (about a minute)."""
    base = dict(
        mode="quick",
        speed_ns=(1000,),
        speed_repeats=2,
        tp_steps=6,
        tp_epochs=2,
        tp_repeats=2,
        batch_size=32,
        quality_ns=(1000,),
        quality_epochs={1000: 2},
        seeds_small=1,
        n_val=500,
        n_test=1000,
        fixed_repeats=2,
        loop_images=512,
        loop_repeats=3,
        loop_pipeline_images=512,
        loop_pipeline_batches=20,
    )
    base.update(kw)
    return BenchConfig(**base)


def smoke_config(**kw: Any) -> BenchConfig:
    """Seconds: every code path on tiny data at 32 px (used by tests/test_benchmarks_smoke.py)."""
    base = dict(
        mode="smoke",
        image_size=32,
        batch_size=8,
        speed_ns=(40,),
        speed_epochs=2,
        speed_repeats=1,
        tp_policies=("partial",),
        tp_steps=2,
        tp_epochs=2,
        tp_repeats=1,
        quality_ns=(40,),
        quality_policies=("head", "auto"),
        quality_epochs={40: 1},
        seeds_small=1,
        n_val=20,
        n_test=40,
        fixed_examples_per_label=4,
        fixed_epochs=2,
        fixed_repeats=1,
        loop_images=64,
        loop_side=32,
        loop_crop=28,
        loop_batch=8,
        loop_repeats=1,
        loop_pipeline_images=48,
        loop_pipeline_side=40,
        loop_pipeline_crop=32,
        loop_pipeline_batch=8,
        loop_pipeline_batches=4,
    )
    base.update(kw)
    return BenchConfig(**base)


# ----------------------------------------------------------------------------------------------------
# Helpers shared by the arms
# ----------------------------------------------------------------------------------------------------


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident set size of this process and of its (waited-for) children, in MiB."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return {"peak_rss_mb": self_kb * scale, "peak_rss_children_mb": child_kb * scale}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def folder_label(name: str) -> str:
    """A label name usable as a folder name ("T-shirt/top" -> "T-shirt-top")."""
    return name.replace("/", "-")


def _datasets(spec: dict[str, Any]) -> dict[str, Any]:
    """The arm's data (untimed): train and validation written as an image folder, test kept in memory.

    Train: a class-balanced subset of n_train images (seed). Validation: n_val images of the training
    split that no training subset uses (the same for every arm and seed). Test: the full
    test split or a balanced n_test subset. Both tools read the same folder the way their users do
    (`load_dataset("imagefolder")` for the Trainer, `dataset: <folder>` for tl_hub), inside the
    timed part. Returns {"folder": Path, "train_files": [...], "val_files": [...], "test": Dataset}.
    """
    import numpy as np
    from PIL import Image

    import fashion_mnist as fm

    source = spec.get("data", "full")
    train_x, train_y = fm.load_split("train", source)
    test_x, test_y = fm.load_split("test", source)
    val_idx = fm.balanced_subset(train_y, spec["n_val"], seed=999) if spec["n_val"] else np.array([], dtype=int)
    rest = np.setdiff1d(np.arange(len(train_y)), val_idx)
    if spec["n_train"] > len(rest):
        raise ValueError(f"n_train {spec['n_train']} > {len(rest)} images left after the validation set ({source} data)")
    train_idx = rest[fm.balanced_subset(train_y[rest], spec["n_train"], seed=spec["seed"])]
    if spec.get("n_test"):
        test_idx = fm.balanced_subset(test_y, spec["n_test"], seed=12345)
        test_x, test_y = test_x[test_idx], test_y[test_idx]
    folder = Path(spec["workdir"]) / "images"
    files: dict[str, list[str]] = {}
    for split, idx in (("train", train_idx), ("validation", val_idx)):
        files[split] = []
        for i in idx:
            path = folder / split / folder_label(fm.LABELS[train_y[i]]) / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(train_x[i]).save(path)
            files[split].append(str(path))
    return {"folder": folder, "train_files": files["train"], "val_files": files["validation"],
            "test": fm.to_hf_dataset(test_x, test_y, [folder_label(n) for n in fm.LABELS]),
            "labels": [folder_label(n) for n in fm.LABELS]}


def _preimport() -> None:
    """Import, before any timer starts, every heavy library either tool may import lazily (import
    cost is a per-process constant, the same for both tools; `process_wall_s` still includes it)."""
    import importlib

    for name in ("torch", "torch._dynamo", "accelerate", "transformers", "datasets", "evaluate", "timm",
                 "torchvision", "matplotlib.pyplot"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from transformers import AutoImageProcessor, AutoModelForImageClassification, Trainer  # noqa: F401

    for name in ("backbone", "data", "depth", "metrics", "policy", "train", "transforms", "features", "card",
                 "finetune"):
        try:
            importlib.import_module(f"tl_hub.{name}")
        except ImportError:
            pass


def _quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
    except (ImportError, AttributeError):
        pass


def _device_peak(device: str) -> dict[str, float]:
    if device != "cuda":
        return {}
    import torch

    return {"gpu_peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20}


def _model_path(model: str) -> str:
    """The local folder a plain transformers user would point `from_pretrained` at."""
    if model.startswith("bundled:"):
        from tl_hub.bundled import resolve_bundled_backbone

        return resolve_bundled_backbone(model)
    return model


def _trainable_names(model_source: str, labels: list[str], policy: str, n_train: int) -> list[str] | None:
    """Names of the parameters tl_hub trains under `policy` (the Trainer gets the same set)."""
    if policy in ("full", "scratch"):
        return None
    from tl_hub.backbone import load_backbone
    from tl_hub.freezing import apply_policy
    from tl_hub.policy import FreezePolicy, choose_policy

    model = load_backbone(model_source, labels)
    pol = choose_policy(n_train, len(labels)) if policy == "auto" else FreezePolicy(policy)
    apply_policy(model, pol, phase="head" if pol.name == "lp-ft" else None)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _evaluate_saved(output_dir: str, test_ds: Any, device: str, batch_size: int = 64) -> dict[str, float]:
    """Test accuracy of a saved tl_hub output folder, through its own saved image processor (what
    `pipeline()` users get): a check of the artifact as much as of the training."""
    import numpy as np
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    t0 = time.perf_counter()
    model = AutoModelForImageClassification.from_pretrained(output_dir).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(output_dir)
    correct = 0
    test_names = test_ds.features["label"].names
    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if sorted(model_names) != sorted(test_names):
        raise ValueError(f"model labels {model_names} differ from the test labels {test_names}")
    to_model_id = np.array([model_names.index(name) for name in test_names])
    labels = to_model_id[np.asarray(test_ds["label"])]
    images = test_ds["image"]
    with torch.inference_mode():
        for start in range(0, len(test_ds), batch_size):
            batch = [img.convert("RGB") for img in images[start : start + batch_size]]
            pixel_values = processor(images=batch, return_tensors="pt")["pixel_values"].to(device)
            logits = model(pixel_values=pixel_values).logits
            correct += int((logits.argmax(-1).cpu().numpy() == labels[start : start + batch_size]).sum())
    return {"test_accuracy": correct / len(test_ds), "eval_wall_s": time.perf_counter() - t0,
            "eval_input_size": list(pixel_values.shape[-2:])}


# ----------------------------------------------------------------------------------------------------
# Arms (each runs in its own process; `spec` is plain JSON)
# ----------------------------------------------------------------------------------------------------


def arm_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The physical floor of the head job: load the backbone, decode + preprocess the images once, one
    no-grad forward pass over them (train + validation images, the ones tl_hub must embed)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from tl_hub.backbone import load_backbone

    data = _datasets(spec)
    _quiet_libraries()
    from PIL import Image

    files = data["train_files"] + data["val_files"]
    labels = data["labels"]
    device = spec["device"]
    t0 = time.perf_counter()
    model = load_backbone(spec["model"], labels).to(device).eval()
    # the best plain forward: channels_last for conv nets on the CPU (as tl_hub does; +25-75 % in fp32),
    # PyTorch's default layout on a GPU (as tl_hub does)
    channels_last = device == "cpu" and sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) >= 8
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cfg = getattr(model.config, "pretrained_cfg", {}) or {}
    mean = torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5))).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.5, 0.5, 0.5))).view(1, 3, 1, 1)
    size, bs = spec["image_size"], spec["batch_size"]
    t_load = time.perf_counter() - t0
    forward_s = 0.0
    autocast = spec["precision"] == "bf16"
    with torch.inference_mode():
        for start in range(0, len(files), bs):
            chunk = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f in files[start : start + bs]]
            x = torch.stack(chunk).permute(0, 3, 1, 2).float().div_(255)
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
            x = ((x - mean) / std).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            tf = time.perf_counter()
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
                model(pixel_values=x)
            if device == "cuda":
                torch.cuda.synchronize()
            forward_s += time.perf_counter() - tf
    return {"wall_s": time.perf_counter() - t0, "forward_s": forward_s, "load_s": t_load, "images": len(files),
            "channels_last": channels_last}


def arm_tlhub(spec: dict[str, Any]) -> dict[str, Any]:
    """tl_hub.finetune on the arm's data (timed), then the saved folder scored on the test set (untimed)."""
    from tl_hub.finetuning import finetune

    data = _datasets(spec)
    _quiet_libraries()
    out_dir = Path(spec["workdir"]) / "tlhub_out"
    overrides: dict[str, Any] = dict(
        model=spec["model"],
        policy=spec["policy"],
        epochs=spec["epochs"],
        batch_size=spec["batch_size"],
        image_size=spec["image_size"],
        seed=spec["seed"],
        output_dir=str(out_dir),
        mixed_precision="bf16" if spec["precision"] == "bf16" else "no",
        num_workers=spec.get("num_workers", 0),
    )
    if spec.get("learning_rate") is not None:
        overrides["learning_rate"] = spec["learning_rate"]
    overrides.update(_tlhub_data_overrides(data, Path(spec["workdir"])))
    overrides.update(spec.get("tlhub_overrides") or {})
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    result = finetune(**overrides)
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    peak_train = _peak_rss_mb()["peak_rss_mb"]
    metrics_file = Path(result.output_dir) / "metrics.json"
    run_info_file = Path(result.output_dir) / "run_info.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    run_info = json.loads(run_info_file.read_text()) if run_info_file.is_file() else {}
    policy = result.policy.to_dict() if hasattr(result.policy, "to_dict") else result.policy
    out: dict[str, Any] = {
        "wall_s": wall,
        "cpu_s": cpu,
        "policy_used": policy,
        "val_metrics": {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))},
        "epochs": [
            {k: e.get(k) for k in ("epoch", "step", "train_loss", "images_per_second", "eval_accuracy")}
            for e in metrics.get("epochs", [])
        ],
        "feature_cache_used": run_info.get("feature_cache_used"),
        "train_runtime_s": run_info.get("train_runtime_s"),
        "peak_rss_train_mb": peak_train,
        **_device_peak(spec["device"]),
    }
    if spec.get("score_test", True):
        out.update(_evaluate_saved(str(result.output_dir), data["test"], spec["device"], spec["batch_size"]))
    return out


def _tlhub_data_overrides(data: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """How the arm hands its image folder (train/ + validation/) to tl_hub.finetune."""
    out: dict[str, Any] = {"dataset": str(data["folder"])}
    if data["val_files"]:
        out["eval_split"] = "validation"
    return out


def arm_trainer(spec: dict[str, Any]) -> dict[str, Any]:
    """The transformers Trainer baseline on the same data, model, trainable set, batch, LR, epochs."""
    import trainer_baseline as tb

    data = _datasets(spec)
    _quiet_libraries()
    trainable = _trainable_names(spec["model"], data["labels"], spec["policy"], spec["n_train"])
    run = tb.TrainerRun(
        model_path=_model_path(spec["model"]),
        trainable=trainable,
        epochs=spec["epochs"],
        batch_size=spec["batch_size"],
        learning_rate=spec["learning_rate"] if spec.get("learning_rate") is not None else 5e-5,
        image_size=spec["image_size"],
        seed=spec["seed"],
        bf16=spec["precision"] == "bf16",
        num_workers=spec.get("num_workers", 0),
        use_cpu=spec["device"] == "cpu",
        pretrained=spec["policy"] != "scratch",
    )
    cpu0 = _cpu_seconds()
    out = tb.run_trainer(run, str(data["folder"] / "train"), data["test"] if spec.get("score_test", True) else None,
                         output_dir=Path(spec["workdir"]) / "trainer_out")
    out["cpu_s"] = _cpu_seconds() - cpu0
    out["wall_s"] = out.pop("train_wall_s")
    out.update(_device_peak(spec["device"]))
    return out


def arm_fixed_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """A run's fixed cost. First the run: the quickstart recipe (the data bundled with tl_hub, policy head)
    at `examples_per_label` x 10 training images and `epochs` epochs, every epoch evaluated on the eval
    carve-out of train and the saved model once on the 2,000 bundled test images, timed from a process that has imported torch and nothing else heavy, so every
    library the run loads, the data, the feature pass, the head's epochs, the plots, the card and the files
    all count. Then, in the same process and with the same torch threads, the floor: the backbone's forward
    pass over the same training + eval + test images already decoded and transformed into one tensor (decoding
    untimed), at the batch size of the run's own feature pass, in the run's layout and precision."""
    import torch

    from tl_hub.config import quickstart_config

    preimported = sorted(m for m in ("transformers", "timm", "accelerate", "datasets", "evaluate", "matplotlib")
                         if m in sys.modules)
    overrides = ["--model", spec["model"], "--image_size", str(spec["image_size"]), "--epochs", str(spec["epochs"]),
                 "--examples_per_label", str(spec["examples_per_label"]),
                 "--mixed_precision", "bf16" if spec["precision"] == "bf16" else "no",
                 "--num_workers", str(spec.get("num_workers", 0))]
    config = quickstart_config(overrides, output_dir=str(Path(spec["workdir"]) / "fixed_out"))
    from tl_hub.finetuning import finetune  # light (its heavy imports happen inside finetune)

    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    result = finetune(config)
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    metrics = json.loads((Path(result.output_dir) / "metrics.json").read_text())
    floor = _ready_tensor_forward(config, spec["device"])
    return {"wall_s": wall, "cpu_s": cpu, "ratio": wall / floor["forward_s"], **floor,
            "feature_pass_s": (metrics.get("feature_extraction") or {}).get("seconds"),
            "val_accuracy": result.metrics.get("accuracy"), "epochs_run": len(result.history),
            "feature_cache_used": result.feature_cache_used, "preimported": preimported,
            "torch_threads": torch.get_num_threads()}


def _ready_tensor_forward(config: Any, device: str) -> dict[str, Any]:
    """The floor of `arm_fixed_cost`: the run's train + eval (+ held-out test) images, the images its feature pass
    embeds, through tl_hub's own eval transform into one tensor (untimed), then the timed forward pass of the
    backbone over it."""
    import torch

    from tl_hub.backbone import load_backbone
    from tl_hub.data.dataset import ImageClassificationDataset
    from tl_hub.finetuning import load_preprocessing, load_run_data
    from tl_hub.hardware import feature_batch_size, wants_channels_last

    data = load_run_data(config)
    _, image_spec = load_preprocessing(config)
    splits = (data.train, data.eval) + ((data.test,) if data.test is not None else ())
    pixels = torch.stack([item["pixel_values"] for split in splits
                          for item in ImageClassificationDataset(split, image_spec, train=False, cache=False)])
    model = load_backbone(config.model, list(data.labels)).to(device).eval()
    channels_last = wants_channels_last(model, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    batch = feature_batch_size(config.eval_batch_size, config.batch_size, device)
    autocast = config.mixed_precision == "bf16"
    pixels = pixels.to(device)
    started = time.perf_counter()
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
        for start in range(0, len(pixels), batch):
            model(pixel_values=pixels[start : start + batch])
        if device == "cuda":
            torch.cuda.synchronize()
    return {"forward_s": time.perf_counter() - started, "images": len(pixels), "floor_batch_size": batch,
            "channels_last": channels_last}


def arm_loop_overhead(spec: dict[str, Any]) -> dict[str, Any]:
    """The loop's own cost on the CPU (loop_overhead.py): (a) tl_hub's loop against a bare PyTorch loop with a
    trivial model, alternating `repeats` times in this process, then (b) tl_hub's input pipeline alone.
    `spec["loop"]` holds the sizes: {"overhead": per_step_overhead kwargs, "pipeline": input_pipeline kwargs}."""
    import torch

    import loop_overhead

    sizes = spec["loop"]
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    overhead = loop_overhead.per_step_overhead(**sizes["overhead"])
    pipeline = loop_overhead.input_pipeline(**sizes["pipeline"])
    note = (f"tl_hub {statistics.median(overhead['tl_hub_images_per_second']):.0f} vs bare "
            f"{statistics.median(overhead['bare_images_per_second']):.0f} img/s ({overhead['ratio']:.2f}x); "
            f"pipeline {pipeline['images_per_second_per_worker']:,.0f} img/s per worker core")
    return {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu_seconds() - cpu0, "per_step_overhead": overhead,
            "input_pipeline": pipeline, "cuda_available": torch.cuda.is_available(),
            "torch_threads": torch.get_num_threads(), "note": note}


ARMS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "floor": arm_floor,
    "tlhub": arm_tlhub,
    "trainer": arm_trainer,
    "fixed_cost": arm_fixed_cost,
    "loop_overhead": arm_loop_overhead,
}


def run_arm_here(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one arm in this process and add the process-level numbers (peak RSS, process wall)."""
    started = time.perf_counter()
    if spec.get("preimport", True):
        _preimport()
    else:  # the arm times the imports it causes: only torch is loaded before its timer
        import torch  # noqa: F401
    result_imports_s = time.perf_counter() - started
    if spec["device"] == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    result = ARMS[spec["arm"]](spec)
    result.update(_peak_rss_mb())
    result.setdefault("peak_rss_train_mb", result["peak_rss_mb"])
    result["imports_s"] = result_imports_s
    result["arm_wall_s"] = time.perf_counter() - started
    return result


# ----------------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------------


class Runner:
    """Runs arms (subprocess each, unless config.in_process) and keeps every record."""

    def __init__(self, config: BenchConfig, out_dir: Path, log: Callable[[str], None]) -> None:
        self.config = config
        self.out_dir = out_dir
        self.log = log
        self.records: list[dict[str, Any]] = []
        self.work_root = Path(tempfile.mkdtemp(prefix="tl_hub_bench_"))
        self._counter = 0
        self.on_record: Callable[[], Any] | None = None

    def spec(self, arm: str, **kw: Any) -> dict[str, Any]:
        cfg = self.config
        self._counter += 1
        workdir = self.work_root / f"{self._counter:03d}_{arm}"
        workdir.mkdir(parents=True)
        base = dict(
            arm=arm,
            model=cfg.model,
            device=cfg.device,
            image_size=cfg.image_size,
            batch_size=cfg.batch_size,
            precision=cfg.resolved_precision(),
            num_workers=cfg.num_workers,
            n_val=cfg.n_val,
            n_test=cfg.n_test,
            seed=0,
            data=cfg.data,
            workdir=str(workdir),
        )
        base.update(kw)
        return base

    def run(self, spec: dict[str, Any], tag: dict[str, Any]) -> dict[str, Any]:
        label = " ".join(f"{k}={v}" for k, v in tag.items())
        self.log(f"  -> {spec['arm']:7s} {label}")
        t0 = time.perf_counter()
        if self.config.in_process:
            try:
                result = run_arm_here(spec)
            except Exception as exc:  # noqa: BLE001 - a failed arm is recorded, the benchmark goes on
                import traceback

                result = {"error": traceback.format_exc(limit=-8) + f"{type(exc).__name__}: {exc}"}
        else:
            result = self._subprocess(spec)
        result["process_wall_s"] = time.perf_counter() - t0
        if not self.config.keep_work:
            import shutil

            for child in Path(spec["workdir"]).iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
        record = {"arm": spec["arm"], **tag, "spec": {k: v for k, v in spec.items() if k != "workdir"}, "result": result}
        self.records.append(record)
        if self.on_record is not None:
            self.on_record()
        if "error" in result:
            self.log(f"     FAILED: {result['error'][-600:]}")
        else:
            acc = result.get("test_accuracy")
            self.log(
                f"     wall {result.get('wall_s', float('nan')):.1f} s"
                + (f", test acc {acc:.4f}" if acc is not None else "")
                + f", peak RSS (training) {result.get('peak_rss_train_mb', 0):.0f} MiB"
                + (f"; {result['note']}" if result.get("note") else "")
            )
        return result

    def _subprocess(self, spec: dict[str, Any]) -> dict[str, Any]:
        workdir = Path(spec["workdir"])
        spec_file = workdir / "spec.json"
        result_file = workdir / "result.json"
        spec_file.write_text(json.dumps(spec))
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HF_EVALUATE_OFFLINE", "1")
        env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env["HF_DATASETS_CACHE"] = str(workdir / "hf_datasets_cache")  # fresh per arm: no tool reuses another's
        if spec.get("cpu_only"):
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU measurement even on a GPU machine
        if self.config.malloc_tuning:
            env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**30), MALLOC_TOP_PAD_=str(2**26))
        log_file = workdir / "arm.log"
        with open(log_file, "w") as log:
            try:
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--arm", str(spec_file), "--arm-result", str(result_file)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=self.config.arm_timeout_s,
                )
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        if rc == 0 and result_file.is_file():
            return json.loads(result_file.read_text())
        tail = log_file.read_text()[-2000:] if log_file.is_file() else ""
        return {"error": f"arm exited with {rc}; log {log_file}:\n{tail}"}


def _order(arms: list[str], repeat: int) -> list[str]:
    """Alternate the arm order between repeats so drift in machine load hits every arm alike."""
    return arms if repeat % 2 == 0 else list(reversed(arms))


def section_speed(runner: Runner) -> None:
    cfg = runner.config
    for n in cfg.speed_ns:
        for rep in range(cfg.first_repeat, cfg.first_repeat + cfg.speed_repeats):
            for arm in _order(["floor", "tlhub", "trainer"], rep):
                spec = runner.spec(
                    arm, n_train=n, policy="head", epochs=cfg.speed_epochs, learning_rate=cfg.head_lr
                )
                runner.run(spec, {"section": "speed", "n": n, "repeat": rep})


def section_throughput(runner: Runner) -> None:
    cfg = runner.config
    n = cfg.tp_steps * cfg.batch_size
    for policy in cfg.tp_policies:
        for rep in range(cfg.first_repeat, cfg.first_repeat + cfg.tp_repeats):
            for arm in _order(["tlhub", "trainer"], rep):
                spec = runner.spec(
                    arm,
                    n_train=n,
                    n_val=cfg.batch_size,
                    policy=policy,
                    epochs=cfg.tp_epochs,
                    learning_rate=cfg.tp_lr,
                    score_test=False,
                    tlhub_overrides={"feature_cache": "off"},
                )
                runner.run(spec, {"section": "throughput", "policy": policy, "n": n, "repeat": rep})


def section_quality(runner: Runner) -> None:
    cfg = runner.config
    for n in cfg.quality_ns:
        seeds = cfg.seeds_small if n <= 1000 else cfg.seeds_large
        epochs = cfg.quality_epochs.get(n) or max(cfg.quality_epochs.values())
        for seed in range(seeds):
            for policy in cfg.quality_policies:
                spec = runner.spec(
                    "tlhub", n_train=n, policy=policy, epochs=epochs, seed=seed, learning_rate=cfg.quality_lr
                )
                runner.run(spec, {"section": "quality", "n": n, "policy": policy, "seed": seed})


def section_fixed(runner: Runner) -> None:
    cfg = runner.config
    for rep in range(cfg.first_repeat, cfg.first_repeat + cfg.fixed_repeats):
        spec = runner.spec("fixed_cost", examples_per_label=cfg.fixed_examples_per_label, epochs=cfg.fixed_epochs,
                           preimport=False)
        runner.run(spec, {"section": "fixed", "n": 10 * cfg.fixed_examples_per_label, "repeat": rep})


def section_loop(runner: Runner) -> None:
    """The loop's own cost on the CPU: one `loop_overhead` arm in its own process (CUDA hidden), tl_hub's loop
    and the bare loop alternating inside it `loop_repeats` times, then the input pipeline alone."""
    cfg = runner.config
    sizes = {
        "overhead": {"n": cfg.loop_images, "side": cfg.loop_side, "crop": cfg.loop_crop, "batch": cfg.loop_batch,
                     "epochs": cfg.loop_epochs, "repeats": cfg.loop_repeats},
        "pipeline": {"n": cfg.loop_pipeline_images, "side": cfg.loop_pipeline_side, "crop": cfg.loop_pipeline_crop,
                     "batch": cfg.loop_pipeline_batch, "batches": cfg.loop_pipeline_batches,
                     "workers": cfg.loop_pipeline_workers},
    }
    spec = runner.spec("loop_overhead", device="cpu", precision="fp32", preimport=False, cpu_only=True, loop=sizes,
                       image_size=cfg.loop_crop, batch_size=cfg.loop_batch, num_workers=0)
    runner.run(spec, {"section": "loop", "n": cfg.loop_images, "repeat": cfg.first_repeat})


def section_search(runner: Runner) -> None:
    """[7/7]: tl_hub.search at 3x the wall time of an `auto` run vs auto and the fixed policies (search_benchmark.py,
    which writes its own results.json / results.md under OUT/search)."""
    import search_benchmark

    search_benchmark.main(["--n", "1000", "--out", str(runner.out_dir / "search")])


SECTIONS = {"speed": section_speed, "throughput": section_throughput, "quality": section_quality,
            "fixed": section_fixed, "loop": section_loop, "search": section_search}
# the sections that read the Fashion-MNIST package (fixed and loop need nothing outside tl_hub)
NEEDS_FASHION_MNIST = ("speed", "throughput", "quality", "search")


# ----------------------------------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------------------------------


def _spread(values: list[float]) -> dict[str, float | int | None]:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ok(record: dict[str, Any]) -> bool:
    return "error" not in record["result"]


def _last_epoch_ips(result: dict[str, Any]) -> float | None:
    epochs = [e for e in result.get("epochs", []) if e.get("images_per_second")]
    return epochs[-1]["images_per_second"] if epochs else None


def summarize(records: list[dict[str, Any]], cfg: BenchConfig) -> dict[str, Any]:
    """Ratios per comparison (paired by repeat), with median / min / max over repeats, and the targets."""
    summary: dict[str, Any] = {"speed": [], "throughput": [], "quality": [], "fixed": [], "loop": [], "memory": [],
                               "targets": []}
    targets = summary["targets"]

    # speed: pair the arms of the same (n, repeat)
    for n in sorted({r["n"] for r in records if r["section"] == "speed"}):
        reps = sorted({r["repeat"] for r in records if r["section"] == "speed" and r["n"] == n})
        speedups, floor_ratios, tl_walls, tr_walls, fl_walls, fwd = [], [], [], [], [], []
        tl_acc, tr_acc, cpu_ratio = [], [], []
        for rep in reps:
            arms = {r["arm"]: r["result"] for r in records
                    if r["section"] == "speed" and r["n"] == n and r["repeat"] == rep and _ok(r)}
            tl, tr, fl = arms.get("tlhub"), arms.get("trainer"), arms.get("floor")
            if tl:
                tl_walls.append(tl["wall_s"])
                tl_acc.append(tl.get("test_accuracy"))
            if tr:
                tr_walls.append(tr["wall_s"])
                tr_acc.append(tr.get("test_accuracy"))
            if fl:
                fl_walls.append(fl["wall_s"])
                fwd.append(fl["forward_s"])
            if tl and tr:
                speedups.append(tr["wall_s"] / tl["wall_s"])
                if tl.get("cpu_s") and tr.get("cpu_s"):
                    cpu_ratio.append(tr["cpu_s"] / tl["cpu_s"])
            if tl and fl:
                floor_ratios.append(tl["wall_s"] / fl["wall_s"])
        row = {
            "n": n,
            "tlhub_wall_s": _spread(tl_walls),
            "trainer_wall_s": _spread(tr_walls),
            "floor_wall_s": _spread(fl_walls),
            "floor_forward_only_s": _spread(fwd),
            "speedup": _spread(speedups),
            "cpu_time_ratio": _spread(cpu_ratio),
            "tlhub_over_floor": _spread(floor_ratios),
            "tlhub_test_accuracy": _spread(tl_acc),
            "trainer_test_accuracy": _spread(tr_acc),
        }
        summary["speed"].append(row)
        if speedups:
            acc_ok = None
            if row["tlhub_test_accuracy"]["median"] is not None and row["trainer_test_accuracy"]["median"] is not None:
                acc_ok = row["tlhub_test_accuracy"]["median"] >= row["trainer_test_accuracy"]["median"] - 0.005
            targets.append({
                "target": f"speed N={n}: tl_hub >= 10x faster than Trainer (head), equal or better accuracy",
                "value": f"{row['speedup']['median']:.1f}x (min {row['speedup']['min']:.1f}, max "
                         f"{row['speedup']['max']:.1f}); acc {_num(row['tlhub_test_accuracy']['median'])} vs "
                         f"{_num(row['trainer_test_accuracy']['median'])}",
                "met": bool(row["speedup"]["median"] >= 10 and acc_ok),
            })
        if floor_ratios:
            targets.append({
                "target": f"speed N={n}: tl_hub total <= 1.3x one forward pass over the data",
                "value": f"{row['tlhub_over_floor']['median']:.2f}x (min {row['tlhub_over_floor']['min']:.2f}, "
                         f"max {row['tlhub_over_floor']['max']:.2f})",
                "met": bool(row["tlhub_over_floor"]["median"] <= 1.3),
            })

    # throughput: images/s of the last epoch, paired by (policy, repeat)
    for policy in [p for p in POLICIES if any(r["section"] == "throughput" and r.get("policy") == p for r in records)]:
        recs = [r for r in records if r["section"] == "throughput" and r["policy"] == policy and _ok(r)]
        ratios, tl_ips, tr_ips, wall_ratios = [], [], [], []
        for rep in sorted({r["repeat"] for r in recs}):
            arms = {r["arm"]: r["result"] for r in recs if r["repeat"] == rep}
            a, b = arms.get("tlhub"), arms.get("trainer")
            ia, ib = (_last_epoch_ips(a) if a else None), (_last_epoch_ips(b) if b else None)
            tl_ips.append(ia)
            tr_ips.append(ib)
            if ia and ib:
                ratios.append(ia / ib)
            if a and b:
                wall_ratios.append(b["wall_s"] / a["wall_s"])
        row = {"policy": policy, "precision": cfg.resolved_precision(), "tlhub_images_per_s": _spread(tl_ips),
               "trainer_images_per_s": _spread(tr_ips), "ratio": _spread(ratios), "wall_ratio": _spread(wall_ratios)}
        summary["throughput"].append(row)
        if ratios:
            targets.append({
                "target": f"throughput {policy}: tl_hub images/s >= 1.5x Trainer",
                "value": f"{row['ratio']['median']:.2f}x (min {row['ratio']['min']:.2f}, max {row['ratio']['max']:.2f})",
                "met": bool(row["ratio"]["median"] >= 1.5),
            })

    summary["quality"] = _summarize_quality(records, targets)
    summary["fixed"] = _summarize_fixed(records, targets)
    summary["loop"] = _summarize_loop(records, targets)
    summary["memory"] = _summarize_memory(records, targets)
    return summary


def _summarize_quality(records: list[dict[str, Any]], targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Quality rows: test accuracy, mean over seeds per (n, policy); appends the auto-gap targets."""
    rows: list[dict[str, Any]] = []
    for n in sorted({r["n"] for r in records if r["section"] == "quality"}):
        recs = [r for r in records if r["section"] == "quality" and r["n"] == n and _ok(r)]
        row: dict[str, Any] = {"n": n, "policies": {}}
        for policy in POLICIES:
            accs = [r["result"].get("test_accuracy") for r in recs if r["policy"] == policy]
            accs = [a for a in accs if a is not None]
            walls = [r["result"]["wall_s"] for r in recs if r["policy"] == policy]
            if accs:
                used = [r["result"].get("policy_used") for r in recs if r["policy"] == policy]
                row["policies"][policy] = {
                    "test_accuracy_mean": statistics.fmean(accs),
                    "test_accuracies": accs,
                    "wall_s_mean": statistics.fmean(walls),
                    "resolved": sorted({(u or {}).get("name", "?") if isinstance(u, dict) else str(u) for u in used}),
                }
        fixed = {p: v["test_accuracy_mean"] for p, v in row["policies"].items() if p != "auto"}
        if fixed and "auto" in row["policies"]:
            best = max(fixed, key=fixed.get)
            gap = fixed[best] - row["policies"]["auto"]["test_accuracy_mean"]
            row.update(best_fixed=best, auto_gap_points=100 * gap)
            targets.append({
                "target": f"quality N={n}: auto within 1 point of the best fixed policy",
                "value": f"auto {row['policies']['auto']['test_accuracy_mean']:.4f} "
                         f"(-> {','.join(row['policies']['auto']['resolved'])}) vs best {best} "
                         f"{fixed[best]:.4f}: gap {100 * gap:+.2f} pt",
                "met": bool(gap <= 0.01),
            })
        rows.append(row)
    return rows


def _summarize_fixed(records: list[dict[str, Any]], targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fixed-cost rows: the run against the forward pass over ready tensors (same process); appends the
    targets."""
    rows: list[dict[str, Any]] = []
    for n in sorted({r["n"] for r in records if r["section"] == "fixed"}):
        results = [r["result"] for r in records if r["section"] == "fixed" and r["n"] == n and _ok(r)]
        if not results:
            continue
        row = {"n": n, "run_wall_s": _spread([r["wall_s"] for r in results]),
               "forward_s": _spread([r["forward_s"] for r in results]),
               "ratio": _spread([r["ratio"] for r in results]),
               "feature_pass_s": _spread([r.get("feature_pass_s") for r in results]),
               "process_wall_s": _spread([r.get("process_wall_s") for r in results]),
               "images": results[0]["images"], "floor_batch_size": results[0]["floor_batch_size"],
               "epochs": results[0]["epochs_run"], "torch_threads": results[0]["torch_threads"]}
        rows.append(row)
        targets.append({
            "target": f"fixed cost N={n}: the head run <= 1.3x its backbone's forward over the {row['images']:,} "
                      "images as ready tensors (same process)",
            "value": f"{row['ratio']['median']:.2f}x (min {row['ratio']['min']:.2f}, max {row['ratio']['max']:.2f})",
            "met": bool(row["ratio"]["median"] <= 1.3),
        })
    return rows


def _summarize_memory(records: list[dict[str, Any]], targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Memory rows: peak RSS, tl_hub vs Trainer, per comparable group; appends the targets."""
    rows: list[dict[str, Any]] = []
    groups: dict[tuple, dict[str, list[float]]] = {}
    for r in records:
        if r["section"] in ("speed", "throughput") and r["arm"] in ("tlhub", "trainer") and _ok(r):
            key = (r["section"], r.get("policy") or r["spec"].get("policy"), r["n"])
            groups.setdefault(key, {"tlhub": [], "trainer": []})[r["arm"]].append(r["result"]["peak_rss_train_mb"])
    for (section, policy, n), arms in sorted(groups.items(), key=str):
        row = {"section": section, "policy": policy, "n": n, "tlhub_peak_rss_mb": _spread(arms["tlhub"]),
               "trainer_peak_rss_mb": _spread(arms["trainer"])}
        if arms["tlhub"] and arms["trainer"]:
            row["ratio"] = max(arms["tlhub"]) / max(arms["trainer"])
            targets.append({
                "target": f"memory {section} {policy} N={n}: tl_hub peak RSS <= Trainer",
                "value": f"{max(arms['tlhub']):.0f} vs {max(arms['trainer']):.0f} MiB ({row['ratio']:.2f}x)",
                "met": bool(row["ratio"] <= 1.0),
            })
        rows.append(row)
    return rows


def _summarize_loop(records: list[dict[str, Any]], targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per `loop` arm (its repeats alternate inside it): tl_hub and bare-loop images/s (median, min,
    max over repeats), their ratio (median over median, as loop_overhead.py computes it), the paired
    per-repeat ratios, the pipeline's images/s per worker core; appends the two targets per row."""
    rows = []
    for r in records:
        if r["section"] != "loop" or not _ok(r):
            continue
        overhead, pipeline = r["result"]["per_step_overhead"], r["result"]["input_pipeline"]
        tl, bare = overhead["tl_hub_images_per_second"], overhead["bare_images_per_second"]
        row = {"setup": overhead["setup"], "repeat": r.get("repeat"), "tlhub_images_per_s": _spread(tl),
               "bare_images_per_s": _spread(bare), "ratio": overhead["ratio"],
               "paired_ratios": _spread([a / b for a, b in zip(tl, bare) if b]),
               "overhead_target": overhead["target"],
               "pipeline_images_per_s_per_worker": pipeline["images_per_second_per_worker"],
               "pipeline_target": pipeline["target"],
               "pipeline_setup": {k: pipeline.get(k) for k in ("workers", "side", "crop", "batch", "images",
                                                               "pin_memory")},
               "torch_threads": r["result"].get("torch_threads")}
        rows.append(row)
        setup, paired = row["setup"], row["paired_ratios"]
        targets.append({
            "target": f"loop: tl_hub's loop >= {row['overhead_target']}x a bare PyTorch loop (trivial model, same "
                      f"uint8 tensors + batched augmentation, {setup['crop']} px, batch {setup['batch']})",
            "value": f"{row['ratio']:.2f}x ({row['tlhub_images_per_s']['median']:.0f} vs "
                     f"{row['bare_images_per_s']['median']:.0f} img/s, "
                     + (f"paired {paired['min']:.2f}–{paired['max']:.2f} over {paired['n']} repeats)"
                        if paired["n"] > 1 else "1 repeat)"),
            "met": bool(row["ratio"] >= row["overhead_target"]),
        })
        pipe = row["pipeline_setup"]
        targets.append({
            "target": f"loop: input pipeline >= {row['pipeline_target']:,.0f} img/s per worker core "
                      f"({pipe['crop']} px colour, no augmentation)",
            "value": f"{row['pipeline_images_per_s_per_worker']:,.0f} img/s per worker core "
                     f"({pipe['workers']} worker(s), batch {pipe['batch']})",
            "met": bool(row["pipeline_images_per_s_per_worker"] >= row["pipeline_target"]),
        })
    return rows


def _loop_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown of the `loop` section: what is timed, then one table row per loop arm."""
    lines = [
        "## The loop's own cost (CPU)",
        "",
        "(a) tl_hub's loop (`tl_hub.train`, DataLoader workers off) against a bare PyTorch loop, both training a "
        "trivial model (pool to 3 numbers, one linear layer) on the same pre-decoded uint8 tensors with the same "
        "batched augmentation, fused AdamW and batch: steady-state images/s (last epoch, from its second step), "
        "alternating in one process; target ≥ 0.8×. (b) tl_hub's training loader alone (gather + collate, plus "
        "the pinned copy when CUDA is there; no augmentation, no model): images/s per worker core; target ≥ "
        "8,000. Lite0 partial / full against the Trainer: the throughput section.",
        "",
        "| images (px → crop), batch | tl_hub img/s | bare img/s | ratio (tl_hub / bare) "
        "| pipeline img/s per worker core (crop px, workers, batch) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        setup, pipe, paired = r["setup"], r["pipeline_setup"], r["paired_ratios"]
        ratio = f"{r['ratio']:.2f}×" + (f" (paired {paired['min']:.2f}–{paired['max']:.2f})" if paired["n"] > 1 else "")
        lines.append(
            f"| {setup['images']:,} ({setup['side']} → {setup['crop']}), {setup['batch']} "
            f"| {_fmt(r['tlhub_images_per_s'], 0)} | {_fmt(r['bare_images_per_s'], 0)} | {ratio} "
            f"| {r['pipeline_images_per_s_per_worker']:,.0f} ({pipe['crop']}, {pipe['workers']}, {pipe['batch']}) |"
        )
    lines.append("")
    return lines


def _memory_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table of the memory rows (peak RSS, tl_hub vs Trainer)."""
    lines = ["## Memory (peak RSS of the arm's process up to the end of training, MiB)", "",
             "| section | policy | N | tl_hub | Trainer | ratio |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}×" if "ratio" in r else "–"
        lines.append(f"| {r['section']} | {r['policy']} | {r['n']:,} | {_fmt(r['tlhub_peak_rss_mb'], 0)} | "
                     f"{_fmt(r['trainer_peak_rss_mb'], 0)} | {ratio} |")
    lines.append("")
    return lines


def _fmt(spread: dict[str, Any], digits: int = 1, suffix: str = "") -> str:
    if not spread or spread.get("median") is None:
        return "–"
    med = f"{spread['median']:.{digits}f}{suffix}"
    if spread["n"] > 1:
        return f"{med} ({spread['min']:.{digits}f}–{spread['max']:.{digits}f})"
    return med


def to_markdown(summary: dict[str, Any], meta: dict[str, Any], failed: list[dict[str, Any]] = ()) -> str:
    """The results as markdown tables (median, with min–max over repeats in brackets)."""
    lines = [
        f"# tl_hub benchmark ({meta['mode']} mode)",
        "",
        f"Machine: {meta['machine']}. Device: {meta['device']}. Precision: {meta['precision']}. "
        f"Model: {meta['model']}, {meta['image_size']} px, batch {meta['batch_size']}. "
        f"Data: Fashion-MNIST ({meta['data']}).",
        f"Command: `{meta['command']}`  ",
        f"Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}. Total {meta['total_s']:.0f} s.",
        "",
    ]
    if summary["speed"]:
        lines += [
            "## Small-data speed (head policy: backbone frozen)",
            "",
            "| N | tl_hub wall s | Trainer wall s | speed-up | CPU-time ratio | floor s | floor fwd-only s "
            "| tl_hub / floor | tl_hub test acc | Trainer test acc |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in summary["speed"]:
            lines.append(
                f"| {r['n']:,} | {_fmt(r['tlhub_wall_s'])} | {_fmt(r['trainer_wall_s'])} | {_fmt(r['speedup'], 1, '×')} "
                f"| {_fmt(r['cpu_time_ratio'], 1, '×')} | {_fmt(r['floor_wall_s'])} | {_fmt(r['floor_forward_only_s'])} "
                f"| {_fmt(r['tlhub_over_floor'], 2, '×')} | {_fmt(r['tlhub_test_accuracy'], 4)} "
                f"| {_fmt(r['trainer_test_accuracy'], 4)} |"
            )
        lines.append("")
    if summary["throughput"]:
        lines += [
            "## Fine-tuning throughput (training images/s, last epoch)",
            "",
            "| policy | precision | tl_hub img/s | Trainer img/s | ratio | wall ratio (Trainer / tl_hub) |",
            "|---|---|---|---|---|---|",
        ]
        for r in summary["throughput"]:
            lines.append(
                f"| {r['policy']} | {r['precision']} | {_fmt(r['tlhub_images_per_s'])} | "
                f"{_fmt(r['trainer_images_per_s'])} | {_fmt(r['ratio'], 2, '×')} | {_fmt(r['wall_ratio'], 2, '×')} |"
            )
        lines.append("")
    if summary["quality"]:
        lines += [
            "## Policy quality (test accuracy, mean over seeds)",
            "",
            "| N | " + " | ".join(POLICIES) + " | best fixed | auto gap (pt) |",
            "|---|" + "---|" * (len(POLICIES) + 2),
        ]
        for r in summary["quality"]:
            cells = []
            for p in POLICIES:
                v = r["policies"].get(p)
                if v is None:
                    cells.append("–")
                else:
                    extra = f" (→{','.join(v['resolved'])})" if p == "auto" else ""
                    cells.append(f"{v['test_accuracy_mean']:.4f}{extra}")
            gap = r.get("auto_gap_points")
            lines.append(
                f"| {r['n']:,} | " + " | ".join(cells) + f" | {r.get('best_fixed', '–')} | "
                + (f"{gap:+.2f}" if gap is not None else "–") + " |"
            )
        lines += ["", "Wall seconds per run (mean): " + "; ".join(
            f"N={r['n']}: " + ", ".join(f"{p} {v['wall_s_mean']:.0f}" for p, v in r["policies"].items())
            for r in summary["quality"]), ""]
    if summary.get("fixed"):
        lines += [
            "## A run's fixed cost (quickstart data, head, imports included; floor: forward over ready tensors)",
            "",
            "| N | epochs | run wall s | of which feature pass s | floor: forward s (images, batch) | run / floor "
            "| arm process s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in summary["fixed"]:
            lines.append(
                f"| {r['n']:,} | {r['epochs']} | {_fmt(r['run_wall_s'])} | {_fmt(r['feature_pass_s'])} "
                f"| {_fmt(r['forward_s'])} ({r['images']:,}, {r['floor_batch_size']}) | {_fmt(r['ratio'], 2, '×')} "
                f"| {_fmt(r['process_wall_s'])} |"
            )
        lines.append("")
    if summary.get("loop"):
        lines += _loop_markdown(summary["loop"])
    if summary["memory"]:
        lines += _memory_markdown(summary["memory"])
    if failed:
        lines += ["## Failed arms (left out of the tables above)", ""]
        for r in failed:
            tag = ", ".join(f"{k}={r[k]}" for k in ("section", "arm", "n", "policy", "seed", "repeat") if k in r)
            first = r["result"]["error"].strip().splitlines()
            lines.append(f"- {tag}: {first[-1] if first else '?'}")
        lines.append("")
    if summary["targets"]:
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        for t in summary["targets"]:
            lines.append(f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |")
        lines.append("")
    return "\n".join(lines)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tl-hub", "torch", "transformers", "accelerate", "datasets", "timm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} logical CPUs, torch threads {_torch_threads()})"


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few minutes on 2 CPU cores (N=1,000 only)")
    mode.add_argument("--smoke", action="store_true", help="seconds, tiny data at 32 px: checks the code paths")
    p.add_argument("--out", default="bench_results", help="folder for results.json and results.md")
    p.add_argument("--sections", default=None,
                   help="comma list of speed,throughput,quality,fixed,loop (default: all)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="backbone source for both tools")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--repeats", type=int, default=None, help="repeats for speed, throughput, fixed and loop")
    p.add_argument("--first-repeat", type=int, default=0,
                   help="index of the first repeat (arm order alternates by index); to add repeats to an "
                        "earlier run, then --merge both")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers for both tools")
    p.add_argument("--malloc-tuning", action="store_true",
                   help="run every arm with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1GiB (both tools alike)")
    p.add_argument("--with-60k", action="store_true", help="full mode: add N = 60,000 to the quality section")
    p.add_argument("--speed-ns", default=None,
                   help="comma list of training-set sizes for the speed section (e.g. 10000)")
    p.add_argument("--quality-ns", default=None,
                   help="comma list of training-set sizes for the quality section (e.g. 100,1000)")
    p.add_argument("--in-process", action="store_true", help="run arms in this process (no per-arm RSS)")
    p.add_argument("--data", choices=("full", "bundled"), default="full",
                   help="full: Fashion-MNIST from the Debian package (the published numbers); bundled: the "
                        "3k/2k subset inside tl_hub (smoke runs, machines without the package)")
    p.add_argument("--keep-work", action="store_true", help="keep each arm's images, outputs and logs")
    p.add_argument("--merge", nargs="+", metavar="RESULTS_JSON",
                   help="combine the records of several results.json files (e.g. runs split across machines or "
                        "sizes) into one results.json + results.md in --out; runs nothing")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--arm-result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> BenchConfig:
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    kw: dict[str, Any] = dict(model=args.model, device=device, precision=args.precision,
                              malloc_tuning=args.malloc_tuning, in_process=args.in_process, data=args.data,
                              keep_work=args.keep_work)
    if args.num_workers is not None:
        kw["num_workers"] = args.num_workers
    cfg = quick_config(**kw) if args.quick else smoke_config(**kw) if args.smoke else BenchConfig(**kw)
    if args.sections:
        wanted = tuple(s.strip() for s in args.sections.split(",") if s.strip())
        unknown = sorted(set(wanted) - set(SECTIONS))
        if unknown:
            raise SystemExit(f"--sections: unknown {unknown}; choose from {sorted(SECTIONS)}")
        cfg.sections = wanted
    if args.repeats is not None:
        cfg.speed_repeats = cfg.tp_repeats = cfg.fixed_repeats = cfg.loop_repeats = args.repeats
    if args.first_repeat < 0:
        raise SystemExit(f"--first-repeat: expected an integer >= 0, got {args.first_repeat}")
    cfg.first_repeat = args.first_repeat
    if args.with_60k and cfg.mode == "full":
        cfg.quality_ns = (*cfg.quality_ns, 60000)
    for name in ("speed_ns", "quality_ns"):
        value = getattr(args, name)
        if value:
            try:
                setattr(cfg, name, tuple(int(v) for v in value.split(",") if v.strip()))
            except ValueError:
                flag = "--" + name.replace("_", "-")
                raise SystemExit(f"{flag}: expected a comma list of integers, got {value!r}") from None
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.arm:
        spec = json.loads(Path(args.arm).read_text())
        result = run_arm_here(spec)
        Path(args.arm_result).write_text(json.dumps(result, default=str))
        return 0

    if args.merge:
        return merge_results([Path(f) for f in args.merge], Path(args.out))

    import fashion_mnist

    cfg = build_config(args)
    if set(cfg.sections) & set(NEEDS_FASHION_MNIST):
        try:
            fashion_mnist.load_split("test", args.data)
        except fashion_mnist.FashionMNISTMissing as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    started = time.perf_counter()
    command = "python tests/benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    runner = Runner(cfg, out_dir, log)
    # results are rewritten after every arm, so a run that is stopped early still leaves its numbers
    runner.on_record = lambda: write_results(out_dir, runner.records, cfg, command, started, final=False)
    log(f"tl_hub benchmark, {cfg.mode} mode, device {cfg.device}, precision {cfg.resolved_precision()}, "
        f"sections {','.join(cfg.sections)}; arms' work in {runner.work_root}")
    for name in cfg.sections:
        log(f"[{name}]")
        SECTIONS[name](runner)
    markdown, failed = write_results(out_dir, runner.records, cfg, command, started, final=True)
    print()
    print(markdown)
    print(f"written: {out_dir / 'results.json'}, {out_dir / 'results.md'}")
    if failed:
        print(f"{len(failed)} arm(s) failed; see their logs (paths in results.json)", file=sys.stderr)
        return 1
    return 0


def merge_results(files: list[Path], out_dir: Path) -> int:
    """One results.json + results.md from the records of several runs. Each record keeps where it ran
    (`source`: the run's device, precision and command), and the markdown lists every source.

    Example:
        >>> # python tests/benchmarks/run.py --merge cpu/results.json gpu/results.json --out merged
    """
    records: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    metas: list[dict[str, Any]] = []
    for file in files:
        try:
            payload = json.loads(file.read_text())
            meta = payload["meta"]
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: --merge {file}: not a results.json written by this script ({exc})", file=sys.stderr)
            return 2
        metas.append(meta)
        source = {k: meta.get(k) for k in ("device", "precision", "machine", "command", "complete", "mode")}
        source["file"] = str(file)
        sources.append(source)
        records += [{**r, "source": len(sources) - 1} for r in payload["records"]]
    first = metas[0]
    cfg = BenchConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in first["config"].items()
                         if k in BenchConfig.__dataclass_fields__ and k != "quality_epochs"})
    summary = summarize(records, cfg)
    meta = {**first, "mode": "merged", "command": "python tests/benchmarks/run.py --merge " + " ".join(map(str, files)),
            "device": " + ".join(dict.fromkeys(s["device"] for s in sources)),
            "machine": " + ".join(dict.fromkeys(s["machine"] for s in sources)),
            "precision": " + ".join(dict.fromkeys(s["precision"] for s in sources)), "sources": sources,
            "total_s": sum(m.get("total_s") or 0 for m in metas), "complete": True}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "summary": summary, "records": records},
                                                     indent=2, default=str))
    failed = [r for r in records if not _ok(r)]
    lines = ["Sources:", ""] + [
        f"{i}. {s['device']}, {s['precision']}: `{s['command']}`" + ("" if s["complete"] else " (stopped early)")
        for i, s in enumerate(sources, 1)] + [""]
    markdown = to_markdown(summary, meta, failed) + "\n" + "\n".join(lines)
    (out_dir / "results.md").write_text(markdown + "\n")
    print(markdown)
    return 0


def write_results(out_dir: Path, records: list[dict[str, Any]], cfg: BenchConfig, command: str,
                  started: float, *, final: bool) -> tuple[str, list[dict[str, Any]]]:
    """Write results.json and results.md for the records so far; returns (markdown, failed records)."""
    summary = summarize(records, cfg)
    meta = {
        "mode": cfg.mode,
        "command": command,
        "machine": _machine(),
        "device": _device_name(cfg.device),
        "precision": cfg.resolved_precision(),
        "model": cfg.model,
        "data": cfg.data,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "versions": _versions(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "total_s": time.perf_counter() - started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z") if final else None,
        "complete": final,
    }
    payload = {"meta": meta, "summary": summary, "records": records}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    failed = [r for r in records if not _ok(r)]
    markdown = to_markdown(summary, meta, failed)
    if not final:
        markdown = f"**Partial results: {len(records)} arm(s) so far; the run has not finished.**\n\n" + markdown
    (out_dir / "results.md").write_text(markdown + "\n")
    return markdown, failed


if __name__ == "__main__":
    sys.exit(main())
