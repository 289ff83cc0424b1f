"""Label names and codes, stratified splits and class-balanced subsets (pure numpy, seeded).

Rules: label order is stable (the source's ClassLabel order, else sorted names, else ``"0".."K-1"``
for integer labels, which keep their meaning); ``labels`` picks a subset of the data's labels and their
order (the rows of the other labels are left out and counted); a split stratifies every label with two
or more examples and keeps single-example labels in train; subsets never drop a label.

Example:
    >>> import numpy as np
    >>> codes = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    >>> train, evals, singletons = stratified_split(codes, np.arange(9), 0.25, seed=0)
    >>> len(train), len(evals), singletons
    (7, 2, [2])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tl_hub.config_parsing import closest
from tl_hub.errors import ConfigError, DataError
from tl_hub.data.multilabel import AUTO, MULTI_LABEL, SINGLE_LABEL, is_list_label
from tl_hub.data.sources import Pool

__all__ = [
    "LEFT_OUT", "LabelCodes", "is_missing", "resolve_labels", "stratified_split", "per_label_subset", "capped_subset",
]


def is_missing(value: Any) -> bool:
    """True for "no label": None, an empty string, or a negative integer (Hub test splits use -1).

    Example:
        >>> is_missing(-1), is_missing(""), is_missing(0), is_missing("cat")
        (True, True, False, False)
    """
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) < 0
    )


#: the code of a row whose label the caller left out (`labels` names a subset)
LEFT_OUT = -2


@dataclass
class LabelCodes:
    """What `resolve_labels` decided: the label names (class-id order), each pool's codes (-1 = no label,
    `LEFT_OUT` = a label not in `labels`) and how many rows of each left-out label there were."""

    names: list[str]
    codes: dict[str, np.ndarray]
    left_out: dict[str, int]
    #: multi-label data: each pool's label ids per row (None = no label); `codes` then holds each row's first
    #: (lowest) id, what splits and subsets stratify by
    lists: dict[str, list[list[int] | None]] | None = None

    @property
    def problem_type(self) -> str:
        """``multi_label_classification`` when the rows hold label lists, else ``single_label_classification``."""
        return MULTI_LABEL if self.lists is not None else SINGLE_LABEL


def resolve_labels(
    pools: dict[str, Pool], labels: Sequence[str] | None, declared: Sequence[str] = (), where: str = "the data",
    problem_type: str = AUTO,
) -> LabelCodes:
    """Label names (stable order) and each pool's integer codes.

    Without ``labels``: the pools' ClassLabel names; else ``"0".."max"`` for integer labels (they keep
    their meaning); else the sorted names found plus ``declared`` ones (class folders, so an empty folder
    is an empty label, not a silently missing one). With ``labels``: only these labels, in this order --
    names of the data's labels (for integer labels their ids, ``"3"``), and the rows of every other label
    are left out (code `LEFT_OUT`, counted in ``left_out``). Integer labels can instead be *named*: one
    name per id, in id order, none of them an id. A name the data does not have is an error naming the
    closest label of the data.

    A row whose label is a list makes the data multi-label (``problem_type`` auto or
    ``multi_label_classification``; with ``single_label_classification`` it is an error naming the row):
    the names are resolved as above over every list's members and ``lists`` holds each row's ids. An empty
    list is an error naming the row. With ``labels``, the other labels are dropped from each list, and an image
    left with none of the chosen labels is left out (counted under its first label).

    Example:
        >>> from datasets import Dataset
        >>> pool = Pool("train", Dataset.from_dict({"id": ["a", "b", "c"]}), ["dog", "cat", "eel"])
        >>> resolve_labels({"train": pool}, None).names
        ['cat', 'dog', 'eel']
        >>> chosen = resolve_labels({"train": pool}, ["eel", "dog"])
        >>> chosen.names, chosen.codes["train"].tolist(), chosen.left_out
        (['eel', 'dog'], [1, -2, 0], {'cat': 1})
    """
    requested = _requested(labels)
    multi = _is_multi(pools, problem_type, where)
    if multi:
        return _resolve_lists(pools, requested, declared, where)
    kind, source_names, values = _label_kind(pools)
    available = _available(kind, source_names, values, declared)
    names, named_ints = available, False
    if requested is not None:
        names, named_ints = _choose(requested, available, kind, where)
    index = {name: i for i, name in enumerate(names)}
    codes: dict[str, np.ndarray] = {}
    left_out: Counter[str] = Counter()
    for split, pool in pools.items():
        out = np.full(len(pool.targets), -1, dtype=np.int64)
        for row, value in enumerate(pool.targets):
            if is_missing(value):
                continue
            if named_ints:
                out[row] = int(value)
                continue
            name = _name_of(value, kind, pool)
            code = index.get(name)
            if code is None:
                left_out[name] += 1
                out[row] = LEFT_OUT
            else:
                out[row] = code
        codes[split] = out
    if len(names) < 2:
        raise DataError(f"labels: found {names} ({len(names)} label); an image classifier needs at least 2 classes")
    order = {name: i for i, name in enumerate(available)}
    return LabelCodes(names, codes, dict(sorted(left_out.items(), key=lambda kv: order.get(kv[0], len(order)))))


def _is_multi(pools: dict[str, Pool], problem_type: str, where: str) -> bool:
    """Whether the rows are label lists; a list where single-label is forced is an error naming its row."""
    for pool in pools.values():
        for row, value in enumerate(pool.targets):
            if is_list_label(value):
                if problem_type == SINGLE_LABEL:
                    raise DataError(
                        f"labels: {_row_name(pool, row)} of {where} has a list of labels ({list(value)!r}), but "
                        "problem_type is single_label_classification; set problem_type: multi_label_classification "
                        "(or auto) to train a multi-label classifier, or give one label per image"
                    )
                return True
    return problem_type == MULTI_LABEL


def _row_name(pool: Pool, row: int) -> str:
    """The id of a pool's row (its image path, or "<split>[<row>]")."""
    try:
        if "id" in pool.dataset.column_names:  # the id column alone: no image is decoded
            return f"row {pool.dataset.select_columns(['id'])[row]['id']!r}"
        return f"{pool.name}[{row}]"
    except (IndexError, KeyError, TypeError):
        return f"{pool.name}[{row}]"


