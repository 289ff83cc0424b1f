"""Readers that turn every kind of image source into *pools*: one per split, with raw labels.

A pool is a `datasets.Dataset` with an ``image`` column (``datasets.Image()``) and an ``id`` column,
plus the raw label of every row (strings, integers, or ClassLabel codes with their names).
`tl_hub.data.load_data` resolves labels, splits and validates; this module only *finds* things and
records every file it will not use, with the reason.

Example:
    >>> import numpy as np
    >>> result = read_memory([np.zeros((4, 4), np.uint8)] * 2, ["cat", "dog"])
    >>> result.pools["train"].targets, result.pools["train"].dataset.column_names
    (['cat', 'dog'], ['image', 'id'])
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tl_hub.config_parsing import closest
from tl_hub.errors import DataError
from tl_hub.locations import local_hint, locate
from tl_hub.data.images import BadImageError, array_to_pil, encode_png, image_extensions, is_hidden, to_rgb
from tl_hub.data.multilabel import is_list_label, is_multi_label_feature, label_names_of, split_cell

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "eval": "validation",
    "evaluation": "validation",
    "test": "test",
    "testing": "test",
}
#: validation-like split names, in the order `load_data` picks the eval split (best epoch, early stopping)
VALIDATION_SPLIT_ORDER = ("validation", "valid", "val", "dev", "eval", "evaluation")
#: test-like split names, in the order `load_data` picks the held-out test split (evaluated once, at the end)
TEST_SPLIT_ORDER = ("test", "testing")
EVAL_SPLIT_ORDER = VALIDATION_SPLIT_ORDER + TEST_SPLIT_ORDER
IMAGE_COLUMN_NAMES = (
    "image", "img", "images", "image_path", "path", "file", "filename", "file_name", "filepath", "file_path",
)
#: a CSV/JSONL column of this name (any case) puts each row in the split its value names (`SPLIT_ALIASES`)
SPLIT_COLUMN = "split"
LABEL_COLUMN_NAMES = ("label", "labels", "class", "category", "target", "class_name", "y", "fine_label")


@dataclass
class Pool:
    """One split of a source before labels are resolved.

    Attributes:
        name: split name ("train", "validation", "test", ...).
        dataset: `datasets.Dataset` with columns ``image`` and ``id``.
        targets: raw label per row (str, int, or ClassLabel code); None = unlabelled.
        label_names: ClassLabel names when the source has them.
        checked: rows already decoded successfully (in-memory arrays); the rest are validated later.
    """

    name: str
    dataset: Any
    targets: list[Any]
    label_names: list[str] | None = None
    checked: bool = False


@dataclass
class SourceResult:
    """What a reader found: pools by split name, files it skipped (with reasons), counts."""

    source_type: str
    description: str
    pools: dict[str, Pool]
    skipped: list[dict[str, str]] = field(default_factory=list)
    image_column: str | None = None
    label_column: str | None = None
    notes: list[str] = field(default_factory=list)
    declared_labels: list[str] = field(default_factory=list)  # label names implied by structure (class folders)


def _features() -> Any:
    from datasets import Features, Image, Value

    return Features({"image": Image(), "id": Value("string")})


def _file_pool(name: str, paths: list[str], targets: list[Any], ids: list[str] | None = None) -> Pool:
    from datasets import Dataset

    ds = Dataset.from_dict({"image": paths, "id": ids if ids is not None else paths}, features=_features())
    return Pool(name, ds, list(targets))


# -- which reader -----------------------------------------------------------------------------------
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")


def read_source(source: Any, *, image_column: str | None = None, label_column: str | None = None,
                config: str | None = None, revision: str | None = None,
                label_separator: str | None = None) -> SourceResult:
    """Read any supported source with the reader its kind calls for.

    Kinds, checked in this order: a `datasets.DatasetDict`/`Dataset`, ``(images, labels)``, a dict of
    columns, then a name classified by `tl_hub.locations.locate` before any network call: ``bundled:<name>``,
    an existing folder (saved dataset or image folder) or file (CSV, TSV, JSONL, JSON, parquet), something
    path-shaped that does not exist (an error naming the closest existing name), else a Hub dataset id
    (an error at once when the Hub is off or out of reach and the dataset is not cached).
    ``label_separator`` splits the label cells of a CSV/TSV file into label lists (multi-label).

    Example:
        >>> import numpy as np
        >>> read_source({"img": [np.zeros((4, 4), np.uint8)] * 2, "y": ["a", "b"]}).image_column
        'img'
    """
    from datasets import Dataset, DatasetDict

    if isinstance(source, DatasetDict):
        return read_hf(dict(source), "DatasetDict", "dataset", image_column, label_column)
    if isinstance(source, Dataset):
        return read_hf({"train": source}, "Dataset", "dataset", image_column, label_column)
    if isinstance(source, tuple) and len(source) == 2:
        return read_memory(source[0], source[1])
    if isinstance(source, Mapping):
        columns = list(source.keys())
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
    location = locate(source, "dataset", revision=revision)
    if location.kind == "bundled":
        return read_bundled(location.source)
    if location.kind == "local":
        return _read_local(location.path, location.source, image_column, label_column, label_separator)
    return read_hub(location.source, config, revision, image_column, label_column)


def _read_local(path: Path, text: str, image_column: str | None, label_column: str | None,
                label_separator: str | None = None) -> SourceResult:
    if path.is_dir():
        if is_saved_dataset(path):
            return read_saved(path, image_column, label_column)
        return read_image_folder(path)
    suffix = path.suffix.lower()
    if suffix in _TABLE_SUFFIXES:
        return read_table(path, image_column, label_column, label_separator)
    if suffix == ".parquet":
        return read_saved(path, image_column, label_column)
    raise DataError(
        f"source {text!r}: a file of type {suffix or '(none)'}; use a .csv, .jsonl or .parquet file or a folder"
    )


# -- image folders ----------------------------------------------------------------------------------
def _walk(directory: Path, skipped: list[dict[str, str]], extensions: frozenset[str]) -> list[Path]:
    """Image files under `directory` (recursive, sorted); hidden/non-image entries go to `skipped`."""
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        root_path = Path(root)
        for hidden in sorted(d for d in dirs if is_hidden(d)):
            _walk_hidden_dir(root_path / hidden, skipped)
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in sorted(files):
            path = root_path / name
            if is_hidden(name):
                skipped.append({"id": str(path), "reason": "hidden file", "kind": "ignored"})
            elif path.suffix.lower() not in extensions:
                reason = f"not an image file (extension {path.suffix or 'none'!r})"
                skipped.append({"id": str(path), "reason": reason, "kind": "ignored"})
            else:
                found.append(path)
    return found


def _class_dirs(directory: Path, skipped: list[dict[str, str]]) -> list[str]:
    """Class folder names directly inside `directory`; loose and hidden entries go to `skipped`."""
    classes = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.is_dir() and not is_hidden(entry.name):
            classes.append(entry.name)
        elif entry.is_dir():
            _walk_hidden_dir(entry, skipped)
        elif is_hidden(entry.name):
            skipped.append({"id": str(entry), "reason": "hidden file", "kind": "ignored"})
        else:
            skipped.append(
                {"id": str(entry), "reason": "not inside a class folder (put it in <root>/<label>/)", "kind": "ignored"}
            )
    return classes


def _walk_hidden_dir(directory: Path, skipped: list[dict[str, str]]) -> None:
    for sub_root, _, sub_files in os.walk(directory):
        for name in sorted(sub_files):
            reason = f"inside hidden folder {directory.name!r}"
            skipped.append({"id": str(Path(sub_root) / name), "reason": reason, "kind": "ignored"})


def _class_folder_pool(name: str, directory: Path, skipped: list[dict[str, str]]) -> tuple[Pool, list[str]]:
    extensions = image_extensions()
    classes = _class_dirs(directory, skipped)
    paths: list[str] = []
    targets: list[str] = []
    for cls in classes:
        for path in _walk(directory / cls, skipped, extensions):
            paths.append(str(path))
            targets.append(cls)
    return _file_pool(name, paths, targets), classes


def read_image_folder(root: Path) -> SourceResult:
    """``root/<label>/*.jpg`` or ``root/{train,validation,test}/<label>/*.jpg`` (any depth below a label).

    Example:
        >>> read_image_folder(Path("photos")).pools["train"].targets[:2]  # doctest: +SKIP
        ['cat', 'cat']
    """
    skipped: list[dict[str, str]] = []
    subdirs = [p.name for p in sorted(root.iterdir()) if p.is_dir() and not is_hidden(p.name)]
    split_dirs = {d: SPLIT_ALIASES[d.lower()] for d in subdirs if d.lower() in SPLIT_ALIASES}
    pools: dict[str, Pool] = {}
    notes: list[str] = []
    folder_classes: dict[str, list[str]] = {}
    if subdirs and len(split_dirs) == len(subdirs) and "train" in split_dirs.values():
        for entry in sorted(root.iterdir(), key=lambda p: p.name):
            if entry.is_dir() and entry.name in split_dirs:
                continue
            if entry.is_dir():
                _walk_hidden_dir(entry, skipped)
            else:
                reason = "hidden file" if is_hidden(entry.name) else "not inside a split/class folder"
                skipped.append({"id": str(entry), "reason": reason, "kind": "ignored"})
        for folder, split in sorted(split_dirs.items()):
            if split in pools:
                raise DataError(
                    f"{root}: folders {sorted(k for k, v in split_dirs.items() if v == split)} both mean the "
                    f"{split!r} split; keep one of them"
                )
            pools[split], folder_classes[split] = _class_folder_pool(split, root / folder, skipped)
        notes.append(f"split folders: {', '.join(f'{k}/ -> {v}' for k, v in sorted(split_dirs.items()))}")
    else:
        if split_dirs and "train" not in split_dirs.values() and len(split_dirs) == len(subdirs):
            raise DataError(
                f"{root}: has split folders {sorted(split_dirs)} but no train/ folder; add train/<label>/... "
                "or put the class folders directly under the root"
            )
        pools["train"], folder_classes["train"] = _class_folder_pool("train", root, skipped)
    declared = sorted({c for classes in folder_classes.values() for c in classes})
    return SourceResult("imagefolder", str(root), pools, skipped, notes=notes, declared_labels=declared)


# -- CSV / JSONL ------------------------------------------------------------------------------------
def _pick_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, where: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{where}: {what} column {wanted!r} not found; columns are {list(columns)}")
        return wanted
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    option = "image_column" if what == "image" else "label_column"
    raise DataError(
        f"{where}: cannot tell which column holds the {what}; columns are {list(columns)}; pass {option}=..."
    )


def _int_like(values: list[Any]) -> bool:
    present = [v for v in values if v not in (None, "")]
    if not present:
        return False
    try:
        return all(str(int(str(v).strip())) == str(v).strip() for v in present)
    except ValueError:
        return False


def read_table(path: Path, image_column: str | None, label_column: str | None,
               label_separator: str | None = None) -> SourceResult:
    """A CSV or JSONL file with one row per image: an image path column and a label column.

    Relative paths are resolved against the file's folder. Integer-looking labels are integers.
    Multi-label rows: a JSON list in a JSONL file (``"labels": ["cat", "dog"]``), or a CSV/TSV cell split
    by ``label_separator`` (``cat|dog``); an empty list is an error naming the file and line. A
    ``split`` column puts each row in the split its value names (train/training, validation/valid/val/
    dev/eval/evaluation, test/testing); an empty or other value is an error naming the rows.

    Example:
        >>> read_table(Path("labels.csv"), None, None).label_column  # doctest: +SKIP
        'label'
    """
    rows: list[dict[str, Any]]
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
                rows = json.loads(text)
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"{path}: cannot parse ({exc}); expected CSV with a header row, or one JSON object per line"
        ) from exc
    if not rows:
        raise DataError(f"{path}: no rows; expected a header and one row per image")
    columns = list(rows[0].keys())
    image_col = _pick_column(columns, image_column, IMAGE_COLUMN_NAMES, "image", str(path))
    label_col = _pick_column(columns, label_column, LABEL_COLUMN_NAMES, "label", str(path))
    base = path.parent
    skipped: list[dict[str, str]] = []
    found: dict[str, tuple[list[str], list[Any]]] = {}
    is_csv = path.suffix.lower() in (".csv", ".tsv")
    if path.suffix.lower() == ".tsv" and label_separator == "\t":
        raise DataError(
            f"{path}: label_separator is a tab, which already separates this TSV file's columns; put the labels "
            "of a cell between another character (e.g. '|') and set label_separator to it"
        )
    if is_csv and label_separator:
        for row in rows:
            if isinstance(row.get(label_col), str) and row[label_col].strip():
                row[label_col] = split_cell(row[label_col], label_separator)
    raw_labels = [v for row in rows for v in (row.get(label_col) if is_list_label(row.get(label_col))
                                               else [row.get(label_col)])]
    as_int = is_csv and _int_like(raw_labels)
    first = 2 if is_csv else 1
    split_col = next((c for c in columns if c.strip().lower() == SPLIT_COLUMN and c not in (image_col, label_col)),
                     None)
    splits = _row_splits(rows, split_col, path, first) if split_col else ["train"] * len(rows)
    for number, row, split in zip(range(first, first + len(rows)), rows, splits):
        where = f"{path}:{number}"
        value = row.get(image_col)
        label = row.get(label_col)
        if value in (None, ""):
            skipped.append({"id": where, "reason": f"empty {image_col!r} cell", "kind": "bad_image"})
            continue
        if label is None or (isinstance(label, str) and not label.strip()):
            skipped.append({"id": where, "reason": f"empty {label_col!r} cell (no label)", "kind": "no_label"})
            continue
        if is_list_label(label) and not [v for v in label if v not in (None, "")]:
            raise DataError(
                f"{where}: the {label_col!r} list is empty; every image of a multi-label dataset needs at least "
                "one label: add its labels, or remove the row"
            )
        image_path = Path(str(value)).expanduser()
        if not image_path.is_absolute():
            image_path = base / image_path
        if not image_path.is_file():
            reason = f"file not found (row {number} of {path.name})"
            skipped.append({"id": str(image_path), "reason": reason, "kind": "bad_image"})
            continue
        paths, targets = found.setdefault(split, ([], []))
        paths.append(str(image_path))
        targets.append([_cell(v, as_int) for v in label] if is_list_label(label) else _cell(label, as_int))
    kind = "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else path.suffix.lower().lstrip(".")
    pools = {name: _file_pool(name, *found[name]) for name in sorted(found)} or {"train": _file_pool("train", [], [])}
    notes = []
    if split_col:
        counts = Counter(splits)
        order = [name for name in dict.fromkeys(SPLIT_ALIASES.values()) if name in counts]
        notes.append(f"split column {split_col!r}: rows " + ", ".join(f"{name} {counts[name]}" for name in order))
    return SourceResult(kind, str(path), pools, skipped, image_col, label_col, notes=notes)


def _cell(label: Any, as_int: bool) -> Any:
    """One label of a table row: an int for integer-looking CSV columns, else stripped text."""
    return int(str(label).strip()) if as_int else (label.strip() if isinstance(label, str) else label)


def _row_splits(rows: list[dict[str, Any]], column: str, path: Path, first: int) -> list[str]:
    """The split of every row, from its `column` cell (any name of `SPLIT_ALIASES`); an empty or unknown
    value is an error naming the rows and the values allowed."""
    splits, bad = [], []
    for number, row in zip(range(first, first + len(rows)), rows):
        value = row.get(column)
        text = "" if value is None else str(value).strip()
        split = SPLIT_ALIASES.get(text.lower())
        if split is None:
            bad.append(f"row {number} has {text!r}{closest(text, SPLIT_ALIASES)}" if text else f"row {number} is empty")
        splits.append(split)
    if bad:
        shown = ", ".join(bad[:5]) + (f", and {len(bad) - 5} more rows" if len(bad) > 5 else "")
        allowed = "; ".join("/".join(k for k, v in SPLIT_ALIASES.items() if v == split)
                            for split in dict.fromkeys(SPLIT_ALIASES.values()))
        raise DataError(
            f"{path}: the {column!r} column must name a split in every row: {shown}; allowed values: {allowed}. "
            f"Fix those rows, or remove the {column!r} column to hold out a random eval_fraction of the rows"
        )
    return splits


# -- in-memory --------------------------------------------------------------------------------------
def _memory_entry(value: Any, where: str) -> tuple[Any, str | None, bool]:
    """(image value for datasets.Image, reason-if-bad, already-checked)."""
    from PIL import Image

    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value), None, False
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value), "path": None}, None, False
    try:
        if isinstance(value, Image.Image):
            value.load()
            image = to_rgb(value)
        elif isinstance(value, np.ndarray) or hasattr(value, "detach"):
            image = array_to_pil(value)
        else:
            raise DataError(
                f"{where}: got {type(value).__name__}; images must be PIL images, numpy/torch arrays, paths or bytes"
            )
    except BadImageError as err:
        return None, err.reason, True
    except OSError as exc:
        return None, f"corrupt image ({exc})", True
    return {"bytes": encode_png(image), "path": None}, None, True


def read_memory(images: Sequence[Any], targets: Sequence[Any], split: str = "train") -> SourceResult:
    """Lists of images (PIL, arrays, paths, bytes) and their labels.

    Example:
        >>> import numpy as np
        >>> read_memory([np.zeros((4, 4), np.uint8)], ["a"]).pools["train"].targets
        ['a']
    """
    from datasets import Dataset

    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        images = list(images)
    if len(images) != len(targets):
        raise DataError(f"in-memory data: got {len(images)} images but {len(targets)} labels; give one label per image")
    skipped: list[dict[str, str]] = []
    values, kept_targets, ids = [], [], []
    all_checked = True
    for row, (value, target) in enumerate(zip(images, targets)):
        where = os.fspath(value) if isinstance(value, (str, os.PathLike)) else f"{split}[{row}]"
        if target is None or (isinstance(target, str) and not target.strip()):
            skipped.append({"id": where, "reason": "no label", "kind": "no_label"})
            continue
        entry, reason, checked = _memory_entry(value, where)
        if reason is not None:
            skipped.append({"id": where, "reason": reason, "kind": "bad_image"})
            continue
        all_checked = all_checked and checked
        values.append(entry)
        kept_targets.append(target.item() if hasattr(target, "item") else target)
        ids.append(where)
    ds = Dataset.from_dict({"image": values, "id": ids}, features=_features())
    pool = Pool(split, ds, kept_targets, checked=all_checked)
    return SourceResult("in-memory", f"in-memory ({len(images)} images)", {split: pool}, skipped)


# -- Hugging Face datasets (Hub ids, saved datasets, Dataset objects) -------------------------------
def _hf_columns(ds: Any, image_column: str | None, label_column: str | None, where: str) -> tuple[str, str]:
    from datasets import ClassLabel, Image

    columns = ds.column_names
    if image_column is None:
        typed = [c for c, f in ds.features.items() if isinstance(f, Image)]
        image_column = typed[0] if typed else None
    if label_column is None:
        typed = [c for c, f in ds.features.items() if isinstance(f, ClassLabel) or is_multi_label_feature(f)]
        named = [c for c in typed if c.lower() in ("label", "labels")]
        label_column = (named or typed or [None])[0]
    image_column = _pick_column(columns, image_column, IMAGE_COLUMN_NAMES, "image", where)
    label_column = _pick_column(columns, label_column, LABEL_COLUMN_NAMES, "label", where)
    return image_column, label_column


def hf_pool(name: str, ds: Any, image_column: str, label_column: str) -> Pool:
    """A pool over one split of a `datasets.Dataset` (ids ``"<split>[<row>]"``).

    Example:
        >>> from datasets import Dataset
        >>> hf_pool("train", Dataset.from_dict({"image": ["a.png"], "label": [0]}), "image", "label").targets
        [0]
    """
    from datasets import ClassLabel, Image

    feature = ds.features[label_column]
    names = label_names_of(feature) if isinstance(feature, ClassLabel) or is_multi_label_feature(feature) else None
    # the whole column at once (iterating `ds[label_column]` formats row by row: 2 s at 100k rows)
    targets = ds.select_columns([label_column]).with_format("arrow")[label_column].to_pylist()
    view = ds.select_columns([image_column])
    if image_column != "image":
        view = view.rename_column(image_column, "image")
    if not isinstance(view.features["image"], Image) or not view.features["image"].decode:
        view = view.cast_column("image", Image())
    # the ids are a function of the rows and `name`: say so, instead of `datasets` pickling the list to fingerprint it
    fingerprint = getattr(view, "_fingerprint", None)  # `datasets` has no public accessor
    ids_fingerprint = hashlib.sha256(f"{fingerprint}|ids|{name}".encode()).hexdigest()[:32] if fingerprint else None
    view = view.add_column("id", [f"{name}[{row}]" for row in range(len(view))], new_fingerprint=ids_fingerprint)
    return Pool(name, view, targets, names)


def read_hf(datasets_by_split: Mapping[str, Any], description: str, source_type: str,
            image_column: str | None, label_column: str | None) -> SourceResult:
    """Pools for every split of a DatasetDict-like mapping.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"img": ["a.png"], "label": ["x"]})
        >>> read_hf({"train": ds}, "d", "dataset", None, None).image_column
        'img'
    """
    if not datasets_by_split:
        raise DataError(f"{description}: the dataset has no splits")
    first = next(iter(datasets_by_split.values()))
    img_col, lab_col = _hf_columns(first, image_column, label_column, description)
    pools = {}
    for name, ds in datasets_by_split.items():
        if img_col not in ds.column_names or lab_col not in ds.column_names:
            continue
        pools[name] = hf_pool(name, ds, img_col, lab_col)
    return SourceResult(source_type, description, pools, [], img_col, lab_col)


def read_hub(source: str, config: str | None, revision: str | None, image_column: str | None,
             label_column: str | None) -> SourceResult:
    """A dataset on the Hugging Face Hub (or the endpoint in ``HF_ENDPOINT``), all splits.

    Example:
        >>> read_hub("beans", None, None, None, None).label_column  # doctest: +SKIP
        'labels'
    """
    import datasets

    try:
        loaded = datasets.load_dataset(source, name=config, revision=revision)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as exc:
        raise DataError(
            f"dataset {source!r} (config={config!r}, revision={revision!r}): cannot load it from the Hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); check the id, config "
            "and revision, your login (`hf auth login`) for private datasets, or give a local folder/CSV path"
            + local_hint(source)
        ) from exc
    if not isinstance(loaded, Mapping):
        loaded = {"train": loaded}
    where = f"hub:{source}" + (f" ({config})" if config else "") + (f"@{revision}" if revision else "")
    return read_hf(dict(loaded), where, "hub", image_column, label_column)


def read_saved(path: Path, image_column: str | None, label_column: str | None) -> SourceResult:
    """A dataset written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk``, or parquet files.

    Example:
        >>> read_saved(Path("my_saved_dataset"), None, None).source_type  # doctest: +SKIP
        'saved'
    """
    import datasets

    if path.is_file() or path.suffix.lower() == ".parquet":
        loaded = datasets.load_dataset("parquet", data_files=str(path))
    else:
        loaded = datasets.load_from_disk(str(path))
    if not isinstance(loaded, Mapping):
        loaded = {"train": loaded}
    return read_hf(dict(loaded), str(path), "saved", image_column, label_column)


def is_saved_dataset(path: Path) -> bool:
    """True for a folder written by ``save_to_disk``.

    Example:
        >>> is_saved_dataset(Path("/nonexistent"))
        False
    """
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


# -- bundled ----------------------------------------------------------------------------------------
BUNDLED = ("bundled:fashion_mnist", "bundled:digits")


def read_bundled(name: str) -> SourceResult:
    """``bundled:fashion_mnist`` (shipped subset: 3,000 train + 2,000 test) or ``bundled:digits`` (sklearn).

    Example:
        >>> read_bundled("bundled:fashion_mnist").pools["train"].label_names[:2]
        ['T-shirt/top', 'Trouser']
    """
    if name == "bundled:fashion_mnist":
        from importlib import resources

        data_path = Path(str(resources.files("tl_hub") / "bundled_data" / "fashion_mnist.npz"))
        if not data_path.is_file():
            raise DataError(f"bundled:fashion_mnist: {data_path} is missing from the installation; reinstall tl-hub")
        with np.load(data_path, allow_pickle=False) as data:
            names = [str(n) for n in data["label_names"]]
            pools = {}
            for split in ("train", "test"):
                images, labels, rows = data[f"{split}_images"], data[f"{split}_labels"], data[f"{split}_rows"]
                pools[split] = _array_pool(split, images, labels, [f"{split}[{r}]" for r in rows], names)
        return SourceResult(
            "bundled", name, pools,
            notes=["Fashion-MNIST subset (Zalando, MIT license): first 300 per class of the train file, "
                   "first 200 per class of the t10k file"],
        )
    if name == "bundled:digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise DataError(
                "bundled:digits needs scikit-learn, which is not installed; `pip install scikit-learn` "
                "(or `pip install tl-hub[test]`), or use bundled:fashion_mnist"
            ) from exc
        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
        pools = {"train": _array_pool("train", images, digits.target, [f"digits[{i}]" for i in range(len(images))],
                                      [str(i) for i in range(10)])}
        return SourceResult("bundled", name, pools, notes=["scikit-learn digits (8x8, values 0..16 scaled to 0..255)"])
    raise DataError(f"bundled dataset {name!r} does not exist; choose one of {list(BUNDLED)}")


def _array_pool(split: str, images: np.ndarray, labels: np.ndarray, ids: list[str], names: list[str]) -> Pool:
    """Fast path for uint8 grey arrays we ship: PNG-encode once; no re-validation needed."""
    from datasets import Dataset
    from PIL import Image

    encoded = []
    for array in images:
        buffer = io.BytesIO()
        Image.fromarray(array, mode="L").save(buffer, format="PNG", compress_level=1)
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    ds = Dataset.from_dict({"image": encoded, "id": ids}, features=_features())
    return Pool(split, ds, [int(v) for v in labels], names, checked=True)
