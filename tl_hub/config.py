"""`RecipeConfig`: every knob of a tl_hub run, in one dataclass, loaded from YAML with overrides.

The dataclass below is the only place where defaults live. A recipe YAML sets any subset of its
fields; command-line overrides (`--key value`, `--key=value` or `key=value`) win over the YAML; values
are coerced from strings by each field's annotation. Unknown or misspelled keys, wrong types and
out-of-range values raise `ConfigError` naming the key, the value received and the fix. Access tokens
are never part of a recipe: tl_hub reads them from `HF_TOKEN` or the login of `hf auth login`.

Example:
    >>> from tl_hub.config import RecipeConfig
    >>> cfg = RecipeConfig(dataset="bundled:fashion_mnist", epochs=3)
    >>> cfg.policy, cfg.epochs
    ('auto', 3)
    >>> cfg.apply_overrides(["--epochs", "5", "image_size=112"]).image_size
    112
    >>> RecipeConfig.from_dict({"dataset": "beans", "epocs": 3})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tl_hub.errors.ConfigError: unknown key 'epocs' (did you mean 'epochs'?). Valid keys: model, ...
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tl_hub.config_parsing import (
    TOKEN_HELP,
    closest,
    coerce,
    looks_like_token,
    normalise_key,
    normalise_keys,
    read_yaml,
    show,
    split_overrides,
    type_name,
)
from tl_hub.data.multilabel import check_label_separator, check_problem_type
from tl_hub.data.options import NO_TEST_SPLIT, check_data_options
from tl_hub.errors import ConfigError
from tl_hub.imbalance import check_class_weights
from tl_hub.policy import RecipePolicy, check_policy_knobs, uses_feature_cache
from tl_hub.regularisers import check_regularisers
from tl_hub.validation import check_range

__all__ = ["RecipeConfig", "parse_overrides", "quickstart_config", "quickstart_path"]

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.\-]{0,95}/)?[A-Za-z0-9][\w.\-]{0,95}$")


def _f(default: Any, help: str, group: str) -> Any:
    """A dataclass field with its one-line help text and a group name (for --help and docs)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "group": group})
    return field(default=default, metadata={"help": help, "group": group})


