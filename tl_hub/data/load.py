"""`load_data`: any common image source -> train/eval `datasets.Dataset`s, label names and a report.

Sources: a Hub dataset id (``config``, ``split``, ``revision``), an image folder (one subfolder per
class, optionally under ``train/``, ``validation/``, ``test/``), a CSV/JSONL file (image path and
label columns; paths relative to the file; an optional ``split`` column puts each row in the split its
value names, as split folders do), a ``save_to_disk`` folder or parquet file, a
`datasets.Dataset`/`DatasetDict`, in-memory data (``(images, labels)`` or ``{"image": [...],
"label": [...]}`` with PIL images, numpy/torch arrays, paths or bytes), and the bundled offline sets
``bundled:fashion_mnist`` and ``bundled:digits``.

When the source has a validation-like split, it is the eval split (best epoch, early stopping); else the
eval split is a stratified ``eval_fraction`` carve-out of train (seeded). A test split (``test``/``testing``)
is never the eval split unless asked for (``eval_split="test"``): it is the held-out ``test`` split, evaluated
once after training (``test_split``: None = automatic, a split name, or ``"none"`` to leave it out).

Every split has the columns ``image`` (``datasets.Image()``), ``label`` (``ClassLabel`` with the
names) and ``id`` (the file path, or ``"<split>[<row>]"``). The report accounts for every input
file/row: used (train/eval), not selected (subsampling), or skipped with the reason.

The steps, in order: read the source into pools (`tl_hub.data.sources`), pick the train and eval
splits, resolve label names and codes (`tl_hub.data.labels`), split or subsample the rows, decode every
selected image once (`tl_hub.data.checks`), check that every label can be trained and evaluated; the
splits are index lists over the source's Arrow table (no row, no image byte is copied). With
``defer_image_check=True`` the decode is left to the caller's own pass over every image (a run's image cache)
and `settle_image_checks` finishes the step with what that pass found.

Example:
    >>> bundle = load_data("bundled:fashion_mnist", examples_per_label=10)
    >>> bundle.labels[:3], len(bundle.train), len(bundle.eval), len(bundle.test)
    (['T-shirt/top', 'Trouser', 'Pullover'], 100, 600, 2000)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tl_hub.data.checks import apply_bad_image_policy, check_rows, check_train_rows, open_check_record
from tl_hub.data.labels import (LabelCodes, capped_subset, is_missing, per_label_subset, resolve_labels,
                                stratified_split)
from tl_hub.data.multilabel import AUTO, SINGLE_LABEL, check_problem_type
from tl_hub.data.options import NO_TEST_SPLIT, check_data_options
from tl_hub.data.report import DataReport
from tl_hub.data.sources import TEST_SPLIT_ORDER, VALIDATION_SPLIT_ORDER, Pool, SourceResult, read_source
from tl_hub.errors import ConfigError, DataError

__all__ = ["load_data", "DataBundle", "settle_image_checks"]


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
    test: Any = None  # the held-out test split (never used for selection), or None
    #: ``multi_label_classification`` when the rows hold label lists (then ``label`` is a
    #: ``Sequence(ClassLabel)`` column), else ``single_label_classification``
    problem_type: str = SINGLE_LABEL
    #: set by ``load_data(defer_image_check=True)``: the images of the splits are not checked yet;
    #: `settle_image_checks` does it (with what a decode of every image, the image cache's, found)
    pending_check: Any = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        test = f", test={len(self.test)}" if self.test is not None else ""
        return f"DataBundle(train={len(self.train)}, eval={len(self.eval)}{test}, labels={self.labels!r})"


@dataclass(frozen=True)
class _Request:
    """What the caller of `load_data` asked for (its keyword arguments)."""

    labels: Sequence[str] | None
    image_column: str | None
    label_column: str | None
    config: str | None
    split: str | None
    eval_split: str | None
    test_split: str | None
    revision: str | None
    eval_fraction: float
    seed: int
    max_train_samples: int | None
    examples_per_label: int | None
    on_bad_image: str
    max_bad_fraction: float
    problem_type: str = AUTO
    label_separator: str | None = None
    progress: bool = True
    defer_image_check: bool = False


@dataclass
class _Rows:
    """The pools in use, their label codes, and the chosen row numbers of each side."""

    train_pool: Pool
    eval_pool: Pool
    train_codes: np.ndarray
    eval_codes: np.ndarray
    train: np.ndarray
    eval: np.ndarray
    available: np.ndarray  # every labelled training row the subset was drawn from
    test_pool: Pool | None = None
    test_codes: np.ndarray | None = None
    test: np.ndarray | None = None
    train_lists: list[Any] | None = None  # multi-label: each row's label ids (None = no label)
    eval_lists: list[Any] | None = None
    test_lists: list[Any] | None = None


def load_data(
    source: Any,
    *,
    labels: Sequence[str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    config: str | None = None,
    split: str | None = None,
    eval_split: str | None = None,
    test_split: str | None = None,
    revision: str | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
    max_train_samples: int | None = None,
    examples_per_label: int | None = None,
    on_bad_image: str = "skip",
    max_bad_fraction: float = 0.01,
    problem_type: str = AUTO,
    label_separator: str | None = None,
    progress: bool = True,
    defer_image_check: bool = False,
) -> DataBundle:
    """Load, label, split and check an image-classification dataset from any common source.

    Args:
        source: Hub id, folder, CSV/JSONL/parquet file, saved dataset folder, ``bundled:fashion_mnist``,
            ``bundled:digits``, a `datasets.Dataset`/`DatasetDict`, ``(images, labels)`` or a dict of lists.
            A name is classified before any network call (`tl_hub.locations`): a path that does not exist
            is an error naming the closest existing name; a Hub id fails at once when the Hub is off
            (``HF_HUB_OFFLINE``) or out of reach and the dataset is not cached.
            A CSV/JSONL ``split`` column puts each row in the split its value names -- ``train``/``training``,
            ``validation``/``valid``/``val``/``dev``/``eval``/``evaluation``, ``test``/``testing`` (any case)
            -- so ``split``/``eval_split`` and the report work as for split folders; an empty or other value
            is an error naming the rows.
        labels: use only these labels, in this order (their class ids): names of the data's labels (for
            integer labels their ids, e.g. ``["3", "7"]``); the images of every other label are left out and
            counted in the report (``labels_left_out``, as not selected). A name the data does not have is an
            error naming the closest label of the data. Integer labels can instead be *named*: one name per
            id, in id order. Default: all labels -- the ClassLabel names, else the sorted names found, else
            ``"0".."K-1"`` for integer labels (integers keep their meaning).
        image_column, label_column: column names (detected when None).
        config, revision: Hub dataset config and revision.
        split: the training split (default ``"train"``, or the only split).
        eval_split: the eval split (selects the best epoch); default: the source's validation split, else a
            stratified ``eval_fraction`` split of train with ``seed`` (singleton labels stay in train). A test
            split is the eval split only when named here (then selection and the reported numbers share it:
            the report says so).
        test_split: the held-out test split (``bundle.test``, never used for selection); default: the source's
            labelled test/testing split when it is not the eval split; ``"none"``: no test split.
        max_train_samples: stratified random cap on training examples (every label kept).
        examples_per_label: class-balanced training subset (seeded).
        on_bad_image: ``"skip"`` (report and drop) or ``"error"``; more than ``max_bad_fraction`` bad
            images is an error either way.
        problem_type: ``auto`` (multi-label when the label column holds lists), ``single_label_classification``
            (a list label is an error naming its row) or ``multi_label_classification`` (a single label is a
            list of one). Multi-label splits have a ``Sequence(ClassLabel)`` ``label`` column; eval splits
            and subsets stratify by each row's first label; an empty list is an error naming the row.
        label_separator: splits CSV/TSV label cells into label lists (``cat|dog`` with ``"|"``); JSONL
            files and Hub/``datasets`` columns give lists directly.
        progress: a progress bar while the images are checked (over more than a few hundred to decode; tqdm,
            also off with TQDM_DISABLE=1).
        defer_image_check: leave the splits' images unchecked (``bundle.pending_check``) for the caller, who
            decodes every one of them anyway (the image cache), to hand what it found to `settle_image_checks`;
            then no image is decoded twice. Ignored when a training subset is drawn (``max_train_samples``,
            ``examples_per_label``): a subset's bad images are replaced by others, which must be checked first.

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

    check_data_options(eval_fraction=eval_fraction, on_bad_image=on_bad_image, max_bad_fraction=max_bad_fraction,
                       max_train_samples=max_train_samples, examples_per_label=examples_per_label,
                       test_split=test_split, train_split=split, eval_split=eval_split)
    check_problem_type(problem_type)
    request = _Request(labels, image_column, label_column, config, split, eval_split, test_split, revision,
                       eval_fraction, seed, max_train_samples, examples_per_label, on_bad_image, max_bad_fraction,
                       problem_type, label_separator, progress, defer_image_check)
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        return _load(source, request)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _load(source: Any, request: _Request) -> DataBundle:
    result = read_source(source, image_column=request.image_column, label_column=request.label_column,
                         config=request.config, revision=request.revision, label_separator=request.label_separator)
    split = _train_split(result, request.split)
    eval_name, test_name = _eval_and_test_splits(result.pools, split, request, result.description)
    used = {name: result.pools[name] for name in (split, eval_name, test_name) if name}
    chosen = resolve_labels(used, request.labels, result.declared_labels, where=result.description,
                            problem_type=request.problem_type)
    names = chosen.names
    report = _new_report(result, request, names, split, used)
    _note_left_out(report, chosen)
    rows = _split_rows(report, request, used, chosen.codes, split, eval_name, names)
    _hold_out_test(report, rows, used, chosen.codes, test_name)
    if chosen.lists is not None:
        rows.train_lists, rows.eval_lists = chosen.lists[split], chosen.lists[eval_name or split]
        rows.test_lists = chosen.lists[test_name] if test_name else None
        report.notes.append(f"multi-label: label lists in the label column ({chosen.problem_type}); splits and "
                            "subsets stratify by each image's first label")
    _subsample(report, request, rows, names)
    deferred = request.defer_image_check and request.examples_per_label is None and request.max_train_samples is None
    if deferred:
        report.images_pending = sum(len(chosen) for pool, chosen in _sides(rows).values() if not pool.checked)
    else:
        _check_images(report, request, rows, result)
    _check_labels_covered(report, rows, names, split, result.description)
    train = _finish(rows.train_pool, rows.train, rows.train_codes, names, rows.train_lists)
    evaluation = _finish(rows.eval_pool, rows.eval, rows.eval_codes, names, rows.eval_lists)
    test = (_finish(rows.test_pool, rows.test, rows.test_codes, names, rows.test_lists)
            if rows.test_pool is not None else None)
    bundle = DataBundle(train=train, eval=evaluation, labels=names, report=report, test=test,
                        problem_type=chosen.problem_type)
    _note_sizes(bundle)
    if deferred and report.images_pending:
        bundle.pending_check = _PendingCheck(request, rows, result, names, split)
    return bundle


