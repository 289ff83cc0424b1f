"""`finetune()`: data -> backbone -> freeze policy -> train -> evaluate -> a Hub-ready folder (-> push).

`finetune` is the steps below, called one after the other; each is a function of its own:

1. `resolve_config`      the recipe: a RecipeConfig, a YAML path or a dict, with keyword overrides;
   `locate_sources`      a mistyped model or dataset (or an unreachable Hub) fails here, in one line
2. `make_accelerator`    (tl_hub.hardware) CPU, one GPU or many processes, the precision
3. `prepare_output_dir`  (tl_hub.run_folder) whose run the folder holds: resume it, start over, reuse or
                         refuse it; write the recipe; the checkpoint to resume from
4. `load_run_data`       the dataset's train/eval splits, labels and report (tl_hub.data)
5. `load_model_and_policy` the backbone with a new head, the freeze policy (auto resolved), applied;
   `load_preprocessing` the backbone's image processor and the image geometry the run uses
6. `train_model`         the head on cached features, or the images through the training loop
7. `metrics_document`, `run_facts`, then `write_output_folder`: the one writer of the Hub-ready folder
   (weights, processor, metrics, run facts, model card)
8. `push_output_folder`  one verified commit to the Hub, when the recipe asks for it

The same function runs under `python`, `accelerate launch` (1 or N processes, CPU or GPU) and
`tl-hub train`; only the main process writes files and reports progress (through the `tl_hub` logger).

Example:
    >>> import tl_hub
    >>> result = tl_hub.finetune(dataset="bundled:fashion_mnist", model="bundled:efficientnet_lite0",
    ...                          image_size=112, epochs=10, output_dir="out")  # doctest: +SKIP
    >>> result.metrics["accuracy"], result.policy.name  # doctest: +SKIP
    (0.85, 'head')
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_hub.config import RecipeConfig
from tl_hub.data.multilabel import MULTI_LABEL, SINGLE_LABEL
from tl_hub.errors import ConfigError
from tl_hub.hardware import (
    augments_batches_on_device,
    configure_threads,
    default_workers,
    describe_device,
    feature_batch_size,
    make_accelerator,
    tune_cpu_allocator,
    tune_cuda,
    wants_channels_last,
)
from tl_hub.imbalance import ImbalancePlan, plan_imbalance
from tl_hub.output_folder import CHECKPOINTS_DIR, METRICS_FILE, RUN_INFO_FILE
from tl_hub.policy import (
    FreezePolicy,
    choose_policy,
    peak_learning_rate,
    plan_phases,
    resolve_policy,
    uses_feature_cache,
)
from tl_hub.reporting import main_process_reporter, use_console
from tl_hub.run_folder import prepare_output_dir, stops_explained
from tl_hub.trackers import make_trackers, run_hparams, tracker_init_kwargs

__all__ = ["FinetuneResult", "Training", "finetune", "load_model_and_policy", "load_preprocessing", "load_run_data",
           "locate_sources",
           "auto_choice", "metrics_document", "plan_class_balance", "push_output_folder", "resolve_config", "run_facts",
           "train_label_counts", "train_model",
           "write_output_folder"]

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
        train_runtime_s: seconds of training (the feature pass included).
        push_url: the commit URL when pushed.
        labels: the label names, in class-id order.
        test_metrics: the saved model's metrics on the held-out test split (evaluated once, after training;
            never used to select it), same keys as `metrics`; empty when there was no test split.
        test_split: the name of that split, or None.

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
    test_metrics: dict[str, Any] = field(default_factory=dict)
    test_split: str | None = None


@dataclass
class Training:
    """What `train_model` hands on: the loop's result and how the training ran."""

    outcome: Any  # tl_hub.train.TrainResult
    final_metrics: dict[str, Any]  # every metric of the saved (best) model
    last_phase_summary: Any  # lp-ft: the PolicySummary of its last phase (the first phase's is load_model_and_policy's)
    feature_cache_used: bool
    feature_info: dict[str, Any] | None
    seconds: float
    learning_rate: float
    learning_rate_full_phase: float | None  # lp-ft's second phase
    balance: ImbalancePlan | None = None  # the class weights and sampler the loop used
    test_split: str | None = None  # the held-out split the saved model was evaluated on once (outcome.test_eval)
    test_metrics: dict[str, Any] = field(default_factory=dict)  # every metric of the saved model on it


