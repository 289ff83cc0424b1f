"""Evaluate a fine-tuned classifier (a local folder or a Hub repo) on any dataset `load_data` reads.

`evaluate_model` loads the model (safetensors only, `tl_hub.load`), reads the dataset, checks that its
label names are the model's (a dataset label the model does not know is an error naming both lists;
labels the data lacks are fine), runs the model's own eval transform over the chosen images and writes
into `output_dir` what training writes about its evaluation: `metrics.json` (headline metrics, per-label
precision/recall/F1/support, the confusion matrix), `confusion_matrix.png` and `evaluation.md` (a table
a person reads). Which images: `split` when given; else the dataset's own validation split when it has one,
else its test split; else every image.

Example:
    >>> result = evaluate_model("tl_hub_output/quickstart", "bundled:fashion_mnist",
    ...                         output_dir="tl_hub_eval/quickstart")  # doctest: +SKIP
    >>> round(result.metrics["accuracy"], 4)  # doctest: +SKIP
    0.817
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tl_hub.data.multilabel import MULTI_LABEL, check_label_separator
from tl_hub.errors import ConfigError, DataError

__all__ = ["EVALUATION_FILE", "EvaluationResult", "evaluate_model", "label_mapping"]

#: the human-readable summary an evaluation writes beside metrics.json and confusion_matrix.png
EVALUATION_FILE = "evaluation.md"
_WRITES = ("metrics.json", "confusion_matrix.png", EVALUATION_FILE)


@dataclass
class EvaluationResult:
    """What `evaluate_model` measured and where it wrote it."""

    output_dir: str
    metrics: dict[str, Any]
    num_examples: int
    split: str
    labels: list[str]


def label_mapping(data_labels: list[str], model_labels: list[str], *, model: str, dataset: str) -> list[int]:
    """For each dataset label id, the model's id of the same name; a dataset label the model lacks is a
    DataError naming both lists.

    Example:
        >>> label_mapping(["cat", "dog"], ["dog", "cat", "bird"], model="m", dataset="d")
        [1, 0]
        >>> label_mapping(["cat", "fox"], ["dog", "cat"], model="m", dataset="d")
        Traceback (most recent call last):
        ...
        tl_hub.errors.DataError: dataset 'd' has labels the model 'm' does not know: ['fox']. ...
    """
    unknown = [name for name in data_labels if name not in model_labels]
    if unknown:
        raise DataError(f"dataset {dataset!r} has labels the model {model!r} does not know: {unknown}. The model's "
                        f"labels: {model_labels}. Evaluate on data labelled with the model's names (a folder per "
                        "label, or a label column), or rename the folders")
    return [model_labels.index(name) for name in data_labels]


def evaluate_model(model: str | Path, dataset: Any, *, output_dir: str | Path, split: str | None = None,
                   revision: str | None = None, batch_size: int = 64, num_workers: int = 0,
                   image_column: str | None = None, label_column: str | None = None,
                   overwrite: bool = False, progress: bool = True,
                   label_separator: str | None = None) -> EvaluationResult:
    """Evaluate `model` on `dataset`; write metrics.json, confusion_matrix.png and evaluation.md. `progress`:
    a progress bar over the batches (tqdm; also off with TQDM_DISABLE=1).

    A multi-label model (``problem_type: multi_label_classification``) reads label lists (``label_separator``
    splits CSV cells) and reports mAP, micro/macro F1 at its ``multi_label_threshold`` and each label's AP
    (no confusion matrix).

    Example:
        >>> evaluate_model("me/fashion-lite0", "my_test_images", output_dir="eval").metrics["accuracy"]  # doctest: +SKIP
        0.91
    """
    from tl_hub.hub import load
    from tl_hub.metrics import metrics_report

    label_separator = check_label_separator(label_separator)
    out = _prepare_output(Path(output_dir).expanduser(), overwrite)
    network, processor = load(model, revision=revision)
    model_labels = [str(network.config.id2label[i]) for i in range(network.config.num_labels)]
    multi = getattr(network.config, "problem_type", None) == MULTI_LABEL
    rows, split_name, data_labels = _rows(dataset, split, image_column, label_column, MULTI_LABEL if multi else None,
                                          label_separator)
    mapping = label_mapping(data_labels, model_labels, model=str(model), dataset=str(dataset))
    logits, references = _predict(network, processor, rows, batch_size, num_workers, progress, multi)
    if multi:  # multi-hot rows in the dataset's label order -> the model's
        from tl_hub.metrics.multilabel import compute_multilabel_metrics

        threshold = float(getattr(network.config, "multi_label_threshold", 0.5))
        ordered = np.zeros((len(references), len(model_labels)), dtype=np.float32)
        ordered[:, mapping] = references
        metrics = compute_multilabel_metrics(logits, ordered, model_labels, threshold=threshold)
    else:
        metrics = _metrics([mapping[int(i)] for i in references], logits, model_labels)
    doc = {"evaluation": True, "model": str(model), "revision": revision, "dataset": str(dataset), "split": split_name,
           "num_examples": len(references), **metrics_report(metrics), "labels": model_labels}
    if multi:  # no confusion matrix for label sets
        doc.pop("confusion_matrix", None)
        doc.update(problem_type=MULTI_LABEL, threshold=threshold)
    _write(out, doc)
    return EvaluationResult(str(out), metrics, len(references), split_name, model_labels)


def _prepare_output(out: Path, overwrite: bool) -> Path:
    """A folder that is new, empty, holds an earlier evaluation, or may be overwritten (`overwrite`)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir: {str(out)!r} is a file; give a folder for the evaluation")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        earlier = out / "metrics.json"
        mine = earlier.is_file() and json.loads(earlier.read_text() or "{}").get("evaluation") is True
        others = [p.name for p in out.iterdir() if p.name not in _WRITES]
        if not mine or others:
            raise ConfigError(f"output_dir: {str(out)!r} holds other files ({sorted(p.name for p in out.iterdir())[:5]}); "
                              "give an empty or new folder, or pass --overwrite to write tl_hub's files there")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _rows(dataset: Any, split: str | None, image_column: str | None, label_column: str | None,
          problem_type: str | None = None, label_separator: str | None = None) -> tuple[Any, str, list[str]]:
    """The images to evaluate, the name of what they are, and the dataset's label names (a multi-label model
    reads label lists: `problem_type`)."""
    from datasets import concatenate_datasets

    from tl_hub.data import load_data

    data = load_data(dataset, eval_split=split, test_split="none" if split is not None else None,
                     image_column=image_column, label_column=label_column, on_bad_image="skip",
                     problem_type=problem_type or "auto", label_separator=label_separator)
    if split is not None or data.report.eval_split is not None:  # set only for the dataset's own eval split
        return data.eval, str(data.report.eval_split or split), list(data.labels)
    if data.test is not None:  # no validation split: its test split (the eval rows are then a carve-out of train)
        return data.test, str(data.report.test_split), list(data.labels)
    return concatenate_datasets([data.train, data.eval]), "all images", list(data.labels)