def _note_sizes(bundle: DataBundle) -> None:
    report, test = bundle.report, bundle.test
    report.sizes = {"train": len(bundle.train), "eval": len(bundle.eval)} | ({"test": len(test)} if test is not None else {})
    report.used_train, report.used_eval = len(bundle.train), len(bundle.eval)
    report.used_test = len(test) if test is not None else 0


@dataclass
class _PendingCheck:
    """What `settle_image_checks` needs from the `load_data` call that deferred its image check."""

    request: _Request
    rows: _Rows
    result: SourceResult
    names: list[str]
    split: str


def _sides(rows: _Rows) -> dict[str, tuple[Pool, np.ndarray]]:
    """Each split in use: its pool and the pool rows it holds (in the split's order)."""
    sides = {"train": (rows.train_pool, rows.train), "eval": (rows.eval_pool, rows.eval)}
    if rows.test_pool is not None and rows.test is not None:
        sides["test"] = (rows.test_pool, rows.test)
    return sides


def settle_image_checks(bundle: DataBundle, found: Mapping[str, Mapping[int, str]] | None = None) -> dict[str, np.ndarray]:
    """Finish the image check `load_data(defer_image_check=True)` left: a split in `found` ("train", "eval",
    "test" -> {position in the split: reason} of the images a decode of every one of its images could not
    decode -- the image cache's build) is not decoded again; any other is checked here (decoded once, or known
    from an earlier run's record). The outcomes go to the check record (a later run with a subset knows them),
    the bad images leave their split (``bundle.train`` etc. are re-selected) and the report, and
    ``on_bad_image``/``max_bad_fraction`` apply, as when `load_data` checks. Returns, per split that lost
    images, the positions it kept (for datasets built over the split before: `ImageClassificationDataset.keep`).
    Does nothing when no check is pending.

    Example:
        >>> bundle = load_data("bundled:digits", defer_image_check=True)  # doctest: +SKIP
        >>> settle_image_checks(bundle, {"train": {}, "eval": {}, "test": {}})  # doctest: +SKIP
        {}
    """
    pending, bundle.pending_check = bundle.pending_check, None
    if pending is None:
        return {}
    rows, request, report = pending.rows, pending.request, bundle.report
    found = dict(found or {})
    record = _CheckRecords()

    bad_by_side: dict[str, set[int]] = {}
    entries: list[dict[str, str]] = []
    checked = 0
    for side, (pool, chosen) in _sides(rows).items():
        if pool.checked:
            bad_by_side[side] = set()
            continue
        checked += len(chosen)
        if side in found:
            reasons = {int(position): str(reason) for position, reason in found[side].items()}
            bad_by_side[side] = {int(chosen[position]) for position in reasons}
            if reasons:
                ids = getattr(bundle, side).select_columns(["id"]).select(sorted(reasons))["id"]
                entries += [{"id": str(i), "reason": reasons[p], "kind": "bad_image"} for p, i in zip(sorted(reasons), ids)]
            if record(pool) is not None:
                record(pool).store({int(row): reasons.get(position) for position, row in enumerate(chosen)})
        else:
            bad_by_side[side], side_entries = check_rows(pool, chosen, record(pool), request.progress)
            entries += side_entries
    kept: dict[str, np.ndarray] = {}
    for side, (pool, chosen) in _sides(rows).items():
        if bad_by_side[side]:
            keep = np.flatnonzero(np.array([int(row) not in bad_by_side[side] for row in chosen], dtype=bool))
            kept[side] = keep
            setattr(rows, side, chosen[keep])
            setattr(bundle, side, getattr(bundle, side).select(keep))
    report.images_pending = 0
    _note_sizes(bundle)
    _tally_checks(report, request, pending.result, record, checked, sum(len(bad) for bad in bad_by_side.values()),
                  entries)
    _check_labels_covered(report, rows, pending.names, pending.split, pending.result.description)
    return kept