# ----------------------------------------------------------------------------------------------
# finetune
# ----------------------------------------------------------------------------------------------
def finetune(config: Any = None, *, callbacks: Sequence[Callable[[str, Any], None]] = (),
             **overrides: Any) -> FinetuneResult:
    """Fine-tune a backbone on a dataset as the recipe says; write a Hub-ready folder; push if asked.

    Args:
        config: a RecipeConfig, a recipe YAML path, a dict, or None (then `overrides` are the recipe).
        callbacks: handed to the loop (`tl_hub.train.train`): called as `cb(event, state)` after each optimizer
            step ("step") and each epoch's checkpoint ("epoch"); raising stops the run (its checkpoints stay,
            so the same recipe resumes). `tl_hub.search` prunes trials this way.
        **overrides: any RecipeConfig field, applied on top of `config`.

    Returns:
        FinetuneResult (output_dir, metrics, policy, summary, best_epoch, history, ...).

    Raises:
        ConfigError / DataError / HubError / CheckpointError with the field, the value and the fix.

    Example:
        >>> result = finetune("recipes/configs/quickstart.yaml", epochs=3)  # doctest: +SKIP
        >>> print(result.output_dir, result.metrics["accuracy"])  # doctest: +SKIP
    """
    from tl_hub.distributed import check_shared_output_dir

    use_console()
    started = time.perf_counter()
    config = resolve_config(config, overrides)
    locate_sources(config)
    output_dir = Path(config.output_dir).expanduser()
    trackers = make_trackers(config.log_with, project=config.tracker_project, run_name=_run_name(config),
                             logging_dir=output_dir / "runs") if config.log_with else []  # installed ones only
    accelerator = make_accelerator(config.mixed_precision, log_with=trackers, project_dir=output_dir)
    configure_threads(accelerator, config.num_workers)  # threads + workers <= this process's free cores
    if accelerator.device.type == "cpu":
        tune_cpu_allocator()
    tune_cuda(config.cuda_autotune)  # cudnn.benchmark + TF32 unless the recipe says cuda_autotune: false
    say = main_process_reporter(accelerator)
    check_shared_output_dir(output_dir, accelerator)  # several machines: one folder they all see, or stop now
    resume = prepare_output_dir(config, accelerator)
    with stops_explained(output_dir, accelerator):  # Ctrl-C or an error: say how the same command resumes
        data = load_run_data(config)
        say(data.report.summary())
        model, policy, summary = load_model_and_policy(config, data, say=say)
        processor, spec = load_preprocessing(config)
        if trackers:
            start_trackers(accelerator, config, trackers, policy, data)
        training = train_model(config, accelerator, data, model, policy, spec, resume=resume, say=say,
                               callbacks=callbacks)
        summary = training.last_phase_summary or summary
        metrics_doc = metrics_document(training, data.labels, problem_type=getattr(data, "problem_type", SINGLE_LABEL),
                                       threshold=config.threshold)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            run_info = run_facts(config, accelerator, data, policy, summary, spec, training, started)
            write_output_folder(output_dir, model, processor, spec, metrics_doc, run_info, repo_id=config.hub_model_id)
        accelerator.wait_for_everyone()
        if trackers:
            accelerator.end_training()
        push_url = push_output_folder(config, output_dir, accelerator)
        _report_end(say, config, output_dir, metrics_doc, training, data.report)
    return FinetuneResult(
        output_dir=str(output_dir), metrics=training.final_metrics, policy=policy, summary=summary,
        best_epoch=training.outcome.best_epoch, history=training.outcome.history,
        feature_cache_used=training.feature_cache_used, train_runtime_s=training.seconds, push_url=push_url,
        labels=list(data.labels), test_metrics=training.test_metrics, test_split=training.test_split,
    )


def start_trackers(accelerator: Any, config: RecipeConfig, trackers: list[Any], policy: FreezePolicy, data: Any) -> None:
    """Start the recipe's trackers under `tracker_project` / the run name, logging what the run really uses
    as hyperparameters: the resolved policy, its peak learning rate and the data sizes.

    Example:
        >>> start_trackers(accelerator, config, ["wandb"], "head", data)  # doctest: +SKIP
    """
    phase = "head" if policy.name == "lp-ft" else None  # lp-ft starts with its head phase
    hparams = run_hparams(config.to_dict(), policy=policy.name,
                          learning_rate=peak_learning_rate(policy.name, phase, config.learning_rate),
                          sizes={"train": len(data.train), "eval": len(data.eval), "labels": len(data.labels),
                                 **({"test": len(data.test)} if data.test is not None else {})})
    accelerator.init_trackers(config.tracker_project, config=hparams,
                              init_kwargs=tracker_init_kwargs(trackers, _run_name(config)))


def _run_name(config: RecipeConfig) -> str:
    return config.run_name or Path(config.output_dir).expanduser().resolve().name


# ----------------------------------------------------------------------------------------------
# 1. the recipe
# ----------------------------------------------------------------------------------------------
def resolve_config(config: Any, overrides: dict[str, Any]) -> RecipeConfig:
    """A validated RecipeConfig from a RecipeConfig, a YAML path, a dict or None, with `overrides` applied.

    Example:
        >>> resolve_config(None, {"dataset": "beans", "epochs": 2}).epochs
        2
    """
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


def locate_sources(config: RecipeConfig) -> None:
    """Fail at once on a mistyped model or dataset, or a Hub one while the Hub is out of reach: before the
    output folder is touched or anything is loaded (`tl_hub.locations.locate`, one line naming the fix).

    Example:
        >>> locate_sources(RecipeConfig(dataset="my_imagse/"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_hub.errors.DataError: dataset: no such local folder: 'my_imagse/' ...
    """
    from tl_hub.locations import locate

    locate(config.model, "model", revision=config.revision)
    locate(config.dataset, "dataset", revision=config.dataset_revision)


# ----------------------------------------------------------------------------------------------
# 4. data, 5. backbone and policy
# ----------------------------------------------------------------------------------------------
def load_run_data(config: RecipeConfig) -> Any:
    """The recipe's dataset as a `tl_hub.data.DataBundle` (splits seeded by the recipe's seed).

    Example:
        >>> load_run_data(RecipeConfig(dataset="bundled:digits", examples_per_label=5)).labels[:2]  # doctest: +SKIP
        ['0', '1']
    """
    from accelerate.utils import set_seed

    from tl_hub.data import load_data

    set_seed(config.seed)
    return load_data(
        config.dataset, labels=config.labels, image_column=config.image_column, label_column=config.label_column,
        config=config.dataset_config, split=config.train_split, eval_split=config.eval_split,
        test_split=config.test_split,
        revision=config.dataset_revision, eval_fraction=config.eval_fraction, seed=config.seed,
        max_train_samples=config.max_train_samples, examples_per_label=config.examples_per_label,
        on_bad_image=config.on_bad_image, max_bad_fraction=config.max_bad_fraction, defer_image_check=True,
        problem_type=config.problem_type, label_separator=config.label_separator, progress=config.progress,
    )


