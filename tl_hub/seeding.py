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

__all__ = ["BalancedEpochSampler", "EpochSampler", "SeededDataset", "mix_seed", "sample_seeds", "sample_uniforms"]


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


class BalancedEpochSampler(EpochSampler):
    """Like `EpochSampler`, but every label is drawn equally often: `num_samples` indices drawn with
    replacement, each with probability 1 / (number of labels * its label's count), by `torch.multinomial`
    under a generator seeded by (seed, epoch) alone. So the order is a pure function of (seed, epoch): the
    same on every process (accelerate splits each global batch across them, as with `EpochSampler`) and after
    a resume (the loop skips the batches already trained). The epoch keeps its length (the dataset's size).

    An image drawn twice in one epoch gets the same augmentation seed both times (`mix_seed(seed, epoch,
    index)`, what the batched augmentation on a GPU computes from the index); it differs between epochs.

    Example:
        >>> s = BalancedEpochSampler([0, 0, 0, 0, 0, 0, 1, 1], seed=0); s.set_epoch(3)
        >>> order = s.order(); len(order), order == s.order()
        (8, True)
    """

    def __init__(self, labels: Any, seed: int) -> None:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        super().__init__(int(labels.numel()), seed, shuffle=True)
        counts = torch.bincount(labels).double()
        self.weights = (1.0 / counts[labels]) if labels.numel() else counts  # label mass 1 / (present labels)

    def order(self) -> list[int]:
        """The sample indices of the current epoch: drawn with replacement, every label equally likely."""
        if not self.num_samples:
            return []
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 1))  # 1: not EpochSampler's stream
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=gen).tolist()


class SeededDataset(Dataset):
    """Wraps a map-style dataset so that item `(i, seed)`'s randomness depends only on `seed`, i.e. on
    (seed, epoch, index) -- not on the worker, the process or where a resumed run restarted.

    A dataset that declares `takes_seeds` gets the `(i, seed)` key itself and seeds a generator of its own
    (tl_hub's image dataset); any other dataset whose items draw random numbers is computed under torch /
    random / numpy seeded by `seed`, their states saved before and restored after (slower, but it works for
    any dataset); items without randomness (`per_item_randomness` or `augment` False) are not seeded.

    Example:
        >>> ds = SeededDataset([{"x": 1}]); ds[(0, 5)]
        {'x': 1}
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        # datasets whose items draw no random numbers (`per_item_randomness`, else `augment`, is False):
        # no seeding, which saves and restores generator states for every item
        self.seeded = bool(getattr(dataset, "per_item_randomness", getattr(dataset, "augment", True)))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        if not seed or not self.seeded:
            return self.dataset[index]
        if getattr(self.dataset, "takes_seeds", False):  # it seeds a generator of its own: nothing to save
            return self.dataset[key]
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


def sample_seeds(seed: int, epoch: int, indices: Any) -> list[int]:
    """The augmentation seed of each sample of a batch: `mix_seed(seed, epoch, index)`, what `EpochSampler`
    hands out, so a batched augmentation draws for every sample what the per-item one would.

    Example:
        >>> sample_seeds(0, 1, [3, 4]) == [mix_seed(0, 1, 3), mix_seed(0, 1, 4)]
        True
    """
    values = indices.tolist() if hasattr(indices, "tolist") else list(indices)
    return [mix_seed(seed, epoch, int(i)) for i in values]


def sample_uniforms(seeds: Any, count: int) -> torch.Tensor:
    """``[len(seeds), count]`` float64 uniforms in [0, 1): row i is a function of ``seeds[i]`` alone.

    Counter-based (SplitMix64 of seed + k * golden ratio, in numpy's uint64 arithmetic, which wraps by
    definition), so a sample's random numbers do not depend on which batch, process or device it lands
    in, and a batch needs no generator state. Hand-written because torch and numpy offer no vectorised
    per-row seeded stream.

    Example:
        >>> a = sample_uniforms([1, 2], 3); b = sample_uniforms([2], 3)
        >>> a.shape, bool((a[1] == b[0]).all()), bool(((a >= 0) & (a < 1)).all())
        (torch.Size([2, 3]), True, True)
    """
    golden, mix1, mix2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
    base = np.asarray([int(s) & 0xFFFFFFFFFFFFFFFF for s in seeds], dtype=np.uint64)[:, None]
    with np.errstate(over="ignore"):
        z = base + np.arange(1, count + 1, dtype=np.uint64)[None, :] * golden
        z = (z ^ (z >> np.uint64(30))) * mix1
        z = (z ^ (z >> np.uint64(27))) * mix2
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * 2.0**-53)

