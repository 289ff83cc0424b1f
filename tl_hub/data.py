"""`load_data`: any common image source -> train/eval `datasets.Dataset`s, label names and a report.

Sources: a Hub dataset id (``config``, ``split``, ``revision``), an image folder (one subfolder per
class, optionally under ``train/``, ``validation/``, ``test/``), a CSV/JSONL file (image path and
label columns; paths relative to the file), a ``save_to_disk`` folder or parquet file, a
`datasets.Dataset`/`DatasetDict`, in-memory data (``(images, labels)`` or ``{"image": [...],
"label": [...]}`` with PIL images, numpy/torch arrays, paths or bytes), and the bundled offline sets
``bundled:fashion_mnist`` and ``bundled:digits``.

Both splits have the columns ``image`` (``datasets.Image()``), ``label`` (``ClassLabel`` with the
names) and ``id`` (the file path, or ``"<split>[<row>]"``). The report accounts for every input
file/row: used (train/eval), not selected (subsampling), or skipped with the reason.

Example:
    >>> bundle = load_data("bundled:fashion_mnist", examples_per_label=10)
    >>> bundle.labels[:3], len(bundle.train), len(bundle.eval)
    (['T-shirt/top', 'Trouser', 'Pullover'], 100, 2000)
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tl_hub.errors import ConfigError, DataError
from tl_hub.images import check_image
from tl_hub.labels import capped_subset, is_missing, per_label_subset, resolve_labels, stratified_split
from tl_hub.sources import (
    BUNDLED,
    EVAL_SPLIT_ORDER,
    Pool,
    SourceResult,
    is_saved_dataset,
    read_bundled,
    read_hf,
    read_hub,
    read_image_folder,
    read_memory,
    read_saved,
    read_table,
)

__all__ = ["load_data", "DataBundle", "DataReport"]


@dataclass
class DataReport:
    """Everything `load_data` found, decided and skipped; ``to_dict()`` goes into run_info.json.

    ``entries_found = used_train + used_eval + not_selected + skipped`` always holds (see
    `accounted`): every file or row the source offered is in exactly one bucket, and every skipped
    one is listed in ``skipped`` with its reason.

    Example:
        >>> r = DataReport(source="x", source_type="in-memory", labels=["a", "b"])
        >>> r.to_dict()["labels"]
        ['a', 'b']
    """

    source: str
    source_type: str
    labels: list[str]
    image_column: str | None = None
    label_column: str | None = None
    train_split: str = "train"
    eval_split: str | None = None
    eval_from: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    entries_found: int = 0
    used_train: int = 0
    used_eval: int = 0
    not_selected: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    images_checked: int = 0
    bad_images: int = 0
    singleton_labels: list[str] = field(default_factory=list)
    unused_splits: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def accounted(self) -> bool:
        """True when every found entry is used, not selected, or skipped with a reason."""
        return self.entries_found == self.used_train + self.used_eval + self.not_selected + len(self.skipped)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict.

        Example:
            >>> import json
            >>> json.dumps(DataReport(source="x", source_type="csv", labels=[]).to_dict())[:14]
            '{"source": "x"'
        """
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["bad_fraction"] = self.bad_images / self.images_checked if self.images_checked else 0.0
        out["accounted"] = self.accounted
        return out

    def summary(self) -> str:
        """A few human-readable lines (printed by the CLI and put in the model card).

        Example:
            >>> print(DataReport(source="x", source_type="csv", labels=["a"]).summary().splitlines()[0])
            data: x (csv), 1 labels
        """
        lines = [f"data: {self.source} ({self.source_type}), {len(self.labels)} labels"]
        lines.append(
            f"  train: {self.sizes.get('train', 0)} ({self.train_split}); eval: {self.sizes.get('eval', 0)} "
            f"({self.eval_from})"
        )
        lines.append(
            f"  entries found: {self.entries_found} = {self.used_train} train + {self.used_eval} eval + "
            f"{self.not_selected} not selected + {len(self.skipped)} skipped"
        )
        if self.images_checked:
            lines.append(f"  images decoded to check: {self.images_checked}, bad: {self.bad_images}")
        reasons = Counter(item["reason"].split(" (")[0] for item in self.skipped)
        for reason, count in reasons.most_common(8):
            lines.append(f"  skipped {count}: {reason}")
        if self.singleton_labels:
            lines.append(f"  labels with a single example (kept in train only): {self.singleton_labels}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


@dataclass
class DataBundle:
    """What `load_data` returns.

    Example:
        >>> b = load_data("bundled:digits", examples_per_label=5)  # doctest: +SKIP
        >>> b.train.features["label"].names == b.labels  # doctest: +SKIP
        True
    """

    train: Any
    eval: Any
    labels: list[str]
    report: DataReport

    def __repr__(self) -> str:
        return f"DataBundle(train={len(self.train)}, eval={len(self.eval)}, labels={self.labels!r})"


# -- source dispatch --------------------------------------------------------------------------------
def _read(source: Any, *, image_column: str | None, label_column: str | None, config: str | None,
          revision: str | None) -> SourceResult:
    from datasets import Dataset, DatasetDict

    if isinstance(source, DatasetDict):
        return read_hf(dict(source), "DatasetDict", "dataset", image_column, label_column)
    if isinstance(source, Dataset):
        return read_hf({"train": source}, "Dataset", "dataset", image_column, label_column)
    if isinstance(source, tuple) and len(source) == 2:
        return read_memory(source[0], source[1])
    if isinstance(source, Mapping):
        columns = list(source.keys())
        from tl_hub.sources import IMAGE_COLUMN_NAMES, LABEL_COLUMN_NAMES, _pick_column

        img = _pick_column(columns, image_column, IMAGE_COLUMN_NAMES, "image", "in-memory dict")
        lab = _pick_column(columns, label_column, LABEL_COLUMN_NAMES, "label", "in-memory dict")
        result = read_memory(source[img], source[lab])
        result.image_column, result.label_column = img, lab
        return result
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"source: got {type(source).__name__}; give a Hub dataset id, a folder, a CSV/JSONL file, "
            "bundled:fashion_mnist, a datasets.Dataset, (images, labels) or {'image': [...], 'label': [...]}"
        )
    text = os.fspath(source)
    if text.startswith("bundled:"):
        return read_bundled(text)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            if is_saved_dataset(path):
                return read_saved(path, image_column, label_column)
            return read_image_folder(path)
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv", ".jsonl", ".ndjson", ".json"):
            return read_table(path, image_column, label_column)
        if suffix == ".parquet":
            return read_saved(path, image_column, label_column)
        raise DataError(
            f"source {text!r}: a file of type {suffix or '(none)'}; use a .csv, .jsonl or .parquet file or a folder"
        )
    local_suffixes = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".zip")
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or Path(text).suffix.lower() in local_suffixes:
        raise DataError(f"source {text!r}: no such file or folder (and it is not a Hub dataset id like 'org/name')")
    return read_hub(text, config, revision, image_column, label_column)


