"""What tl_hub's loop and input pipeline cost by themselves, on the CPU (the `loop` section of run.py).

(a) **Per-step overhead.** A trivial model (so the model costs next to nothing) trained by
    `tl_hub.train.train` (DataLoader workers off) against a bare PyTorch loop over the same pre-decoded
    uint8 tensors with the same batched augmentation (`augment_batch`), the same fused AdamW and batch:
    steady-state images/s of each, in the same process, alternating. Target: tl_hub >= 0.8x the bare loop.
(b) **Input pipeline alone.** tl_hub's training loader (sampler, gather of cached uint8 items, collate, and
    the pinned copy when CUDA is there) with one DataLoader worker, no augmentation, at 224 px colour:
    images/s per worker core. Target >= 8,000.

Usage (repository root):

    python tests/benchmarks/loop_overhead.py            # prints JSON
    python tests/benchmarks/run.py --sections loop      # the same, inside the benchmark report

(c), EfficientNet-Lite0 partial / full fine-tuning against the transformers Trainer, is run.py's
`throughput` section.

Example:
    >>> import loop_overhead                             # doctest: +SKIP
    >>> loop_overhead.per_step_overhead(n=512, repeats=3)["ratio"]  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import torch

OVERHEAD_TARGET = 0.8
PIPELINE_TARGET = 8000.0


def uint8_dataset(n: int, side: int, crop: int, *, seed: int = 0, augment: bool = True) -> Any:
    """`n` random colour images of `side` px, decoded once into tl_hub's uint8 training dataset (crop `crop`)."""
    from tl_hub.data import load_data
    from tl_hub.data.dataset import ImageClassificationDataset
    from tl_hub.data.transforms import ImageSpec

    rng = np.random.default_rng(seed)
    images = list(rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8))
    labels = [f"c{i % 10}" for i in range(n)]
    bundle = load_data((images, labels), eval_fraction=0.05, seed=seed)
    spec = ImageSpec(size=crop, resize_size=side)
    train = ImageClassificationDataset(bundle.train, spec, train=True, augment=augment, uint8_items=True)
    evaluation = ImageClassificationDataset(bundle.eval, spec, train=False, uint8_items=True)
    return train, evaluation


class TrivialModel(torch.nn.Module):
    """Pool the image to 3 numbers, one linear layer: nothing for the loop to hide behind."""

    def __init__(self, labels: int = 10) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.fc(pixel_values.mean(dim=(2, 3)))


def tl_hub_loop(train_ds: Any, eval_ds: Any, *, batch: int, epochs: int) -> float:
    """Steady-state images/s of tl_hub's loop (the last epoch, from the end of its first step)."""
    import tempfile

    from tl_hub.freezing import simple_param_groups
    from tl_hub.hardware import make_accelerator
    from tl_hub.train import Phase, TrainArgs, train

    torch.manual_seed(0)
    args = TrainArgs(epochs=epochs, batch_size=batch, learning_rate=1e-3, checkpointing_steps=None, progress=False,
                     num_workers=0, seed=0)
    out = train(TrivialModel(), train_ds, eval_ds, args=args, accelerator=make_accelerator("no"),
                checkpoint_dir=tempfile.mkdtemp(), phases=[Phase("train", epochs, simple_param_groups)],
                log=lambda message: None)
    return float(out.history[-1]["images_per_second"])


def bare_loop(train_ds: Any, *, batch: int, epochs: int) -> float:
    """The same data, augmentation, model and optimizer in the plainest PyTorch loop: steady-state images/s."""
    from tl_hub.data.dataset import augment_batch
    from tl_hub.train import make_optimizer

    torch.manual_seed(0)
    pixels, labels = train_ds.pixels.expand(-1, 3, -1, -1) if train_ds.pixels.shape[1] == 1 else train_ds.pixels, \
        train_ds.labels
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, labels), batch_size=batch,
                                         shuffle=True)
    model = TrivialModel()
    optimizer = make_optimizer([{"params": list(model.parameters())}], 1e-3)
    generator = torch.Generator().manual_seed(0)
    seen, start = 0, None
    for epoch in range(epochs):
        for step, (x, y) in enumerate(loader):
            if epoch == epochs - 1 and step == 1:
                seen, start = 0, time.perf_counter()
            inputs = augment_batch(x, train_ds.spec, generator=generator)
            loss = torch.nn.functional.cross_entropy(model(inputs), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seen += len(y)
    return seen / (time.perf_counter() - start)


def per_step_overhead(n: int = 2048, side: int = 128, crop: int = 112, batch: int = 32, epochs: int = 2,
                      repeats: int = 3) -> dict[str, Any]:
    """(a): tl_hub's loop against the bare loop, alternating, `repeats` times each."""
    train_ds, eval_ds = uint8_dataset(n, side, crop)
    if epochs < 1 or len(train_ds) < 2 * batch:
        raise ValueError(f"per_step_overhead: {len(train_ds)} training images at batch {batch} over {epochs} epoch(s) "
                         "leave no steady-state steps; need epochs >= 1 and at least 2 batches per epoch")
    tl, bare = [], []
    for _ in range(repeats):
        tl.append(tl_hub_loop(train_ds, eval_ds, batch=batch, epochs=epochs))
        bare.append(bare_loop(train_ds, batch=batch, epochs=epochs))
    ratio = float(np.median(tl) / np.median(bare))
    return {"tl_hub_images_per_second": tl, "bare_images_per_second": bare, "ratio": ratio,
            "target": OVERHEAD_TARGET, "met": ratio >= OVERHEAD_TARGET,
            "setup": {"images": n, "side": side, "crop": crop, "batch": batch, "threads": torch.get_num_threads()}}


def input_pipeline(n: int = 1024, side: int = 256, batch: int = 128, batches: int = 40, workers: int = 1,
                   crop: int = 224) -> dict[str, Any]:
    """(b): tl_hub's training loader alone (no augmentation, no model): images/s per worker core.

    The first 2 batches (worker start-up) are not timed; then `batches` batches, across epochs if need be.
    """
    from tl_hub.seeding import EpochSampler, SeededDataset

    train_ds, _ = uint8_dataset(n, side, crop, augment=False)
    if not len(train_ds) or batches < 1:
        raise ValueError(f"input_pipeline: {len(train_ds)} training images, {batches} batches: nothing to time")
    pin = torch.cuda.is_available()
    loader = torch.utils.data.DataLoader(SeededDataset(train_ds), batch_size=batch, num_workers=workers,
                                         sampler=EpochSampler(len(train_ds), 0), pin_memory=pin,
                                         persistent_workers=workers > 0)
    seen, start, epoch, step = 0, None, 0, 0
    while start is None or seen < batches * batch:
        loader.sampler.set_epoch(epoch)
        for item in loader:
            if step == 2:
                seen, start = 0, time.perf_counter()
            step += 1
            seen += len(item["labels"])
            if start is not None and seen >= batches * batch:
                break
        epoch += 1
    rate = seen / (time.perf_counter() - start) / max(1, workers)
    return {"images_per_second_per_worker": rate, "workers": workers, "side": side, "crop": crop, "batch": batch,
            "images": len(train_ds), "pin_memory": pin, "target": PIPELINE_TARGET, "met": rate >= PIPELINE_TARGET}


def main(argv: list[str] | None = None) -> int:
    print(json.dumps({"per_step_overhead": per_step_overhead(), "input_pipeline": input_pipeline()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