def load_model_and_policy(config: RecipeConfig, data: Any, *,
                          say: Callable[[str], None] = lambda message: None) -> tuple[Any, FreezePolicy, Any]:
    """The backbone with a head for the data's labels, the freeze policy (auto resolved from the data size,
    said with its reason) and its PolicySummary after applying its first phase.

    Example:
        >>> model, policy, summary = load_model_and_policy(config, data)  # doctest: +SKIP
    """
    from accelerate.utils import set_seed

    from tl_hub.backbone import load_backbone
    from tl_hub.depth import depth_info
    from tl_hub.freezing import apply_policy

    set_seed(config.seed)
    problem_type = getattr(data, "problem_type", SINGLE_LABEL)
    model = load_backbone(config.model, list(data.labels), revision=config.revision,
                          pretrained=config.policy != "scratch", trust_remote_code=config.trust_remote_code,
                          problem_type=problem_type, threshold=config.threshold)
    if problem_type == MULTI_LABEL:
        say(f"problem: multi-label ({len(data.labels)} labels, a sigmoid each, BCE loss; a label is predicted at "
            f"probability >= {config.threshold:g})")
    num_depths = depth_info(model).max_depth + 1 if config.policy == "auto" else None
    policy = resolve_policy(config.policy, num_examples=len(data.train), num_labels=len(data.labels),
                            num_depths=num_depths, train_fraction=config.train_fraction,
                            head_epochs_fraction=config.head_epochs_fraction, label_counts=train_label_counts(data))
    if config.policy == "auto":
        say(f"policy: {policy.name} (auto) -- {policy.reason}")
    else:
        say(f"policy: {policy.name} (set in the recipe)")
    _apply_regularisers(config, model, policy)
    summary = apply_policy(model, policy, phase=plan_phases(policy, config.epochs)[0].lp_ft_phase)
    say(f"trainable parameters: {summary.trainable_params:,} of {summary.trainable_params + summary.frozen_params:,}")
    return model, policy, summary


def _apply_regularisers(config: RecipeConfig, model: Any, policy: FreezePolicy) -> None:
    """The regulariser rules for the policy the run uses (`auto` resolved), and gradient checkpointing on."""
    from tl_hub.regularisers import check_regularisers_for_policy, enable_gradient_checkpointing

    check_regularisers_for_policy(policy.name, config.feature_cache, mixup_alpha=config.mixup_alpha,
                                  cutmix_alpha=config.cutmix_alpha, gradient_checkpointing=config.gradient_checkpointing)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model, config.model)


def train_label_counts(data: Any) -> list[int] | None:
    """The training images of each label, in label-id order, from the data report (None when it has none).

    Example:
        >>> train_label_counts(load_run_data(RecipeConfig(dataset="bundled:digits", examples_per_label=5)))[:2]  # doctest: +SKIP
        [5, 5]
    """
    per_label = (getattr(data.report, "per_label", None) or {}).get("train")
    if not per_label:
        return None
    return [int(per_label.get(name, 0)) for name in data.labels]


def auto_choice(data: Any) -> dict[str, Any] | None:
    """What `policy: auto` picks for this data (`choose_policy` on the same counts an `auto` run reads), which
    every run records in run_info.json (`policy.auto_choice`): a search reads it to try auto's pick as well.

    Example:
        >>> auto_choice(load_run_data(RecipeConfig(dataset="bundled:digits", examples_per_label=5)))  # doctest: +SKIP
        {'name': 'head', 'train_fraction': None}
    """
    try:
        chosen = choose_policy(len(data.train), len(data.labels), label_counts=train_label_counts(data))
    except ConfigError:  # no rule for fewer than two labels or no training images
        return None
    return {"name": chosen.name, "train_fraction": chosen.train_fraction}


def plan_class_balance(config: RecipeConfig, data: Any) -> ImbalancePlan:
    """What the run does about uneven labels (`class_weights`, `sampler`), from the training label counts.

    Example:
        >>> plan_class_balance(RecipeConfig(dataset="x", class_weights="auto"), data).reason  # doctest: +SKIP
        'largest/smallest label ratio 20.0 (Trouser: 1,000, Shirt: 50), above 3: ...'
    """
    multi = getattr(data, "problem_type", SINGLE_LABEL) == MULTI_LABEL
    if multi and config.sampler == "balanced":
        raise ConfigError(
            "sampler: got 'balanced' in a multi-label run; it draws each label equally often by one label per "
            "image, which an image with several labels does not have. Use sampler: random"
        )
    counts = train_label_counts(data)
    if counts is None:  # no report counts (a hand-made bundle): count the labels themselves
        import numpy as np

        labels = data.train["label"]
        flat = [c for row in labels for c in row] if multi else labels
        counts = np.bincount(np.asarray(flat, dtype=np.int64), minlength=len(data.labels)).tolist()
    # multi-label: the default `auto` leaves BCE unweighted (per-label weights of the single-label loss do not
    # apply); a mapping is refused by plan_imbalance, naming the fix
    weights = "none" if multi and config.class_weights == "auto" else config.class_weights
    return plan_imbalance(weights, config.sampler, list(data.labels), counts, multi_label=multi)


