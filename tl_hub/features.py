"""Frozen-feature fast path: run the frozen backbone once, then train only the head on its features.

Under policy `head` the backbone's output never changes, so each image's *features* -- the input of
the classification head -- are computed once (deterministic eval transform, the run's precision) and
the head trains on them for every epoch, through the same loop (same optimizer, schedule, checkpoints,
resume). The head module is trained **in place**: afterwards the full model (backbone + trained head)
is a normal checkpoint whose logits equal `head(features)`.

Features are captured with a forward pre-hook on the head module (the module owning the head's
parameters), so this works for any architecture: `classifier` (ViT, ConvNeXt, ...), `classifier.1`
after a Flatten (ResNet), a Sequential head, or timm's `timm_model.classifier` / `head.fc`.

Optionally features are kept on disk as float16 (`feature_cache_dir`), keyed by the backbone weights,
the data and the image transform, and reused by later runs.

Example:
    >>> import torch
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> model = ViTForImageClassification(ViTConfig(image_size=16, patch_size=8, hidden_size=16,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, num_labels=3))
    >>> head_module_name(model)
    'classifier'
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from tl_hub.depth import HEAD_NAMES_ATTR, head_parameter_names
from tl_hub.errors import DataError


def head_module_name(model: torch.nn.Module) -> str:
    """Name of the smallest module that owns every parameter of the classification head.

    Example:
        >>> # ResNet: 'classifier.1'; timm wrapper: 'timm_model.classifier'
    """
    names = head_parameter_names(model)
    parts = [n.split(".")[:-1] for n in names]
    common: list[str] = []
    for level in zip(*parts):
        if all(x == level[0] for x in level):
            common.append(level[0])
        else:
            break
    return ".".join(common)


def head_module(model: torch.nn.Module) -> torch.nn.Module:
    """The head module itself (trained in place by the fast path)."""
    name = head_module_name(model)
    return model.get_submodule(name) if name else model


class HeadOnFeatures(torch.nn.Module):
    """The head as a model of its own: `forward(features=...)` -> logits.

    Example:
        >>> HeadOnFeatures(torch.nn.Linear(4, 2))(features=torch.zeros(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.head(features)
        return out.logits if hasattr(out, "logits") else out


class FeatureDataset(Dataset):
    """Items `{"features", "labels", "index"}` over precomputed features.

    Example:
        >>> ds = FeatureDataset(torch.zeros(2, 4), torch.tensor([0, 1]))
        >>> sorted(ds[1])
        ['features', 'index', 'labels']
    """

    augment = False  # deterministic items (tells the loop that no per-item seeding is needed)

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if len(features) != len(labels):
            raise DataError(f"features: {len(features)} rows but {len(labels)} labels")
        self.features = features
        self.labels = _labels(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"features": self.features[i], "labels": self.labels[i], "index": i}


class _Uint8Items(Dataset):
    """A deterministic `ImageClassificationDataset`'s items as uint8 images, for `extract_features` to
    normalise whole batches with the dataset's own `transform_batch`: the same arithmetic per pixel as the
    per-item transform, in three tensor operations per batch instead of three per image."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"pixel_values": self.dataset.uint8(i), "labels": self.dataset.labels[i], "index": i}


def _batched(dataset: Dataset) -> tuple[Dataset, Any]:
    """(the dataset to load, the batch transform to apply after loading, or None)."""
    from tl_hub.data.dataset import ImageClassificationDataset

    if isinstance(dataset, ImageClassificationDataset) and not dataset.augment and not dataset.uint8_items:
        return _Uint8Items(dataset), dataset.transform_batch
    return dataset, None


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    accelerator: Any,
    batch_size: int = 64,
    num_workers: int = 0,
    channels_last: bool = False,
    desc: str = "features",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model` once over `dataset` (items with "pixel_values", "labels", "index") and return the
    head's inputs (float32, one row per item, in index order) and the labels.

    Works on any number of processes: each runs its shard, results are gathered to every process.
    The model runs in eval mode under the accelerator's precision (bf16 autocast when configured). While
    it runs, a `tl_hub.hardware.ThreadGovernor` keeps torch's threads sized to the cores other programs
    leave free (never a thread count the user chose).

    Example:
        >>> # feats, labels = extract_features(model, eval_ds, accelerator=Accelerator(cpu=True))
    """
    from tl_hub.hardware import ThreadGovernor
    from tl_hub.train import forward_logits

    from tl_hub.distributed import prepare_trainable

    captured: list[torch.Tensor] = []

    def grab(_module: torch.nn.Module, args: tuple, kwargs: dict | None = None) -> None:
        captured.append(args[0].detach())

    nproc = accelerator.num_processes
    bs = max(nproc, batch_size - batch_size % nproc)
    source, transform_batch = _batched(dataset)
    loader = accelerator.prepare(DataLoader(source, batch_size=bs, shuffle=False, num_workers=num_workers))
    was_training = model.training
    # under FSDP a wrapped copy runs (the model itself is never wrapped); its own head is hooked
    trainable = prepare_trainable(accelerator, model, before_wrap=head_module)
    prepared, head, model = trainable.prepared, trainable.extra, trainable.module
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.eval()
    handle = head.register_forward_pre_hook(grab)
    feats: torch.Tensor | None = None
    labels_out: torch.Tensor | None = None
    n = len(dataset)
    bar = None
    if progress and accelerator.is_local_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(loader), desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)
    governor = ThreadGovernor(accelerator, num_workers)  # the machine's load may change during the pass
    try:
        for batch in loader:
            governor.tick()
            if transform_batch is not None:  # uint8 batch -> the eval transform's float pixels
                batch["pixel_values"] = transform_batch(batch["pixel_values"])
            captured.clear()
            forward_logits(prepared, batch, channels_last)
            if len(captured) != 1:
                raise DataError(
                    f"feature cache: the head {head_module_name(model)!r} ran {len(captured)} times in one "
                    "forward pass; this architecture cannot use the fast path (set feature_cache: off)"
                )
            f = captured[0].float()
            f, labels, index = accelerator.gather_for_metrics((f, batch["labels"], batch["index"]))
            if feats is None:
                feats = torch.zeros((n, *f.shape[1:]), dtype=torch.float32)
                labels_out = torch.zeros((n, *labels.shape[1:]), dtype=_labels(labels).dtype)
            idx = index.cpu().long()
            feats[idx] = f.cpu()
            labels_out[idx] = _labels(labels.cpu())
            if bar is not None:
                bar.update(1)
    finally:
        handle.remove()
        if bar is not None:
            bar.close()
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)
    if feats is None:
        raise DataError("feature cache: the dataset is empty; nothing to extract")
    return feats, labels_out