def _train_split(result: SourceResult, split: str | None) -> str:
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
    return split


def _labelled(pool: Pool) -> bool:
    return any(not is_missing(t) for t in pool.targets)  # Hub test splits are often all -1


def _eval_and_test_splits(pools: dict[str, Pool], train_split: str, request: _Request,
                          source: str) -> tuple[str | None, str | None]:
    """The eval split (None: a carve-out of train) and the held-out test split (None: no test)."""
    test = request.test_split
    if test is not None and test != NO_TEST_SPLIT:
        if test not in pools:
            raise DataError(f"test_split: got {test!r}, but {source} has splits {sorted(pools)}; name one of them, "
                            f"null (automatic: the test split when there is one) or {NO_TEST_SPLIT!r} (no test split)")
        if test in (train_split, request.eval_split):
            which = "training" if test == train_split else "eval"
            raise ConfigError(f"test_split: got {test!r}, the same as the {which} split; the test split is held out "
                              f"from training and selection: pick another split, or {NO_TEST_SPLIT!r}")
        if not _labelled(pools[test]):
            raise DataError(f"test_split: split {test!r} of {source} has no labels; pick a labelled split, or "
                            f"{NO_TEST_SPLIT!r}")
    eval_name = _eval_split(pools, train_split, request.eval_split, source, test)
    if test is None:
        test = next((name for name in TEST_SPLIT_ORDER if name in pools and name not in (train_split, eval_name)
                     and _labelled(pools[name])), None)
    return eval_name, (None if test == NO_TEST_SPLIT else test)