def load_preprocessing(config: RecipeConfig) -> tuple[Any, Any]:
    """The backbone's image processor and the `ImageSpec` of the run (`image_size` overrides its size).

    Example:
        >>> processor, spec = load_preprocessing(RecipeConfig(dataset="beans", image_size=112))  # doctest: +SKIP
        >>> spec.size  # doctest: +SKIP
        112
    """
    from tl_hub.backbone import load_image_processor
    from tl_hub.data.transforms import image_spec

    processor = load_image_processor(config.model, revision=config.revision)
    return processor, image_spec(processor, config.image_size)


# ----------------------------------------------------------------------------------------------
# 6. training
# ----------------------------------------------------------------------------------------------
def train_model(config: RecipeConfig, accelerator: Any, data: Any, model: Any, policy: FreezePolicy, spec: Any, *,
                resume: Path | None = None, say: Callable[[str], None] = lambda message: None,
                callbacks: Sequence[Callable[[str, Any], None]] = ()) -> Training:
    """Train as the policy says. Under `head`, and in lp-ft's head phase (unless `feature_cache: off`), the
    frozen backbone runs once over the data and the head trains on its features; every other phase trains
    on the images, phase by phase. `model` holds the best epoch's weights afterwards; when the data has a
    held-out test split, the loop evaluated that model on it once, at the end (`Training.test_metrics`).

    Example:
        >>> training = train_model(config, accelerator, data, model, policy, spec)  # doctest: +SKIP
        >>> training.outcome.best_epoch  # doctest: +SKIP
        3
    """
    from tl_hub.loss import LossSpec
    from tl_hub.regularisers import MixSpec
    from tl_hub.train import TrainArgs

    use_features = uses_feature_cache(policy.name, config.feature_cache)
    images = None
    if getattr(data, "pending_check", None) is not None:  # load_data left the image check to this step
        if use_features:  # the feature pass decodes on the fly: check first, as load_data would have
            _settle_checks(data, {}, say)
        else:  # building the image cache decodes every image: that decode is the check
            images = image_datasets(config, accelerator, data, spec, say=say)
    balance = plan_class_balance(config, data)
    say(f"class balance: {balance.reason}")
    if getattr(data, "problem_type", SINGLE_LABEL) == MULTI_LABEL and (config.mixup_alpha or config.cutmix_alpha):
        raise ConfigError(
            f"mixup_alpha/cutmix_alpha: got {config.mixup_alpha}/{config.cutmix_alpha} in a multi-label run; tl_hub "
            "mixes one label per image (torchvision's MixUp/CutMix), not label lists. Set both to 0"
        )
    channels_last = wants_channels_last(model, accelerator.device.type)
    plan = plan_phases(policy, config.epochs, config.learning_rate)
    problem_type = getattr(data, "problem_type", SINGLE_LABEL)
    args = TrainArgs(
        epochs=config.epochs, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
        learning_rate=plan[0].learning_rate, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio,
        lr_scheduler=config.lr_scheduler, gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm, seed=config.seed, checkpointing_steps=config.checkpointing_steps,
        save_total_limit=config.save_total_limit, early_stopping_patience=config.early_stopping_patience,
        metric_for_best_model=best_model_metric(config.metric_for_best_model, problem_type),
        skip_nonfinite_batches=config.skip_nonfinite_batches,
        num_workers=config.num_workers if config.num_workers is not None else default_workers(accelerator.num_processes),
        # the feature phase turns it off itself (Phase.channels_last); lp-ft's full phase after it trains on images
        channels_last=channels_last, compile=config.compile, progress=config.progress,
        loss=LossSpec(problem_type=problem_type, class_weights=balance.loss_weights,
                      label_smoothing=config.label_smoothing),
        sampler=balance.sampler, ema_decay=config.ema_decay,
        mix=MixSpec(config.mixup_alpha, config.cutmix_alpha, len(data.labels)),
        gradient_checkpointing=config.gradient_checkpointing,
    )
    loop = _LoopInputs(config, accelerator, data, args, resume, say,
                       _metrics_fn(data.labels, config.metrics, problem_type, config.threshold), tuple(callbacks))
    started = time.perf_counter()
    features = (_cached_features(loop, model, spec, plan, channels_last, with_test=policy.name == "head")
                if use_features else None)
    if features is not None and policy.name == "head":
        outcome = _train_head_on_features(loop, model, plan, features)
    else:
        outcome = _train_on_images(loop, model, policy, spec, plan, features, images)
    feature_info = features.info if features is not None else None
    return Training(
        outcome=outcome, final_metrics=outcome.best_metrics or loop.metrics_fn(outcome.best_eval),
        last_phase_summary=_last_phase_summary(model, policy, plan), feature_cache_used=use_features,
        feature_info=feature_info,
        seconds=time.perf_counter() - started, learning_rate=plan[0].learning_rate,
        learning_rate_full_phase=plan[-1].learning_rate if policy.name == "lp-ft" else None, balance=balance,
        test_split=data.report.test_split if outcome.test_eval is not None else None, test_metrics=outcome.test_metrics,
    )


