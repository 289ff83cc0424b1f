"""GPU throughput of tl_hub's loop without `datasets`: Lite0 (local folder) on synthetic images, bf16.

Per policy: head (feature pass img/s, then head training on features), partial, full: training
images/s per epoch and peak GPU memory.

    python tests/benchmarks/gpu_loop_benchmark.py MODEL_DIR [--image-size 112] [--n 4096] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


class Synthetic(torch.utils.data.Dataset):
    augment = False

    def __init__(self, n: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, 10, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": self.y[i], "index": i}


def main() -> None:
    from accelerate import Accelerator

    from tl_hub.backbone import load_backbone
    from tl_hub.features import FeatureDataset, HeadOnFeatures, extract_features, head_module
    from tl_hub.freezing import apply_policy, param_groups, simple_param_groups
    from tl_hub.policy import FreezePolicy
    from tl_hub.train import Phase, TrainArgs, train

    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--precision", default="bf16")
    a = p.parse_args()
    labels = [str(i) for i in range(10)]
    train_ds, eval_ds = Synthetic(a.n, a.image_size), Synthetic(a.n // 4, a.image_size)
    from accelerate.utils import DataLoaderConfiguration

    acc = Accelerator(mixed_precision=a.precision, dataloader_config=DataLoaderConfiguration(split_batches=True))
    print(json.dumps({"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}), flush=True)
    for policy in ("head", "partial", "full"):
        model = load_backbone(a.model, labels)
        apply_policy(model, FreezePolicy(policy))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        args = TrainArgs(epochs=a.epochs, batch_size=a.batch_size, checkpointing_steps=None, progress=False,
                         channels_last=True)
        row: dict = {"policy": policy, "precision": a.precision, "image_size": a.image_size, "batch": a.batch_size}
        with tempfile.TemporaryDirectory() as tmp:
            if policy == "head":
                t = time.perf_counter()
                f, y = extract_features(model, train_ds, accelerator=acc, batch_size=256, progress=False,
                                        channels_last=True)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                row["feature_pass_img_s"] = round(len(train_ds) / (time.perf_counter() - t), 1)
                fe, ye = extract_features(model, eval_ds, accelerator=acc, batch_size=256, progress=False)
                out = train(HeadOnFeatures(head_module(model)), FeatureDataset(f, y), FeatureDataset(fe, ye),
                            args=TrainArgs(epochs=a.epochs, batch_size=a.batch_size, checkpointing_steps=None,
                                           progress=False), accelerator=acc, checkpoint_dir=tmp,
                            phases=[Phase("head", a.epochs, simple_param_groups)], log=lambda m: None)
            else:
                out = train(model, train_ds, eval_ds, args=args, accelerator=acc, checkpoint_dir=tmp,
                            phases=[Phase(policy, a.epochs, lambda m: param_groups(m, 1e-4))], log=lambda m: None)
        row["train_img_s_per_epoch"] = [round(r["images_per_second"], 1) for r in out.history]
        if torch.cuda.is_available():
            row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
