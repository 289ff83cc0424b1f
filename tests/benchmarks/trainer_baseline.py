"""The baseline users would otherwise run: transformers' `Trainer`, set up as in transformers'
`examples/pytorch/image-classification/run_image_classification.py`.

What it copies from that script: `AutoModelForImageClassification.from_pretrained(path, num_labels=...,
id2label=..., label2id=..., ignore_mismatched_sizes=True)`; `import evaluate` and
`evaluate.load("accuracy")` with its `compute_metrics` handed to the Trainer (the Hub's accuracy script
cannot be fetched offline: the same script shipped inside tl_hub is loaded by path); torchvision
transforms applied on the fly
with `Dataset.set_transform` (train: RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize;
eval: Resize + CenterCrop + ToTensor + Normalize, mean/std from the image processor); a collate
function that stacks `pixel_values` and `labels`; `Trainer(...).train()` then `trainer.save_model()`.
What the benchmark sets for both tools alike: model, image size, batch size, learning rate, epochs,
precision, seed and which parameters train. Freezing is done the way a Trainer user does it
(`requires_grad=False`), so BatchNorm statistics of frozen layers keep updating in train mode, as they
do for Trainer users. No evaluation during training (the cheapest Trainer set-up); the test set is
scored once at the end, outside the timed part.

Example:
    >>> from trainer_baseline import TrainerRun, run_trainer                     # doctest: +SKIP
    >>> out = run_trainer(TrainerRun(model_path=path, trainable=names, epochs=10,  # doctest: +SKIP
    ...                   batch_size=64, learning_rate=1e-3, image_size=112),
    ...                   train_ds, test_ds, output_dir="/tmp/trainer")
    >>> out["test_accuracy"], out["train_runtime_s"]                              # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class TrainerRun:
    """One Trainer run: everything the benchmark keeps equal between the two tools.

    `trainable`: parameter names that train (None = all). `max_steps` > 0 overrides epochs.
    """

    model_path: str
    trainable: Sequence[str] | None = None
    epochs: float = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    image_size: int = 112
    seed: int = 0
    bf16: bool = False
    num_workers: int = 0
    max_steps: int = -1
    use_cpu: bool = True
    pretrained: bool = True
    eval_batch_size: int | None = None
    extra_args: dict[str, Any] = field(default_factory=dict)


def mean_std(processor: Any, model: Any = None) -> tuple[list[float], list[float]]:
    """Normalisation constants the way the example script reads them (`image_mean`/`image_std`),
    falling back to a timm `pretrained_cfg` (TimmWrapper processors keep them in `data_config`)."""
    for obj in (processor, getattr(processor, "data_config", None)):
        if obj is None:
            continue
        mean = getattr(obj, "image_mean", None) if not isinstance(obj, dict) else obj.get("mean")
        std = getattr(obj, "image_std", None) if not isinstance(obj, dict) else obj.get("std")
        if mean is not None and std is not None:
            return list(mean), list(std)
    cfg = getattr(getattr(model, "config", None), "pretrained_cfg", None) or {}
    if "mean" in cfg and "std" in cfg:
        return list(cfg["mean"]), list(cfg["std"])
    return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def make_transforms(size: int, mean: Sequence[float], std: Sequence[float]) -> tuple[Any, Any]:
    """The example script's batch transforms: (train_transform, eval_transform) for `set_transform`."""
    from torchvision.transforms import (
        CenterCrop,
        Compose,
        Normalize,
        RandomHorizontalFlip,
        RandomResizedCrop,
        Resize,
        ToTensor,
    )

    normalize = Normalize(mean=mean, std=std)
    train_tf = Compose([RandomResizedCrop(size), RandomHorizontalFlip(), ToTensor(), normalize])
    eval_tf = Compose([Resize(size), CenterCrop(size), ToTensor(), normalize])

    def train_transforms(batch: dict[str, list]) -> dict[str, list]:
        batch["pixel_values"] = [train_tf(img.convert("RGB")) for img in batch["image"]]
        return batch

    def eval_transforms(batch: dict[str, list]) -> dict[str, list]:
        batch["pixel_values"] = [eval_tf(img.convert("RGB")) for img in batch["image"]]
        return batch

    return train_transforms, eval_transforms