# -- validation -------------------------------------------------------------------------------------
def _validate(pool: Pool, rows: np.ndarray) -> tuple[set[int], list[dict[str, str]]]:
    """Decode every selected image once; returns bad row numbers and skip entries."""
    from datasets import Image

    if pool.checked or len(rows) == 0:
        return set(), []
    raw = pool.dataset.cast_column("image", Image(decode=False))
    bad: set[int] = set()
    entries: list[dict[str, str]] = []

    def check(args: tuple[int, Any, str]) -> tuple[int, str, str | None]:
        row, value, ident = args
        return row, ident, check_image(value, where=ident)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool_threads:
        for start in range(0, len(rows), 512):
            chunk = [int(r) for r in rows[start : start + 512]]
            batch = raw.select(chunk)
            items = zip(chunk, batch["image"], batch["id"])
            for row, ident, reason in pool_threads.map(check, items):
                if reason is not None:
                    bad.add(row)
                    entries.append({"id": ident, "reason": reason, "kind": "bad_image"})
    return bad, entries


def _validate_train(
    pool: Pool, selected: np.ndarray, available: np.ndarray, codes: np.ndarray, seed: int
) -> tuple[np.ndarray, set[int], list[dict[str, str]]]:
    """Validate the selected training rows; when a subset was drawn, replace each bad row by a good,
    not-yet-selected row of the same label (seeded), so subset sizes stay what was asked for."""
    bad, entries = _validate(pool, selected)
    good = [int(r) for r in selected if int(r) not in bad]
    if not bad or len(selected) == len(available):
        return np.array(good, dtype=np.int64), bad, entries
    rng = np.random.default_rng(seed + 1)
    spare = np.setdiff1d(available, selected)
    spare = spare[rng.permutation(len(spare))]
    queues = {int(c): [int(r) for r in spare[codes[spare] == c]] for c in np.unique(codes[spare])}
    deficit = Counter(int(codes[r]) for r in bad)
    while deficit:
        batch = []
        for code, need in list(deficit.items()):
            queue = queues.get(code, [])
            take, queues[code] = queue[:need], queue[need:]
            batch += take
            if not take:
                del deficit[code]
        if not batch:
            break
        new_bad, new_entries = _validate(pool, np.array(batch, dtype=np.int64))
        bad |= new_bad
        entries += new_entries
        for row in batch:
            if row not in new_bad:
                good.append(row)
                deficit[int(codes[row])] -= 1
        deficit = Counter({c: n for c, n in deficit.items() if n > 0})
    return np.array(sorted(good), dtype=np.int64), bad, entries