def _eval_split(pools: dict[str, Pool], train_split: str, eval_split: str | None, source: str,
                test_split: str | None) -> str | None:
    if eval_split is not None:
        if eval_split not in pools:
            raise DataError(f"eval_split: got {eval_split!r}, but {source} has splits {sorted(pools)}")
        if eval_split == train_split:
            raise ConfigError(f"eval_split: got {eval_split!r}, the same as the training split; pick another split")
        return eval_split
    for name in VALIDATION_SPLIT_ORDER:  # the first labelled validation split; a test split is never picked here
        if name in pools and name not in (train_split, test_split) and _labelled(pools[name]):
            return name
    return None


def _new_report(result: SourceResult, request: _Request, names: list[str], split: str,
                used: dict[str, Pool]) -> DataReport:
    report = DataReport(
        source=result.description, source_type=result.source_type, labels=names,
        image_column=result.image_column, label_column=result.label_column, train_split=split,
        options={"eval_fraction": request.eval_fraction, "seed": request.seed,
                 "max_train_samples": request.max_train_samples, "examples_per_label": request.examples_per_label,
                 "on_bad_image": request.on_bad_image, "max_bad_fraction": request.max_bad_fraction,
                 "labels": list(request.labels) if request.labels else None},
        notes=list(result.notes),
    )
    report.unused_splits = {k: len(p.targets) for k, p in result.pools.items() if k not in used}
    report.skipped = list(result.skipped)
    report.entries_found = len(result.skipped) + sum(len(p.targets) for p in used.values())
    return report