@dataclass
class _LoopInputs:
    """What both training paths hand to `tl_hub.train.train`."""

    config: RecipeConfig
    accelerator: Any
    data: Any
    args: Any  # TrainArgs
    resume: Path | None
    say: Callable[[str], None]
    metrics_fn: Callable[[Any], dict[str, Any]]
    callbacks: tuple[Callable[[str, Any], None], ...] = ()

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.config.output_dir).expanduser() / CHECKPOINTS_DIR

    @property
    def train_ids(self) -> list[str] | None:
        train = self.data.train  # the whole column at once: iterating `train["id"]` formats row by row (4 s at 100k)
        return train.select_columns(["id"]).with_format("arrow")["id"].to_pylist() if "id" in train.column_names else None


def _metrics_fn(labels: list[str], extra_metrics: list[str], problem_type: str = SINGLE_LABEL,
                threshold: float = 0.5) -> Callable[[Any], dict[str, Any]]:
    from tl_hub.metrics import compute_metrics
    from tl_hub.metrics.multilabel import compute_multilabel_metrics

    def metrics_fn(ev: Any) -> dict[str, Any]:
        if problem_type == MULTI_LABEL:
            return compute_multilabel_metrics(ev.logits, ev.labels, labels, threshold=threshold)
        return compute_metrics(ev.predictions, ev.labels, labels, logits=ev.logits, extra_metrics=extra_metrics)

    return metrics_fn


def best_model_metric(metric: str, problem_type: str) -> str:
    """The metric that picks the best epoch: a multi-label run's default `accuracy` (exact match, rarely
    what one wants) means `map` (threshold-free mean average precision).

    Example:
        >>> best_model_metric("accuracy", "multi_label_classification"), best_model_metric("accuracy", "auto")
        ('map', 'accuracy')
    """
    return "map" if problem_type == MULTI_LABEL and metric == "accuracy" else metric


def _last_phase_summary(model: Any, policy: FreezePolicy, plan: list[Any]) -> Any:
    if len(plan) < 2:
        return None
    from tl_hub.freezing import apply_policy

    return apply_policy(model, policy, phase=plan[-1].lp_ft_phase)


def _train_on_images(loop: _LoopInputs, model: Any, policy: FreezePolicy, spec: Any, plan: list[Any],
                     features: _Features | None, images: ImageDatasets | None = None) -> Any:
    """The loop, one phase per planned phase, on the images (`images`, else built here); lp-ft's head phase on
    `features` when given."""
    from tl_hub import train as loop_module
    from tl_hub.freezing import apply_policy, param_groups

    config = loop.config

    def phase(step: Any) -> Any:
        def setup(m: Any) -> Any:
            return apply_policy(m, policy, phase=step.lp_ft_phase)

        if features is not None and step.lp_ft_phase == "head":
            return features.phase(loop_module, step, loop.config.weight_decay, setup)

        def groups(m: Any) -> list[dict[str, Any]]:
            return param_groups(m, step.learning_rate, layer_decay=config.layer_decay, weight_decay=config.weight_decay)

        return loop_module.Phase(step.name, step.epochs, groups, setup=setup, learning_rate=step.learning_rate)

    images = images or image_datasets(config, loop.accelerator, loop.data, spec, say=loop.say)
    return loop_module.train(
        model, images.train, images.eval, args=loop.args, accelerator=loop.accelerator,
        checkpoint_dir=loop.checkpoint_dir, phases=[phase(step) for step in plan], metrics_fn=loop.metrics_fn,
        resume_from=loop.resume, ids=loop.train_ids, log=loop.say, callbacks=loop.callbacks, test_dataset=images.test,
    )


@dataclass
class ImageDatasets:
    """The torch datasets the loop trains, selects and tests on when it trains on images."""

    train: Any
    eval: Any
    test: Any = None


def image_datasets(config: RecipeConfig, accelerator: Any, data: Any, spec: Any, *,
                   say: Callable[[str], None] = lambda message: None) -> ImageDatasets:
    """The train/eval/test `ImageClassificationDataset`s, each with its image cache (decoded once, on disk).
    When `load_data` left the image check pending, the cache's build was the check: its bad rows settle it
    (`settle_image_checks`) and leave the datasets; a split without a cache is checked then.

    Example:
        >>> images = image_datasets(config, accelerator, data, spec)  # doctest: +SKIP
        >>> len(images.train) == len(data.train)  # doctest: +SKIP
        True
    """
    from tl_hub.data.dataset import ImageClassificationDataset

    # uint8 items: the loop copies them to the device and crops/flips/normalises there, a batch at a time; on a
    # CPU the per-item crop is the faster one (see hardware.augments_batches_on_device)
    on_device = augments_batches_on_device(accelerator.device.type)
    budget = image_cache_budget(config.image_cache_max_gb)
    cache = {"cache": budget != 0, "cache_max_bytes": budget, "progress": config.progress}
    images = ImageDatasets(
        ImageClassificationDataset(data.train, spec, train=True, augment=config.augment, uint8_items=on_device, **cache),
        ImageClassificationDataset(data.eval, spec, train=False, uint8_items=True, **cache))
    test = getattr(data, "test", None)  # held out: the eval transform and the eval data's pixel cache path
    if test is not None:
        images.test = ImageClassificationDataset(test, spec, train=False, uint8_items=True, **cache)
    if getattr(data, "pending_check", None) is not None:
        sides = {"train": images.train, "eval": images.eval, "test": images.test}
        found = {side: ds.bad_rows for side, ds in sides.items() if ds is not None and ds.bad_rows is not None}
        for side, positions in _settle_checks(data, found, say).items():
            sides[side].keep(positions)
    return images