def _finish(pool: Pool, rows: np.ndarray, codes: np.ndarray, names: list[str]) -> Any:
    from datasets import ClassLabel

    ds = pool.dataset.select([int(r) for r in rows]) if len(rows) != len(pool.dataset) else pool.dataset
    ds = ds.add_column("label", [int(c) for c in codes[rows]], feature=ClassLabel(names=list(names)))
    return ds.select_columns(["image", "label", "id"])


def _counts(codes: np.ndarray, rows: np.ndarray, names: list[str]) -> dict[str, int]:
    found = Counter(int(c) for c in codes[rows])
    return {name: found.get(i, 0) for i, name in enumerate(names)}


def _check_options(eval_fraction: float, on_bad_image: str, max_bad_fraction: float,
                   max_train_samples: int | None, examples_per_label: int | None) -> None:
    if not 0.0 < float(eval_fraction) < 1.0:
        raise ConfigError(f"eval_fraction: got {eval_fraction!r}; use a number between 0 and 1, e.g. 0.2")
    if on_bad_image not in ("skip", "error"):
        raise ConfigError(f"on_bad_image: got {on_bad_image!r}; use 'skip' or 'error'")
    if not 0.0 <= float(max_bad_fraction) <= 1.0:
        raise ConfigError(f"max_bad_fraction: got {max_bad_fraction!r}; use a fraction between 0 and 1, e.g. 0.01")
    for name, value in (("max_train_samples", max_train_samples), ("examples_per_label", examples_per_label)):
        if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{name}: got {value!r}; use a positive integer or None")


def _pick_eval_split(pools: dict[str, Pool], train_split: str, eval_split: str | None, source: str) -> str | None:
    if eval_split is not None:
        if eval_split not in pools:
            raise DataError(f"eval_split: got {eval_split!r}, but {source} has splits {sorted(pools)}")
        if eval_split == train_split:
            raise ConfigError(f"eval_split: got {eval_split!r}, the same as the training split; pick another split")
        return eval_split
    for name in EVAL_SPLIT_ORDER:  # the first labelled validation/test split (Hub test splits are often -1)
        if name in pools and name != train_split and any(not is_missing(t) for t in pools[name].targets):
            return name
    return None


