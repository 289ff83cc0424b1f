"""Deterministic data order and augmentation randomness: each is a function of (seed, epoch, index), so a
run gives the same samples in the same order with the same augmentation on 1 or N processes, with or
without DataLoader workers, and after a resume from any step.

Example:
    >>> sampler = EpochSampler(4, seed=0)
    >>> sampler.set_epoch(1)
    >>> sorted(i for i, _ in sampler)
    [0, 1, 2, 3]
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochSampler", "SeededDataset", "mix_seed"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across processes, platforms and Python runs).

    Example:
        >>> mix_seed(0, 1) == mix_seed(0, 1) != mix_seed(1, 0)
        True
    """
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class EpochSampler(Sampler):
    """Yields `(index, augmentation_seed)` pairs: a permutation seeded by (seed, epoch), or in order.

    Example:
        >>> s = EpochSampler(4, seed=0); s.set_epoch(1)
        >>> sorted(i for i, _ in s)
        [0, 1, 2, 3]
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        """The sample indices of the current epoch, in order."""
        if not self.shuffle:
            return list(range(self.num_samples))
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        return torch.randperm(self.num_samples, generator=gen).tolist()

    def __iter__(self):
        for i in self.order():
            yield (i, mix_seed(self.seed, self.epoch, i) if self.shuffle else 0)

    def __len__(self) -> int:
        return self.num_samples


class SeededDataset(Dataset):
    """Wraps a map-style dataset: item `(i, seed)` is computed under torch/random/numpy seeded by `seed`.

    The global generators are restored afterwards, so augmentation randomness depends only on
    (seed, epoch, index) -- not on the worker, the process or where a resumed run restarted.

    Example:
        >>> ds = SeededDataset([{"x": 1}]); ds[(0, 5)]
        {'x': 1}
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        # datasets that declare `augment = False` draw no random numbers: skip the (costly) seeding
        self.seeded = bool(getattr(dataset, "augment", True))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        if not seed or not self.seeded:
            return self.dataset[index]
        import random

        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: items are made on the CPU, and torch.manual_seed would also queue a
            # CUDA re-seed per item (slow, with a stack trace per call while CUDA is not initialised)
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed & 0xFFFFFFFF)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
