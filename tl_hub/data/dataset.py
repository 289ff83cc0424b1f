"""The training/eval torch Dataset over a `load_data` split: decode once to disk, then serve epochs from it.

`ImageClassificationDataset` decodes every image once into a memory-mapped uint8 file (``N x C x R x R``,
C = 1 for greyscale data; `tl_hub.data.pixel_cache`), reused by DataLoader workers, the other processes
of the node and later runs on the same data, and then serves epochs from it: random resized crop +
horizontal flip of the uint8 image for training, the deterministic eval crop (identical to
`tl_hub.data.transforms.export_processor`'s processor) otherwise.

With ``uint8_items=True`` (what `tl_hub.finetune` uses for evaluation, and for training on accelerators)
items are the cached uint8 tensors as they are: the training loop copies a batch to the device and
`transform_batch` crops, flips and normalises it there (`augment_batch`), each sample from its own seed, so
the data stays a function of the seed whatever the batch or the process count. On a CPU, where it is
faster, items are augmented one by one, each from a generator seeded for it (`(index, seed)` keys).

Example:
    >>> from tl_hub.data import load_data
    >>> from tl_hub.data.transforms import ImageSpec
    >>> bundle = load_data("bundled:fashion_mnist", examples_per_label=2)
    >>> dataset = ImageClassificationDataset(bundle.train, ImageSpec(size=32, resize_size=36), train=True)
    >>> dataset[0]["pixel_values"].shape
    torch.Size([3, 32, 32])
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tl_hub.errors import DataError
from tl_hub.data.images import open_image
from tl_hub.data.check_record import file_stamps
from tl_hub.data.multilabel import is_multi_label_feature, label_names_of, multi_hot
from tl_hub.data.pixel_cache import PixelFile, obtain_pixels
from tl_hub.data.transforms import ImageSpec
from tl_hub.paths import cache_dir as cache_dir_default
from tl_hub.seeding import sample_uniforms

logger = logging.getLogger(__name__)

__all__ = ["ImageClassificationDataset", "augment_batch"]


def _random_resized_crop_params(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
        aspect = math.exp(float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def augment_batch(
    pixels: torch.Tensor,
    spec: ImageSpec,
    *,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    generator: torch.Generator | None = None,
    seeds: Any = None,
) -> torch.Tensor:
    """Random resized crop + horizontal flip + normalisation of a whole uint8 batch, on its own device.

    ``pixels``: uint8 ``[B, 3, H, W]`` (e.g. a batch of `ImageClassificationDataset` items made with
    ``uint8_items=True``, moved to the GPU); returns float32 ``[B, 3, spec.size, spec.size]``. One
    ``roi_align`` call crops and resizes every image (area-averaged bilinear sampling), so on a GPU
    the augmentation costs next to nothing and the CPU only gathers cached tensors. Random numbers are
    drawn on the CPU, so results do not depend on the device: from each sample's own seed when ``seeds``
    (one per row, `tl_hub.seeding.sample_seeds`) is given -- then a sample's augmentation does not depend
    on its batch or process --, else from ``generator``.

    Example:
        >>> import torch
        >>> spec = ImageSpec(size=8, resize_size=10)
        >>> augment_batch(torch.zeros(4, 3, 10, 10, dtype=torch.uint8), spec).shape
        torch.Size([4, 3, 8, 8])
    """
    from torchvision.ops import roi_align

    if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[1] != 3:
        raise DataError(f"augment_batch: got {pixels.dtype} {tuple(pixels.shape)}; expected uint8 [B, 3, H, W]")
    batch, _, height, width = pixels.shape
    tries = 10
    if seeds is not None:
        if len(seeds) != batch:
            raise DataError(f"augment_batch: got {len(seeds)} seeds for a batch of {batch}; give one seed per image")
        draws = sample_uniforms(seeds, 5 * tries).view(batch, 5, tries).permute(1, 0, 2)
    else:
        draws = torch.rand(5, batch, tries, generator=generator, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * draws[0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * draws[1])
    crop_w = torch.sqrt(area * aspect).round()
    crop_h = torch.sqrt(area / aspect).round()
    valid = (crop_w >= 1) & (crop_w <= width) & (crop_h >= 1) & (crop_h <= height)
    first = valid.to(torch.int8).argmax(dim=1)
    rows = torch.arange(batch)
    side = float(min(height, width))
    found = valid.any(dim=1)
    crop_w = torch.where(found, crop_w[rows, first], torch.full((batch,), side, dtype=torch.float64))
    crop_h = torch.where(found, crop_h[rows, first], torch.full((batch,), side, dtype=torch.float64))
    left = torch.floor(draws[2][:, 0] * (width - crop_w + 1)).clamp(min=0)
    top = torch.floor(draws[3][:, 0] * (height - crop_h + 1)).clamp(min=0)
    left = torch.where(found, left, torch.full_like(left, (width - side) // 2))
    top = torch.where(found, top, torch.full_like(top, (height - side) // 2))
    mirror = (draws[4][:, 0] < 0.5) if flip else torch.zeros(batch, dtype=torch.bool)
    # boxes and flip flags travel in one small copy that does not wait for the device: a blocking copy to a GPU
    # waits for every kernel queued before it, which would stall the loop once per batch
    plan = torch.stack([rows.to(torch.float64), left, top, left + crop_w, top + crop_h, mirror.to(torch.float64)],
                       dim=1).to(device=pixels.device, dtype=torch.float32, non_blocking=True)
    out = roi_align(
        pixels.to(torch.float32),
        plan[:, :5],
        output_size=(spec.size, spec.size),
        spatial_scale=1.0,
        sampling_ratio=-1,
        aligned=True,
    )
    if flip:
        out = torch.where(plan[:, 5].view(batch, 1, 1, 1) > 0.5, out.flip(-1), out)
    scale_t, shift_t = spec.affine_on(pixels.device)
    return out.mul_(scale_t).add_(shift_t)


@dataclass
class _Source:
    """Raw (undecoded) image rows of an HF dataset, read lazily; picklable for worker processes."""

    dataset: Any
    column: str = "image"
    _raw: Any = field(default=None, repr=False)

    def raw(self) -> Any:
        if self._raw is None:
            from datasets import Image as ImageFeature

            self._raw = self.dataset.cast_column(self.column, ImageFeature(decode=False))
        return self._raw

    def fingerprint(self) -> str | None:
        """The `datasets` fingerprint of the rows (it changes whenever the rows or their content change); the
        library keeps it in a private attribute and offers no public accessor."""
        return getattr(self.dataset, "_fingerprint", None)

    def row(self, index: int) -> Any:
        return self.raw()[int(index)][self.column]

    def __getstate__(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "column": self.column, "_raw": None}


class ImageClassificationDataset(torch.utils.data.Dataset):
    """A torch Dataset over a `load_data` split: ``{"pixel_values", "labels", "index"}`` per item.

    ``labels`` is the int64 class id, or for a multi-label split (a ``Sequence(ClassLabel)`` label column)
    a float32 multi-hot vector with one entry per label.

    With ``cache=True`` every image is decoded and resized **once** (threads; PIL and torchvision
    release the GIL) into a uint8 file, ``N x C x R x R`` (R = ``spec.resize_size`` for training,
    ``spec.size`` for eval), under ``cache_dir`` (default ``$TL_HUB_CACHE/images``), keyed by the rows and
    the geometry; a later dataset over the same rows and geometry -- in this process, a DataLoader worker,
    another rank, a later run -- maps the file instead of decoding (`tl_hub.data.pixel_cache`). The file is
    memory-mapped: the kernel's page cache holds it, shared by every process. C is 1 while every image is
    greyscale (its three RGB channels equal: a third of the disk, and the per-item crop works on one plane)
    and 3 from the first colour image on; items always have 3 channels. Later epochs only crop, flip and
    normalise. If the file would exceed ``cache_max_bytes`` (default: half the free disk space) images are
    decoded per item instead (do that in DataLoader workers); `cache_info` says which happened.

    Training items: random resized crop (area ``scale``, aspect 3/4..4/3) of the cached square,
    resized to ``spec.size``, random horizontal flip. ``augment=False`` (or ``train=False``) gives
    the deterministic eval transform, identical to the exported processor.

    On a GPU the per-item CPU work can fall behind the model; with ``uint8_items=True`` items are the
    cached uint8 tensors as they are, and the loop calls
    ``dataset.transform_batch(batch["pixel_values"].to(device), seeds)`` (one batched crop/flip/normalise
    on the device, `augment_batch`).

    Example:
        >>> from datasets import Dataset, Features, Image as Img, ClassLabel
        >>> from PIL import Image
        >>> ds = Dataset.from_dict({"image": [Image.new("RGB", (9, 7))], "label": [1]},
        ...                        features=Features(image=Img(), label=ClassLabel(names=["a", "b"])))
        >>> item = ImageClassificationDataset(ds, ImageSpec(size=8, resize_size=8), train=False)[0]
        >>> item["pixel_values"].shape, int(item["labels"])
        (torch.Size([3, 8, 8]), 1)
    """

    def __init__(
        self,
        hf_dataset: Any,
        spec: ImageSpec,
        *,
        train: bool,
        augment: bool = True,
        cache: bool = True,
        scale: tuple[float, float] = (0.25, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        image_column: str = "image",
        label_column: str = "label",
        num_threads: int | None = None,
        cache_max_bytes: int | None = None,
        uint8_items: bool = False,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> None:
        for column in (image_column, label_column):
            if column not in hf_dataset.column_names:
                raise DataError(
                    f"ImageClassificationDataset: column {column!r} not in {hf_dataset.column_names}; "
                    "pass image_column=/label_column= or use tl_hub.load_data"
                )
        self.spec = spec
        self.train = bool(train)
        self.augment = bool(train and augment)
        self.scale, self.ratio, self.flip = tuple(scale), tuple(ratio), bool(flip)
        self.uint8_items = bool(uint8_items)
        columns = hf_dataset.with_format("arrow")  # whole columns at once (row by row is slow on index lists)
        feature = hf_dataset.features[label_column]
        if is_multi_label_feature(feature):  # label lists -> float multi-hot rows (the BCE loss's targets)
            ids = columns[label_column].to_pylist()
            self.labels = torch.from_numpy(multi_hot(ids, len(label_names_of(feature))))
        else:
            self.labels = torch.from_numpy(np.array(columns[label_column].to_numpy(), dtype=np.int64))  # writable
        self.ids = columns["id"].to_pylist() if "id" in hf_dataset.column_names else None
        self._source = _Source(hf_dataset, image_column)
        self.side = spec.resize_size if self.augment else spec.size
        self._rows: np.ndarray | None = None  # `keep`: item i is row _rows[i] of the split (None: row i)
        self._file: PixelFile | None = None
        self._tensor: torch.Tensor | None = None
        #: how the pixels are served: ``{"path", "planes", "decoded" (images this process decoded to build the
        #: file; 0 when it was already there), "seconds"}``, or ``{"off": reason}`` when decoded per item
        self.cache_info: dict[str, Any] = {"off": "cache=False"}
        # the transforms import torchvision (and with it torch._dynamo): import it here, once, so that forked
        # DataLoader workers inherit it instead of each importing it again (seconds and ~150 MiB per worker)
        from torchvision.transforms.v2 import functional  # noqa: F401
        if cache:
            self._use_disk_cache(cache_dir, cache_max_bytes, num_threads, progress)

    def _use_disk_cache(self, cache_dir: str | os.PathLike | None, max_bytes: int | None,
                        num_threads: int | None, progress: bool) -> None:
        folder = Path(cache_dir) if cache_dir is not None else cache_dir_default() / "images"
        # one process builds while the others wait on the lock (`tl_hub.data.pixel_cache`): it may use the cores
        # they leave idle (decoding and resizing release the GIL)
        threads = num_threads or min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                                     os.cpu_count() or 1)
        got = obtain_pixels(folder, self._cache_key_parts(), self._raw_rows(), self._decode_row, count=len(self),
                            side=self.side, max_bytes=max_bytes, threads=threads, progress=progress)
        if got.pixels is None:
            self.cache_info = {"off": got.reason}
            logger.warning("image cache: %s; decoding every image per item instead (use DataLoader workers, "
                           "num_workers), a smaller image_size, or more image_cache_max_gb / free disk space",
                           got.reason)
            return
        self._file = got.pixels
        self.cache_info = {"path": str(got.pixels.path), "planes": got.pixels.planes, "decoded": got.decoded,
                           "seconds": got.seconds}
        if got.decoded:
            logger.info("image cache: decoded %d images once into %s (%.2f GiB, %d plane(s)) in %.1f s",
                        got.decoded, got.pixels.path, got.pixels.nbytes / 2**30, got.pixels.planes, got.seconds)

    def _raw_rows(self) -> Iterator[tuple[int, Any]]:
        raw = self._source.raw()
        for start in range(0, len(self), 256):
            yield from enumerate(raw[start : start + 256][self._source.column], start=start)

    def _decode_row(self, index: int, row: Any) -> torch.Tensor:
        return self._geometry(self._open(row, index))

    def _cache_key_parts(self) -> list[Any]:
        """What the decoded pixels depend on: the rows (fingerprint; size and modification time of each image
        file they point to), the geometry, and the libraries that decode and resize."""
        from importlib.metadata import version

        import PIL

        spec = self.spec
        geometry = ["train" if self.augment else "eval", self.side, spec.size, spec.resize_size, spec.interpolation,
                    spec.resize_mode, spec.backend]
        return [self._source.fingerprint(), _file_stamps(self._source), geometry,
                [PIL.__version__, torch.__version__, version("torchvision")]]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def bad_rows(self) -> dict[int, str] | None:
        """The rows (positions in the split) whose image the image cache's build could not decode, with the
        reason; None when there is no cache (images are decoded per item, and nothing was checked)."""
        return dict(self._file.bad) if self._file is not None else None

    def keep(self, positions: np.ndarray) -> None:
        """Serve only these rows of the split, in this order (the good ones, after `settle_image_checks`):
        item i is then row ``positions[i]``; the cache file stays as it is (its key, and so later runs' reuse of
        it, is the whole split's).

        Example:
            >>> # ds.keep(settle_image_checks(bundle, {"train": ds.bad_rows}).get("train", np.arange(len(ds))))
        """
        positions = np.asarray(positions, dtype=np.int64)
        self._rows = positions if self._rows is None else self._rows[positions]
        self.labels = self.labels[torch.from_numpy(positions)]
        if self.ids is not None:
            self.ids = [self.ids[int(p)] for p in positions]

    def _row(self, index: int) -> int:
        return int(self._rows[index]) if self._rows is not None else index

    def _name(self, index: int) -> str:
        return self.ids[index] if self.ids is not None else f"row {index}"

    def _geometry(self, image: Image.Image) -> torch.Tensor:
        if not self.augment:
            return self.spec.eval_uint8(image)
        return self.spec.resize_uint8(image, self.spec.resize_size, crop=self.spec.resize_size)

    def _open(self, row: Any, index: int) -> Image.Image:
        # Training crops are random anyway: let JPEGs decode at a reduced DCT scale that still covers the
        # cached square (several times faster for photos). Eval decodes in full, like the processor.
        draft = (self.side, self.side) if self.augment else None
        return open_image(row, where=self._name(index), draft=draft)

    def _decode(self, index: int) -> torch.Tensor:
        return self._geometry(self._open(self._source.row(self._row(index)), index))

    @property
    def pixels(self) -> torch.Tensor | None:
        """The cached uint8 images, ``[N, C, R, R]`` (C = 1 for greyscale data), a view of the memory-mapped
        cache file (nothing is read until used), or None when images are decoded per item."""
        if self._file is None:
            return None
        if self._tensor is None:
            self._tensor = torch.from_numpy(self._file.array())
        return self._tensor

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tensor": None}  # a worker maps the file itself: only its path travels

    def uint8(self, index: int) -> torch.Tensor:
        """The cached (or freshly decoded) uint8 image before augmentation, ``[3, R, R]`` (a greyscale
        cache entry is returned as a 3-channel view of its one plane).

        Example:
            >>> # ds[i]["pixel_values"] == spec.normalize(ds.uint8(i)) when train=False
        """
        return self._planes(index).expand(3, -1, -1)

    def _planes(self, index: int) -> torch.Tensor:
        pixels = self.pixels
        return pixels[self._row(index)] if pixels is not None else self._decode(index)

    @property
    def per_item_randomness(self) -> bool:
        """Whether items draw random numbers when they are made (per-item augmentation); uint8 items do not:
        their batch is augmented by `transform_batch`."""
        return self.augment and not self.uint8_items

    def transform_batch(self, pixels: torch.Tensor, seeds: Any = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """The batched counterpart of the per-item transform, for ``uint8_items=True`` batches on any
        device: `augment_batch` for training (random numbers from the samples' `seeds`, else `generator`),
        normalisation only for eval.

        Example:
            >>> # batch = next(iter(loader)); x = dataset.transform_batch(batch["pixel_values"].to("cuda"), seeds)
        """
        if not self.augment:
            return self.spec.normalize(pixels)
        return augment_batch(pixels, self.spec, scale=self.scale, ratio=self.ratio, flip=self.flip,
                             generator=generator, seeds=seeds)

    #: items may be asked for as ``(index, seed)``: the augmentation then draws from a generator of its own,
    #: seeded by `seed` (`tl_hub.seeding.SeededDataset` hands the keys through, saving and restoring nothing)
    takes_seeds = True

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        image = self._planes(index)  # 1 or 3 planes: crop and resize them before widening to RGB
        if self.uint8_items:
            return {"pixel_values": image.expand(3, -1, -1), "labels": self.labels[index], "index": index}
        if self.augment:
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms.v2 import functional as tvF

            generator = torch.Generator().manual_seed(seed) if seed else None
            height, width = image.shape[-2:]
            top, left, h, w = _random_resized_crop_params(height, width, self.scale, self.ratio, generator)
            image = tvF.resize(
                image[:, top : top + h, left : left + w].contiguous(),
                [self.spec.size, self.spec.size],
                interpolation=InterpolationMode.BILINEAR,
                antialias=True,
            )
            if self.flip and bool(torch.rand((), generator=generator) < 0.5):
                image = image.flip(-1)
        pixels = self.spec.normalize(image.expand(3, -1, -1))  # the float copy is a dense 3-plane tensor
        return {"pixel_values": pixels, "labels": self.labels[index], "index": index}


def _file_stamps(source: _Source) -> str:
    """A hash of (path, size, modification time) of every row that points to an image file."""
    return file_stamps(source.raw(), source.column)
