"""Frozen-feature fast path: head capture on many architectures; the saved model predicts like head(features)."""

from __future__ import annotations

import pytest
import torch

from helpers.accelerator import cpu_accelerator
from tl_hub.backbone import load_backbone
from tl_hub.features import (
    FeatureDataset,
    HeadOnFeatures,
    extract_features,
    features_for,
    head_module,
    head_module_name,
)
from tl_hub.freezing import apply_policy, simple_param_groups
from tl_hub.train import Phase, TrainArgs, forward_logits, train

torch.set_num_threads(1)
LABELS = ["a", "b", "c"]


class Pixels(torch.utils.data.Dataset):
    augment = False

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(n, 3, 32, 32, generator=g) + self.y.view(-1, 1, 1, 1).float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": self.y[i], "index": i}


@pytest.mark.parametrize(
    "arch, expected",
    [("vit", "classifier"), ("resnet", "classifier.1"), ("levit", None), ("timm_efficientnet", None),
     ("timm_vit", None), ("mobilenet_v2", "classifier")],
)
def test_head_module_owns_the_head_and_fast_path_matches_full_model(tmp_path, tiny, arch, expected):
    model = load_backbone(str(tiny(arch)), LABELS)
    name = head_module_name(model)
    if expected is not None:
        assert name == expected
    head_ids = {id(p) for p in head_module(model).parameters()}
    assert {id(p) for n, p in model.named_parameters() if n in model.tl_hub_head_names} <= head_ids
    apply_policy(model, "head")
    acc = cpu_accelerator()
    train_ds, eval_ds = Pixels(12, 0), Pixels(7, 1)
    f, y = extract_features(model, train_ds, accelerator=acc, batch_size=4, progress=False)
    fe, ye = extract_features(model, eval_ds, accelerator=acc, batch_size=4, progress=False)
    assert len(f) == 12 and len(fe) == 7 and torch.equal(ye, eval_ds.y)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    head = HeadOnFeatures(head_module(model))
    train(head, FeatureDataset(f, y), FeatureDataset(fe, ye), accelerator=acc, checkpoint_dir=tmp_path / "ck",
          args=TrainArgs(epochs=2, batch_size=4, learning_rate=1e-2, progress=False, checkpointing_steps=None),
          phases=[Phase("head", 2, simple_param_groups)], log=lambda m: None)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(model.tl_hub_head_names)  # only the head trained, in place
    # the full model (backbone + trained head) gives the logits head(features) gives
    model.eval()
    with torch.no_grad():
        full = torch.cat([forward_logits(model, {"pixel_values": eval_ds.x[i:i + 4]}) for i in range(0, 7, 4)])
        from_features = head.eval()(features=fe)
    torch.testing.assert_close(full, from_features, rtol=1e-4, atol=1e-5)


def test_disk_cache_is_float16_and_reused(tmp_path, tiny):
    model = load_backbone(str(tiny("vit")), LABELS)
    acc = cpu_accelerator()
    ds = Pixels(6, 0)
    msgs: list[str] = []
    a = features_for(model, ds, accelerator=acc, batch_size=4, split="train", cache_dir=tmp_path / "fc",
                     key_parts=["x"], progress=False, log=msgs.append)
    files = list((tmp_path / "fc").rglob("*.safetensors"))
    assert len(files) == 1
    b = features_for(model, ds, accelerator=acc, batch_size=4, split="train", cache_dir=tmp_path / "fc",
                     key_parts=["x"], progress=False, log=msgs.append)
    assert any("reusing" in m for m in msgs)
    assert torch.equal(a[0], b[0]) and torch.equal(a[0], a[0].half().float())
    # another key (other data/transform) misses the cache
    features_for(model, ds, accelerator=acc, batch_size=4, split="train", cache_dir=tmp_path / "fc",
                 key_parts=["y"], progress=False)
    assert len(list((tmp_path / "fc").rglob("*.safetensors"))) == 2


def test_images_are_normalised_per_batch_with_identical_features(tmp_path, tiny):
    """The feature pass loads a deterministic ImageClassificationDataset as uint8 images and normalises whole
    batches (the dataset's transform_batch): bit-identical features to the per-item transform."""
    from helpers.images import write_image_folder
    from tl_hub.data import load_data
    from tl_hub.data.dataset import ImageClassificationDataset
    from tl_hub.data.transforms import ImageSpec
    from tl_hub.features import _batched

    folder = write_image_folder(tmp_path / "imgs", LABELS, per_label=4, seed=5)
    bundle = load_data(str(folder), eval_fraction=0.25, seed=0)
    spec = ImageSpec(size=32, resize_size=36)
    dataset = ImageClassificationDataset(bundle.train, spec, train=False, cache=False)

    class PerItem(torch.utils.data.Dataset):  # the same items through the per-item transform
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i: int) -> dict:
            return dataset[i]

    source, transform = _batched(dataset)
    assert transform is not None and torch.equal(transform(source[0]["pixel_values"][None])[0],
                                                 dataset[0]["pixel_values"])
    assert _batched(ImageClassificationDataset(bundle.train, spec, train=True, cache=False))[1] is None  # augmented
    model = load_backbone(str(tiny("vit")), LABELS)
    acc = cpu_accelerator()
    batched = extract_features(model, dataset, accelerator=acc, batch_size=4, progress=False)
    per_item = extract_features(model, PerItem(), accelerator=acc, batch_size=4, progress=False)
    assert torch.equal(batched[0], per_item[0]) and torch.equal(batched[1], per_item[1])
