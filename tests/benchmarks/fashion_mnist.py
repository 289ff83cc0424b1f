"""The full Fashion-MNIST (60,000 train + 10,000 test, 28x28 grey, 10 classes) for the benchmarks.

It reads the four IDX files that the Debian package `dataset-fashion-mnist` installs in
`/usr/share/datasets/fashion-mnist/` (or the folder named by `$FASHION_MNIST_DIR`), draws
class-balanced training subsets of any size, and turns arrays into `datasets.Dataset`s with an
`Image()` column and a `ClassLabel` column carrying the 10 real label names.

Example:
    >>> from fashion_mnist import load_split, balanced_subset  # doctest: +SKIP
    >>> images, labels = load_split("train")                    # doctest: +SKIP
    >>> images.shape, labels.shape                              # doctest: +SKIP
    ((60000, 28, 28), (60000,))
    >>> idx = balanced_subset(labels, 1000, seed=0)             # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
LABELS: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}


class FashionMNISTMissing(FileNotFoundError):
    """The Fashion-MNIST IDX files are not installed where the benchmark looks for them."""


def data_dir() -> Path:
    """`$FASHION_MNIST_DIR` if set, else the Debian package's folder."""
    return Path(os.environ.get("FASHION_MNIST_DIR", DEFAULT_DIR))


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    head = 4 + 4 * ndim
    got_magic, *dims = struct.unpack(">" + "I" * (1 + ndim), raw[:head])
    if got_magic != magic:
        raise ValueError(f"{path}: IDX magic number {got_magic}, expected {magic}; the file is corrupt")
    data = np.frombuffer(raw, dtype=np.uint8, offset=head)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {dims}; the file is truncated")
    return data.reshape(dims)


def load_split(split: str, source: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, [n, 28, 28]) and labels (int64, [n]) of the "train" or "test" split.

    source "full": the complete dataset from the Debian package's IDX files (60,000 / 10,000);
    raises FashionMNISTMissing (with the install command) when the files are absent.
    source "bundled": the class-balanced subset that ships inside tl_hub (3,000 / 2,000), for smoke
    tests and machines without the package; never use it for the published numbers.

    Example:
        >>> images, labels = load_split("test")  # doctest: +SKIP
        >>> len(images)                          # doctest: +SKIP
        10000
    """
    if split not in _FILES:
        raise ValueError(f"split: got {split!r}; expected one of {sorted(_FILES)}")
    if source == "bundled":
        return _load_bundled(split)
    if source != "full":
        raise ValueError(f"source: got {source!r}; expected 'full' or 'bundled'")
    image_name, label_name, expected = _FILES[split]
    folder = data_dir()
    missing = [name for name in (image_name, label_name) if not (folder / name).is_file()]
    if missing:
        raise FashionMNISTMissing(
            f"Fashion-MNIST: {', '.join(missing)} not found in {folder}. Install the full dataset with "
            "`sudo apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu, 30 MB), or download the "
            "four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist into a folder "
            "and point FASHION_MNIST_DIR at it."
        )
    images = _read_idx(folder / image_name, 2051, 3)
    labels = _read_idx(folder / label_name, 2049, 1).astype(np.int64)
    if len(images) != expected or len(labels) != expected:
        raise ValueError(f"Fashion-MNIST {split}: {len(images)} images / {len(labels)} labels, expected {expected}")
    return images, labels


def _load_bundled(split: str) -> tuple[np.ndarray, np.ndarray]:
    from importlib.resources import files

    with files("tl_hub").joinpath("bundled_data/fashion_mnist.npz").open("rb") as handle:
        data = np.load(handle)
        names = [str(n) for n in data["label_names"]]
        if names != LABELS:
            raise ValueError(f"bundled Fashion-MNIST label names {names} differ from {LABELS}")
        return data[f"{split}_images"].copy(), data[f"{split}_labels"].astype(np.int64)


def balanced_subset(labels: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced random subset of size n (n // 10 per class, remainder spread).

    The same (n, seed) always gives the same indices; a larger n with the same seed is not a
    superset of a smaller one. n >= len(labels) returns every index.

    Example:
        >>> labels = np.repeat(np.arange(10), 20)
        >>> idx = balanced_subset(labels, 50, seed=0)
        >>> np.bincount(labels[idx]).tolist()
        [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    """
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [n // len(classes) + (1 if i < n % len(classes) else 0) for i in range(len(classes))]
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class)]
    return np.sort(np.concatenate(chosen))


def to_hf_dataset(images: np.ndarray, labels: np.ndarray, names: list[str] | None = None) -> Any:
    """A `datasets.Dataset` with columns image (`Image()`, grey PIL) and label (`ClassLabel` with `names`,
    default the 10 real names).

    Example:
        >>> ds = to_hf_dataset(np.zeros((2, 28, 28), np.uint8), np.array([0, 9]))  # doctest: +SKIP
        >>> ds.features["label"].names[9]                                          # doctest: +SKIP
        'Ankle boot'
    """
    import datasets
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names or LABELS)})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(img) for img in images], "label": labels.tolist()},
        features=features,
    )


def load_subsets(n_train: int, *, seed: int = 0, n_test: int | None = None, source: str = "full") -> dict[str, Any]:
    """{"train": (images, labels) of a balanced n_train subset, "test": the full (or first n_test) test set}.

    Example:
        >>> parts = load_subsets(1000, seed=0)  # doctest: +SKIP
        >>> len(parts["train"][0]), len(parts["test"][0])  # doctest: +SKIP
        (1000, 10000)
    """
    train_x, train_y = load_split("train", source)
    test_x, test_y = load_split("test", source)
    idx = balanced_subset(train_y, n_train, seed=seed)
    if n_test is not None and n_test < len(test_y):
        test_idx = balanced_subset(test_y, n_test, seed=12345)
        test_x, test_y = test_x[test_idx], test_y[test_idx]
    return {"train": (train_x[idx], train_y[idx]), "test": (test_x, test_y)}