def _predict(network: Any, processor: Any, rows: Any, batch_size: int, num_workers: int,
             progress: bool, multi: bool = False) -> tuple[Any, Any]:
    """Logits and the dataset's label ids of every row, through the model's own eval transform."""
    import torch

    from tl_hub.data.dataset import ImageClassificationDataset
    from tl_hub.data.transforms import image_spec
    from tl_hub.hardware import make_accelerator
    from tl_hub.train import evaluate

    accelerator = make_accelerator("no")
    items = ImageClassificationDataset(rows, image_spec(processor), train=False, cache=False)
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, num_workers=num_workers,
                                         pin_memory=torch.cuda.is_available())
    from tl_hub.loss import LossSpec

    loss = LossSpec(problem_type=MULTI_LABEL) if multi else None
    output = evaluate(network.to(accelerator.device), loader, accelerator, dataset=items, loss_spec=loss,
                      progress=progress)
    return output.logits, output.labels


def _metrics(references: list[int], logits: Any, labels: list[str]) -> dict[str, Any]:
    from tl_hub.metrics import compute_metrics

    return compute_metrics(None, references, labels, logits=logits)


def _write(out: Path, doc: dict[str, Any]) -> None:
    from tl_hub.card import write_plots
    from tl_hub.checkpoint import atomic_write_json

    atomic_write_json(out / "metrics.json", doc)
    write_plots(out, doc)
    multi = doc.get("problem_type") == MULTI_LABEL
    ap = lambda v: f" {v['ap']:.4f} |" if v.get("ap") is not None else " - |"  # noqa: E731
    rows = [f"| `{name}` |{ap(v) if multi else ''} {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | "
            f"{v['support']} |" for name, v in doc["per_label"].items()]
    headline = ", ".join(f"{k} {v:.4f}" for k, v in doc["final"].items() if isinstance(v, float))
    header = ["| label | AP | precision | recall | F1 | support |", "|---|---|---|---|---|---|"] if multi else [
        "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    extra = [f"Multi-label: a label is predicted at probability >= {doc['threshold']}; AP is threshold-free.", ""] \
        if multi else []
    figure = [] if multi else ["![confusion matrix](confusion_matrix.png)", ""]
    text = [f"# Evaluation of `{doc['model']}`", "", f"Dataset `{doc['dataset']}`, {doc['split']}: "
            f"{doc['num_examples']:,} images.", "", headline, "", *extra, *header, *rows, "", *figure]
    (out / EVALUATION_FILE).write_text("\n".join(text), encoding="utf-8")
