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


def write_multi_label_table(root: Path, labels: Sequence[str], count: int, seed: int, *,
                            separator: str | None = None) -> tuple[Path, list[list[str]]]:
    """`count` noisy 16x16 images whose colour channels say their labels (label k in `labels` lifts channel
    k % 3 of one horizontal band: 3 labels -> the image's red, green and blue), each with 1..len(labels) labels;
    written as root/<i>.png plus root/labels.jsonl (a JSON list per row), or root/labels.csv with the labels of a
    row joined by `separator`. Returns (the table, each row's label list)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows, sets = [], []
    for i in range(count):
        chosen = sorted(int(k) for k in rng.choice(len(labels), size=int(rng.integers(1, len(labels) + 1)),
                                                   replace=False))
        arr = rng.integers(0, 80, (16, 16, 3)).astype(np.uint8)
        for k in chosen:
            band = slice((k // 3) * 4, 16) if len(labels) > 3 else slice(0, 16)
            arr[band, :, k % 3] += np.uint8(160)
        Image.fromarray(arr).save(root / f"{i}.png")
        names = [labels[k] for k in chosen]
        sets.append(names)
        rows.append((f"{i}.png", names))
    if separator is None:
        import json

        table = root / "labels.jsonl"
        table.write_text("".join(json.dumps({"image": p, "labels": n}) + "\n" for p, n in rows))
    else:
        table = root / "labels.csv"
        table.write_text("image,labels\n" + "".join(f"{p},{separator.join(n)}\n" for p, n in rows))
    return table, sets


def write_tinted_folder(root: Path, counts: dict[str, int], rng: np.random.Generator, side: int = 16) -> Path:
    """`root/<label>/<i>.png`: noisy `side` px images, the k-th label's colour channel raised by 150 (k = the
    label's position in `counts`, i counts within the label), drawn from `rng` in order; returns root."""
    for k, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            arr = rng.integers(0, 90, (side, side, 3)).astype(np.uint8)
            arr[..., k] += 150
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root
