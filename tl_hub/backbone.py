"""Load a pretrained image-classification backbone with a fresh head sized and named for your labels.

A *source* is a Hub repo id (any checkpoint that `AutoModelForImageClassification` loads, timm checkpoints
included through `TimmWrapperForImageClassification`), a local folder, or `bundled:efficientnet_lite0`.

Example:
    >>> from tl_hub.backbone import load_backbone, load_image_processor
    >>> model = load_backbone("bundled:efficientnet_lite0", ["cat", "dog", "bird"])  # doctest: +SKIP
    >>> model.config.id2label  # doctest: +SKIP
    {0: 'cat', 1: 'dog', 2: 'bird'}
    >>> processor = load_image_processor("bundled:efficientnet_lite0")  # doctest: +SKIP

What it takes care of (each a known trap of plain `from_pretrained`):
- the head is re-initialised whenever the label *names* differ from the checkpoint's, also when the
  counts match (transformers silently keeps the old head then); a checkpoint that already has exactly
  these labels in this order (a tl_hub model trained before) keeps its trained head;
- timm checkpoints whose `model_args` carry `num_classes`, DeiT distilled checkpoints (loaded as
  `DeiTForImageClassification`), `id2label` without `num_labels`;
- safetensors only, never `trust_remote_code` unless asked, and loading noise (progress bars, LOAD
  REPORT) silenced while real problems (non-head weights missing from the checkpoint) are still logged.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tl_hub.bundled import is_bundled, resolve_bundled_backbone
from tl_hub.depth import find_head, mark_head
from tl_hub.errors import CheckpointError, ConfigError, DataError, HubError
from tl_hub.locations import local_hint, locate

logger = logging.getLogger("tl_hub")

# ---------------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------------


def validate_labels(labels: Sequence[str]) -> list[str]:
    """Check label names (>= 2, non-empty strings, no duplicates) and return them as a list.

    Example:
        >>> validate_labels(("cat", "dog"))
        ['cat', 'dog']
    """
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise DataError(
            f"labels: got {labels!r} ({type(labels).__name__}); pass a list of label names, "
            "e.g. ['cat', 'dog']"
        )
    labels = list(labels)
    bad = [(i, name) for i, name in enumerate(labels) if not isinstance(name, str)]
    if bad:
        raise DataError(
            f"labels: entries {bad[:5]} are not strings; pass names as strings, e.g. [str(x) for x in labels]"
        )
    if len(labels) < 2:
        raise DataError(
            f"labels: got {labels!r} ({len(labels)} label); an image classifier needs at least 2 labels"
        )
    empty = [i for i, name in enumerate(labels) if not name.strip()]
    if empty:
        raise DataError(f"labels: the names at positions {empty} are empty; give every label a name")
    dups = sorted(name for name, n in Counter(labels).items() if n > 1)
    if dups:
        raise DataError(f"labels: duplicate names {dups}; each label name must be unique")
    return labels


def resolve_source(source: str) -> str:
    """`bundled:efficientnet_lite0` -> its converted local folder; any other source unchanged.

    Example:
        >>> resolve_source("google/vit-base-patch16-224")
        'google/vit-base-patch16-224'
    """
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"source: got {source!r}; pass a Hub repo id, a local folder or 'bundled:efficientnet_lite0'")
    return resolve_bundled_backbone(os.fspath(source))


def _locate_checkpoint(original: str, revision: str | None, any_of: tuple[str, ...] = ("config.json",)) -> bool:
    """Classify the source before any network call (`tl_hub.locations`); a local one must be a folder with
    config.json. Returns True when a Hub repo must load from the local cache only (Hub off or out of reach).
    """
    location = locate(original, "model", revision=revision)
    if location.kind != "local":
        return location.local_only
    p = location.path
    if p.is_dir():
        if not any((p / name).is_file() for name in any_of):
            raise CheckpointError(
                f"source: folder {original!r} has no config.json; point at a folder written by "
                "save_pretrained (config.json + model.safetensors) or use a Hub repo id"
            )
        return False
    raise ConfigError(f"source: {original!r} is a file; pass the folder that holds config.json")


# ---------------------------------------------------------------------------------------------------
# Quiet loading and error mapping
# ---------------------------------------------------------------------------------------------------


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers/huggingface_hub load chatter (progress bars, LOAD REPORT) for the block.

    Exceptions still propagate; only log records below ERROR and progress bars are hidden.

    Example:
        >>> with quiet_loading():
        ...     pass
    """
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bar_on = hf_logging.is_progress_bar_enabled()
    hub_bars_off = hub_utils.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar_on:
            hf_logging.enable_progress_bar()
        if not hub_bars_off:
            hub_utils.enable_progress_bars()


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _translate_hub_error(err: Exception, source: str, revision: str | None, what: str) -> Exception | None:
    """Map huggingface_hub/transformers loading errors to a HubError/CheckpointError; None if unknown."""
    from huggingface_hub import errors as hub_errors

    rev = revision or "main"
    for cause in _chain(err):
        if isinstance(cause, hub_errors.GatedRepoError):
            return HubError(
                f"source: {source!r} is a gated repo; accept its terms on the Hub and log in "
                "(`hf auth login` or HF_TOKEN) with an account that has access"
            )
        if isinstance(cause, hub_errors.RepositoryNotFoundError):
            return HubError(
                f"source: no model repo {source!r} on the Hub (or it is private and your token has no access); "
                "check the spelling (e.g. 'timm/resnet18.a1_in1k'), log in for private repos, or pass a local folder"
                + local_hint(source)
            )
        if isinstance(cause, hub_errors.RevisionNotFoundError):
            return HubError(
                f"revision: {rev!r} does not exist in {source!r}; pass an existing branch, tag or commit "
                "(or leave revision unset for 'main')"
            )
        if isinstance(cause, hub_errors.LocalEntryNotFoundError):
            return HubError(
                f"source: cannot fetch {what} of {source!r} (revision {rev!r}): the Hub is unreachable and it is "
                "not in the local cache; check your connection / HF_ENDPOINT, or pass a local folder"
            )
        if isinstance(cause, hub_errors.EntryNotFoundError):
            return CheckpointError(
                f"source: {source!r} (revision {rev!r}) has no {what}; it is not a transformers/timm checkpoint "
                "folder, pick a model repo that AutoModelForImageClassification loads"
            )
        if isinstance(cause, hub_errors.HFValidationError):
            return ConfigError(
                f"source: {source!r} is neither an existing local folder nor a valid Hub repo id "
                "('org/name'); check the path or the id"
            )
    message = str(err)
    if "safetensors" in message and any(s in message for s in ("does not appear to have", "no file named", "use_safetensors")):
        return CheckpointError(
            f"source: {source!r} (revision {rev!r}) has no model.safetensors; tl_hub loads safetensors weights only "
            "(pickled .bin files can run code). Use a revision that has safetensors weights, or convert the "
            "checkpoint (load it yourself and save_pretrained(..., safe_serialization=True))"
        )
    if "Unrecognized model" in message or "Unrecognized configuration" in message:
        return CheckpointError(
            f"source: the config.json of {source!r} names no known model type (no 'model_type', or a timm "
            "config without 'architecture'/'pretrained_cfg'); it is not a transformers/timm checkpoint"
        )
    if "Can't load image processor" in message:
        return CheckpointError(f"source: {source!r} (revision {rev!r}) has no {what}")
    if "does not appear to have a file named" in message:
        return CheckpointError(f"source: {source!r} (revision {rev!r}) is incomplete: {message.splitlines()[0]}")
    return None