def _settle_checks(data: Any, found: dict[str, dict[int, str]], say: Callable[[str], None]) -> dict[str, Any]:
    """`settle_image_checks` and a line saying what it found."""
    from tl_hub.data.load import settle_image_checks

    kept = settle_image_checks(data, found)
    report = data.report
    via = " by the image cache's decode (this run's or an earlier run's)" if found else ""
    bad = [f"{s['id']}: {s['reason']}" for s in report.skipped if s["kind"] == "bad_image"]
    say(f"image check: {report.images_checked} images checked{via}, bad: {report.bad_images}"
        + ("; skipped " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else "") if bad else ""))
    return kept


@dataclass
class _Features:
    """The frozen backbone's features of the train, eval (and held-out test) images, the head they feed, and how
    they were made."""

    head: Any  # HeadOnFeatures over the model's own head module (trained in place)
    train: Any  # FeatureDataset
    eval: Any  # FeatureDataset
    info: dict[str, Any]
    test: Any = None  # FeatureDataset of the test split, when the head phase is the last one and there is one

    def phase(self, loop_module: Any, step: Any, weight_decay: float, setup: Any = None) -> Any:
        """The loop phase that trains the head alone on these features."""
        from tl_hub.freezing import simple_param_groups

        return loop_module.Phase(step.name, step.epochs, lambda m: simple_param_groups(m, step.learning_rate, weight_decay),
                                 setup=setup, learning_rate=step.learning_rate, module=self.head,
                                 train_dataset=self.train, eval_dataset=self.eval, channels_last=False,
                                 test_dataset=self.test)


def _cached_features(loop: _LoopInputs, model: Any, spec: Any, plan: list[Any], channels_last: bool, *,
                     with_test: bool = False) -> _Features:
    """Run the frozen backbone once over train and eval images (kept on disk when `feature_cache_dir` is set), and
    over the held-out test images when `with_test` (the head phase is the last: the test evaluation reads them)."""
    from tl_hub.data.dataset import ImageClassificationDataset
    from tl_hub.features import FeatureDataset, HeadOnFeatures, features_for, head_module

    config, accelerator = loop.config, loop.accelerator
    if config.augment:
        loop.say("feature cache: training images are not augmented while the head trains on features (computed "
                 "once with the eval transform); set feature_cache: off to train the head on augmented images")
    # the feature pass reads each image exactly once: decode on the fly instead of holding a cache
    test = getattr(loop.data, "test", None) if with_test else None
    datasets = {"train": ImageClassificationDataset(loop.data.train, spec, train=False, cache=False),
                "eval": ImageClassificationDataset(loop.data.eval, spec, train=False, cache=False)}
    if test is not None:
        datasets["test"] = ImageClassificationDataset(test, spec, train=False, cache=False)
    key = [config.model, config.revision, _fingerprint(loop.data.train), _fingerprint(loop.data.eval), repr(spec),
           accelerator.mixed_precision, *([_fingerprint(test)] if test is not None else [])]
    batch = feature_batch_size(config.eval_batch_size, config.batch_size, accelerator.device.type)
    started = time.perf_counter()
    features = {split: features_for(model, ds, accelerator=accelerator, batch_size=batch, split=split,
                                     cache_dir=config.feature_cache_dir, key_parts=key, num_workers=loop.args.num_workers,
                                     channels_last=channels_last, log=loop.say, progress=config.progress)
                for split, ds in datasets.items()}
    seconds = time.perf_counter() - started
    n_images = sum(len(ds) for ds in datasets.values())
    loop.say(f"feature cache: {n_images} images through the frozen backbone once in {seconds:.1f} s "
             f"({n_images / max(seconds, 1e-9):.0f} img/s, precision {accelerator.mixed_precision}); the head trains "
             f"on {features['train'][0].shape[-1]}-d features for {plan[0].epochs} epoch(s)")
    info = {"images": n_images, "seconds": seconds, "images_per_second": n_images / max(seconds, 1e-9),
            "dim": int(features["train"][0][0].numel()), "disk_cache": config.feature_cache_dir}
    return _Features(HeadOnFeatures(head_module(model)), FeatureDataset(*features["train"]),
                     FeatureDataset(*features["eval"]), info,
                     FeatureDataset(*features["test"]) if "test" in features else None)


def _train_head_on_features(loop: _LoopInputs, model: Any, plan: list[Any], features: _Features) -> Any:
    """Policy `head`: the loop trains the head module alone (checkpoints hold just the head: small and fast)."""
    from tl_hub import train as loop_module

    (step,) = plan
    return loop_module.train(
        features.head, features.train, features.eval, args=loop.args, accelerator=loop.accelerator,
        checkpoint_dir=loop.checkpoint_dir, phases=[features.phase(loop_module, step, loop.config.weight_decay)],
        metrics_fn=loop.metrics_fn, resume_from=loop.resume, ids=loop.train_ids, log=loop.say,
        callbacks=loop.callbacks,
    )


def image_cache_budget(max_gb: float | None) -> int | None:
    """The recipe's `image_cache_max_gb` in bytes (None: the default, half the free disk space; 0: off).

    Example:
        >>> image_cache_budget(0.5), image_cache_budget(None)
        (536870912, None)
    """
    return None if max_gb is None else int(max_gb * 2**30)