def _labels(labels: torch.Tensor) -> torch.Tensor:
    """Class ids as int64; multi-label rows (2-d multi-hot) as float32."""
    return labels.float() if labels.ndim == 2 else labels.long()


def cache_key(model: torch.nn.Module, parts: Sequence[Any]) -> str:
    """A key for cached features: a fingerprint of the backbone weights plus `parts` (data, transform,
    precision). Samples every tensor of the state dict (shape + first/last values), so different
    weights give a different key without hashing gigabytes.

    Example:
        >>> cache_key(torch.nn.Linear(2, 2), ["x"]) == cache_key(torch.nn.Linear(2, 2), ["x"])
        False
    """
    h = hashlib.sha256()
    head = set(head_parameter_names(model)) if hasattr(model, HEAD_NAMES_ATTR) else set()
    for name, tensor in model.state_dict().items():
        if name in head:
            continue
        flat = tensor.detach().reshape(-1)
        sample = torch.cat([flat[:16], flat[-16:]]).to(torch.float64) if flat.numel() else flat.to(torch.float64)
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(sample.cpu().numpy().tobytes())
    h.update(json.dumps([str(p) for p in parts]).encode())
    return h.hexdigest()[:24]


def load_cached(path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Features and labels from a float16 cache file, or None when absent/unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        data = load_file(str(path))
        return data["features"].float(), _labels(data["labels"])
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
        return None


def save_cached(path: Path, features: torch.Tensor, labels: torch.Tensor) -> None:
    """Write features (float16) and labels atomically (temp file + os.replace)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}.{uuid.uuid4().hex[:8]}")
    save_file({"features": features.half().contiguous(), "labels": _labels(labels).contiguous()}, str(tmp))
    os.replace(tmp, path)


def features_for(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    accelerator: Any,
    batch_size: int,
    split: str,
    cache_dir: str | os.PathLike | None = None,
    key_parts: Sequence[Any] = (),
    num_workers: int = 0,
    channels_last: bool = False,
    progress: bool = True,
    log: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of `dataset`: from the disk cache when present, else extracted (and cached).

    With a `cache_dir`, features are stored as float16 and the returned features are the float16
    values (so a run that reads the cache trains exactly like the run that wrote it).

    Example:
        >>> # feats, labels = features_for(model, ds, accelerator=acc, batch_size=64, split="train")
    """
    path = None
    if cache_dir is not None:
        key = cache_key(model, [split, len(dataset), *key_parts])
        path = Path(cache_dir) / key / f"{split}.safetensors"
        hit = load_cached(path)
        if hit is not None and len(hit[1]) == len(dataset):
            if log:
                log(f"feature cache: reusing {split} features from {path}")
            return hit
    feats, labels = extract_features(model, dataset, accelerator=accelerator, batch_size=batch_size,
                                     num_workers=num_workers, channels_last=channels_last,
                                     desc=f"features ({split})", progress=progress)
    if path is not None:
        if accelerator.is_main_process:
            save_cached(path, feats, labels)
        accelerator.wait_for_everyone()
        feats = feats.half().float()
    return feats, labels
