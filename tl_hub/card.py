"""The model card of a tl_hub output folder: Hub metadata, a Markdown body, and PNG plots.

The card is rendered from the Jinja template `model_cards/image_classification.md` (shipped inside the
wheel as `tl_hub/model_cards/`) through `huggingface_hub.ModelCard.from_template`; its YAML metadata
is a `ModelCardData` (never YAML built by hand). Everything comes from the files the training run
wrote (`run_info.json`, `metrics.json`, `recipe.yaml`, `config.json`); a missing piece leaves its
section out or says it was not recorded.

The metadata carries `tl_hub_card_sha256`, a hash of the rest of the card, so that `tl_hub.hub` can
tell a card tl_hub wrote from one somebody edited on the Hub.

Example:
    >>> from tl_hub.card import write_model_card
    >>> write_model_card("outputs/fashion", repo_id="me/fashion-lite0")  # doctest: +SKIP
    PosixPath('outputs/fashion/README.md')
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from tl_hub.bundled import BUNDLED_BACKBONES, bundled_backbone
from tl_hub.errors import HubError
from tl_hub.leaderboard import AUTO_PICK_NOTE, markdown_table, read_leaderboard
from tl_hub.output_folder import (
    CARD_FILE,
    CONFIG_FILE,
    CONFUSION_PNG,
    CURVES_PNG,
    LEADERBOARD_FILE,
    METRICS_FILE,
    RECIPE_FILE,
    RUN_INFO_FILE,
)

TEMPLATE_NAME = "image_classification.md"
CARD_HASH_KEY = "tl_hub_card_sha256"

# What the bundled sources are, for the card text. Only real Hub ids ever go into the metadata.
_BUNDLED_MODELS = {b.source: b.card_text() for b in BUNDLED_BACKBONES.values()}
_BUNDLED_DATASETS = {
    "bundled:fashion_mnist": (
        "zalando-datasets/fashion_mnist",
        "a subset of Fashion-MNIST (Zalando Research, MIT license) shipped inside tl_hub",
    ),
    "bundled:digits": (None, "scikit-learn's 8x8 handwritten digits (UCI ML hand-written digits)"),
}
_METRIC_IDS = {"accuracy": "accuracy", "f1_macro": "f1", "precision_macro": "precision",
               "recall_macro": "recall", "top5_accuracy": "top_5_accuracy", "map": "map", "f1_micro": "f1"}
_METRIC_NAMES = {"accuracy": "Accuracy", "f1_macro": "F1 (macro)", "precision_macro": "Precision (macro)",
                 "recall_macro": "Recall (macro)", "top5_accuracy": "Top-5 accuracy",
                 "map": "mAP (macro average precision)", "f1_micro": "F1 (micro)",
                 "precision_micro": "Precision (micro)", "recall_micro": "Recall (micro)"}
#: multi-label runs: what `accuracy` is there (tl_hub.metrics.multilabel)
_MULTI_LABEL_NAMES = {"accuracy": "Exact-match accuracy (all labels right)"}


def template_path() -> Path:
    """The card template: inside the installed package (wheel), else in the source tree.

    Example:
        >>> template_path().name
        'image_classification.md'
    """
    from tl_hub.paths import shipped_file

    return shipped_file(f"model_cards/{TEMPLATE_NAME}", f"model_cards/{TEMPLATE_NAME}")


def is_hub_repo_id(value: Any) -> bool:
    """True when `value` looks like a Hub repo id (`org/name`), not a local path or a `bundled:` source."""
    if not isinstance(value, str) or ":" in value or value.startswith((".", "/", "~")) or value.count("/") != 1:
        return False
    if Path(value).exists():
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubError(f"{path}: not valid JSON ({err}); re-run training or fix the file") from err
    return data if isinstance(data, dict) else {}


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e6):
            return f"{value:.2e}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# plots
def write_plots(output_dir: str | Path, metrics: dict | None = None) -> list[str]:
    """Write `confusion_matrix.png` and `training_curves.png` from metrics.json; returns written names.

    A plot whose data is missing is skipped. The figures are drawn on matplotlib's Agg canvas directly
    (`matplotlib.figure.Figure`, as matplotlib recommends for scripts that only save files): no display is
    needed, `pyplot` is never imported, and a caller's own matplotlib backend is left alone.

    Example:
        >>> write_plots("outputs/fashion")  # doctest: +SKIP
        ['confusion_matrix.png', 'training_curves.png']
    """
    out = Path(output_dir)
    metrics = _read_json(out / METRICS_FILE) if metrics is None else metrics
    written: list[str] = []
    if _plot_confusion(metrics, out / CONFUSION_PNG):
        written.append(CONFUSION_PNG)
    if _plot_curves(metrics, out / CURVES_PNG):
        written.append(CURVES_PNG)
    return written


def _figure(**kwargs: Any) -> Any:
    """A figure on its own Agg canvas (what `pyplot.subplots` would draw on, without pyplot's global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _plot_confusion(metrics: dict[str, Any], path: Path) -> bool:
    matrix = metrics.get("confusion_matrix")
    labels = metrics.get("labels") or []
    if not matrix or not all(isinstance(r, list) for r in matrix):
        return False
    import numpy as np

    cm = np.asarray(matrix, dtype=float)
    n = cm.shape[0]
    names = labels if len(labels) == n else [str(i) for i in range(n)]
    size = min(4 + 0.45 * n, 14)
    fig = _figure(figsize=(size, size * 0.9))
    ax = fig.subplots()
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix, evaluation split\n(counts; colour = share of the true label)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return True


def _plot_curves(metrics: dict[str, Any], path: Path) -> bool:
    epochs = [e for e in metrics.get("epochs") or [] if isinstance(e, dict)]
    if not epochs:
        return False
    xs = [e.get("epoch", i + 1) for i, e in enumerate(epochs)]
    fig = _figure(figsize=(10, 4))
    ax_loss, ax_metric = fig.subplots(1, 2)
    if any(e.get("train_loss") is not None for e in epochs):
        ax_loss.plot(xs, [e.get("train_loss", float("nan")) for e in epochs], "o-", label="train loss")
    if any(e.get("eval_loss") is not None for e in epochs):
        ax_loss.plot(xs, [e.get("eval_loss", float("nan")) for e in epochs], "s-", label="eval loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("loss")
    ax_loss.legend()
    eval_keys = sorted({k for e in epochs for k in e if k.startswith("eval_") and k != "eval_loss"
                        and isinstance(e[k], (int, float))})
    for key in eval_keys:
        ax_metric.plot(xs, [e.get(key, float("nan")) for e in epochs], "o-", label=key[5:])
    best = metrics.get("best_epoch")
    if best is not None:
        ax_metric.axvline(best, color="grey", linestyle="--", label=f"best epoch ({best})")
    ax_metric.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    for axis in (ax_loss, ax_metric):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_metric.set_title("evaluation metrics")
    if eval_keys or best is not None:
        ax_metric.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return True


# ---------------------------------------------------------------------------------------------------
# card content
def _base_model_section(run_info: dict) -> tuple[str | None, str]:
    """(Hub id for the metadata or None, sentence for the text)."""
    base = run_info.get("base_model")
    parent = run_info.get("parent_model")
    revision = run_info.get("base_model_revision")
    rev = f" (revision `{revision}`)" if revision else ""
    if not base:
        text = "The base model was not recorded."
        meta = None
    elif base in _BUNDLED_MODELS:
        text = f"`{base}`: {_BUNDLED_MODELS[base]}"
        meta = None
    elif is_hub_repo_id(base):
        text = f"[`{base}`](https://huggingface.co/{base}){rev}"
        meta = base
    else:
        text = f"`{Path(str(base)).name}` (a local folder, not a Hub repo; so the metadata names no `base_model`)"
        meta = None
    if parent and parent == base:  # training continued from a tl_hub model: its card names the backbone
        if is_hub_repo_id(parent):
            return parent, (f"This model continues training from the tl_hub model [`{parent}`](https://huggingface.co/"
                            f"{parent}){rev} (its parent); the parent's card names the original backbone")
        return None, (f"This model continues training from the tl_hub model in the local folder "
                      f"`{Path(str(parent)).name}` (its parent); that folder's card names the original backbone")
    if parent:
        if is_hub_repo_id(parent):
            text = (f"This model continues training from the tl_hub model [`{parent}`](https://huggingface.co/"
                    f"{parent}) (its parent), itself built on {text}")
            meta = parent
        else:
            text = (f"This model continues training from the tl_hub model in the local folder "
                    f"`{Path(str(parent)).name}` (its parent), built on {text}")
    return meta, text


def _hub_dataset_id(data: dict) -> str | None:
    """The Hub dataset id of a DataReport (source "hub:org/name (config)@rev"), or None."""
    source = str(data.get("source") or "")
    kind = str(data.get("source_type") or data.get("kind") or "")
    if source.startswith("hub:"):
        source = source[4:]
    elif kind != "hub":
        return None
    source = source.split(" (")[0].split("@")[0].strip()
    return source if is_hub_repo_id(source) else None


def _dataset_info(data: dict) -> tuple[str | None, str, str]:
    """(Hub dataset id or None, dataset_type for model-index, human description)."""
    source = data.get("source")
    if not source:
        return None, "imagefolder", "not recorded"
    if source in _BUNDLED_DATASETS:
        hub_id, text = _BUNDLED_DATASETS[source]
        return hub_id, hub_id or "imagefolder", f"`{source}`: {text}"
    hub_id = _hub_dataset_id(data)
    if hub_id:
        return hub_id, hub_id, f"[`{hub_id}`](https://huggingface.co/datasets/{hub_id}) (`{source}`)"
    kind = str(data.get("source_type") or data.get("kind") or "")
    name = source if kind == "in-memory" else Path(str(source)).name
    return None, "imagefolder", f"`{name}` (local data{': ' + kind if kind else ''})"


def _train_first(names: list[str]) -> list[str]:
    order = {"train": 0, "eval": 1, "validation": 2, "test": 3}
    return sorted(names, key=lambda n: (order.get(n, 9), names.index(n)))


def _split_sizes(data: dict) -> list[list[Any]]:
    sizes = data.get("sizes") or data.get("split_sizes") or {}
    rows: list[list[Any]] = []
    if isinstance(sizes, dict):
        for name in _train_first(list(sizes)):
            value = sizes[name]
            rows.append([name, value if not isinstance(value, dict) else value.get("num_examples", "–")])
    return rows


def _examples_per_label(data: dict, labels: list[str]) -> tuple[list[str], list[list[Any]]]:
    per = data.get("per_label") or data.get("examples_per_label") or {}
    if not isinstance(per, dict) or not per:
        return [], []
    if all(isinstance(v, dict) for v in per.values()):  # {split: {label: n}}
        splits = _train_first(list(per))
        names = labels or sorted({k for v in per.values() for k in v})
        return ["label", *splits], [[f"`{n}`", *[per[s].get(n, 0) for s in splits]] for n in names]
    names = labels or list(per)
    return ["label", "examples"], [[f"`{n}`", per.get(n, 0)] for n in names]


def _accounting(data: dict) -> str:
    """One sentence: how many entries the source offered and where each went."""
    found = data.get("entries_found")
    if not isinstance(found, int) or not found:
        return ""
    text = (f"{found:,} entries found: {data.get('used_train', 0):,} for training, {data.get('used_eval', 0):,} "
            f"for evaluation")
    if data.get("used_test"):
        text += f", {data['used_test']:,} held out for the test"
    if data.get("not_selected"):
        options = {k: v for k, v in (data.get("options") or {}).items()
                   if k in ("examples_per_label", "max_train_samples") and v is not None}
        reasons = [f"{k}={v}" for k, v in options.items()]
        left_out = data.get("labels_left_out") or {}
        if left_out:  # rows of labels the recipe's `labels` leaves out
            reasons.append(f"{sum(left_out.values()):,} of labels not in `labels`: "
                           + ", ".join(f"{name} ({count:,})" for name, count in sorted(left_out.items())))
        why = f" ({'; '.join(reasons)})" if reasons else ""
        text += f", {data['not_selected']:,} not selected{why}"
    skipped = data.get("skipped")
    if isinstance(skipped, list) and skipped:
        text += f", {len(skipped):,} skipped"
    return text


def _class_balance(imbalance: Any) -> str:
    """One sentence: how uneven the training labels were and what the run did about it (class weights,
    sampler), from run_info.json's "imbalance" (`tl_hub.imbalance.ImbalancePlan.to_dict`)."""
    if not isinstance(imbalance, dict) or not imbalance.get("reason"):
        return ""
    text = str(imbalance["reason"])
    weights = imbalance.get("class_weights")
    if isinstance(weights, dict) and weights:
        text += " Loss weights: " + ", ".join(f"`{name}` {_fmt(w)}" for name, w in weights.items()) + "."
    return text


def _skipped(data: dict) -> tuple[int, list[list[Any]], dict[str, int]]:
    skipped = data.get("skipped") or []
    rows: list[list[Any]] = []
    reasons: dict[str, int] = {}
    for item in skipped if isinstance(skipped, list) else []:
        if isinstance(item, dict):
            where = item.get("id") or item.get("path") or "?"
            reason = str(item.get("reason") or "?")
        else:
            where, reason = str(item), "?"
        rows.append([f"`{Path(str(where)).name}`", reason])
        key = reason.split(" (")[0].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return len(rows), rows[:20], reasons


def _policy_section(policy: dict) -> dict:
    summary = policy.get("summary") or {}
    rows = []
    for row in summary.get("rows") or []:
        if not isinstance(row, dict):
            continue
        modules = row.get("modules", "")
        if isinstance(modules, list):
            modules = ", ".join(f"`{m}`" for m in modules[:4]) + (f" (+{len(modules) - 4})" if len(modules) > 4 else "")
        trainable = row.get("trainable")
        params = row.get("params")
        if isinstance(trainable, bool):
            state = "trained" if trainable else "frozen"
        elif isinstance(trainable, int) and isinstance(params, int):
            state = "trained" if trainable == params else ("frozen" if trainable == 0 else f"partly ({trainable:,})")
        else:
            state = _fmt(trainable)
        rows.append([row.get("depth", "–"), row.get("kind") or "", modules, params if params is not None else "–",
                     state])
    details = {k: v for k, v in policy.items() if k not in ("name", "reason", "summary") and v not in (None, "")}
    trainable, frozen = summary.get("trainable_params"), summary.get("frozen_params")
    total = trainable + frozen if isinstance(trainable, int) and isinstance(frozen, int) else None
    return {
        "name": policy.get("name"),
        "reason": policy.get("reason") or "",
        "details": ", ".join(f"{k} = {_fmt(v)}" for k, v in details.items()),
        "table": _md_table(["depth", "kind", "modules", "parameters", "state"], rows) if rows else "",
        "frozen_stat_layers": summary.get("frozen_stat_layers"),
        "trainable": _fmt(trainable) if trainable is not None else None,
        "frozen": _fmt(frozen) if frozen is not None else None,
        "share": f"{100 * trainable / total:.1f} %" if total else None,
    }


def _epochs_table(metrics: dict) -> str:
    epochs = [e for e in metrics.get("epochs") or [] if isinstance(e, dict)]
    if not epochs:
        return ""
    preferred = ["epoch", "step", "train_loss", "learning_rate", "images_per_second"]
    keys = [k for k in preferred if any(k in e for e in epochs)]
    keys += sorted({k for e in epochs for k in e if k not in preferred and isinstance(e.get(k), (int, float))})
    best = metrics.get("best_epoch")
    rows = []
    for e in epochs:
        row = [e.get(k) for k in keys]
        if best is not None and e.get("epoch") == best:
            row = [f"**{_fmt(v)}**" for v in row]
            row[0] = f"**{_fmt(e.get('epoch'))} (best)**"
        rows.append(row)
    return _md_table(keys, rows)


def _per_label_table(metrics: dict, labels: list[str]) -> str:
    per = metrics.get("per_label") or {}
    if not isinstance(per, dict) or not per:
        return ""
    names = [n for n in labels if n in per] or list(per)
    rows = [[f"`{n}`", per[n].get("precision"), per[n].get("recall"), per[n].get("f1"), per[n].get("support")]
            for n in names]
    if any("ap" in per[n] for n in names):  # multi-label: each label's average precision too
        rows = [[row[0], per[n].get("ap"), *row[1:]] for row, n in zip(rows, names)]
        return _md_table(["label", "AP", "precision", "recall", "F1", "support"], rows)
    return _md_table(["label", "precision", "recall", "F1", "support"], rows)


def _cli_command(command: Any) -> str | None:
    """The recorded command if it is a command line a user can re-run (not a test runner or notebook)."""
    if not isinstance(command, str) or not command.strip():
        return None
    first = Path(command.split()[0]).name
    runnable = {"tl-hub", "tl_hub", "accelerate", "torchrun", "python", "python3", "finetune.py"}
    return command if first in runnable or first.startswith("python3.") else None


def _eval_text(data: dict, eval_size: Any, chose_best: bool = False) -> str | None:
    """Where the evaluation split (the one that chose the best epoch) came from, and its size."""
    eval_from = data.get("eval_from")
    if not eval_from:
        return None
    text = str(eval_from)
    if isinstance(eval_size, int):
        text += (f" ({eval_size:,} images)" if data.get("eval_split") else
                 f": a carve-out of `{data.get('train_split') or 'train'}` of {eval_size:,} images")
    return text + ("; it chose the best epoch" if chose_best else "")


def _test_section(metrics: dict, labels: list[str]) -> dict[str, Any] | None:
    """The held-out test results (metrics.json's ``test``): split name, size, headline and per-label tables."""
    test = metrics.get("test")
    if not isinstance(test, dict) or not test.get("final"):
        return None
    return {"split": test.get("split") or "test", "size": f"{test['num_examples']:,}" if isinstance(
                test.get("num_examples"), int) else "?",
            "table": _md_table(["metric", "value"], [[_METRIC_NAMES.get(k, k), v] for k, v in test["final"].items()
                                                     if isinstance(v, (int, float))]),
            "per_label_table": _per_label_table(test, labels)}


def _limitations(run_info: dict, metrics: dict, labels: list[str], eval_size: Any) -> list[str]:
    first = (f"It only knows the {len(labels) or 'trained'} labels it was trained on: every image gets one of them, "
             "even an image of something else (there is no 'none of these' class).")
    if metrics.get("problem_type") == "multi_label_classification":
        first = (f"It only knows the {len(labels) or 'trained'} labels it was trained on: an image gets every label "
                 f"whose probability is at least the threshold ({metrics.get('threshold')}), so it may get none, or "
                 "several; the threshold trades precision for recall.")
    notes = [
        first,
        "Accuracy on images unlike the training data (other cameras, backgrounds, resolutions) can be much "
        "lower than the numbers above.",
    ]
    if isinstance(eval_size, int) and eval_size < 500:
        half = 100 * 1.96 * math.sqrt(0.25 / max(eval_size, 1))
        notes.append(f"The evaluation split has only {eval_size} images: scores are uncertain by up to "
                     f"±{half:.1f} points (95 % interval).")
    per = metrics.get("per_label") or {}
    weak = [n for n, v in per.items() if isinstance(v, dict) and isinstance(v.get("support"), int) and v["support"] < 10]
    if weak:
        notes.append(f"Labels with fewer than 10 evaluation images ({', '.join(weak[:8])}) have unreliable "
                     "per-label scores.")
    notes.append("Biases of the base model's pretraining data and of the fine-tuning data carry over.")
    return notes


def _license_note(hub_license: str, base_model: Any) -> str:
    """Where an apache-2.0 license comes from when the base model is a bundled backbone."""
    entry = bundled_backbone(base_model) if isinstance(base_model, str) else None
    if hub_license != "apache-2.0" or entry is None:
        return ""
    return f"the license of the bundled {entry.title} weights"


def _hub_license(run_info: dict, recipe: dict) -> str:
    for value in (run_info.get("license"), recipe.get("license"), recipe.get("hub_license")):
        if isinstance(value, str) and value:
            return value
    if run_info.get("base_model") in _BUNDLED_MODELS:
        return "apache-2.0"
    return "other"


def build_card_inputs(output_dir: str | Path) -> dict[str, Any]:
    """Read what the card needs from an output folder: run_info, metrics, recipe text, config."""
    out = Path(output_dir)
    recipe_text = (out / RECIPE_FILE).read_text(encoding="utf-8") if (out / RECIPE_FILE).is_file() else ""
    recipe: dict = {}
    if recipe_text:
        import yaml

        try:
            loaded = yaml.safe_load(recipe_text)
            recipe = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            recipe = {}
    return {"run_info": _read_json(out / RUN_INFO_FILE), "metrics": _read_json(out / METRICS_FILE),
            "config": _read_json(out / CONFIG_FILE), "recipe_text": recipe_text, "recipe": recipe,
            "leaderboard": read_leaderboard(out / LEADERBOARD_FILE)}


def render_model_card(output_dir: str | Path, *, repo_id: str | None = None, plots: list[str] | None = None):
    """Render the card of an output folder as a `huggingface_hub.ModelCard` (nothing is written).

    Args:
        output_dir: a tl_hub output folder.
        repo_id: the Hub repo the model is (or will be) pushed to; None → the snippets use the folder.
        plots: PNG names present in the folder (default: whichever of the two plots exist).

    Example:
        >>> card = render_model_card("outputs/fashion", repo_id="me/fashion")  # doctest: +SKIP
        >>> card.data.pipeline_tag  # doctest: +SKIP
        'image-classification'
    """
    from huggingface_hub import ModelCard

    out = Path(output_dir)
    inputs = build_card_inputs(out)
    labels = _labels(inputs)
    model_name = repo_id.split("/")[-1] if repo_id else out.resolve().name
    if plots is None:
        plots = [p for p in (CONFUSION_PNG, CURVES_PNG) if (out / p).is_file()]
    card_data = _card_metadata(inputs, model_name)
    ctx = _card_context(inputs, labels, title=repo_id or model_name, model_id=repo_id or str(out), repo_id=repo_id,
                        plots=plots)
    return _with_hash(ModelCard(_render_template(card_data, ctx)))


def _labels(inputs: dict[str, Any]) -> list[str]:
    run_info, metrics, config = inputs["run_info"], inputs["metrics"], inputs["config"]
    labels = list(run_info.get("labels") or metrics.get("labels") or [])
    if not labels and isinstance(config.get("id2label"), dict):
        labels = [config["id2label"][k] for k in sorted(config["id2label"], key=lambda k: int(k))]
    return labels


def _card_metadata(inputs: dict[str, Any], model_name: str) -> Any:
    """The card's YAML metadata as a `ModelCardData`: library, task, base model, dataset, license, tags, and
    the headline metrics as model-index eval results."""
    from huggingface_hub import EvalResult, ModelCardData

    run_info, metrics = inputs["run_info"], inputs["metrics"]
    data, policy = run_info.get("data") or {}, run_info.get("policy") or {}
    # the model-index holds the held-out test results, under the split's real name, when there was a test split
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else None
    final = (test.get("final") if test else metrics.get("final")) or {}
    split = str(test.get("split") or "test") if test else str(data.get("eval_split") or "eval")
    base_meta, _ = _base_model_section(run_info)
    dataset_id, dataset_type, _ = _dataset_info(data)
    dataset_name = str(data.get("name") or dataset_id or Path(str(data.get("source") or dataset_type)).name)
    eval_results = []
    for key in ("map", "f1_micro", "accuracy", "f1_macro", "precision_macro", "recall_macro", "top5_accuracy"):
        value = final.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            eval_results.append(EvalResult(
                task_type="image-classification", task_name="Image Classification",
                dataset_type=dataset_type, dataset_name=dataset_name,
                dataset_split=split, metric_type=_METRIC_IDS[key],
                metric_name=_METRIC_NAMES[key], metric_value=round(float(value), 6),
                metric_args=_metric_args(key, inputs["metrics"]),
            ))
    tags = ["tl-hub", "transfer-learning", "image-classification"]
    if policy.get("name"):
        tags.append(f"policy-{policy['name']}")
    return ModelCardData(
        library_name="transformers", pipeline_tag="image-classification", base_model=base_meta,
        datasets=[dataset_id] if dataset_id else None,
        metrics=sorted({_METRIC_IDS[k] for k in final if k in _METRIC_IDS}) or None,
        license=_hub_license(run_info, inputs["recipe"]), tags=tags, model_name=model_name,
        eval_results=eval_results or None,
    )


def _metric_args(key: str, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The model-index arguments of a headline metric (its averaging, k, a multi-label threshold)."""
    args: dict[str, Any] = {}
    if key.endswith("_macro") or key.endswith("_micro"):
        args["average"] = key.rsplit("_", 1)[1]
    if key == "top5_accuracy":
        args["k"] = 5
    if metrics.get("problem_type") == "multi_label_classification" and key != "map":
        args["threshold"] = metrics.get("threshold")
    return args or None


def _multi_label(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The card's multi-label facts (None for a single-label model)."""
    if metrics.get("problem_type") != "multi_label_classification":
        return None
    return {"threshold": metrics.get("threshold")}


def _card_context(inputs: dict[str, Any], labels: list[str], *, title: str, model_id: str, repo_id: str | None,
                  plots: list[str]) -> dict[str, Any]:
    """Everything the template's body reads (as `tl`): texts and ready-made Markdown tables."""
    run_info, metrics, config = inputs["run_info"], inputs["metrics"], inputs["config"]
    data, policy = run_info.get("data") or {}, run_info.get("policy") or {}
    final = metrics.get("final") or {}
    header, label_rows = _examples_per_label(data, labels)
    n_skipped, skipped_rows, reasons = _skipped(data)
    splits = _split_sizes(data)
    eval_split = data.get("eval_split") or "eval"
    eval_size = next((r[1] for r in splits if r[0] in (eval_split, "eval", "validation", "test")), None)
    test = _test_section(metrics, labels)
    hyper = run_info.get("hyperparameters") or {}
    versions = run_info.get("framework_versions") or {}
    hub_license = _hub_license(run_info, inputs["recipe"])
    return {
        "model_id": model_id,
        "repo_id": repo_id,
        "title": title,
        "labels": labels,
        "label_list": ", ".join(f"`{n}`" for n in labels),
        "base_text": _base_model_section(run_info)[1],
        "architecture": ", ".join(config.get("architectures") or []) or config.get("architecture") or None,
        "parent": run_info.get("parent_model"),
        "policy": _policy_section(policy) if policy else None,
        "dataset_text": _dataset_info(data)[2],
        "eval_from": _eval_text(data, eval_size, chose_best=bool(test)),
        "test": test,
        "selects_on_test": bool(data.get("selects_on_test")),
        "data_notes": [str(n) for n in data.get("notes") or []],
        "accounting": _accounting(data),
        "class_balance": _class_balance(run_info.get("imbalance")),
        "splits_table": _md_table(["split", "images"], splits) if splits else "",
        "labels_table": _md_table(header, label_rows) if label_rows else "",
        "n_skipped": n_skipped,
        "skip_reasons": ", ".join(f"{k} ({v})" for k, v in sorted(reasons.items())),
        "skipped_table": _md_table(["file", "reason"], skipped_rows) if skipped_rows else "",
        "hyper_table": _md_table(["hyperparameter", "value"], [[f"`{k}`", v if not isinstance(v, (list, dict)) else
                                 json.dumps(v)] for k, v in hyper.items()]) if hyper else "",
        "ema_note": _ema_note(run_info.get("regularisers_detail") or {}),
        "run_table": _md_table(["setting", "value"], [[k, run_info[k]] for k in (
            "num_processes", "mixed_precision", "device", "train_runtime_s", "feature_cache_used")
            if run_info.get(k) is not None]),
        "final_table": _md_table(["metric", "value"], [[_metric_name(k, metrics), v] for k, v in final.items()
                                                      if isinstance(v, (int, float))]) if final else "",
        "multi_label": _multi_label(metrics),
        "metric_for_best": metrics.get("metric_for_best_model"),
        "best_epoch": metrics.get("best_epoch"),
        "epochs_table": _epochs_table(metrics),
        "per_label_table": _per_label_table(metrics, labels),
        "confusion_png": CONFUSION_PNG if CONFUSION_PNG in plots else None,
        "curves_png": CURVES_PNG if CURVES_PNG in plots else None,
        "command": _cli_command(run_info.get("command")),
        "recipe_text": inputs["recipe_text"].rstrip(),
        "versions_table": _md_table(["package", "version"], sorted(versions.items())) if versions else "",
        "tl_hub_version": run_info.get("tl_hub_version"),
        "limitations": _limitations(run_info, metrics, labels, eval_size),
        "example_label": labels[0] if labels else "a label",
        "license": hub_license,
        "search": _search_section(run_info.get("search"), inputs.get("leaderboard") or []),
        "license_note": _license_note(hub_license, run_info.get("base_model")),
    }


def _search_section(search: dict | None, rows: list[Any]) -> dict | None:
    """"How this model was chosen": what `tl_hub.search` tried, within which budget, the leaderboard, the plot,
    and the best trial's score on the test split (measured once, after the choice)."""
    if not search:
        return None
    test = search.get("test") or {}
    test_rows = [[_METRIC_NAMES.get(k, k), v] for k, v in test.items() if k in _METRIC_NAMES]
    screen = search.get("screen") or []
    return {
        "summary": (f"{search.get('trials', len(rows))} trial(s) in {float(search.get('spent_s') or 0):.0f} s of a "
                    f"{float(search.get('time_budget_s') or 0):.0f} s budget (stopped: {search.get('stopped', '–')}); "
                    f"sampler {search.get('sampler', 'TPE')}, pruner {search.get('pruner', 'Hyperband')}; every "
                    f"score is `{search.get('metric', 'accuracy')}` on the validation carve-out of the training "
                    f"data; the best is trial {search.get('best_trial')}."
                    + (f" The trial marked \"{AUTO_PICK_NOTE}\" trains what `policy: auto` would (the search's "
                       "baseline, never pruned by score)." if any(AUTO_PICK_NOTE in r.note for r in rows) else "")),
        "screen_table": _md_table(["backbone", "screen score", "images", "seconds"], [
            [s.get("backbone"), s.get("score"), s.get("n_images"), s.get("seconds")] for s in screen]) if screen else "",
        "leaderboard": markdown_table(rows, search.get("metric", "score")) if rows else "",
        "plot": search.get("plot"),
        "test_table": _md_table(["metric", "value"], test_rows) if test_rows else "",
        "test_split": test.get("split"), "test_size": test.get("num_examples"),
    }


def _metric_name(key: str, metrics: dict[str, Any]) -> str:
    if metrics.get("problem_type") == "multi_label_classification" and key in _MULTI_LABEL_NAMES:
        return _MULTI_LABEL_NAMES[key]
    return _METRIC_NAMES.get(key, key)


def _ema_note(detail: dict[str, Any]) -> str:
    """The card's sentence saying the weights are an EMA (run_info's `regularisers_detail.ema_decay`), or ""."""
    decay = detail.get("ema_decay")
    if not decay:
        return ""
    return (f"The weights in this repository are an exponential moving average (decay {decay:g}, one update per "
            "optimizer step) of the trained weights, not the last step's weights; the EMA is what was evaluated "
            "each epoch and kept as the best model.")


def _render_template(card_data, ctx: dict[str, Any]) -> str:
    """Render the Jinja template: metadata YAML from ModelCardData.to_yaml(), body from `ctx` (as `tl`)."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    template = env.from_string(template_path().read_text(encoding="utf-8"))
    text = template.render(card_data=card_data.to_yaml(), tl=ctx)
    return re.sub(r"\n{3,}", "\n\n", text)


def card_hash(card) -> str:
    """Hash of a card's metadata (without the hash key) and body, as tl_hub writes and checks it."""
    data = card.data.to_dict()
    data.pop(CARD_HASH_KEY, None)
    payload = json.dumps(data, sort_keys=True, default=str) + "\n" + card.text.replace("\r\n", "\n")
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _with_hash(card):
    from huggingface_hub import ModelCard

    card = ModelCard(str(card))  # one YAML round trip, so the hash matches what a reader parses
    setattr(card.data, CARD_HASH_KEY, card_hash(card))
    return ModelCard(str(card))


def card_was_edited(content: str) -> bool:
    """True if a README is not a tl_hub card, or a tl_hub card changed after tl_hub wrote it.

    Example:
        >>> card_was_edited("# my notes")
        True
    """
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(content)
    except ValueError:
        return True
    stored = getattr(card.data, CARD_HASH_KEY, None)
    return not (isinstance(stored, str) and re.fullmatch(r"[0-9a-f]{64}", stored) and stored == card_hash(card))


def write_model_card(output_dir: str | Path, *, repo_id: str | None = None) -> Path:
    """Write README.md (the model card) and its PNG plots into a tl_hub output folder.

    Args:
        output_dir: folder with run_info.json / metrics.json / config.json / recipe.yaml.
        repo_id: Hub repo id used in the usage snippets (None: the folder path).

    Returns:
        Path of the written README.md.

    Example:
        >>> write_model_card("outputs/fashion", repo_id="me/fashion-lite0")  # doctest: +SKIP
        PosixPath('outputs/fashion/README.md')
    """
    out = Path(output_dir)
    if not out.is_dir():
        raise HubError(f"output_dir: {out} is not a folder; pass the folder a tl_hub training run wrote")
    plots = write_plots(out)
    card = render_model_card(out, repo_id=repo_id, plots=plots)
    path = out / CARD_FILE
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(str(card), encoding="utf-8")
    tmp.replace(path)
    return path