def load_data(
    source: Any,
    *,
    labels: Sequence[str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    config: str | None = None,
    split: str | None = None,
    eval_split: str | None = None,
    revision: str | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
    max_train_samples: int | None = None,
    examples_per_label: int | None = None,
    on_bad_image: str = "skip",
    max_bad_fraction: float = 0.01,
) -> DataBundle:
    """Load, label, split and check an image-classification dataset from any common source.

    Args:
        source: Hub id, folder, CSV/JSONL/parquet file, saved dataset folder, ``bundled:fashion_mnist``,
            ``bundled:digits``, a `datasets.Dataset`/`DatasetDict`, ``(images, labels)`` or a dict of lists.
        labels: label names in class-id order. Default: the ClassLabel names, else the sorted names
            found, else ``"0".."K-1"`` for integer labels (integers keep their meaning).
        image_column, label_column: column names (detected when None).
        config, revision: Hub dataset config and revision.
        split: the training split (default ``"train"``, or the only split).
        eval_split: the eval split; default: the source's validation/test split, else a stratified
            ``eval_fraction`` split of train with ``seed`` (singleton labels stay in train).
        max_train_samples: stratified random cap on training examples (every label kept).
        examples_per_label: class-balanced training subset (seeded).
        on_bad_image: ``"skip"`` (report and drop) or ``"error"``; more than ``max_bad_fraction`` bad
            images is an error either way.

    Raises:
        DataError: unreadable source, unknown labels, empty labels, eval labels unseen in train,
            too many bad images. ConfigError: invalid options.

    Example:
        >>> import numpy as np
        >>> images = [np.full((8, 8), v, np.uint8) for v in range(20)]
        >>> bundle = load_data((images, ["dark"] * 10 + ["light"] * 10), eval_fraction=0.2)
        >>> bundle.labels, len(bundle.train), len(bundle.eval)
        (['dark', 'light'], 16, 4)
    """
    import datasets

    _check_options(eval_fraction, on_bad_image, max_bad_fraction, max_train_samples, examples_per_label)
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        return _load(source, labels=labels, image_column=image_column, label_column=label_column, config=config,
                     split=split, eval_split=eval_split, revision=revision, eval_fraction=eval_fraction, seed=seed,
                     max_train_samples=max_train_samples, examples_per_label=examples_per_label,
                     on_bad_image=on_bad_image, max_bad_fraction=max_bad_fraction)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _load(source: Any, *, labels: Sequence[str] | None, image_column: str | None, label_column: str | None,
          config: str | None, split: str | None, eval_split: str | None, revision: str | None,
          eval_fraction: float, seed: int, max_train_samples: int | None, examples_per_label: int | None,
          on_bad_image: str, max_bad_fraction: float) -> DataBundle:
    result = _read(source, image_column=image_column, label_column=label_column, config=config, revision=revision)
    pools = result.pools
    if split is None:
        split = "train" if "train" in pools else (next(iter(pools)) if len(pools) == 1 else None)
        if split is None:
            raise DataError(
                f"split: {result.description} has splits {sorted(pools)} and none is 'train'; pass split=..."
            )
    elif split not in pools:
        raise DataError(f"split: got {split!r}, but {result.description} has splits {sorted(pools)}")
    if not pools[split].targets:
        reasons = Counter(item["reason"].split(" (")[0] for item in result.skipped).most_common(3)
        raise DataError(
            f"{result.description}: found no images to train on in split {split!r}"
            + (f" ({len(result.skipped)} entries skipped: {reasons})" if result.skipped else "")
            + "; expected <root>/<label>/<image> folders, a CSV/JSONL with image and label columns, or a dataset "
            "with an image and a label column"
        )
    eval_name = _pick_eval_split(pools, split, eval_split, result.description)
    used = {split: pools[split]} | ({eval_name: pools[eval_name]} if eval_name else {})
    names, codes = resolve_labels(used, labels, result.declared_labels)

    report = DataReport(
        source=result.description, source_type=result.source_type, labels=names,
        image_column=result.image_column, label_column=result.label_column, train_split=split,
        options={"eval_fraction": eval_fraction, "seed": seed, "max_train_samples": max_train_samples,
                 "examples_per_label": examples_per_label, "on_bad_image": on_bad_image,
                 "max_bad_fraction": max_bad_fraction, "labels": list(labels) if labels else None},
        notes=list(result.notes),
    )
    report.unused_splits = {k: len(p.targets) for k, p in pools.items() if k not in used}
    report.skipped = list(result.skipped)
    report.entries_found = len(result.skipped) + sum(len(p.targets) for p in used.values())

    train_codes = codes[split]
    for pool_name, pool_codes in codes.items():
        unlabelled = np.flatnonzero(pool_codes < 0)
        if len(unlabelled):
            ids = used[pool_name].dataset.select_columns(["id"]).select(unlabelled.tolist())["id"]
            report.skipped.extend({"id": str(i), "reason": "no label", "kind": "no_label"} for i in ids)
    labelled = np.flatnonzero(train_codes >= 0)
    if eval_name:
        train_rows = labelled
        eval_rows = np.flatnonzero(codes[eval_name] >= 0)
        report.eval_split, report.eval_from = eval_name, f"the dataset's own {eval_name!r} split"
    else:
        train_rows, eval_rows, singletons = stratified_split(train_codes, labelled, eval_fraction, seed)
        report.eval_from = f"stratified {eval_fraction:g} split of {split!r} (seed {seed})"
        report.singleton_labels = [names[c] for c in singletons]
        if singletons:
            report.notes.append(
                f"{len(singletons)} label(s) have a single example; kept in train, absent from eval: "
                f"{report.singleton_labels}"
            )
    available = train_rows
    if examples_per_label is not None:
        train_rows = per_label_subset(train_rows, train_codes, int(examples_per_label), seed)
        present, counts = np.unique(train_codes[train_rows], return_counts=True)
        short = {names[c]: int(n) for c, n in zip(present, counts) if n < examples_per_label}
        if short:
            report.notes.append(f"examples_per_label={examples_per_label}: fewer available for {short}")
    if max_train_samples is not None and len(train_rows) > max_train_samples:
        train_rows = capped_subset(train_rows, train_codes, int(max_train_samples), seed)

    eval_pool = used[eval_name] if eval_name else used[split]
    eval_codes = codes[eval_name] if eval_name else train_codes
    train_rows, bad_train, bad_train_entries = _validate_train(used[split], train_rows, available, train_codes, seed)
    bad_eval, bad_eval_entries = _validate(eval_pool, eval_rows)
    eval_rows = np.array([r for r in eval_rows if int(r) not in bad_eval], dtype=np.int64)
    report.not_selected = len(available) - len(train_rows) - len(bad_train)
    checked = (0 if used[split].checked else len(train_rows) + len(bad_train))
    checked += 0 if eval_pool.checked else len(eval_rows) + len(bad_eval)
    missing = sum(1 for s in result.skipped if s["kind"] == "bad_image")
    report.images_checked = checked + missing
    report.bad_images = len(bad_train) + len(bad_eval) + missing
    report.skipped.extend(bad_train_entries + bad_eval_entries)
    _bad_image_policy(report, on_bad_image, max_bad_fraction)

    report.per_label = {"train": _counts(train_codes, train_rows, names), "eval": _counts(eval_codes, eval_rows, names)}
    unseen = [name for name in names if report.per_label["eval"][name] and not report.per_label["train"][name]]
    if unseen:
        raise DataError(
            f"eval split {report.eval_split!r} has labels that the training split {split!r} does not: {unseen}; "
            "add training images for them or drop them from the eval split"
        )
    empty = [name for name, n in report.per_label["train"].items() if n == 0]
    if empty:
        raise DataError(
            f"labels {empty} have no training images in {result.description}"
            + (" (some images were bad)" if report.bad_images else "")
            + "; add images for them, remove their folders, or pass labels= without them"
        )
    if len(eval_rows) == 0:
        raise DataError(
            f"no eval images: {result.description} has {len(train_rows)} usable training images and none could "
            "be held out; add images (at least 2 for some label) or give an eval split"
        )
    train = _finish(used[split], train_rows, train_codes, names)
    evaluation = _finish(eval_pool, eval_rows, eval_codes, names)
    report.sizes = {"train": len(train), "eval": len(evaluation)}
    report.used_train, report.used_eval = len(train), len(evaluation)
    return DataBundle(train=train, eval=evaluation, labels=names, report=report)


def _bad_image_policy(report: DataReport, on_bad_image: str, max_bad_fraction: float) -> None:
    if not report.bad_images:
        return
    bad = [s for s in report.skipped if s["kind"] == "bad_image"]
    listing = "; ".join(f"{s['id']}: {s['reason']}" for s in bad[:10]) + (" ..." if len(bad) > 10 else "")
    fraction = report.bad_images / max(1, report.images_checked)
    if on_bad_image == "error":
        raise DataError(
            f"{report.bad_images} bad image(s) with on_bad_image='error': {listing}; fix or remove them, "
            "or use on_bad_image='skip'"
        )
    if fraction > max_bad_fraction:
        raise DataError(
            f"{report.bad_images} of {report.images_checked} images are bad ({fraction:.1%} > max_bad_fraction="
            f"{max_bad_fraction:g}): {listing}; fix or remove them, or raise max_bad_fraction"
        )
    report.notes.append(f"skipped {report.bad_images} bad image(s) ({fraction:.2%})")