def _resolve_lists(pools: dict[str, Pool], requested: list[str] | None, declared: Sequence[str],
                   where: str) -> LabelCodes:
    """`resolve_labels` for multi-label rows: names over every list's members, each row's ids."""
    flat = {name: Pool(p.name, p.dataset, [v for t in p.targets if not is_missing(t) for v in _members(t)],
                       p.label_names) for name, p in pools.items()}
    kind, source_names, values = _label_kind(flat)
    available = _available(kind, source_names, values, declared)
    names, named_ints = (available, False) if requested is None else _choose(requested, available, kind, where)
    index = {name: i for i, name in enumerate(names)}
    codes, lists, left_out = {}, {}, Counter()
    for split, pool in pools.items():
        out = np.full(len(pool.targets), -1, dtype=np.int64)
        rows: list[list[int] | None] = []
        for row, value in enumerate(pool.targets):
            members = None if is_missing(value) else _members(value)
            if members is not None and not members:
                raise DataError(
                    f"labels: {_row_name(pool, row)} of {where} has an empty label list; every image of a "
                    "multi-label dataset needs at least one label: add its labels, or remove the row"
                )
            ids = None
            if members is not None:
                found = [int(v) if named_ints else index.get(_name_of(v, kind, pool)) for v in members]
                ids = sorted({c for c in found if c is not None})
                out[row] = ids[0] if ids else LEFT_OUT
                if not ids:  # an image is left out when none of its labels is chosen (counted by its first)
                    left_out[_name_of(members[0], kind, pool)] += 1
            rows.append(ids or None)
        codes[split], lists[split] = out, rows
    if len(names) < 2:
        raise DataError(f"labels: found {names} ({len(names)} label); an image classifier needs at least 2 classes")
    order = {name: i for i, name in enumerate(available)}
    left = dict(sorted(left_out.items(), key=lambda kv: order.get(kv[0], len(order))))
    return LabelCodes(names, codes, left, lists)


def _members(value: Any) -> list[Any]:
    """A row's labels as a list (a single label is a list of one)."""
    if is_list_label(value):
        return [v.item() if hasattr(v, "item") else v for v in value if not is_missing(v)] if len(value) else []
    return [value]


def _requested(labels: Sequence[str] | None) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)):
        raise ConfigError(f"labels: got {labels!r}; give a list of label names, e.g. ['cat', 'dog']")
    requested = [str(x).strip() for x in labels]
    if len(set(requested)) != len(requested):
        dupes = sorted(k for k, v in Counter(requested).items() if v > 1)
        raise ConfigError(f"labels: got duplicate names {dupes}; give each label once")
    return requested


def _label_kind(pools: dict[str, Pool]) -> tuple[str, list[str] | None, list[Any]]:
    """("classlabel" | "int" | "str", the ClassLabel names, the labelled raw values)."""
    pool_names = {p.label_names is not None for p in pools.values()}
    known = next((p.label_names for p in pools.values() if p.label_names is not None), None)
    values = [v for p in pools.values() for v in p.targets if not is_missing(v)]
    odd = next((v for v in values if isinstance(v, (list, tuple, dict, set, float))), None)
    if odd is not None:
        raise DataError(
            f"labels: got a {type(odd).__name__} label ({odd!r}); tl_hub trains single-label classifiers: give one "
            "class name or integer id per image (multi-label and regression targets are not supported)"
        )
    kinds = {"int" if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else "str" for v in values}
    if known is not None and pool_names == {True}:
        return "classlabel", list(known), values
    return ("int" if kinds == {"int"} else "str"), None, values