def _note_left_out(report: DataReport, chosen: LabelCodes) -> None:
    """The rows of labels not in `labels` are not selected; say how many of each label, in a note."""
    report.labels_left_out = dict(chosen.left_out)
    if not chosen.left_out:
        return
    total = sum(chosen.left_out.values())
    shown = ", ".join(f"{name!r} {n}" for name, n in list(chosen.left_out.items())[:10])
    more = f", and {len(chosen.left_out) - 10} more label(s)" if len(chosen.left_out) > 10 else ""
    report.notes.append(
        f"labels={chosen.names} uses {len(chosen.names)} of the data's labels: {total} image(s) of the "
        f"{len(chosen.left_out)} other label(s) left out (counted as not selected): {shown}{more}"
    )


def _split_rows(report: DataReport, request: _Request, used: dict[str, Pool], codes: dict[str, np.ndarray],
                split: str, eval_name: str | None, names: list[str]) -> _Rows:
    """Unlabelled rows go to the report; the eval rows are the eval split's, else a stratified split."""
    for pool_name, pool_codes in codes.items():
        unlabelled = np.flatnonzero(pool_codes == -1)  # LEFT_OUT rows are counted, not listed
        if len(unlabelled):
            ids = used[pool_name].dataset.select_columns(["id"]).select(unlabelled.tolist())["id"]
            report.skipped.extend({"id": str(i), "reason": "no label", "kind": "no_label"} for i in ids)
    train_codes = codes[split]
    labelled = np.flatnonzero(train_codes >= 0)
    if eval_name:
        report.eval_split, report.eval_from = eval_name, f"the dataset's own {eval_name!r} split"
        if eval_name in TEST_SPLIT_ORDER:
            report.selects_on_test = True
            report.notes.append(
                f"eval_split={eval_name!r}: the best epoch (and early stopping) is selected on the {eval_name!r} "
                "split, the same split the final numbers are reported on, so they are optimistic; leave eval_split "
                "unset to select on a validation split or a carve-out of train and keep the test split held out"
            )
        return _Rows(used[split], used[eval_name], train_codes, codes[eval_name], labelled,
                     np.flatnonzero(codes[eval_name] >= 0), labelled)
    train_rows, eval_rows, singletons = stratified_split(train_codes, labelled, request.eval_fraction, request.seed)
    report.eval_from = f"stratified {request.eval_fraction:g} split of {split!r} (seed {request.seed})"
    report.singleton_labels = [names[c] for c in singletons]
    if singletons:
        report.notes.append(
            f"{len(singletons)} label(s) have a single example; kept in train, absent from eval: "
            f"{report.singleton_labels}"
        )
    return _Rows(used[split], used[split], train_codes, train_codes, train_rows, eval_rows, train_rows)


