"""Synthetic labelled colour images, in memory or written as an image folder (`root/<label>/<i>.png`).

Example:
    >>> images, ys = synthetic_images(["red", "green"], per_label=2, seed=0)  # doctest: +SKIP
    >>> folder = write_image_folder(tmp_path / "data", ["red", "green", "blue"], per_label=8, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_images(labels: Sequence[str], per_label: int, seed: int) -> tuple[list[Image.Image], list[int]]:
    """Noisy 20x20 images whose dominant colour channel / pattern depends on the label."""
    rng = np.random.default_rng(seed)
    images, ys = [], []
    for y in range(len(labels)):
        for _ in range(per_label):
            arr = rng.integers(0, 90, (20, 20, 3)).astype(np.uint8)
            arr[..., y % 3] += np.uint8(150)
            if y >= 3:
                arr[: 10 * (y // 3) % 20] = 255 - arr[: 10 * (y // 3) % 20]
            images.append(Image.fromarray(arr))
            ys.append(y)
    return images, ys


def write_image_folder(root: Path, labels: Sequence[str], per_label: int, seed: int) -> Path:
    """`synthetic_images` saved as root/<label>/<i>.png (i counts over the whole folder); returns root."""
    images, ys = synthetic_images(labels, per_label, seed)
    for i, (image, y) in enumerate(zip(images, ys)):
        (root / labels[y]).mkdir(parents=True, exist_ok=True)
        image.save(root / labels[y] / f"{i}.png")
    return root