def _available(kind: str, source_names: list[str] | None, values: list[Any], declared: Sequence[str]) -> list[str]:
    """The data's own label names, in the data's order."""
    if kind == "classlabel":
        return list(source_names or [])
    if kind == "int":
        top = max(int(v) for v in values) if values else -1
        return [str(i) for i in range(top + 1)]
    return sorted({str(v).strip() for v in values} | set(declared))


def _name_of(value: Any, kind: str, pool: Pool) -> str:
    if kind == "classlabel":
        return pool.label_names[int(value)]
    if kind == "int":
        return str(int(value))
    return str(value).strip()


def _choose(requested: list[str], available: list[str], kind: str, where: str) -> tuple[list[str], bool]:
    """(the label names, True when they *name* integer ids in id order instead of selecting them)."""
    if kind == "int" and not any(name in available for name in requested):
        if len(requested) == len(available):
            return requested, True
        raise DataError(
            f"labels: got {requested} ({len(requested)} names), but the labels of {where} are the integer ids "
            f"{_listing(available)} ({len(available)}); give the ids to use, in the order you want, or one name "
            "per id, in id order"
        )
    missing = [name for name in requested if name not in available]
    if missing:
        which = ", ".join(f"{name!r}{closest(name, available)}" for name in missing)
        verb = "is not a label" if len(missing) == 1 else "are not labels"
        raise DataError(
            f"labels: {which} {verb} of {where}; its labels are {_listing(available)}; give names from that list, "
            "in the order you want"
        )
    return requested, False


def _listing(names: list[str], limit: int = 30) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}]" if len(names) <= limit else f"[{shown}, ...] ({len(names)} in all)"


def stratified_split(
    codes: np.ndarray, rows: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Split ``rows`` into (train, eval, singleton codes): per label ``round(n * fraction)`` rows (at
    least 1, at most n - 1) go to eval; labels with one example stay in train and are returned.

    Example:
        >>> import numpy as np
        >>> train, evals, single = stratified_split(np.array([0, 0, 1, 1, 1]), np.arange(5), 0.5, seed=0)
        >>> sorted(np.concatenate([train, evals]).tolist()), len(evals), single
        ([0, 1, 2, 3, 4], 3, [])
    """
    rng = np.random.default_rng(seed)
    train, evals, singletons = [], [], []
    for code in np.unique(codes[rows]):
        members = rows[codes[rows] == code]
        members = members[rng.permutation(len(members))]
        if len(members) < 2:
            singletons.append(int(code))
            train.append(members)
            continue
        k = min(len(members) - 1, max(1, int(round(len(members) * fraction))))
        evals.append(members[:k])
        train.append(members[k:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    return cat(train), cat(evals), singletons


def per_label_subset(rows: np.ndarray, codes: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A seeded random choice of ``k`` rows per label (all of a label's rows when it has fewer).

    Example:
        >>> import numpy as np
        >>> len(per_label_subset(np.arange(6), np.array([0, 0, 0, 1, 1, 1]), 2, seed=0))
        4
    """
    rng = np.random.default_rng(seed)
    picked = []
    for code in np.unique(codes[rows]):
        members = rows[codes[rows] == code]
        picked.append(np.sort(rng.choice(members, size=min(k, len(members)), replace=False)))
    return np.sort(np.concatenate(picked)) if picked else rows


def capped_subset(rows: np.ndarray, codes: np.ndarray, total: int, seed: int) -> np.ndarray:
    """A seeded, stratified random subset of ``total`` rows that keeps every label (at least one each).

    Example:
        >>> import numpy as np
        >>> np.bincount(np.array([0] * 8 + [1] * 2)[capped_subset(np.arange(10), np.array([0] * 8 + [1] * 2), 5, 0)])
        array([4, 1])
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(codes[rows], return_counts=True)
    if total < len(classes):
        raise ConfigError(
            f"max_train_samples: got {total}, but the training data has {len(classes)} labels; "
            f"use at least {len(classes)} (one per label) or examples_per_label=..."
        )
    share = counts * (total / counts.sum())
    take = np.maximum(1, np.floor(share)).astype(int)
    take = np.minimum(take, counts)
    order = np.argsort(-(share - np.floor(share)))
    i = 0
    while take.sum() < total and i < 10 * len(classes):
        c = order[i % len(classes)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > total:
        c = int(np.argmax(take))
        take[c] -= 1
    picked = [rng.choice(rows[codes[rows] == c], size=t, replace=False) for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked))
