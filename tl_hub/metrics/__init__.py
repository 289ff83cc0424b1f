"""Evaluation metrics: tl_hub's own `evaluate` modules, plus any other `evaluate` metric by name.

The `evaluate` wheel ships no metric code: `evaluate.load("accuracy")` downloads a script from the Hub
and fails offline. tl_hub ships its own `evaluate` modules next to this file (`accuracy.py`,
`precision_recall_f1.py`, `top_k_accuracy.py`, `confusion_matrix.py`); `load_metric` loads them by
local path, so evaluation never touches the network. Their arithmetic lives in `tl_hub.metrics.scores`,
which `compute_metrics` calls directly (the same code, the same numbers): the metrics every run reports
need neither `evaluate`'s import nor its per-call Arrow round trip. `evaluate` is imported only when a
metric that tl_hub does not ship is asked for (`extra_metrics=["matthews_correlation"]`, or `metrics:`
in a recipe), or by `load_metric`.

Example:
    >>> import numpy as np
    >>> from tl_hub.metrics import compute_metrics
    >>> result = compute_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), ["cat", "dog"])
    >>> round(result["accuracy"], 3), result["confusion_matrix"]
    (0.667, [[1, 1], [0, 1]])
"""

from __future__ import annotations

import difflib
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tl_hub.errors import ConfigError, DataError
from tl_hub.metrics import scores

__all__ = [
    "BUILTIN_METRIC_KEYS",
    "HEADLINE_METRICS",
    "SHIPPED_METRICS",
    "compute_metrics",
    "greater_is_better",
    "load_metric",
    "metric_key",
    "metric_path",
    "metrics_report",
    "top_k_ids",
]

#: the scalars a metrics file and the end-of-run line show first, in this order
HEADLINE_METRICS: tuple[str, ...] = ("map", "f1_micro", "accuracy", "precision_macro", "recall_macro", "f1_macro",
                                     "top5_accuracy")  # map, f1_micro: multi-label runs

_HERE = Path(__file__).resolve().parent

#: The evaluate modules shipped in this folder (name -> script file).
SHIPPED_METRICS: dict[str, Path] = {
    name: _HERE / f"{name}.py" for name in ("accuracy", "precision_recall_f1", "top_k_accuracy", "confusion_matrix")
}

#: Scalar keys that `compute_metrics` always reports (top5_accuracy only with > 5 labels and logits),
#: the eval loss the training loop adds, and the multi-label keys of `compute_multilabel_metrics`: the
#: valid values of `metric_for_best_model`.
BUILTIN_METRIC_KEYS: tuple[str, ...] = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "top5_accuracy",
    "loss",
    "map",  # multi-label runs (tl_hub.metrics.multilabel): mAP, micro F1/precision/recall
    "f1_micro",
    "precision_micro",
    "recall_micro",
)


def metric_key(name: str) -> str:
    """The key of an eval metric as `compute_metrics` reports it: `eval_f1_macro` -> `f1_macro`.

    Example:
        >>> metric_key("eval_accuracy"), metric_key("loss")
        ('accuracy', 'loss')
    """
    return name.removeprefix("eval_")


def greater_is_better(name: str) -> bool:
    """Whether a larger value of metric `name` is better: False for any loss (`loss`, `eval_loss`,
    `loss_weighted`, `focal_loss`...), True for every other metric.

    Example:
        >>> greater_is_better("eval_accuracy"), greater_is_better("eval_loss_weighted")
        (True, False)
    """
    return "loss" not in metric_key(name)


_LOADED: dict[str, Any] = {}
_LOCK = threading.Lock()


def metric_path(name: str) -> str:
    """Absolute path of a metric script shipped with tl_hub (usable with `evaluate.load`).

    Example:
        >>> metric_path("accuracy").endswith("accuracy.py")
        True
    """
    path = SHIPPED_METRICS.get(name)
    if path is None:
        raise ConfigError(
            f"metric {name!r} is not shipped with tl_hub; shipped: {', '.join(SHIPPED_METRICS)}"
            + _closest(name, SHIPPED_METRICS)
        )
    return str(path)