@dataclass(kw_only=True)
class RecipeConfig:
    """Everything a tl_hub fine-tuning run needs; the resolved copy is saved as `recipe.yaml`.

    Build one from Python keywords, from a YAML recipe (`RecipeConfig.from_yaml`), from command-line
    arguments (`RecipeConfig.from_args`) or from a dict (`RecipeConfig.from_dict`, which reports
    unknown keys with the closest valid one). Every field is validated on construction and by
    `replace`. `RecipeConfig.format_help()` lists all fields with their help text.

    Example:
        >>> cfg = RecipeConfig(model="facebook/convnext-tiny-224", dataset="beans", policy="partial")
        >>> cfg.replace(learning_rate=3e-4).learning_rate
        0.0003
        >>> RecipeConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    # --- backbone ----------------------------------------------------------------------------
    model: str = _f(
        "bundled:efficientnet_lite0",
        "Backbone: a Hub model id (org/name), a local folder, or bundled:efficientnet_lite0 (offline; also "
        "bundled:efficientnet_lite1 / bundled:efficientnet_lite2 with the backbones extra).",
        "model",
    )
    revision: str | None = _f(None, "Branch, tag or commit of the backbone on the Hub (null = main).", "model")
    trust_remote_code: bool = _f(
        False, "Allow custom model/dataset code from the Hub to run (only for sources you trust).", "model"
    )

    # --- data --------------------------------------------------------------------------------
    dataset: str | None = _f(
        None,
        "Required. Images: a Hub dataset id, an image folder (one subfolder per label, optionally under "
        "train/ validation/ test/), a CSV/JSONL file (image and label columns; an optional split column "
        "puts each row in train, validation or test), or bundled:fashion_mnist / bundled:digits. A path "
        "that does not exist is an error naming the closest existing one.",
        "data",
    )
    dataset_config: str | None = _f(None, "Configuration (subset) name of a Hub dataset.", "data")
    dataset_revision: str | None = _f(None, "Branch, tag or commit of the Hub dataset (null = main).", "data")
    train_split: str | None = _f(None, "Split to train on (null = 'train').", "data")
    eval_split: str | None = _f(
        None, "Split that selects the best epoch and early stopping (null = the validation split if present, else a "
        "stratified eval_fraction of train; a test split only when named here, and then the run and the card say "
        "that it selects on the split it reports).", "data"
    )
    test_split: str | None = _f(
        None, "Held-out split evaluated once after training with the best model, reported apart from eval (null = "
        "the dataset's test split when it has one and it is not the eval split; a split name; the string 'none', "
        "unlike null, = no test split).",
        "data"
    )
    eval_fraction: float = _f(
        0.2, "Fraction of train held out (stratified) for evaluation when there is no eval split.", "data"
    )
    image_column: str | None = _f(None, "Column holding the images (null = detect it).", "data")
    label_column: str | None = _f(None, "Column holding the labels (null = detect it).", "data")
    labels: list[str] | None = _f(
        None,
        "Use only these labels, in this order (null = all labels of the dataset); images of the other labels "
        "are left out and counted in the report. Integer labels: give the ids (e.g. [3, 7]), or one name "
        "per id, in id order, to name them.",
        "data",
    )
    max_train_samples: int | None = _f(None, "Keep at most this many training images (stratified; null = all).", "data")
    examples_per_label: int | None = _f(
        None, "Keep at most this many training images per label (null = all).", "data"
    )
    on_bad_image: Literal["skip", "error"] = _f(
        "skip", "Unreadable images: skip them (listed in the data report) or stop with an error.", "data"
    )
    max_bad_fraction: float = _f(
        0.01, "Stop if more than this fraction of the images is unreadable, even with on_bad_image: skip.", "data"
    )
    image_size: int | None = _f(
        None, "Training/eval image side in pixels (null = the backbone's processor size).", "data"
    )
    augment: bool = _f(True, "Random resized crop + horizontal flip on training images.", "data")
    num_workers: int | None = _f(None, "DataLoader worker processes (null = chosen from the CPU count).", "data")
    image_cache_max_gb: float | None = _f(
        None,
        "Disk budget (GiB) for the decoded training/eval images, kept memory-mapped in $TL_HUB_CACHE/images "
        "and reused by later runs on the same data (null = up to half the free disk space; 0 = no image cache: "
        "every epoch decodes per item, in the DataLoader workers).",
        "data",
    )
    problem_type: Literal["auto", "single_label_classification", "multi_label_classification"] = _f(
        "auto",
        "auto (multi-label when the label column holds lists: a Sequence(ClassLabel) Hub column, JSONL lists, or "
        "CSV cells split by label_separator), single_label_classification (one label per image; a list is an "
        "error) or multi_label_classification (sigmoid per label, BCE loss, mAP and F1 at threshold).",
        "data",
    )
    label_separator: str | None = _f(
        None,
        "Multi-label CSV/TSV files: the character that separates the labels of one cell, e.g. '|' for "
        "cat|dog (null = each cell is one label).",
        "data",
    )
    threshold: float = _f(
        0.5,
        "Multi-label: a label is predicted when its sigmoid probability is at least this (F1 metrics, predict; "
        "saved in config.json).",
        "evaluation",
    )

    # --- freeze policy -----------------------------------------------------------------------
    policy: RecipePolicy = _f(
        "auto",
        "What to train: auto (chosen from the data size, reason logged), head, partial, full, scratch, "
        "or lp-ft (head first, then everything).",
        "policy",
    )
    train_fraction: float | None = _f(
        None, "partial: fraction of the backbone's depth (from the top) to train (null = chosen by size).", "policy"
    )
    head_epochs_fraction: float | None = _f(
        None, "lp-ft: fraction of the epochs that train only the head (null = default of the policy).", "policy"
    )
    feature_cache: Literal["auto", "on", "off"] = _f(
        "auto",
        "Train the head on features computed once while only the head trains (policy head, lp-ft's head "
        "phase): auto (= on for those), on, or off (the head trains on augmented images).",
        "policy",
    )
    feature_cache_dir: str | None = _f(
        None, "Keep cached features on disk (float16) in this folder for reuse (null = in memory).", "policy"
    )

    # --- optimisation ------------------------------------------------------------------------
    epochs: int = _f(5, "Passes over the training data.", "optimization")
    batch_size: int = _f(
        32, "Training images per step in all (split across processes: results do not depend on the GPU count).",
        "optimization",
    )
    eval_batch_size: int | None = _f(None, "Evaluation images per step in all (null = batch_size).", "optimization")
    gradient_accumulation_steps: int = _f(
        1, "Batches whose gradients add up before one optimizer update (update size = batch_size x this).",
        "optimization",
    )
    learning_rate: float | None = _f(
        None,
        "Peak AdamW learning rate (null = by policy: 1e-3 when only the head trains, 1e-4 otherwise).",
        "optimization",
    )
    layer_decay: float = _f(
        1.0, "Layer-wise LR decay: depth d gets lr * layer_decay**(head_depth - d); 1 = same lr everywhere.",
        "optimization",
    )
    weight_decay: float = _f(0.01, "AdamW weight decay (never applied to norms and biases).", "optimization")
    lr_scheduler: Literal["cosine", "linear", "constant"] = _f(
        "cosine", "Learning-rate schedule after warmup.", "optimization"
    )
    warmup_ratio: float = _f(
        0.1, "Fraction of the optimizer steps spent warming the learning rate up from 0.", "optimization"
    )
    max_grad_norm: float | None = _f(1.0, "Clip the gradient norm to this value (null = no clipping).", "optimization")
    skip_nonfinite_batches: bool = _f(
        False,
        "Skip (and count) batches whose loss is NaN/inf; false = stop with an error naming the batch's images.",
        "optimization",
    )
    seed: int = _f(42, "Random seed (data split, head init, augmentation, shuffling).", "optimization")
    class_weights: Literal["auto", "none"] | dict[str, float] = _f(
        "none",
        "Loss weight per label: none; auto (inverse label frequency, averaging 1 over the images, on only when the "
        "largest label has over 3x the images of the smallest); or {label: weight} (labels not named keep 1).",
        "optimization",
    )
    sampler: Literal["random", "balanced"] = _f(
        "random",
        "Order of the training images: random (a seeded permutation per epoch) or balanced (every label drawn "
        "equally often, with replacement; same epoch length; exact resume holds).",
        "optimization",
    )

    # --- regularisation (all off by default; see README "Regularisers" for what they did on Fashion-MNIST) ---
    label_smoothing: float = _f(
        0.0, "Training loss: each target keeps 1 - x and spreads x evenly over the labels, in [0, 1) (0 = off; "
        "eval_loss stays plain cross-entropy).", "regularisation",
    )
    mixup_alpha: float = _f(
        0.0, "Mixup: blend each training batch with itself reversed, weight ~ Beta(alpha, alpha) (0 = off; e.g. 0.2). "
        "Needs images: not with policy head on cached features.", "regularisation",
    )
    cutmix_alpha: float = _f(
        0.0, "CutMix: paste a box of the batch reversed into each image, area ~ Beta(alpha, alpha) (0 = off; e.g. "
        "1.0). With mixup_alpha too, one of the two per batch.", "regularisation",
    )
    ema_decay: float | None = _f(
        None, "Keep an exponential moving average of the weights with this decay in (0, 1) (e.g. 0.999; null = "
        "off); the EMA weights are evaluated each epoch and are the ones saved. Not under FSDP.", "regularisation",
    )
    gradient_checkpointing: bool = _f(
        False, "Recompute the backbone's activations in the backward pass (less memory, more compute, the same "
        "gradients; BatchNorm layers that train update their running statistics once more in the recompute). The "
        "backbone must support it.", "regularisation",
    )

    # --- precision ---------------------------------------------------------------------------
    mixed_precision: Literal["no", "bf16", "fp16"] | None = _f(
        None,
        "no, bf16 or fp16 (null = the launcher's, e.g. accelerate launch --mixed_precision bf16). "
        "bf16 works on recent CPUs; fp16 on CPU is ignored by torch.",
        "precision",
    )
    cuda_autotune: bool = _f(
        True,
        "On CUDA: cudnn.benchmark (the fastest convolution algorithms for the run's shapes) and TF32 matmuls and "
        "convolutions; false = exact float32 and a fixed choice of algorithms.",
        "precision",
    )
    compile: bool = _f(
        False,
        "torch.compile what trains (the first steps wait for the compiler; later steps run fused kernels, "
        "mostly a gain on GPUs).",
        "precision",
    )

    # --- evaluation and checkpoints -----------------------------------------------------------
    metric_for_best_model: str = _f(
        "accuracy",
        "Eval metric that picks the best epoch (accuracy, f1_macro, precision_macro, recall_macro, "
        "top5_accuracy, loss, or a key of an extra metric; multi-label runs: map, f1_micro, f1_macro, "
        "precision_micro, recall_micro, loss, and the default accuracy means map there).",
        "evaluation",
    )
    metrics: list[str] = _f(
        [], "Extra evaluate metrics (ids or local script paths) computed besides the built-in ones.", "evaluation"
    )
    early_stopping_patience: int | None = _f(
        None, "Stop after this many epochs without improvement of metric_for_best_model (null = never).",
        "evaluation",
    )
    checkpointing_steps: int | Literal["epoch"] | None = _f(
        "epoch", "Save resumable state every N optimizer steps, or 'epoch', or null (never).", "evaluation"
    )
    save_total_limit: int | None = _f(
        2, "Keep at most this many checkpoints, oldest removed first (null = all).", "evaluation"
    )
    resume_from_checkpoint: str = _f(
        "auto",
        "auto: the same command resumes an unfinished run of this recipe in output_dir from its newest checkpoint "
        "(else starts); latest: the newest checkpoint there, finished run or not; none: start over; or the path "
        "of a checkpoint folder. null means auto.",
        "evaluation",
    )
    log_with: list[str] = _f(
        [], "Accelerate trackers (tensorboard, wandb, mlflow, ...; all = every installed one); each must be installed. "
        "They log the resolved policy, learning rate and data sizes; tensorboard writes to output_dir/runs/"
        "PROJECT/RUN_NAME.", "evaluation"
    )
    progress: bool = _f(True, "Progress bars (image check, image cache build, feature pass, training epochs, evaluation); also off with TQDM_DISABLE=1, and when "
                        "the output is not a terminal.", "evaluation")
    tracker_project: str = _f("tl_hub", "The trackers' project (experiment) name.", "evaluation")
    run_name: str | None = _f(None, "The trackers' run name (null = the output folder's name).", "evaluation")

    # --- output and Hub ----------------------------------------------------------------------
    output_dir: str = _f("tl_hub_output", "Folder for the Hub-ready model, metrics, recipe and checkpoints.", "output")
    overwrite_output_dir: bool = _f(
        False, "Allow writing into a non-empty output_dir that holds another run (resuming needs no flag).",
        "output",
    )
    push_to_hub: bool = _f(False, "Push the output folder to the Hub after training (one commit).", "output")
    hub_model_id: str | None = _f(
        None, "Hub repo to push to, name or org/name (null = your user / the output_dir name).", "output"
    )
    hub_private: bool = _f(True, "Create the Hub repo private (applies only when the repo is new).", "output")

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        if self.resume_from_checkpoint is None:  # recipes written before "auto" existed say null
            object.__setattr__(self, "resume_from_checkpoint", "auto")
        no_test = isinstance(self.test_split, str) and self.test_split.strip().lower() == NO_TEST_SPLIT
        hints = _type_hints()
        for f in dataclasses.fields(self):
            value = coerce(f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        if no_test:  # 'none' means "no test split" here, not null (null = automatic)
            object.__setattr__(self, "test_split", NO_TEST_SPLIT)
        self._validate()

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RecipeConfig:
        """A config from a mapping; unknown keys raise ConfigError with the closest valid key.

        Keys may use dashes (`batch-size`) or a leading `--`.

        Example:
            >>> RecipeConfig.from_dict({"dataset": "beans", "batch-size": "16"}).batch_size
            16
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"a recipe must be a mapping of key: value, got {type(values).__name__}: {values!r}")
        return cls(**normalise_keys(values, _valid_keys()))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> RecipeConfig:
        """Load a recipe YAML, then apply command-line style overrides (which win).

        Example:
            >>> cfg = RecipeConfig.from_yaml("recipes/configs/quickstart.yaml", ["--epochs", "2"])  # doctest: +SKIP
        """
        values = normalise_keys(read_yaml(Path(path)), _valid_keys())
        values.update(parse_overrides(overrides))
        return cls.from_dict(values)

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> RecipeConfig:
        """Parse `[--config PATH] [--key value | --key=value | key=value ...]` (default: sys.argv[1:]).

        A script shows `format_help()` for `-h`/`--help` itself (see recipes/finetune.py).

        Example:
            >>> RecipeConfig.from_args(["--dataset", "beans", "--policy=head", "epochs=2"]).policy
            'head'
        """
        args = list(sys.argv[1:] if argv is None else argv)
        config_path: str | None = None
        rest: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("--config", "-c"):
                if i + 1 >= len(args):
                    raise ConfigError(
                        "--config: missing the path of a recipe YAML (e.g. --config recipes/configs/quickstart.yaml)"
                    )
                config_path, i = args[i + 1], i + 2
                continue
            if arg.startswith("--config="):
                config_path = arg.split("=", 1)[1]
            else:
                rest.append(arg)
            i += 1
        if config_path is not None:
            return cls.from_yaml(config_path, rest)
        return cls.from_dict(parse_overrides(rest))

    def apply_overrides(self, overrides: Sequence[str]) -> RecipeConfig:
        """A copy with command-line style overrides applied.

        Example:
            >>> RecipeConfig(dataset="beans").apply_overrides(["--push_to_hub"]).push_to_hub
            True
        """
        return self.replace(**parse_overrides(overrides))

    def replace(self, **changes: Any) -> RecipeConfig:
        """A validated copy with some fields changed (unknown keys raise ConfigError).

        Example:
            >>> RecipeConfig(dataset="beans").replace(epochs=1).epochs
            1
        """
        values = self.to_dict()
        for key, value in changes.items():
            values[normalise_key(key, _valid_keys())] = value
        return type(self).from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON/YAML-safe; lists copied). Holds no secrets: none are fields.

        Example:
            >>> RecipeConfig(dataset="beans").to_dict()["dataset"]
            'beans'
        """
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_yaml(self, path: str | Path | None = None, *, header: str | None = None) -> str:
        """The recipe as YAML (each key under a comment with its help); written to `path` if given.

        `RecipeConfig.from_yaml(path) == self` holds for the written file.

        Example:
            >>> text = RecipeConfig(dataset="beans", epochs=2).to_yaml()
            >>> "epochs: 2" in text
            True
        """
        import yaml

        lines = [f"# {line}" if line else "#" for line in (header or "").splitlines()]
        group = None
        for f in dataclasses.fields(self):
            if f.metadata["group"] != group:
                group = f.metadata["group"]
                lines.append(f"\n# ---- {group} " + "-" * max(0, 60 - len(group)))
            lines.append(f"# {f.metadata['help']}")
            value = getattr(self, f.name)
            flow = None if isinstance(value, (list, dict)) else False  # lists and mappings inline: [a, b], {a: 1}
            lines.append(yaml.safe_dump({f.name: value}, default_flow_style=flow, width=10_000).strip())
        text = "\n".join(lines).lstrip("\n") + "\n"
        if path is not None:
            out = Path(path)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        return text

    # ------------------------------------------------------------------------------------------
    @classmethod
    def field_help(cls) -> dict[str, str]:
        """{field name: one-line help} in declaration order.

        Example:
            >>> RecipeConfig.field_help()["epochs"]
            'Passes over the training data.'
        """
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}

    @classmethod
    def format_help(cls) -> str:
        """Help text of every field, grouped, with its type and default (used by `--help`).

        Example:
            >>> "--learning_rate" in RecipeConfig.format_help()
            True
        """
        hints = _type_hints()
        out = [
            "Recipe options (YAML keys; on the command line --key value, --key=value or key=value):",
        ]
        group = None
        for f in dataclasses.fields(cls):
            if f.metadata["group"] != group:
                group = f.metadata["group"]
                out.append(f"\n{group}:")
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            out.append(f"  --{f.name} {type_name(hints[f.name])}  (default: {show(default)})")
            out.append(f"      {f.metadata['help']}")
        return "\n".join(out)

    @classmethod
    def format_markdown(cls) -> str:
        """Every field as a markdown table (key, type, default, help), for the docs.

        Example:
            >>> RecipeConfig.format_markdown().splitlines()[0]
            '| key | type | default | what it does |'
        """
        hints = _type_hints()
        rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            kind = type_name(hints[f.name]).replace("|", " or ")
            rows.append(f"| `{f.name}` | {kind} | `{show(default)}` | {f.metadata['help'].replace('|', '/')} |")
        return "\n".join(rows)

    # ------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        if not self.dataset:
            raise ConfigError(
                "dataset: missing. Set `dataset:` in the recipe or pass --dataset: a Hub dataset id "
                "(e.g. beans), an image folder, a CSV/JSONL file, or bundled:fashion_mnist"
            )
        if not self.model:
            raise ConfigError("model: empty; give a Hub model id, a local folder or bundled:efficientnet_lite0")
        if not self.output_dir:
            raise ConfigError("output_dir: empty; give the folder the run writes to (e.g. tl_hub_output/my_run)")
        self._validate_ranges()
        check_data_options(eval_fraction=self.eval_fraction, on_bad_image=self.on_bad_image,
                           max_bad_fraction=self.max_bad_fraction, max_train_samples=self.max_train_samples,
                           examples_per_label=self.examples_per_label, image_size=self.image_size,
                           test_split=self.test_split, train_split=self.train_split, eval_split=self.eval_split)
        check_policy_knobs(self.policy, self.train_fraction, self.head_epochs_fraction)
        check_problem_type(self.problem_type)
        check_range("threshold", self.threshold, low=0, high=1, low_open=True, high_open=True, hint="e.g. 0.5")
        self.label_separator = check_label_separator(self.label_separator)
        check_class_weights(self.class_weights, self.labels)
        uses_feature_cache(self.policy, self.feature_cache)
        check_regularisers(label_smoothing=self.label_smoothing, mixup_alpha=self.mixup_alpha,
                           cutmix_alpha=self.cutmix_alpha, ema_decay=self.ema_decay, policy=self.policy,
                           feature_cache=self.feature_cache, gradient_checkpointing=self.gradient_checkpointing)
        if self.hub_model_id is not None and not _REPO_ID.match(self.hub_model_id):
            raise ConfigError(
                f"hub_model_id: got {self.hub_model_id!r}; expected 'name' or 'org/name' (letters, digits, "
                "'-', '_', '.'; at most 96 characters each)"
            )
        self._validate_metric()
        if self.log_with:
            from tl_hub.trackers import check_tracker_names

            object.__setattr__(self, "log_with", check_tracker_names(self.log_with))
        for name in ("resume_from_checkpoint", "output_dir", "feature_cache_dir", "hub_model_id", "dataset", "model"):
            if looks_like_token(getattr(self, name)):
                raise ConfigError(
                    f"{name}: the value looks like an access token; tokens never go in a recipe{TOKEN_HELP}"
                )

    def _validate_ranges(self) -> None:
        check_range("epochs", self.epochs, low=1)
        check_range("batch_size", self.batch_size, low=1)
        check_range("eval_batch_size", self.eval_batch_size, low=1)
        check_range("gradient_accumulation_steps", self.gradient_accumulation_steps, low=1)
        check_range("learning_rate", self.learning_rate, low=0, low_open=True, hint="a typical value is 1e-4")
        check_range("layer_decay", self.layer_decay, low=0, high=1, low_open=True, hint="1 disables the decay")
        check_range("weight_decay", self.weight_decay, low=0)
        check_range("warmup_ratio", self.warmup_ratio, low=0, high=1, high_open=True)
        check_range("max_grad_norm", self.max_grad_norm, low=0, low_open=True, hint="use null to disable clipping")
        check_range("seed", self.seed, low=0, high=2**32 - 1)
        check_range("num_workers", self.num_workers, low=0)
        check_range("image_cache_max_gb", self.image_cache_max_gb, low=0, hint="e.g. 50, or 0 to turn the cache off")
        check_range("early_stopping_patience", self.early_stopping_patience, low=1)
        check_range("save_total_limit", self.save_total_limit, low=1, hint="use null to keep every checkpoint")
        if isinstance(self.checkpointing_steps, int):
            check_range("checkpointing_steps", self.checkpointing_steps, low=1, hint="or 'epoch', or null")

    def _validate_metric(self) -> None:
        from tl_hub.metrics import BUILTIN_METRIC_KEYS, metric_key

        metric = metric_key(self.metric_for_best_model)
        object.__setattr__(self, "metric_for_best_model", metric)
        if metric not in BUILTIN_METRIC_KEYS and not self.metrics:
            raise ConfigError(
                f"metric_for_best_model: got {self.metric_for_best_model!r}; choose one of "
                f"{', '.join(BUILTIN_METRIC_KEYS)}, or a key of an extra metric listed in `metrics`"
                + closest(metric, BUILTIN_METRIC_KEYS)
            )


def quickstart_path() -> Path:
    """The quickstart recipe: inside the installed wheel, else recipes/configs/ of the source tree.

    Example:
        >>> quickstart_path().name
        'quickstart.yaml'
    """
    from tl_hub.paths import shipped_file

    return shipped_file("recipes/quickstart.yaml", "recipes/configs/quickstart.yaml")


def quickstart_config(overrides: Sequence[str] = (), *, output_dir: str | None = None) -> RecipeConfig:
    """The offline quickstart recipe (`recipes/configs/quickstart.yaml`) with overrides applied.

    The YAML is the single source of the quickstart's settings: `tl-hub quickstart` and
    `python recipes/finetune.py --config recipes/configs/quickstart.yaml` run the same recipe.

    Example:
        >>> quickstart_config(["--epochs", "3"], output_dir="qs").epochs
        3
    """
    config = RecipeConfig.from_yaml(quickstart_path(), overrides)
    return config if output_dir is None else config.replace(output_dir=str(output_dir))


def parse_overrides(argv: Iterable[str]) -> dict[str, str]:
    """`--key value`, `--key=value`, `key=value` and bare `--flag` (= true) into {field name: raw string}.

    Values stay strings; RecipeConfig coerces them by each field's type. A later repeat of a key wins;
    an unknown key raises ConfigError with the closest valid one.

    Example:
        >>> parse_overrides(["--epochs", "3", "--lr_scheduler=linear", "seed=1", "--push_to_hub"])
        {'epochs': '3', 'lr_scheduler': 'linear', 'seed': '1', 'push_to_hub': 'true'}
    """
    valid = _valid_keys()
    return {normalise_key(key, valid): value for key, value in split_overrides(argv)}


def _valid_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(RecipeConfig)]


_HINTS: dict[str, Any] = {}


def _type_hints() -> dict[str, Any]:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(RecipeConfig))
    return _HINTS


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value
