"""Decoded images on disk: one uint8 file per (dataset, geometry), decoded once, memory-mapped by everyone.

`obtain_pixels` returns a `PixelFile`: ``N x C x R x R`` uint8 in a raw file ``<key>.u8`` beside a JSON
header ``<key>.json`` under the image cache folder (``$TL_HUB_CACHE/images``, see `tl_hub.paths.cache_dir`).
The key hashes the dataset's fingerprint, the size and modification time of every image file the rows
point to, the geometry (side, resize mode, interpolation, backend, train/eval) and the library versions
that shape the decoded pixels. C is 1 while every image is greyscale and 3 from the first colour image on.

* **Once**: the first process to take the folder's file lock (`filelock`) decodes; every other process
  -- the other ranks of the node, DataLoader workers, later runs -- waits on the lock, then maps the
  finished file. No collective (barrier) is involved, so a long decode never trips a distributed timeout,
  and independent runs on the same data share the file too.
* **Atomic**: the pixels are written under a temporary name and renamed; the header, written the same
  way, comes last and is what makes an entry exist. A crashed build leaves only temporary files
  (removed by the next build of that key).
* **Page cache, not process memory**: the file is mapped copy-on-write (``mode="c"``), never read into
  an array; untouched pages are the kernel's file cache, shared by every process that maps the file.
  Pickling a `PixelFile` (spawned DataLoader workers) carries its path only; each process maps lazily.
* **Budget**: the file must fit ``max_bytes`` (None: half the free disk space) and leave 1 GiB free;
  otherwise (or when the data turns out to be colour and three planes no longer fit) `obtain_pixels`
  returns None with the reason, and the caller decodes per item.
* **Bad images**: a row whose image fails to decode is recorded (row -> reason) in the header and left
  black; `PixelFile.bad` lists them.

Example:
    >>> import numpy as np, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> decode = lambda index, row: np.full((3, 4, 4), row, np.uint8)  # every image grey
    >>> built = obtain_pixels(folder, ["demo", 1], [(0, 10), (1, 20)], decode, count=2, side=4)
    >>> built.pixels.planes, int(built.pixels.array()[1, 0, 0, 0]), built.decoded
    (1, 20, 2)
    >>> again = obtain_pixels(folder, ["demo", 1], [(0, 10), (1, 20)], decode, count=2, side=4)
    >>> again.decoded, again.pixels.path == built.pixels.path
    (0, True)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from itertools import islice
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tl_hub.data.images import BadImageError

__all__ = ["PixelFile", "Obtained", "obtain_pixels", "cache_key", "default_budget", "FORMAT"]

#: bump when the file layout or the decoding rules change (old entries are then never read again)
FORMAT = 1
_FREE_RESERVE = 2**30  # never fill the disk: leave this much free
_CHUNK = 256


@dataclass
class PixelFile:
    """One finished cache entry: ``count x planes x side x side`` uint8 in the raw file ``path``.

    ``bad`` maps row numbers whose image could not be decoded to the reason (their pixels are zeros).
    The memory map opens on first use in each process and is not pickled.

    Example:
        >>> PixelFile(Path("x.u8"), count=2, planes=1, side=4).nbytes
        32
    """

    path: Path
    count: int
    planes: int
    side: int
    bad: dict[int, str] = field(default_factory=dict)
    _array: Any = field(default=None, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        return self.count * self.planes * self.side * self.side

    def array(self) -> np.ndarray:
        """The pixels as a copy-on-write memory map (no read happens until a row is touched).

        Example:
            >>> # PixelFile(...).array()[i] is image i, [planes, side, side]
        """
        if self._array is None:
            self._array = np.memmap(self.path, dtype=np.uint8, mode="c",
                                    shape=(self.count, self.planes, self.side, self.side))
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}


@dataclass
class Obtained:
    """What `obtain_pixels` did: the entry (None when it fell back), how many images this call decoded,
    in how many seconds, and why there is no entry.

    Example:
        >>> Obtained(None, reason="image cache off").reason
        'image cache off'
    """

    pixels: PixelFile | None
    decoded: int = 0
    seconds: float = 0.0
    reason: str | None = None


def cache_key(parts: Any) -> str:
    """A short stable hash of JSON-able `parts` (and `FORMAT`).

    Example:
        >>> cache_key(["abc", 224]) == cache_key(["abc", 224]) != cache_key(["abc", 160])
        True
    """
    text = json.dumps([FORMAT, parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def default_budget(folder: str | os.PathLike) -> int:
    """Half the free space of the disk holding `folder` (its nearest existing parent).

    Example:
        >>> default_budget("/") > 0
        True
    """
    return shutil.disk_usage(_existing(Path(folder))).free // 2


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _read_header(folder: Path, key: str) -> PixelFile | None:
    header, data = folder / f"{key}.json", folder / f"{key}.u8"
    try:
        meta = json.loads(header.read_text())
        entry = PixelFile(data, int(meta["count"]), int(meta["planes"]), int(meta["side"]),
                          {int(k): str(v) for k, v in meta.get("bad", {}).items()})
        if meta.get("format") != FORMAT or data.stat().st_size != entry.nbytes:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry


def _fits(nbytes: int, folder: Path, max_bytes: int | None) -> str | None:
    """None when `nbytes` fits the budget and leaves the reserve free, else why not."""
    free = shutil.disk_usage(folder).free
    budget = max_bytes if max_bytes is not None else free // 2
    if nbytes > budget:
        return f"the decoded images need {nbytes / 2**30:.2f} GiB, over the {budget / 2**30:.2f} GiB image cache budget"
    if nbytes > free - _FREE_RESERVE:
        return f"the decoded images need {nbytes / 2**30:.2f} GiB and {folder} has {free / 2**30:.2f} GiB free"
    return None


def obtain_pixels(
    folder: str | os.PathLike,
    key_parts: Any,
    rows: Iterable[tuple[int, Any]],
    decode: Callable[[int, Any], np.ndarray],
    *,
    count: int,
    side: int,
    max_bytes: int | None = None,
    threads: int = 2,
    progress: bool = False,
) -> Obtained:
    """The cache entry for `key_parts`: mapped when it exists, else built from `rows` (once, under a lock).

    ``rows`` yields ``(row number, raw row)`` for rows ``0..count-1``; ``decode(row number, raw row)``
    returns uint8 ``[3, side, side]`` or raises `BadImageError` (recorded in ``PixelFile.bad``). ``progress``:
    a progress bar over the build (tqdm; also off with TQDM_DISABLE=1).

    Example:
        >>> import tempfile
        >>> obtain_pixels(tempfile.mkdtemp(), ["k"], [], None, count=10**6, side=512, max_bytes=1).reason
        ... # doctest: +ELLIPSIS
        'the decoded images need 244.14 GiB, over the 0.00 GiB image cache budget'
    """
    from filelock import FileLock

    folder = Path(folder)
    key = cache_key(key_parts)
    found = _read_header(folder, key) if folder.is_dir() else None
    if found is not None:
        return Obtained(found)
    if count == 0:
        return Obtained(None, reason="no images")
    single = count * side * side
    reason = _fits(single, _existing(folder), max_bytes)
    if reason is not None:
        return Obtained(None, reason=reason)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{key}.lock")):
        found = _read_header(folder, key)  # built by another process while this one waited
        if found is not None:
            return Obtained(found)
        started = time.perf_counter()
        built = _Builder(folder, key, count, side, max_bytes).run(rows, decode, threads, progress)
        seconds = time.perf_counter() - started
        if isinstance(built, str):
            return Obtained(None, decoded=count, seconds=seconds, reason=built)
        return Obtained(built, decoded=count, seconds=seconds)


class _Builder:
    """Decodes every row into a temporary file (1 plane, widened to 3 at the first colour image), then
    renames it and writes the header."""

    def __init__(self, folder: Path, key: str, count: int, side: int, max_bytes: int | None) -> None:
        self.folder, self.key, self.count, self.side, self.max_bytes = folder, key, count, side, max_bytes
        self.tmp = folder / f"{key}.u8.tmp-{os.getpid()}"
        self.planes = 1
        self.array = self._create(self.tmp, 1)
        self.bad: dict[int, str] = {}
        self.lock = threading.Lock()
        self.too_big: str | None = None

    def _create(self, path: Path, planes: int) -> np.memmap:
        for stale in self.folder.glob(f"{self.key}.u8.tmp-*"):
            if stale != self.tmp:
                stale.unlink(missing_ok=True)
        return np.memmap(path, dtype=np.uint8, mode="w+", shape=(self.count, planes, self.side, self.side))

    def _widen(self) -> None:
        """The first colour image: copy the planes written so far into a 3-plane file (a chunk at a time)."""
        reason = _fits(self.count * 3 * self.side * self.side, self.folder, self.max_bytes)
        if reason is not None:
            self.too_big = reason + " (the images are in colour: 3 planes)"
            return
        wide_path = self.folder / f"{self.key}.u8.wide-tmp-{os.getpid()}"
        wide = np.memmap(wide_path, dtype=np.uint8, mode="w+", shape=(self.count, 3, self.side, self.side))
        for start in range(0, self.count, _CHUNK):
            wide[start : start + _CHUNK] = self.array[start : start + _CHUNK]  # broadcasts 1 plane to 3
        del self.array
        os.replace(wide_path, self.tmp)
        self.array, self.planes = wide, 3

    def _store(self, index: int, image: np.ndarray) -> None:
        grey = bool((image[0] == image[1]).all() and (image[0] == image[2]).all())
        with self.lock:
            if self.too_big:
                return
            if self.planes == 1 and not grey:
                self._widen()
                if self.too_big:
                    return
            self.array[index] = image[:1] if self.planes == 1 else image

    def run(self, rows: Iterable[tuple[int, Any]], decode: Callable[[int, Any], np.ndarray], threads: int,
            progress: bool = False) -> Any:
        def work(item: tuple[int, Any]) -> None:
            index, row = item
            try:
                image = np.asarray(decode(index, row))
            except BadImageError as err:
                with self.lock:
                    self.bad[index] = err.reason
                return
            self._store(index, image)

        from tqdm.auto import tqdm

        rows = iter(rows)
        # `disable` only when told: passing disable=False would override TQDM_DISABLE=1 (tqdm reads it as a default)
        bar = tqdm(total=self.count, desc="image cache", unit="img", leave=False, dynamic_ncols=True,
                   mininterval=0.5, **({} if progress else {"disable": True}))
        try:
            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
                while not self.too_big:  # a chunk at a time: only its raw rows are held
                    chunk = list(islice(rows, _CHUNK))
                    if not chunk:
                        break
                    list(pool.map(work, chunk))
                    bar.update(len(chunk))
            if self.too_big:
                return self.too_big
            return self._finish()
        finally:
            bar.close()
            self.array = None
            for path in (self.tmp, *self.folder.glob(f"{self.key}.u8.wide-tmp-{os.getpid()}")):
                path.unlink(missing_ok=True)

    def _finish(self) -> PixelFile:
        self.array.flush()
        del self.array
        data, header = self.folder / f"{self.key}.u8", self.folder / f"{self.key}.json"
        os.replace(self.tmp, data)
        meta = {"format": FORMAT, "count": self.count, "planes": self.planes, "side": self.side,
                "bad": {str(k): v for k, v in sorted(self.bad.items())}}
        tmp_header = header.with_name(f"{header.name}.tmp-{os.getpid()}")
        tmp_header.write_text(json.dumps(meta))
        os.replace(tmp_header, header)
        return PixelFile(data, self.count, self.planes, self.side, dict(self.bad))
