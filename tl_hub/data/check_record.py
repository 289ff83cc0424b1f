"""What earlier runs learnt when they decoded a source's images to check them: one byte per row on disk.

`load_data` decodes every selected image once to find bad files before training (`tl_hub.data.checks`).
On a large source that pass costs minutes, and a second run on the same files would pay it again. A
`CheckRecord` keeps the outcome per row of a source (0 = not checked yet, 1 = good, 2 = bad, with the
reason in a JSON beside it) under ``$TL_HUB_CACHE/checks/``, keyed by what the outcome depends on: the
rows (the `datasets` fingerprint), the size and modification time of every image file they point to, and
the decoder's version. A changed, added or removed file is a new key, so a stale answer is never reused.
The record is a file of ``len(source)`` bytes (1.3 MB for ImageNet), memory-mapped: flat in N.

Example:
    >>> import tempfile, numpy as np
    >>> record = CheckRecord.open(tempfile.mkdtemp(), ["demo source", 1], size=4)
    >>> record.unknown(np.array([0, 1, 2]))
    array([0, 1, 2])
    >>> record.store({0: None, 1: "truncated file"})
    >>> record.unknown(np.array([0, 1, 2])), record.bad_reasons(np.array([0, 1]))
    (array([2]), {1: 'truncated file'})
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CheckRecord", "file_stamps", "record_key"]

_UNKNOWN, _GOOD, _BAD = 0, 1, 2


def record_key(parts: Any) -> str:
    """A short stable hash of JSON-able `parts`.

    Example:
        >>> len(record_key(["a", 1]))
        24
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_stamps(dataset: Any, column: str) -> str:
    """A hash of (path, size, modification time) of every row of `column` that points to an image file (rows
    that hold their bytes are covered by the dataset's fingerprint); read from the Arrow column without
    loading image bytes. `column` must be an undecoded ``Image`` column (a struct of bytes and path).

    Example:
        >>> from datasets import Dataset, Features, Image
        >>> ds = Dataset.from_dict({"image": [{"bytes": b"x", "path": None}]},
        ...                        features=Features(image=Image(decode=False)))
        >>> len(file_stamps(ds, "image"))
        64
    """
    digest = hashlib.sha256()
    table = dataset.select_columns([column]).with_format("arrow")
    for start in range(0, len(table), 4096):
        values = table[start : start + 4096][column].combine_chunks()
        paths = values.field("path").to_pylist()
        from_file = values.field("bytes").is_null().to_pylist()
        for path, on_disk in zip(paths, from_file):
            if on_disk and path:
                try:
                    stat = os.stat(path)
                    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                except OSError:
                    digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


class CheckRecord:
    """The per-row outcome of the image check of one source (see the module docstring)."""

    def __init__(self, states: Path, reasons: Path, size: int) -> None:
        self.states_path, self.reasons_path, self.size = states, reasons, size
        if not states.is_file() or states.stat().st_size != size:
            tmp = states.with_name(f"{states.name}.tmp-{os.getpid()}")
            np.zeros(size, dtype=np.uint8).tofile(tmp)
            os.replace(tmp, states)
            reasons.unlink(missing_ok=True)
        self.states = np.memmap(states, dtype=np.uint8, mode="r+", shape=(size,)) if size else np.zeros(0, np.uint8)
        self.remembered = 0  # rows `unknown` was asked about that an earlier run had checked
        self.reasons: dict[int, str] = (
            {int(k): v for k, v in json.loads(reasons.read_text()).items()} if reasons.is_file() else {}
        )

    @classmethod
    def open(cls, folder: str | os.PathLike, key_parts: Any, *, size: int) -> CheckRecord:
        """The record for `key_parts` in `folder` (created empty when new)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        key = record_key(key_parts)
        return cls(folder / f"{key}.u8", folder / f"{key}.bad.json", size)

    def unknown(self, rows: np.ndarray) -> np.ndarray:
        """The rows among `rows` that no run has checked yet."""
        rows = np.asarray(rows, dtype=np.int64)
        unknown = rows[self.states[rows] == _UNKNOWN] if len(rows) else rows
        self.remembered += len(rows) - len(unknown)
        return unknown

    def bad_reasons(self, rows: np.ndarray) -> dict[int, str]:
        """The rows among `rows` known to be bad, with the reason recorded when they were checked."""
        rows = np.asarray(rows, dtype=np.int64)
        bad = rows[self.states[rows] == _BAD] if len(rows) else rows
        return {int(r): self.reasons.get(int(r), "bad image (recorded by an earlier run)") for r in bad}

    def store(self, outcomes: dict[int, str | None]) -> None:
        """Record each row's outcome (None = good, else the reason it is bad); written to disk at once.
        Concurrent writers (ranks checking the same source) may both write: the outcomes agree."""
        for row, reason in outcomes.items():
            self.states[int(row)] = _GOOD if reason is None else _BAD
            if reason is not None:
                self.reasons[int(row)] = reason
        if isinstance(self.states, np.memmap):
            self.states.flush()
        if any(reason is not None for reason in outcomes.values()):
            tmp = self.reasons_path.with_name(f"{self.reasons_path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({str(k): v for k, v in sorted(self.reasons.items())}))
            os.replace(tmp, self.reasons_path)