def _hold_out_test(report: DataReport, rows: _Rows, used: dict[str, Pool], codes: dict[str, np.ndarray],
                   test_name: str | None) -> None:
    """The test split's labelled rows, held out: evaluated once after training, never used for selection."""
    if test_name is None:
        return
    rows.test_pool, rows.test_codes = used[test_name], codes[test_name]
    rows.test = np.flatnonzero(rows.test_codes >= 0)
    report.test_split = test_name
    report.test_from = f"the dataset's own {test_name!r} split, held out: evaluated once, after training"


def _subsample(report: DataReport, request: _Request, rows: _Rows, names: list[str]) -> None:
    per_label, cap = request.examples_per_label, request.max_train_samples
    if per_label is not None:
        rows.train = per_label_subset(rows.train, rows.train_codes, int(per_label), request.seed)
        present, counts = np.unique(rows.train_codes[rows.train], return_counts=True)
        short = {names[c]: int(n) for c, n in zip(present, counts) if n < per_label}
        if short:
            report.notes.append(f"examples_per_label={per_label}: fewer available for {short}")
    if cap is not None and len(rows.train) > cap:
        rows.train = capped_subset(rows.train, rows.train_codes, int(cap), request.seed)


def _check_images(report: DataReport, request: _Request, rows: _Rows, result: SourceResult) -> None:
    """Decode every selected image once; bad ones are replaced (train subsets), dropped and reported."""
    record = _CheckRecords()

    rows.train, bad_train, bad_train_entries = check_train_rows(
        rows.train_pool, rows.train, rows.available, rows.train_codes, request.seed, request.progress,
        record(rows.train_pool),
    )
    bad_eval, bad_eval_entries = check_rows(rows.eval_pool, rows.eval, record(rows.eval_pool), request.progress)
    rows.eval = np.array([r for r in rows.eval if int(r) not in bad_eval], dtype=np.int64)
    bad_test: set[int] = set()
    if rows.test_pool is not None:
        bad_test, bad_test_entries = check_rows(rows.test_pool, rows.test, record(rows.test_pool), request.progress)
        rows.test = np.array([r for r in rows.test if int(r) not in bad_test], dtype=np.int64)
        bad_eval_entries = bad_eval_entries + bad_test_entries
    report.not_selected = len(rows.available) - len(rows.train) - len(bad_train) + sum(report.labels_left_out.values())
    checked = 0 if rows.train_pool.checked else len(rows.train) + len(bad_train)
    checked += 0 if rows.eval_pool.checked else len(rows.eval) + len(bad_eval)
    if rows.test_pool is not None and not rows.test_pool.checked:
        checked += len(rows.test) + len(bad_test)
    _tally_checks(report, request, result, record, checked, len(bad_train) + len(bad_eval) + len(bad_test),
                  bad_train_entries + bad_eval_entries)


class _CheckRecords(dict):
    """One check record per pool, opened on first use (its key hashes every file's stamp: a pass over them);
    call it with a pool."""

    def __call__(self, pool: Pool) -> Any:
        if id(pool) not in self:
            self[id(pool)] = open_check_record(pool)
        return self[id(pool)]


