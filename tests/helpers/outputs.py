"""Build realistic tl_hub output folders for the card / hub tests without the training code.

`make_output_dir` trains a tiny ViT for a few epochs on small synthetic colour images (really: loss
goes down, eval metrics come from tl_hub.metrics on a held-out split), then writes the folder exactly
as the output-folder contract says: model.safetensors, config.json, preprocessor_config.json,
recipe.yaml, metrics.json, run_info.json (and a checkpoints/ folder that must never be pushed).

Example:
    >>> out = make_output_dir(tmp_path / "run", labels=["red", "green", "blue"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from helpers.images import synthetic_images


def make_output_dir(dest: Path, labels: list[str] | tuple[str, ...] = ("red", "green", "blue"), *,
                    epochs: int = 3, base_model: str = "google/vit-base-patch16-224-in21k",
                    parent_model: str | None = None, seed: int = 0, minimal: bool = False) -> Path:
    """Write a tl_hub output folder for a tiny ViT trained on synthetic images; returns `dest`."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from tl_hub.metrics import compute_metrics

    labels = list(labels)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={n: i for i, n in enumerate(labels)})
    model = ViTForImageClassification(config)
    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    train_x, train_y = synthetic_images(labels, 8, seed)
    eval_x, eval_y = synthetic_images(labels, 4, seed + 1)
    px_train = processor(images=train_x, return_tensors="pt")["pixel_values"]
    px_eval = processor(images=eval_x, return_tensors="pt")["pixel_values"]
    y_train = torch.tensor(train_y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history, best_epoch, best_acc = [], None, -1.0
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        for i in range(0, len(train_x), 8):
            out = model(pixel_values=px_train[i:i + 8], labels=y_train[i:i + 8])
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(out.loss.item())
            step += 1
        model.eval()
        with torch.no_grad():
            logits = model(pixel_values=px_eval).logits.numpy()
        result = compute_metrics(logits.argmax(-1), np.array(eval_y), labels, logits=logits)
        row = {"epoch": epoch, "step": step, "train_loss": round(float(np.mean(losses)), 6),
               "learning_rate": 3e-3, "images_per_second": 1000.0,
               **{f"eval_{k}": round(float(v), 6) for k, v in result.items() if isinstance(v, float)}}
        history.append(row)
        if result["accuracy"] > best_acc:
            best_acc, best_epoch, best = result["accuracy"], epoch, result
    model.save_pretrained(dest)  # the last epoch's weights (fine for tests; a real run saves the best)
    processor.save_pretrained(dest)
    metrics = {"epochs": history, "best_epoch": best_epoch, "metric_for_best_model": "accuracy",
               "final": {k: best[k] for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro")
                         if k in best},
               "per_label": best["per_label"], "confusion_matrix": best["confusion_matrix"], "labels": labels}
    n_params = {name: p.numel() for name, p in model.named_parameters()}
    groups = [(0, "stem", ["vit.embeddings"]), (1, "block", ["vit.layers.0"]), (2, "neck", ["vit.layernorm"]),
              (3, "head", ["classifier"])]
    rows = [{"depth": d, "kind": kind, "modules": mods,
             "params": sum(v for k, v in n_params.items() if k.startswith(mods[0])), "trainable": True}
            for d, kind, mods in groups]
    run_info = {
        "tl_hub_version": "0.1.0", "base_model": base_model, "base_model_revision": None,
        "parent_model": parent_model, "labels": labels,
        "policy": {"name": "full", "train_fraction": 1.0, "head_epochs_fraction": None,
                   "reason": f"{len(train_x)} training images: too few to matter for a tiny test model",
                   "summary": {"policy": "full", "phase": None, "trainable_params": sum(n_params.values()),
                               "frozen_params": 0, "frozen_stat_layers": 0, "rows": rows}},
        "data": {"source": "/home/user/data/colours", "source_type": "imagefolder", "labels": labels,
                 "image_column": None, "label_column": None, "train_split": "train", "eval_split": None,
                 "eval_from": "stratified 20 % of train (seed 0)",
                 "sizes": {"train": len(train_x), "eval": len(eval_x)},
                 "per_label": {"train": {n: 8 for n in labels}, "eval": {n: 4 for n in labels}},
                 "skipped": [{"id": "/home/user/data/colours/red/broken.jpg",
                              "reason": "cannot decode image (UnidentifiedImageError)", "kind": "bad_image"},
                             {"id": "/home/user/data/colours/notes.txt",
                              "reason": "not an image file (extension '.txt')", "kind": "ignored"}],
                 "notes": []},
        "hyperparameters": {"epochs": epochs, "learning_rate": 3e-3, "batch_size": 8, "optimizer": "adamw",
                            "image_size": 16, "seed": seed},
        "command": "tl-hub train recipes/configs/colours.yaml",
        "framework_versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "num_processes": 1, "mixed_precision": "no", "device": "cpu", "train_runtime_s": 1.5,
        "feature_cache_used": False,
    }
    if minimal:
        run_info = {"labels": labels, "base_model": base_model}
        metrics = {}
    (dest / "run_info.json").write_text(json.dumps(run_info, indent=2))
    if metrics:
        (dest / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if not minimal:
        import yaml

        (dest / "recipe.yaml").write_text(yaml.safe_dump({"model": base_model, "dataset": "data/colours",
                                                           "epochs": epochs, "learning_rate": 3e-3}))
    (dest / "checkpoints").mkdir(exist_ok=True)
    (dest / "checkpoints" / "optimizer.bin").write_bytes(b"\0" * 64)
    return dest