def _fingerprint(dataset: Any) -> str | None:
    """The `datasets` fingerprint of a split (it changes whenever the rows or their content change); the
    library keeps it in a private attribute and offers no public accessor."""
    return getattr(dataset, "_fingerprint", None)


# ----------------------------------------------------------------------------------------------
# 7. the Hub-ready folder
# ----------------------------------------------------------------------------------------------
def metrics_document(training: Training, labels: list[str], *, problem_type: str = SINGLE_LABEL,
                     threshold: float = 0.5) -> dict[str, Any]:
    """metrics.json: the epoch history, the best epoch and its eval metrics (``final``: headline scalars first),
    per-label scores, the confusion matrix (single-label), the feature pass when there was one; with a held-out
    test split, ``test``: the saved model on it, evaluated once (split, num_examples, final, per_label,
    confusion_matrix: the shape `tl-hub evaluate` writes); ``results``: every scalar as ``eval_*`` and ``test_*``.
    Multi-label runs add ``problem_type`` and ``threshold``; their per_label holds each label's AP, precision,
    recall and F1, and there is no confusion matrix.

    Example:
        >>> sorted(metrics_document(training, ["cat", "dog"]))[:3]  # doctest: +SKIP
        ['best_epoch', 'confusion_matrix', 'epochs']
    """
    from tl_hub.metrics import metrics_report

    outcome = training.outcome
    evaluation = metrics_report(training.final_metrics)
    doc = {
        "epochs": outcome.history, "best_epoch": outcome.best_epoch,
        "metric_for_best_model": outcome.metric_for_best_model, **evaluation,
        "labels": list(labels), "num_eval_examples": int(len(outcome.best_eval.labels)) if outcome.best_eval else None,
        "nonfinite_batches_skipped": outcome.nonfinite_skipped,
        "results": {f"eval_{k}": v for k, v in evaluation["final"].items()},
    }
    if outcome.test_eval is not None:
        test = metrics_report(training.test_metrics)
        doc["test"] = {"split": training.test_split, "num_examples": int(len(outcome.test_eval.labels)), **test}
        doc["results"].update({f"test_{k}": v for k, v in test["final"].items()})
    if problem_type == MULTI_LABEL:  # no confusion matrix: per_label holds each label's AP, precision, recall, F1
        doc.update(problem_type=problem_type, threshold=float(threshold))
        doc.pop("confusion_matrix", None)
        if "test" in doc:
            doc["test"].pop("confusion_matrix", None)
    if training.feature_info:
        doc["feature_extraction"] = training.feature_info
    return doc


#: the optimizer of every phase (`tl_hub.train.make_optimizer`), as the card states it
OPTIMIZER = "AdamW (betas 0.9, 0.999; eps 1e-08; the fused kernel where the device has one)"

#: the training augmentation of the image path (`tl_hub.data.dataset`: per item on a CPU, per batch on a GPU)
AUGMENTATION = "random resized crop (area 25-100 %, aspect 3/4-4/3) + horizontal flip, then normalisation"


def augmentation_used(augment: bool, policy: str, feature_cache_used: bool) -> str:
    """What augmentation really ran, for the card: none where the head trained on cached features (they are
    computed once, from the eval transform), whatever `augment` says.

    Example:
        >>> augmentation_used(True, "head", True)
        'none: the head trained on features cached once from the eval transform (augment has no effect there)'
        >>> augmentation_used(True, "lp-ft", True).startswith("head phase: none")
        True
    """
    if not augment:
        return "none (augment: false)"
    if not feature_cache_used:
        return AUGMENTATION
    if policy == "lp-ft":
        return f"head phase: none (features cached once from the eval transform); full phase: {AUGMENTATION}"
    return "none: the head trained on features cached once from the eval transform (augment has no effect there)"


def run_facts(config: RecipeConfig, accelerator: Any, data: Any, policy: FreezePolicy, summary: Any, spec: Any,
              training: Training, started: float) -> dict[str, Any]:
    """run_info.json: what was trained from what, how, on which machine and software, for how long.

    Example:
        >>> run_facts(config, accelerator, data, policy, summary, spec, training, started)["policy"]["name"]  # doctest: +SKIP
        'head'
    """
    from tl_hub import __version__
    from tl_hub.hub import tl_hub_parent
    from tl_hub.regularisers import describe_regularisers

    hyper = {k: getattr(config, k) for k in (
        "epochs", "batch_size", "gradient_accumulation_steps", "weight_decay", "layer_decay", "lr_scheduler",
        "warmup_ratio", "max_grad_norm", "seed", "image_size", "metric_for_best_model",
        "early_stopping_patience", "class_weights", "sampler")}
    hyper.update(learning_rate=training.learning_rate, image_size=spec.size, optimizer=OPTIMIZER,
                 augmentation=augmentation_used(config.augment, policy.name, training.feature_cache_used),
                 eval_batch_size=config.eval_batch_size or config.batch_size,
                 regularisers=describe_regularisers(
                     label_smoothing=config.label_smoothing, mixup_alpha=config.mixup_alpha,
                     cutmix_alpha=config.cutmix_alpha, ema_decay=config.ema_decay,
                     gradient_checkpointing=config.gradient_checkpointing, policy=policy.name,
                     feature_cache_used=training.feature_cache_used))
    if getattr(data, "problem_type", SINGLE_LABEL) == MULTI_LABEL:
        hyper.update(problem_type=MULTI_LABEL, threshold=config.threshold, loss="binary cross-entropy (sigmoid per label)",
                     metric_for_best_model=best_model_metric(config.metric_for_best_model, MULTI_LABEL))
    if training.learning_rate_full_phase is not None:
        hyper["learning_rate_full_phase"] = training.learning_rate_full_phase
    return {
        "tl_hub_version": __version__, "base_model": config.model, "base_model_revision": config.revision,
        "parent_model": tl_hub_parent(config.model, config.revision), "labels": list(data.labels),
        "policy": {**policy.to_dict(), "summary": summary.to_dict(), "auto_choice": auto_choice(data)},
        "data": data.report.to_dict(),
        "hyperparameters": hyper, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "framework_versions": _framework_versions(), "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision, "device": describe_device(accelerator),
        "train_runtime_s": round(training.seconds, 2), "total_runtime_s": round(time.perf_counter() - started, 2),
        "feature_cache_used": training.feature_cache_used, "resumed_from": training.outcome.resumed_from,
        "imbalance": training.balance.to_dict() if training.balance is not None else None,
        "stopped_early": training.outcome.stopped_early,
        "regularisers_detail": {k: getattr(config, k) for k in (
            "label_smoothing", "mixup_alpha", "cutmix_alpha", "ema_decay", "gradient_checkpointing")},
        "time_to_first_step_s": [round(t, 3) for t in training.outcome.time_to_first_step_s],
    }