@contextmanager
def _hub_errors(source: str, revision: str | None, what: str) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError) as err:
        mapped = _translate_hub_error(err, source, revision, what)
        if mapped is None:
            raise
        raise mapped from err


# ---------------------------------------------------------------------------------------------------
# Model classes
# ---------------------------------------------------------------------------------------------------


def _is_timm(config: Any) -> bool:
    return getattr(config, "model_type", None) == "timm_wrapper"


def _image_classifier_class(config: Any, source: str, trust_remote_code: bool) -> Any:
    """The model class to fine-tune for `config`; raises ConfigError for non-image-classifiers."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code and "AutoModelForImageClassification" in auto_map:
        return transformers.AutoModelForImageClassification
    model_type = getattr(config, "model_type", None)
    names = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    if names is None:
        archs = getattr(config, "architectures", None) or []
        hint = ""
        if "AutoModelForImageClassification" in auto_map:
            hint = " It defines its own code: pass trust_remote_code=True only if you trust that repo."
        raise ConfigError(
            f"source: {source!r} is a {model_type!r} checkpoint ({', '.join(archs) or 'no architectures'}), "
            "not an image classifier that AutoModelForImageClassification can load; use a vision backbone "
            f"such as 'google/vit-base-patch16-224', 'timm/resnet18.a1_in1k' or 'bundled:efficientnet_lite0'.{hint}"
        )
    if isinstance(names, str):
        names = (names,)
    # DeiT/LeViT distilled checkpoints resolve to *WithTeacher (two heads, no `labels` argument):
    # fine-tune the plain classifier instead. Perceiver: prefer the variant named in the config.
    plain = [n for n in names if "WithTeacher" not in n]
    archs = [a for a in (getattr(config, "architectures", None) or []) if a in plain]
    name = archs[0] if archs else plain[0]
    return getattr(transformers, name)


def _checkpoint_labels(config: Any) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    try:
        return [str(id2label[i]) for i in range(len(id2label))]
    except KeyError:
        return [str(v) for _, v in sorted(id2label.items(), key=lambda kv: int(kv[0]))]


def _set_labels(config: Any, labels: list[str]) -> None:
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    # TimmWrapperConfig keeps the checkpoint's `label_names`/`num_classes` as extra attributes and its
    # to_dict() prefers them over id2label: without this the saved config would carry the old labels.
    if hasattr(config, "label_names"):
        config.label_names = list(labels)
    if hasattr(config, "num_classes"):
        config.num_classes = len(labels)
    if config.num_labels != len(labels):  # pragma: no cover - depends on the config class
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}


#: the config.json key that holds a multi-label model's decision threshold
THRESHOLD_KEY = "multi_label_threshold"


def _set_problem_type(config: Any, problem_type: str | None, threshold: float | None) -> None:
    """The head's problem type (and a multi-label model's threshold) in the config that is saved with it."""
    if problem_type == "multi_label_classification":
        config.problem_type = problem_type
        setattr(config, THRESHOLD_KEY, float(0.5 if threshold is None else threshold))
    elif problem_type is not None and getattr(config, "problem_type", None) == "multi_label_classification":
        config.problem_type = problem_type  # a single-label model fine-tuned from a multi-label one
        if hasattr(config, THRESHOLD_KEY):
            delattr(config, THRESHOLD_KEY)


def _fix_timm_config(config: Any) -> None:
    """Two fixes to a TimmWrapper config, so the saved config.json loads in transformers *and* timm:
    timm's save_for_hf writes model_args with num_classes (TimmWrapper then passes it twice); and
    transformers writes ``"model_args": null`` when there are none, which timm's `create_model("hf-hub:...")`
    / ``"local-dir:..."`` cannot read (it calls ``.get`` on it) -- an empty dict means the same to both."""
    if not hasattr(config, "model_args"):
        return
    args = config.model_args
    if args is None:
        config.model_args = {}
    elif "num_classes" in args:
        config.model_args = {k: v for k, v in args.items() if k != "num_classes"}


# ---------------------------------------------------------------------------------------------------
# The head
# ---------------------------------------------------------------------------------------------------


def _reinit_head(model: Any, head_names: list[str]) -> None:
    """Give the head fresh random weights (the same init transformers uses for a new head)."""
    import torch

    module_names = sorted({n.rpartition(".")[0] for n in head_names})
    with torch.no_grad():
        for mname in module_names:
            module = model.get_submodule(mname) if mname else model
            for p in module.parameters(recurse=False):
                if hasattr(p, "_is_hf_initialized"):
                    del p._is_hf_initialized
            if hasattr(module, "_is_hf_initialized"):
                del module._is_hf_initialized
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            init = getattr(model, "_init_weights", None)
            if init is not None:
                init(module)


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------


def load_backbone(
    source: str,
    labels: Sequence[str],
    *,
    revision: str | None = None,
    pretrained: bool = True,
    trust_remote_code: bool = False,
    torch_dtype: Any = None,
    problem_type: str | None = None,
    threshold: float | None = None,
) -> Any:
    """Load an image classifier from `source` with a head of `len(labels)` outputs named `labels`.

    Args:
        source: Hub repo id, local folder, or `bundled:efficientnet_lite0`.
        labels: label names; index = class id. At least 2, unique, non-empty.
        revision: branch, tag or commit of a Hub repo.
        pretrained: False builds the same architecture with random weights (training from scratch).
        trust_remote_code: allow a repo's own modelling code (off unless you pass it).
        torch_dtype: dtype to load the weights in (default: float32 as stored/upcast by transformers).
        problem_type: written to ``config.problem_type`` (None keeps the checkpoint's):
            ``multi_label_classification`` makes plain transformers' image-classification pipeline score
            each label with a sigmoid instead of a softmax over labels.
        threshold: multi-label only: saved as ``config.multi_label_threshold`` (what `tl_hub.predict` uses).

    Returns:
        A `transformers.PreTrainedModel` whose `config.id2label`/`label2id` are the labels and whose
        attribute `tl_hub_head_names` lists the parameters of the head. The head is fresh unless the
        checkpoint already has exactly these labels in this order (continuing a tl_hub model).

    Example:
        >>> model = load_backbone("bundled:efficientnet_lite0", ["cat", "dog"])  # doctest: +SKIP
        >>> model.config.num_labels, model.tl_hub_head_names  # doctest: +SKIP
        (2, ['timm_model.classifier.weight', 'timm_model.classifier.bias'])
    """
    labels = validate_labels(labels)
    original = os.fspath(source) if isinstance(source, os.PathLike) else source
    path = resolve_source(source)
    local_only = False if is_bundled(original) else _locate_checkpoint(original, revision)

    from transformers import AutoConfig

    with quiet_loading(), _hub_errors(original, revision, "config.json"):
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code,
                                            local_files_only=local_only)
    model_cls = _image_classifier_class(config, original, trust_remote_code)
    keep_head = pretrained and _checkpoint_labels(config) == labels
    if _is_timm(config):
        _fix_timm_config(config)
    _set_labels(config, labels)
    _set_problem_type(config, problem_type, threshold)
    kwargs: dict[str, Any] = {"local_files_only": True} if local_only else {}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype

    fresh: set[str] = set()
    with quiet_loading():
        if pretrained:
            with _hub_errors(original, revision, "model.safetensors"):
                model, info = model_cls.from_pretrained(
                    path,
                    config=config,
                    revision=revision,
                    trust_remote_code=trust_remote_code,
                    use_safetensors=True,
                    ignore_mismatched_sizes=True,
                    output_loading_info=True,
                    **kwargs,
                )
            fresh = set(info.get("missing_keys") or ()) | {m[0] for m in info.get("mismatched_keys") or ()}
        else:
            if trust_remote_code and model_cls.__name__.startswith("Auto"):
                model = model_cls.from_config(config, trust_remote_code=True, **kwargs)
            else:
                model = model_cls._from_config(config, **kwargs)

    head = find_head(model)
    if pretrained and not keep_head and not set(head) <= fresh:
        # same number of labels but other names: transformers kept the old head; replace it
        _reinit_head(model, head)
    if pretrained:
        param_names = {n for n, _ in model.named_parameters()}
        stray = sorted((fresh & param_names) - set(head))
        if stray:
            logger.warning(
                "load_backbone(%r): %d parameters outside the head were not in the checkpoint and are randomly "
                "initialised: %s%s",
                original, len(stray), ", ".join(stray[:8]), " ..." if len(stray) > 8 else "",
            )
    mark_head(model, head)
    model.eval()
    return model


def load_image_processor(source: str, *, revision: str | None = None) -> Any:
    """The image processor of `source` (torchvision "fast" backend when the class has one).

    A checkpoint folder without `preprocessor_config.json` gets a default processor at the model's
    native input size with ImageNet mean/std (and a warning saying so).

    Example:
        >>> processor = load_image_processor("bundled:efficientnet_lite0")  # doctest: +SKIP
        >>> type(processor).__name__  # doctest: +SKIP
        'TimmWrapperImageProcessor'
    """
    original = os.fspath(source) if isinstance(source, os.PathLike) else source
    path = resolve_source(source)
    local_only = False if is_bundled(original) else _locate_checkpoint(
        original, revision, ("preprocessor_config.json", "config.json"))
    from transformers import AutoConfig, AutoImageProcessor

    with quiet_loading():
        try:
            with _hub_errors(original, revision, "preprocessor_config.json"):
                return AutoImageProcessor.from_pretrained(path, revision=revision, local_files_only=local_only)
        except CheckpointError:
            pass
        with _hub_errors(original, revision, "config.json"):
            config = AutoConfig.from_pretrained(path, revision=revision, local_files_only=local_only)
    return _default_processor(config, original)


def _default_processor(config: Any, source: str) -> Any:
    from transformers import ViTImageProcessor

    size = getattr(config, "image_size", None) or 224
    if isinstance(size, (list, tuple)):
        size = int(size[-1])
    logger.warning(
        "load_image_processor(%r): the checkpoint has no preprocessor_config.json; using %d px, "
        "ImageNet mean/std. Save a processor with the model to control this.",
        source, size,
    )
    return ViTImageProcessor(
        size={"height": int(size), "width": int(size)},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