def collate_fn(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack pixel_values and labels (the example script's collate_fn)."""
    import torch

    return {
        "pixel_values": torch.stack([ex["pixel_values"] for ex in examples]),
        "labels": torch.tensor([ex["label"] for ex in examples]),
    }


def load_model(model_path: str, labels: Sequence[str], *, pretrained: bool = True) -> Any:
    """`AutoModelForImageClassification.from_pretrained` with a fresh head for `labels`, as the script does."""
    import transformers
    from transformers import AutoConfig, AutoModelForImageClassification

    transformers.logging.set_verbosity_error()
    id2label = {i: name for i, name in enumerate(labels)}
    label2id = {name: i for i, name in enumerate(labels)}
    kwargs = dict(num_labels=len(labels), id2label=id2label, label2id=label2id)
    if pretrained:
        return AutoModelForImageClassification.from_pretrained(
            model_path, ignore_mismatched_sizes=True, **kwargs
        )
    config = AutoConfig.from_pretrained(model_path, **kwargs)
    return AutoModelForImageClassification.from_config(config)


def set_trainable(model: Any, trainable: Sequence[str] | None) -> int:
    """`requires_grad=False` for every parameter not named in `trainable` (None: all train).

    Returns the number of trainable parameters. Raises ValueError when a name is unknown, so a
    renamed parameter can't silently unfreeze or freeze the wrong layers.
    """
    params = dict(model.named_parameters())
    if trainable is None:
        wanted = set(params)
    else:
        wanted = set(trainable)
        unknown = sorted(wanted - set(params))
        if unknown:
            raise ValueError(f"trainable names not in the Trainer model: {unknown[:5]} ...")
    for name, param in params.items():
        param.requires_grad_(name in wanted)
    return sum(p.numel() for n, p in params.items() if n in wanted)


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _epoch_timer() -> Any:
    from transformers import TrainerCallback

    class EpochTimer(TrainerCallback):
        """Wall time and steps of each training epoch (data loading included, as in a real run)."""

        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []
            self._t0 = 0.0
            self._step0 = 0

        def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self._t0 = time.perf_counter()
            self._step0 = state.global_step

        def on_epoch_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.epochs.append(
                {"seconds": time.perf_counter() - self._t0, "steps": state.global_step - self._step0}
            )

    return EpochTimer()


def run_trainer(
    run: TrainerRun, train_ds: Any, test_ds: Any | None, *, output_dir: str | Path
) -> dict[str, Any]:
    """Train with the Trainer, then (untimed) score `test_ds`.

    `train_ds`: a `datasets.Dataset` (columns image + label, a ClassLabel) or an image-folder path,
    which is loaded inside the timed part with `load_dataset("imagefolder", data_dir=...)` as the
    example script does with `--train_dir`. `test_ds` labels are matched to the training labels by name.

    Returns train_wall_s (data load + model load + train + save), train_runtime_s (Trainer's own),
    per-epoch images/s, trainable_params, test_accuracy (None without test_ds), eval_wall_s.
    """
    import evaluate  # the example script imports it at the top (untimed here, like the other imports)
    import torch
    from transformers import AutoImageProcessor, Trainer, TrainingArguments

    from tl_hub.metrics import metric_path

    t_start = time.perf_counter()
    if isinstance(train_ds, (str, Path)):
        from datasets import load_dataset

        train_ds = load_dataset("imagefolder", data_dir=str(train_ds), split="train")
    labels = train_ds.features["label"].names
    metric = evaluate.load(metric_path("accuracy"))  # the script: evaluate.load("accuracy", cache_dir=...)

    def compute_metrics(p: Any) -> dict[str, float]:
        return metric.compute(predictions=np.argmax(p.predictions, axis=1), references=p.label_ids)

    model = load_model(run.model_path, labels, pretrained=run.pretrained)
    trainable_params = set_trainable(model, run.trainable)
    try:
        processor = AutoImageProcessor.from_pretrained(run.model_path)
    except (OSError, ValueError):
        processor = None
    mean, std = mean_std(processor, model)
    train_tf, eval_tf = make_transforms(run.image_size, mean, std)
    train_ds = train_ds.with_transform(train_tf)

    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=run.batch_size,
        per_device_eval_batch_size=run.eval_batch_size or run.batch_size,
        learning_rate=run.learning_rate,
        num_train_epochs=run.epochs,
        max_steps=run.max_steps,
        remove_unused_columns=False,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        disable_tqdm=True,
        seed=run.seed,
        bf16=run.bf16,
        use_cpu=run.use_cpu,
        dataloader_num_workers=run.num_workers,
        **run.extra_args,
    )
    timer = _epoch_timer()
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, data_collator=collate_fn, callbacks=[timer],
        compute_metrics=compute_metrics,
    )
    train_result = trainer.train()
    trainer.save_model()
    train_wall = time.perf_counter() - t_start

    out: dict[str, Any] = {
        "train_wall_s": train_wall,
        "train_runtime_s": float(train_result.metrics.get("train_runtime", float("nan"))),
        "train_loss": float(train_result.metrics.get("train_loss", float("nan"))),
        "epochs": [
            {**e, "images_per_second": e["steps"] * run.batch_size / e["seconds"] if e["seconds"] else None}
            for e in timer.epochs
        ],
        "trainable_params": trainable_params,
        "test_accuracy": None,
        "eval_wall_s": None,
    }
    out["peak_rss_train_mb"] = _peak_rss_mb()
    if test_ds is not None:
        t_eval = time.perf_counter()
        pred = trainer.predict(test_ds.with_transform(eval_tf))
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        test_names = test_ds.features["label"].names
        if sorted(test_names) != sorted(labels):
            raise ValueError(f"test labels {test_names} differ from the training labels {labels}")
        to_train_id = np.array([labels.index(name) for name in test_names])
        references = to_train_id[np.asarray(pred.label_ids)]
        out["test_accuracy"] = float(np.mean(np.argmax(logits, axis=-1) == references))
        out["eval_wall_s"] = time.perf_counter() - t_eval
    if torch.cuda.is_available() and not run.use_cpu:
        out["gpu_peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out
