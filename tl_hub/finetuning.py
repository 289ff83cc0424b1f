"""`finetune()`: data -> backbone -> freeze policy -> train -> evaluate -> a Hub-ready folder (-> push).

Example:
    >>> import tl_hub
    >>> result = tl_hub.finetune(dataset="bundled:fashion_mnist", model="bundled:efficientnet_lite0",
    ...                          image_size=112, epochs=10, output_dir="out")  # doctest: +SKIP
    >>> result.metrics["accuracy"], result.policy.name  # doctest: +SKIP
    (0.85, 'head')

The same function runs under `python`, `accelerate launch` (1 or N processes, CPU or GPU) and
`tl-hub train`; only the main process writes files and prints progress.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_hub.errors import ConfigError

# files a tl_hub run writes into output_dir (overwrite_output_dir replaces only these)
OUTPUT_FILES = (
    "model.safetensors", "config.json", "preprocessor_config.json", "recipe.yaml", "metrics.json",
    "run_info.json", "README.md", "confusion_matrix.png", "training_curves.png",
)
# keys that may differ between a run and its resumption
_RESUME_FREE_KEYS = {"resume_from_checkpoint", "overwrite_output_dir", "push_to_hub", "hub_model_id",
                     "hub_private", "log_with", "num_workers", "feature_cache_dir", "output_dir"}


@dataclass
class FinetuneResult:
    """What `finetune` returns.

    Attributes:
        output_dir: the Hub-ready folder.
        metrics: final eval metrics of the saved (best) model: accuracy, precision_macro, recall_macro,
            f1_macro, top5_accuracy (> 5 labels), per_label, confusion_matrix.
        policy: the FreezePolicy used (with its reason).
        summary: the PolicySummary (what trained).
        best_epoch: epoch (1-based) of the saved model.
        history: one dict per epoch (train_loss, learning_rate, images_per_second, eval_*).
        feature_cache_used: whether the head trained on cached features.
        train_runtime_s: seconds from data loading to the saved folder.
        push_url: the commit URL when pushed.

    Example:
        >>> FinetuneResult("out", {"accuracy": 1.0}, None).metrics["accuracy"]
        1.0
    """

    output_dir: str
    metrics: dict[str, Any]
    policy: Any
    summary: Any = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    feature_cache_used: bool = False
    train_runtime_s: float = 0.0
    push_url: str | None = None
    labels: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _resolve_config(config: Any, overrides: dict[str, Any]) -> Any:
    from tl_hub.config import RecipeConfig

    if config is None:
        return RecipeConfig.from_dict(overrides)
    if isinstance(config, (str, os.PathLike)):
        cfg = RecipeConfig.from_yaml(config)
    elif isinstance(config, RecipeConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = RecipeConfig.from_dict(config)
    else:
        raise ConfigError(f"config: got {type(config).__name__}; pass a RecipeConfig, a YAML path, a dict or None")
    return cfg.replace(**overrides) if overrides else cfg


def _resolve_precision(requested: str | None, say: Any) -> str:
    import torch

    value = requested or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no"
    value = str(value).lower()
    if value == "fp16" and not torch.cuda.is_available():
        say("mixed_precision: fp16 was requested, but torch ignores fp16 autocast on CPU; training in "
            "float32 instead (use bf16 on CPUs that support it)")
        return "no"
    return value


def _make_accelerator(config: Any, output_dir: Path) -> Any:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    def early_say(msg: str) -> None:
        if int(os.environ.get("RANK", "0")) == 0:
            print(msg, flush=True)

    precision = _resolve_precision(config.mixed_precision, early_say)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state()  # a second run in the same Python process with another precision
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=precision,
        # batch_size is the global batch: same training on 1 or N processes (accelerate >= 1.x ignores
        # the old `split_batches=` argument; it must go through DataLoaderConfiguration)
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with=list(config.log_with) or None,
        project_dir=str(output_dir),
    )


def _recipe_dict(config: Any) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _RESUME_FREE_KEYS}


def _check_output_dir(config: Any, output_dir: Path, say: Any) -> None:
    """Refuse to overwrite a non-empty folder unless it is this recipe's run or overwrite is set."""
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    if not output_dir.is_dir():
        raise ConfigError(f"output_dir: {output_dir} exists and is not a folder; choose another output_dir")
    from tl_hub.config import RecipeConfig

    recipe = output_dir / "recipe.yaml"
    same = False
    if recipe.is_file():
        try:
            same = _recipe_dict(RecipeConfig.from_yaml(recipe)) == _recipe_dict(config)
        except ConfigError:
            same = False
    if same:
        return
    if config.overwrite_output_dir:
        removed = [name for name in OUTPUT_FILES if (output_dir / name).exists()]
        for name in removed:
            (output_dir / name).unlink()
        if (output_dir / "checkpoints").exists():
            shutil.rmtree(output_dir / "checkpoints")
            removed.append("checkpoints/")
        say(f"overwrite_output_dir: replaced {', '.join(removed) or 'nothing'} in {output_dir} (other files kept)")
        return
    contents = sorted(p.name for p in output_dir.iterdir())[:8]
    what = "holds a run of a different recipe" if recipe.is_file() else "is not empty"
    raise ConfigError(
        f"output_dir: {output_dir} {what} ({', '.join(contents)}). Use another output_dir, set "
        "overwrite_output_dir: true to replace tl_hub's files there, or rerun the recipe that wrote it "
        "with resume_from_checkpoint: latest."
    )


