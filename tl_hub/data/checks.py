"""Decode every selected image once before training: bad files are found, named and replaced up front.

What a check learnt is remembered per source row (`tl_hub.data.check_record`, under ``$TL_HUB_CACHE``):
a later run on the same, unchanged files decodes nothing to check them.

A training subset keeps its size: each bad row is replaced by a good, not-yet-selected row of the same
label (seeded). `apply_bad_image_policy` then stops the run (``on_bad_image="error"``, or more than
``max_bad_fraction`` bad) or records the skip in the report.

Example:
    >>> import numpy as np
    >>> from tl_hub.data.sources import read_memory
    >>> pool = read_memory([b"not an image", b"nor this"], ["a", "b"]).pools["train"]
    >>> bad, entries = check_rows(pool, np.array([0, 1]))
    >>> sorted(bad), entries[0]["kind"]
    ([0, 1], 'bad_image')
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tl_hub.data.check_record import CheckRecord, file_stamps
from tl_hub.data.images import check_image
from tl_hub.data.report import DataReport
from tl_hub.data.sources import Pool
from tl_hub.errors import DataError

__all__ = ["check_rows", "check_train_rows", "apply_bad_image_policy", "open_check_record"]

logger = logging.getLogger(__name__)

_CHUNK = 512


def open_check_record(pool: Pool, raw: Any = None) -> CheckRecord | None:
    """The remembered outcomes of earlier checks of `pool`'s rows; None when the pool needs no check or the
    cache folder cannot be written (then every run checks afresh).

    Example:
        >>> import numpy as np
        >>> from tl_hub.data.sources import read_memory
        >>> pool = read_memory([np.zeros((4, 4, 3), np.uint8)], ["a"]).pools["train"]
        >>> open_check_record(pool) is None  # arrays in memory are checked when read
        True
    """
    from importlib.metadata import version

    from datasets import Image

    from tl_hub.paths import cache_dir

    if pool.checked:
        return None
    raw = raw if raw is not None else pool.dataset.cast_column("image", Image(decode=False))
    fingerprint = getattr(pool.dataset, "_fingerprint", None)  # `datasets` has no public accessor
    if fingerprint is None:
        return None
    try:
        return CheckRecord.open(cache_dir() / "checks", [fingerprint, file_stamps(raw, "image"), version("pillow"), 1],
                                size=len(pool.dataset))
    except OSError as err:
        logger.debug("image check record unavailable (%s): every image is checked", err)
        return None


def check_rows(pool: Pool, rows: np.ndarray, record: CheckRecord | None = None,
               progress: bool = True) -> tuple[set[int], list[dict[str, str]]]:
    """Decode the given rows once (a few threads); return the bad row numbers and their report entries.

    Rows of a pool that was checked when it was read (in-memory arrays) are not decoded again, nor rows
    that `record` (`open_check_record`) knows from an earlier run. Over more than one chunk of rows to
    decode a progress bar shows (tqdm; off with ``progress=False`` or TQDM_DISABLE=1).
    """
    from datasets import Image
    from tqdm.auto import tqdm

    if pool.checked or len(rows) == 0:
        return set(), []
    raw = pool.dataset.cast_column("image", Image(decode=False))
    record = record if record is not None else open_check_record(pool, raw)
    known_bad = record.bad_reasons(rows) if record is not None else {}
    todo = record.unknown(rows) if record is not None else np.asarray(rows)
    if len(todo) < len(rows):
        logger.info("image check: %d of %d images known from an earlier run; decoding %d", len(rows) - len(todo),
                    len(rows), len(todo))
    bad: set[int] = set(known_bad)
    entries: list[dict[str, str]] = []
    if known_bad:
        ids = pool.dataset.select_columns(["id"]).select(sorted(known_bad))["id"]
        entries = [{"id": str(i), "reason": known_bad[r], "kind": "bad_image"} for r, i in zip(sorted(known_bad), ids)]

    def check(args: tuple[int, Any, str]) -> tuple[int, str, str | None]:
        row, value, ident = args
        return row, ident, check_image(value, where=ident)

    bar = tqdm(total=len(todo), desc="checking images", unit="img", leave=False, dynamic_ncols=True,
               mininterval=0.5, **({"disable": True} if len(todo) <= _CHUNK or not progress else {}))  # not False: TQDM_DISABLE
    with bar, ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as threads:
        for start in range(0, len(todo), _CHUNK):
            chunk = [int(r) for r in todo[start : start + _CHUNK]]
            batch = raw.select(chunk)
            outcomes: dict[int, str | None] = {}
            for row, ident, reason in threads.map(check, zip(chunk, batch["image"], batch["id"])):
                outcomes[row] = reason
                if reason is not None:
                    bad.add(row)
                    entries.append({"id": ident, "reason": reason, "kind": "bad_image"})
            if record is not None:
                record.store(outcomes)
            bar.update(len(chunk))
    return bad, entries


def check_train_rows(
    pool: Pool, selected: np.ndarray, available: np.ndarray, codes: np.ndarray, seed: int, progress: bool = True,
    record: CheckRecord | None = None,
) -> tuple[np.ndarray, set[int], list[dict[str, str]]]:
    """Check the selected training rows; when a subset was drawn, replace each bad row by a good,
    not-yet-selected row of the same label (seeded), so subset sizes stay what was asked for.

    Returns (good rows sorted, bad rows, report entries of the bad ones).
    """
    record = record if record is not None else open_check_record(pool)
    bad, entries = check_rows(pool, selected, record, progress)
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
        new_bad, new_entries = check_rows(pool, np.array(batch, dtype=np.int64), record, progress)
        bad |= new_bad
        entries += new_entries
        for row in batch:
            if row not in new_bad:
                good.append(row)
                deficit[int(codes[row])] -= 1
        deficit = Counter({c: n for c, n in deficit.items() if n > 0})
    return np.array(sorted(good), dtype=np.int64), bad, entries


def apply_bad_image_policy(report: DataReport, on_bad_image: str, max_bad_fraction: float) -> None:
    """Raise DataError listing the bad images when the policy says stop; else note the skip in the report."""
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