def _framework_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "accelerate", "datasets", "evaluate", "timm", "huggingface_hub", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def write_output_folder(output_dir: Path, model: Any, processor: Any, spec: Any, metrics_doc: dict[str, Any],
                        run_info: dict[str, Any], *, repo_id: str | None = None) -> None:
    """Write the Hub-ready folder (main process only): the weights and config with the label names, the
    processor that reproduces the eval transform, metrics.json, run_info.json, then the model card and its
    plots, which are rendered from those files (`tl_hub.output_folder.RUN_FILES` lists them all).

    Example:
        >>> write_output_folder(Path("out"), model, processor, spec, metrics_doc, run_info)  # doctest: +SKIP
    """
    import torch

    from tl_hub.card import write_model_card
    from tl_hub.checkpoint import atomic_write_json
    from tl_hub.data.transforms import export_processor, save_processor
    from tl_hub.reporting import quiet_library_chatter

    model.to(memory_format=torch.contiguous_format)
    with quiet_library_chatter():  # no "Writing model shards" bar; real warnings still show
        model.save_pretrained(output_dir)
        save_processor(export_processor(processor, spec), output_dir)
    atomic_write_json(output_dir / METRICS_FILE, metrics_doc)
    atomic_write_json(output_dir / RUN_INFO_FILE, run_info)
    write_model_card(output_dir, repo_id=repo_id)


# ----------------------------------------------------------------------------------------------
# 8. push, and the last lines
# ----------------------------------------------------------------------------------------------
def push_output_folder(config: RecipeConfig, output_dir: Path, accelerator: Any) -> str | None:
    """Push the folder to `hub_model_id` (default: the folder's name in your namespace) when the recipe
    says `push_to_hub`; the main process pushes, the others wait. Returns the commit URL, or None.

    Example:
        >>> push_output_folder(config.replace(push_to_hub=True), Path("out"), accelerator)  # doctest: +SKIP
        'https://huggingface.co/me/out/commit/...'
    """
    url = None
    if config.push_to_hub and accelerator.is_main_process:
        from tl_hub.hub import push_to_hub

        repo = config.hub_model_id or output_dir.resolve().name
        url = push_to_hub(output_dir, repo, private=config.hub_private)
        main_process_reporter(accelerator)(f"pushed to the Hub: {url}")
    accelerator.wait_for_everyone()
    return url


def _report_end(say: Callable[[str], None], config: RecipeConfig, output_dir: Path, metrics_doc: dict[str, Any],
                training: Training, report: Any) -> None:
    outcome = training.outcome
    best = f" (best epoch {outcome.best_epoch} of {len(outcome.history)})" if outcome.best_epoch else ""
    say("final eval: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics_doc["final"].items()) + best
        + f" on {metrics_doc['num_eval_examples']} images; training took {training.seconds:.1f} s")
    if report.selects_on_test:
        say(f"note: these numbers are on {report.eval_split!r}, the split that selected the best epoch (eval_split): "
            "optimistic; leave eval_split unset to report a held-out test split")
    recall = {name: v["recall"] for name, v in (metrics_doc.get("per_label") or {}).items() if "recall" in v}
    if recall:  # lowest first: the labels an imbalanced run is most likely to miss (the eval split's, as above)
        worst = sorted(recall.items(), key=lambda item: item[1])
        say("per-label recall (lowest first): " + ", ".join(f"{name} {value:.4f}" for name, value in worst[:10])
            + (f", ... ({len(worst) - 10} more in metrics.json)" if len(worst) > 10 else ""))
    test = metrics_doc.get("test")
    if test:
        say(f"test ({test['split']!r} split, held out, evaluated once with the saved model): "
            + ", ".join(f"{k} {v:.4f}" for k, v in test["final"].items()) + f" on {test['num_examples']} images")
    say(f"Hub-ready folder: {output_dir.resolve()}")
    if not config.push_to_hub:
        say(f"push it with:  tl-hub push {output_dir} USER/REPO")
