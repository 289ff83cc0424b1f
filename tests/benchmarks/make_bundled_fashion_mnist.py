"""Regenerate tl_hub/bundled_data/fashion_mnist.npz from the Debian package dataset-fashion-mnist.

Deterministic: the first 300 images of each class in file order from the train file (3,000) and the
first 200 of each class from the t10k file (2,000), with their row numbers in the original files.

Usage:
    apt-get install -y dataset-fashion-mnist
    python tests/benchmarks/make_bundled_fashion_mnist.py [--source /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
OUT = Path(__file__).resolve().parents[2] / "tl_hub" / "bundled_data" / "fashion_mnist.npz"


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file: magic 0x0000 08 ndim, big-endian dims, uint8 data."""
    data = gzip.open(path, "rb").read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Row numbers of the first `per_class` rows of every class, in file order."""
    rows = [np.flatnonzero(labels == c)[:per_class] for c in range(len(NAMES))]
    return np.sort(np.concatenate(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    arrays: dict[str, np.ndarray] = {"label_names": np.array(NAMES)}
    for split, stem, per_class in (("train", "train", args.train_per_class), ("test", "t10k", args.test_per_class)):
        images = read_idx(args.source / f"{stem}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{stem}-labels-idx1-ubyte.gz")
        rows = first_per_class(labels, per_class)
        arrays[f"{split}_images"] = np.ascontiguousarray(images[rows])
        arrays[f"{split}_labels"] = labels[rows].astype(np.uint8)
        arrays[f"{split}_rows"] = rows.astype(np.int32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()[:16]
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, sha256 {digest}): "
          f"{len(arrays['train_rows'])} train + {len(arrays['test_rows'])} test images")


if __name__ == "__main__":
    main()