def _tally_checks(report: DataReport, request: _Request, result: SourceResult, records: _CheckRecords, checked: int,
                  bad: int, entries: list[dict[str, str]]) -> None:
    """The check's numbers in the report (files a table named but that were missing count as checked and bad),
    then the bad-image policy, which may stop the run."""
    missing = sum(1 for s in result.skipped if s["kind"] == "bad_image")
    report.images_checked = checked + missing
    report.images_remembered = sum(r.remembered for r in records.values() if r is not None)
    report.bad_images = bad + missing
    report.skipped.extend(entries)
    apply_bad_image_policy(report, request.on_bad_image, request.max_bad_fraction)


def _check_labels_covered(report: DataReport, rows: _Rows, names: list[str], split: str, description: str) -> None:
    report.per_label = {"train": _counts(rows.train_codes, rows.train, names, rows.train_lists),
                        "eval": _counts(rows.eval_codes, rows.eval, names, rows.eval_lists)}
    if rows.test is not None:
        report.per_label["test"] = _counts(rows.test_codes, rows.test, names, rows.test_lists)
    for side, name in (("eval", report.eval_split), ("test", report.test_split)):
        counts = report.per_label.get(side, {})
        unseen = [label for label in names if counts.get(label) and not report.per_label["train"][label]]
        if unseen:
            raise DataError(
                f"{side} split {name!r} has labels that the training split {split!r} does not: {unseen}; "
                f"add training images for them or drop them from the {side} split"
            )
    empty = [name for name, n in report.per_label["train"].items() if n == 0]
    if empty:
        raise DataError(
            f"labels {empty} have no training images in {description}"
            + (" (some images were bad)" if report.bad_images else "")
            + "; add images for them, remove their folders, or pass labels= without them"
        )
    if len(rows.eval) == 0:
        raise DataError(
            f"no eval images: {description} has {len(rows.train)} usable training images and none could "
            "be held out; add images (at least 2 for some label) or give an eval split"
        )


def _finish(pool: Pool, rows: np.ndarray, codes: np.ndarray, names: list[str], lists: list[Any] | None = None) -> Any:
    """The split: the pool with its label column, then the chosen rows as an indices mapping over the pool's
    Arrow table. The label column is added to the whole pool *before* the rows are chosen: `add_column` on
    a dataset with an indices mapping first rewrites every selected row (`flatten_indices`), image bytes
    included; this way no row is copied. Multi-label (`lists`): a ``Sequence(ClassLabel)`` column."""
    from datasets import ClassLabel, Sequence as SequenceFeature

    if lists is not None:  # rows not chosen hold an empty list
        ds = pool.dataset.add_column("label", [list(ids or []) for ids in lists],
                                     feature=SequenceFeature(ClassLabel(names=list(names))))
        if len(rows) != len(pool.dataset) or np.any(rows != np.arange(len(rows))):
            ds = ds.select(np.asarray(rows, dtype=np.int64))
        return ds.select_columns(["image", "label", "id"])
    labels = np.where(codes >= 0, codes, -1).astype(np.int64)  # rows not chosen keep -1 ("no label")
    # numpy arrays, not lists: `datasets` fingerprints a transform by pickling its arguments, one object per
    # list item (2 s for 100k rows on every run); an array pickles as one buffer
    ds = pool.dataset.add_column("label", labels, feature=ClassLabel(names=list(names)))
    if len(rows) != len(pool.dataset) or np.any(rows != np.arange(len(rows))):
        ds = ds.select(np.asarray(rows, dtype=np.int64))
    return ds.select_columns(["image", "label", "id"])


def _counts(codes: np.ndarray, rows: np.ndarray, names: list[str], lists: list[Any] | None = None) -> dict[str, int]:
    """Images per label among `rows` (multi-label: an image counts for each of its labels)."""
    if lists is not None:
        found = Counter(c for r in rows for c in (lists[int(r)] or []))
        return {name: found.get(i, 0) for i, name in enumerate(names)}
    found = Counter(int(c) for c in codes[rows])
    return {name: found.get(i, 0) for i, name in enumerate(names)}