def _default_workers(accelerator: Any) -> int:
    import torch

    if not torch.cuda.is_available():
        return 0  # the decode-once cache makes items cheap; forking workers costs more on few cores
    return max(1, min(8, (os.cpu_count() or 2) // max(1, accelerator.num_processes) - 1))


def _feature_batch_size(eval_batch_size: int | None, batch_size: int, device_type: str) -> int:
    """Batch size of the one forward pass over the data on the feature path.

    An explicit `eval_batch_size` wins. On an accelerator, at least 64 (throughput). On a CPU, at most 16:
    measured on EfficientNet-Lite0 at 112 px, 2 cores, batches of 16 / 32 / 64 run at the same
    images/s (435-463) while the activations' peak memory doubles with each step (+100 / +200 / +400 MiB).

    Example:
        >>> _feature_batch_size(None, 32, "cpu"), _feature_batch_size(None, 32, "cuda"), _feature_batch_size(8, 32, "cpu")
        (16, 64, 8)
    """
    if eval_batch_size:
        return eval_batch_size
    return max(batch_size, 64) if device_type != "cpu" else min(batch_size, 16)


def _wants_channels_last(model: Any, device_type: str = "cpu") -> bool:
    """channels_last memory format for conv nets on the CPU (+25-75 % fp32 throughput measured there).

    Not on CUDA: on an H200 in bf16, tl_hub's loop with channels_last trained EfficientNet-Lite0 at
    0.55-0.65x the Trainer's images/s (default layout), and its first epoch took 5-14 s where the
    Trainer's took 1 s (depthwise convolutions in that layout). So GPU runs keep PyTorch's default
    layout, like the Trainer (not yet re-measured on a GPU). Not for ViTs, whose only conv is the
    patch embedding.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 1) for _ in range(8)])
        >>> _wants_channels_last(net, "cpu"), _wants_channels_last(net, "cuda")
        (True, False)
    """
    import torch

    if device_type != "cpu":
        return False
    convs = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return convs >= 8


def _framework_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "accelerate", "datasets", "evaluate", "timm", "huggingface_hub", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def _device_name(accelerator: Any) -> str:
    import torch

    if accelerator.device.type == "cuda":
        return f"{accelerator.num_processes} x {torch.cuda.get_device_name(accelerator.device)}"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _write_json(path: Path, data: Any) -> None:
    from tl_hub.checkpoint import atomic_write_json

    atomic_write_json(path, data)


# ----------------------------------------------------------------------------------------------
# finetune
# ----------------------------------------------------------------------------------------------
def finetune(config: Any = None, **overrides: Any) -> FinetuneResult:
    """Fine-tune a backbone on a dataset as the recipe says; write a Hub-ready folder; push if asked.

    Args:
        config: a RecipeConfig, a recipe YAML path, a dict, or None (then `overrides` are the recipe).
        **overrides: any RecipeConfig field, applied on top of `config`.

    Returns:
        FinetuneResult (output_dir, metrics, policy, summary, best_epoch, history, ...).

    Raises:
        ConfigError / DataError / HubError / CheckpointError with the field, the value and the fix.

    Example:
        >>> result = finetune("recipes/configs/quickstart.yaml", epochs=3)  # doctest: +SKIP
        >>> print(result.output_dir, result.metrics["accuracy"])  # doctest: +SKIP
    """
    import numpy as np
    import torch
    from accelerate.utils import set_seed

    from tl_hub import __version__
    from tl_hub import checkpoint as ckpt
    from tl_hub.backbone import load_backbone, load_image_processor
    from tl_hub.data import load_data
    from tl_hub.depth import depth_map
    from tl_hub.metrics import compute_metrics
    from tl_hub.policy import FreezePolicy, apply_policy, choose_policy, param_groups
    from tl_hub.train import Phase, TrainArgs, find_resume_checkpoint, simple_param_groups, train
    from tl_hub.transforms import ImageClassificationDataset, export_processor, image_spec, save_processor

    t_start = time.perf_counter()
    config = _resolve_config(config, overrides)
    if not config.dataset:
        raise ConfigError("dataset: got null; name a Hub dataset id, a folder, a CSV/JSONL file or bundled:fashion_mnist")
    output_dir = Path(config.output_dir).expanduser()
    accelerator = _make_accelerator(config, output_dir)
    if accelerator.device.type == "cpu":
        from tl_hub.train import tune_cpu_allocator

        tune_cpu_allocator()  # +20-45 % CPU training throughput: fewer page faults (see its docstring)
    main = accelerator.is_main_process

    def say(msg: str) -> None:
        if main:
            print(msg, flush=True)

    if main:
        _check_output_dir(config, output_dir, say)
        output_dir.mkdir(parents=True, exist_ok=True)
        config.to_yaml(output_dir / "recipe.yaml")
    accelerator.wait_for_everyone()
    ckpt_dir = output_dir / "checkpoints"
    if main:
        for stale in ckpt.remove_incomplete(ckpt_dir):
            say(f"removed an incomplete checkpoint left by an interrupted run: {stale.name}")
    accelerator.wait_for_everyone()
    resume = find_resume_checkpoint(ckpt_dir, config.resume_from_checkpoint)
    if config.resume_from_checkpoint == "latest" and resume is None:
        say("resume_from_checkpoint: latest -- no checkpoint yet, starting from the beginning")
    if resume is None and main and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # a fresh start never mixes with an older run's checkpoints
    accelerator.wait_for_everyone()

    # ---------------- data ----------------
    set_seed(config.seed)
    data = load_data(
        config.dataset, labels=config.labels, image_column=config.image_column, label_column=config.label_column,
        config=config.dataset_config, split=config.train_split, eval_split=config.eval_split,
        revision=config.dataset_revision, eval_fraction=config.eval_fraction, seed=config.seed,
        max_train_samples=config.max_train_samples, examples_per_label=config.examples_per_label,
        on_bad_image=config.on_bad_image, max_bad_fraction=config.max_bad_fraction,
    )
    say(data.report.summary())
    labels = list(data.labels)

    # ---------------- backbone + policy ----------------
    requested = str(config.policy)
    pretrained = requested != "scratch"
    set_seed(config.seed)
    model = load_backbone(config.model, labels, revision=config.revision, pretrained=pretrained,
                          trust_remote_code=config.trust_remote_code)
    if requested == "auto":
        num_depths = max(depth_map(model).values()) + 1
        policy = choose_policy(len(data.train), len(labels), num_depths=num_depths)
        if config.train_fraction is not None and policy.name == "partial":
            policy = FreezePolicy("partial", train_fraction=config.train_fraction, reason=policy.reason)
        say(f"policy: {policy.name} (auto) -- {policy.reason}")
    else:
        kw: dict[str, Any] = {}
        if requested == "partial" and config.train_fraction is not None:
            kw["train_fraction"] = config.train_fraction
        if requested == "lp-ft" and config.head_epochs_fraction is not None:
            kw["head_epochs_fraction"] = config.head_epochs_fraction
        policy = FreezePolicy(requested, reason="set in the recipe (policy: %s)" % requested, **kw)
        say(f"policy: {policy.name} (set in the recipe)")
    first_phase = "head" if policy.name == "lp-ft" else None
    summary = apply_policy(model, policy, phase=first_phase)
    say(f"trainable parameters: {summary.trainable_params:,} of {summary.trainable_params + summary.frozen_params:,}")

    processor = load_image_processor(config.model, revision=config.revision)
    spec = image_spec(processor, config.image_size)
    num_workers = config.num_workers if config.num_workers is not None else _default_workers(accelerator)
    channels_last = _wants_channels_last(model, accelerator.device.type)
    use_features = policy.name == "head" and config.feature_cache != "off"
    # the feature path reads each image exactly once: decode it on the fly instead of holding a cache
    eval_ds = ImageClassificationDataset(data.eval, spec, train=False, cache=not use_features)
    if config.feature_cache == "on" and policy.name != "head":
        raise ConfigError(
            f"feature_cache: got 'on' with policy {policy.name!r}; cached features need a frozen backbone "
            "(policy head). Use feature_cache: auto or off."
        )
    lr_main = config.learning_rate_for(policy.name, first_phase)
    args = TrainArgs(
        epochs=config.epochs, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
        learning_rate=lr_main, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio,
        lr_scheduler=config.lr_scheduler, gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm, seed=config.seed, checkpointing_steps=config.checkpointing_steps,
        save_total_limit=config.save_total_limit, early_stopping_patience=config.early_stopping_patience,
        metric_for_best_model=config.metric_for_best_model, greater_is_better=config.greater_is_better,
        skip_nonfinite_batches=config.skip_nonfinite_batches, num_workers=num_workers,
        channels_last=channels_last and not use_features,
    )

    def metrics_fn(ev: Any) -> dict[str, Any]:
        return compute_metrics(ev.predictions, ev.labels, labels, logits=ev.logits, extra_metrics=config.metrics)

    if config.log_with:
        accelerator.init_trackers("tl_hub", config={k: v for k, v in config.to_dict().items()
                                                    if isinstance(v, (int, float, str, bool))})
    ids = list(data.train["id"]) if "id" in data.train.column_names else None

    # ---------------- train ----------------
    t_train = time.perf_counter()
    if use_features:
        from tl_hub.features import FeatureDataset, HeadOnFeatures, features_for, head_module

        if config.augment:
            say("feature cache: training images are not augmented on this path (features are computed once "
                "with the eval transform); set feature_cache: off to train the head on augmented images")
        feat_ds = ImageClassificationDataset(data.train, spec, train=False, cache=False)
        precision = accelerator.mixed_precision
        key = [config.model, config.revision, getattr(data.train, "_fingerprint", None),
               getattr(data.eval, "_fingerprint", None), repr(spec), precision]
        cache_dir = config.feature_cache_dir
        t_feat = time.perf_counter()
        fb = _feature_batch_size(config.eval_batch_size, config.batch_size, accelerator.device.type)
        train_f, train_y = features_for(model, feat_ds, accelerator=accelerator, batch_size=fb, split="train",
                                        cache_dir=cache_dir, key_parts=key, num_workers=num_workers,
                                        channels_last=channels_last, log=say)
        eval_f, eval_y = features_for(model, eval_ds, accelerator=accelerator, batch_size=fb, split="eval",
                                      cache_dir=cache_dir, key_parts=key, num_workers=num_workers,
                                      channels_last=channels_last, log=say)
        feat_time = time.perf_counter() - t_feat
        n_img = len(feat_ds) + len(eval_ds)
        say(f"feature cache: {n_img} images through the frozen backbone once in {feat_time:.1f} s "
            f"({n_img / max(feat_time, 1e-9):.0f} img/s, precision {precision}); the head trains on "
            f"{train_f.shape[-1]}-d features for {config.epochs} epoch(s)")
        head_model = HeadOnFeatures(head_module(model))
        phases = [Phase("head", config.epochs,
                        lambda m: simple_param_groups(m, lr_main, config.weight_decay))]
        outcome = train(head_model, FeatureDataset(train_f, train_y), FeatureDataset(eval_f, eval_y), args=args,
                        accelerator=accelerator, checkpoint_dir=ckpt_dir, phases=phases, metrics_fn=metrics_fn,
                        resume_from=resume, ids=ids, log=say)
        feature_info = {"images": n_img, "seconds": feat_time, "images_per_second": n_img / max(feat_time, 1e-9),
                        "dim": int(train_f[0].numel()), "disk_cache": cache_dir}
    else:
        def groups_for(lr: float) -> Any:
            return lambda m: param_groups(m, lr, layer_decay=config.layer_decay, weight_decay=config.weight_decay)

        if policy.name == "lp-ft":
            head_epochs = max(1, min(config.epochs - 1, round(config.epochs * policy.head_epochs_fraction)))
            lr_full = config.learning_rate_for("lp-ft", "full")
            phases = [
                Phase("head", head_epochs, groups_for(lr_main), setup=lambda m: apply_policy(m, policy, phase="head"),
                      learning_rate=lr_main),
                Phase("full", config.epochs - head_epochs, groups_for(lr_full),
                      setup=lambda m: apply_policy(m, policy, phase="full"), learning_rate=lr_full),
            ]
        else:
            phases = [Phase(policy.name, config.epochs, groups_for(lr_main), setup=lambda m: apply_policy(m, policy))]
        train_ds = ImageClassificationDataset(data.train, spec, train=True, augment=config.augment)
        outcome = train(model, train_ds, eval_ds, args=args, accelerator=accelerator, checkpoint_dir=ckpt_dir,
                        phases=phases, metrics_fn=metrics_fn, resume_from=resume, ids=ids, log=say)
        feature_info = None
        if policy.name == "lp-ft":
            summary = apply_policy(model, policy, phase="full")
    train_time = time.perf_counter() - t_train

    # ---------------- final metrics of the best model ----------------
    final = outcome.best_metrics or metrics_fn(outcome.best_eval)
    headline = {k: final[k] for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "top5_accuracy")
                if k in final}
    headline.update({k: v for k, v in final.items() if k not in headline and k not in {"per_label", "confusion_matrix"}
                     and isinstance(v, (int, float))})
    metrics_doc = {
        "epochs": outcome.history, "best_epoch": outcome.best_epoch,
        "metric_for_best_model": outcome.metric_for_best_model, "final": headline,
        "per_label": final.get("per_label", {}), "confusion_matrix": final.get("confusion_matrix", []),
        "labels": labels, "num_eval_examples": int(len(outcome.best_eval.labels)) if outcome.best_eval else None,
        "nonfinite_batches_skipped": outcome.nonfinite_skipped,
    }
    if feature_info:
        metrics_doc["feature_extraction"] = feature_info

    # ---------------- the Hub-ready folder (main process only) ----------------
    accelerator.wait_for_everyone()
    run_info = {}
    if main:
        from tl_hub.hub import tl_hub_parent

        model.to(memory_format=torch.contiguous_format)
        model.save_pretrained(output_dir)
        save_processor(export_processor(processor, spec), output_dir)
        _write_json(output_dir / "metrics.json", metrics_doc)
        hyper = {k: getattr(config, k) for k in (
            "epochs", "batch_size", "gradient_accumulation_steps", "weight_decay", "layer_decay", "lr_scheduler",
            "warmup_ratio", "max_grad_norm", "seed", "image_size", "augment", "metric_for_best_model",
            "early_stopping_patience")}
        hyper.update(learning_rate=lr_main, image_size=spec.size, eval_batch_size=args.eval_batch_size or args.batch_size)
        if policy.name == "lp-ft":
            hyper["learning_rate_full_phase"] = config.learning_rate_for("lp-ft", "full")
        run_info = {
            "tl_hub_version": __version__, "base_model": config.model, "base_model_revision": config.revision,
            "parent_model": tl_hub_parent(config.model, config.revision), "labels": labels,
            "policy": {**policy.to_dict(), "summary": summary.to_dict()}, "data": data.report.to_dict(),
            "hyperparameters": hyper, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
            "framework_versions": _framework_versions(), "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision, "device": _device_name(accelerator),
            "train_runtime_s": round(train_time, 2), "total_runtime_s": round(time.perf_counter() - t_start, 2),
            "feature_cache_used": bool(use_features), "resumed_from": outcome.resumed_from,
            "stopped_early": outcome.stopped_early,
        }
        _write_json(output_dir / "run_info.json", run_info)
        try:
            from tl_hub.card import write_model_card
        except ImportError:
            write_model_card = None
        if write_model_card is not None:
            write_model_card(output_dir, repo_id=config.hub_model_id)
    accelerator.wait_for_everyone()
    if config.log_with:
        accelerator.end_training()

    push_url = None
    if config.push_to_hub and main:
        from tl_hub.hub import push_to_hub

        repo = config.hub_model_id or output_dir.resolve().name
        push_url = push_to_hub(output_dir, repo, private=config.hub_private)
        say(f"pushed to the Hub: {push_url}")
    accelerator.wait_for_everyone()

    best_note = f" (best epoch {outcome.best_epoch} of {len(outcome.history)})" if outcome.best_epoch else ""
    say("final eval: " + ", ".join(f"{k} {v:.4f}" for k, v in headline.items()) + best_note
        + f" on {metrics_doc['num_eval_examples']} images; training took {train_time:.1f} s")
    say(f"Hub-ready folder: {output_dir.resolve()}")
    if not config.push_to_hub:
        say(f"push it with:  tl-hub push {output_dir} USER/REPO")
    return FinetuneResult(
        output_dir=str(output_dir), metrics=final, policy=policy, summary=summary, best_epoch=outcome.best_epoch,
        history=outcome.history, feature_cache_used=bool(use_features), train_runtime_s=train_time,
        push_url=push_url, labels=labels,
    )


def train_command(config_path: str, overrides: list[str]) -> int:
    """`tl-hub train CONFIG [--key value ...]`: run a recipe; return the exit status.

    Example:
        >>> train_command("recipes/configs/quickstart.yaml", ["--epochs", "2"])  # doctest: +SKIP
        0
    """
    from tl_hub.config import RecipeConfig

    finetune(RecipeConfig.from_yaml(config_path, overrides))
    return 0


def quickstart_command(output_dir: str | None = None, overrides: list[str] | None = None) -> int:
    """`tl-hub quickstart`: the offline demo recipe (bundled Lite0 on bundled Fashion-MNIST).

    Example:
        >>> quickstart_command("quickstart_out")  # doctest: +SKIP
        0
    """
    from tl_hub.config import quickstart_config

    config = quickstart_config(list(overrides or []), output_dir=output_dir)
    print(f"tl-hub quickstart: {config.model} on {config.dataset}, image_size {config.image_size}, "
          f"policy {config.policy}, {config.epochs} epochs -> {config.output_dir}", flush=True)
    finetune(config)
    return 0