def load_metric(name_or_path: str) -> Any:
    """An `evaluate.EvaluationModule` by shipped name, local path, or evaluate/Hub id.

    Shipped names (`accuracy`, `precision_recall_f1`, `top_k_accuracy`, `confusion_matrix`) load from
    tl_hub's own scripts (offline). A local file or folder loads through `evaluate.load(path)`. Any
    other name is an `evaluate` id (e.g. `matthews_correlation`, `user/my_metric`) that evaluate fetches
    from the Hub the first time; if that fails (offline, unknown id) a ConfigError says what to do.
    Modules are loaded once per process and kept in memory (`keep_in_memory=True`, no cache files,
    safe with several processes).

    Example:
        >>> acc = load_metric("accuracy")  # doctest: +SKIP
        >>> acc.compute(predictions=[1, 0], references=[1, 1])  # doctest: +SKIP
        {'accuracy': 0.5}
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ConfigError(f"metrics: expected a metric name or path, got {name_or_path!r}")
    key = name_or_path.strip()
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        import evaluate

        if key in SHIPPED_METRICS:
            module = evaluate.load(str(SHIPPED_METRICS[key]), keep_in_memory=True)
        elif os.path.exists(key):
            try:
                module = evaluate.load(os.path.abspath(key), keep_in_memory=True)
            except (OSError, ValueError, ImportError, TypeError) as err:
                raise ConfigError(
                    f"metrics: could not load the evaluate module at {key!r}: {err}. A local metric is a "
                    "script `name.py` (or a folder `name/` holding `name.py`) defining an evaluate.Metric subclass."
                ) from err
        else:
            try:
                module = evaluate.load(key, keep_in_memory=True)
            except (OSError, ValueError, ImportError, ConnectionError) as err:
                raise ConfigError(
                    f"metrics: could not load evaluate metric {key!r} ({type(err).__name__}: {err}). "
                    f"tl_hub ships {', '.join(SHIPPED_METRICS)} offline and always reports "
                    f"{', '.join(k for k in BUILTIN_METRIC_KEYS if k != 'loss')}, per-label scores and the "
                    "confusion matrix. Other evaluate metrics are downloaded from the Hub on first use: check "
                    "the id and your network (and that HF_EVALUATE_OFFLINE is not set), or pass the path of a "
                    "local metric script." + _closest(key, SHIPPED_METRICS)
                ) from err
        _LOADED[key] = module
        return module


def compute_metrics(
    predictions: Any,
    references: Any,
    label_names: Sequence[str],
    logits: Any = None,
    extra_metrics: Iterable[str] = (),
) -> dict[str, Any]:
    """All evaluation metrics of a classifier, as a JSON-serialisable dict.

    Args:
        predictions: predicted class ids, shape [N] (or None to take the argmax of `logits`).
        references: true class ids, shape [N].
        label_names: the class names; index = class id.
        logits: optional scores [N, num_labels]; needed for `top5_accuracy` (reported when there are
            more than 5 labels).
        extra_metrics: more `evaluate` metric ids or paths (see `load_metric`); each is computed with
            `compute(predictions=..., references=...)` and its scalar results merged in (prefixed with
            the metric name when a key would clash).

    Returns:
        {"accuracy", "precision_macro", "recall_macro", "f1_macro", ["top5_accuracy"],
         "per_label": {name: {"precision", "recall", "f1", "support"}},
         "confusion_matrix": [[int]] (rows: true label, columns: predicted), **extras}.
        Macro averages run over the labels present in the references or predictions (scikit-learn's
        default); zero divisions count as 0.

    Example:
        >>> r = compute_metrics([0, 2, 1, 2], [0, 1, 1, 2], ["a", "b", "c"])
        >>> r["accuracy"], r["per_label"]["b"]["recall"]
        (0.75, 0.5)
    """
    names = [str(n) for n in label_names]
    num_labels = len(names)
    if num_labels < 2:
        raise DataError(f"label_names: got {names!r}; a classifier needs at least 2 labels")
    logit_scores = None
    if logits is not None:
        logit_scores = np.asarray(_to_numpy(logits), dtype=np.float32)
        if logit_scores.ndim != 2 or logit_scores.shape[1] != num_labels:
            raise DataError(
                f"logits: expected shape [N, {num_labels}] (one score per label), got {tuple(logit_scores.shape)}"
            )
    if predictions is None:
        if logit_scores is None:
            raise DataError("predictions: got None and no logits to take the argmax of; pass one of them")
        predictions = logit_scores.argmax(axis=1)
    preds = np.asarray(_to_numpy(predictions)).reshape(-1).astype(np.int64)
    refs = np.asarray(_to_numpy(references)).reshape(-1).astype(np.int64)
    if preds.shape != refs.shape:
        raise DataError(f"predictions ({preds.shape[0]}) and references ({refs.shape[0]}) differ in length")
    if preds.size == 0:
        raise DataError("references: got 0 examples; there is nothing to evaluate (is the eval split empty?)")
    if logit_scores is not None and logit_scores.shape[0] != refs.shape[0]:
        raise DataError(f"logits: {logit_scores.shape[0]} rows for {refs.shape[0]} references")
    for what, ids in (("predictions", preds), ("references", refs)):
        if ids.min() < 0 or ids.max() >= num_labels:
            raise DataError(
                f"{what}: class ids must be in [0, {num_labels}) for {num_labels} labels, "
                f"got values {int(ids.min())}..{int(ids.max())}"
            )

    # the shipped evaluate modules' own arithmetic (tl_hub.metrics.scores), without evaluate's machinery
    result: dict[str, Any] = {}
    result.update(scores.accuracy(preds, refs))
    macro = scores.precision_recall_f1(preds, refs)
    result.update({k: macro[k] for k in ("precision_macro", "recall_macro", "f1_macro")})
    if logit_scores is not None and num_labels > 5:
        top = scores.top_k_accuracy(top_k_ids(logit_scores, 5), refs, k=5)
        result["top5_accuracy"] = top["top_5_accuracy"]
    per_label = scores.precision_recall_f1(preds, refs, labels=list(range(num_labels)))["per_label"]
    result["per_label"] = {names[int(i)]: values for i, values in per_label.items()}
    result["confusion_matrix"] = scores.confusion_matrix(preds, refs, num_labels=num_labels)["confusion_matrix"]

    for extra in extra_metrics:
        module = load_metric(extra)
        try:
            values = module.compute(predictions=preds, references=refs)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"metrics: evaluate metric {extra!r} failed on {num_labels}-class predictions: {err}. "
                "Extra metrics are called as compute(predictions=class ids, references=class ids) without "
                "other arguments; macro precision/recall/F1 are already reported."
            ) from err
        prefix = str(getattr(module, "name", extra)).replace("/", "_")
        for key, value in (values or {}).items():
            out_key = key if key not in result else f"{prefix}_{key}"
            result[out_key] = value
    return _jsonable(result)


def metrics_report(metrics: dict[str, Any]) -> dict[str, Any]:
    """What a metrics file holds of a `compute_metrics` result: ``final`` (the headline scalars first, then any
    other scalar), ``per_label`` and ``confusion_matrix``. Training (its eval and test results) and
    `tl-hub evaluate` write the same shape.

    Example:
        >>> report = metrics_report(compute_metrics(np.array([0, 1]), np.array([0, 0]), ["cat", "dog"]))
        >>> list(report["final"])[:2], report["confusion_matrix"]
        (['accuracy', 'precision_macro'], [[1, 1], [0, 0]])
    """
    final = {k: metrics[k] for k in HEADLINE_METRICS if k in metrics}
    final.update({k: v for k, v in metrics.items() if k not in final and k not in {"per_label", "confusion_matrix"}
                  and isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {"final": final, "per_label": metrics.get("per_label", {}),
            "confusion_matrix": metrics.get("confusion_matrix", [])}


def top_k_ids(scores: Any, k: int) -> np.ndarray:
    """Per row, the ids of the k highest scores, best first (`torch.topk`; ties in any order).

    Example:
        >>> top_k_ids(np.array([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05]]), 2).tolist()
        [[1, 2], [0, 1]]
    """
    import torch  # a dependency of tl_hub anyway; its topk is faster than numpy's argpartition on large eval sets

    if hasattr(scores, "detach"):
        tensor = scores.detach().float().cpu()
    else:
        tensor = torch.from_numpy(np.asarray(scores, dtype=np.float32))
    k = min(int(k), tensor.shape[1])
    return torch.topk(tensor, k, dim=1, largest=True, sorted=True).indices.numpy().astype(np.int64)


def _to_numpy(value: Any) -> Any:
    """Torch tensors (any device/dtype) and lists to something np.asarray takes."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _closest(name: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
