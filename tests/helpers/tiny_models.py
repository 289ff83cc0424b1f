"""Tiny randomly initialised image-classification checkpoints, saved to disk like Hub checkpoints.

Shared by the test files: build a checkpoint folder once per path and load it by path through
`tl_hub.load_backbone`, exactly as a downloaded Hub snapshot would be loaded.

Stable API:
    TINY_ARCHS                      every architecture name `tiny_checkpoint` knows
    TRANSFORMERS_ARCHS, TIMM_ARCHS  the two families
    tiny_checkpoint(arch, path, *, labels=None) -> Path
    tiny_image_size(arch) -> int    the native input size of the tiny checkpoint

Example:
    >>> from helpers.tiny_models import tiny_checkpoint  # tests/ is on sys.path under pytest
    >>> folder = tiny_checkpoint("vit", tmp_path / "vit")  # doctest: +SKIP
    >>> model = tl_hub.load_backbone(str(folder), ["cat", "dog"])  # doctest: +SKIP

Each folder holds config.json + model.safetensors + a 32 px image processor (preprocessor_config.json
for transformers archs; timm archs carry it in config.json's pretrained_cfg). Checkpoints carry
`ORIGINAL_LABELS` (5 names) unless `labels` is given, so loading them with other labels
exercises the head swap. timm checkpoints are written with `timm.models.save_for_hf` (safetensors) and so
carry `model_args` with `num_classes` in the "timm_vit_numclasses" variant: the known TimmWrapper trap.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ORIGINAL_LABELS = ["orig_a", "orig_b", "orig_c", "orig_d", "orig_e"]
IMAGE_SIZE = 32

# arch -> (config class name, config kwargs, model class name or None for the auto class)
_TRANSFORMERS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "vit": ("ViTConfig", dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3,
                              num_attention_heads=2, intermediate_size=32), None),
    "deit": ("DeiTConfig", dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3,
                                num_attention_heads=2, intermediate_size=32), "DeiTForImageClassification"),
    "deit_distilled": ("DeiTConfig", dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3,
                                          num_attention_heads=2, intermediate_size=32),
                       "DeiTForImageClassificationWithTeacher"),
    "beit": ("BeitConfig", dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3,
                                num_attention_heads=2, intermediate_size=32, use_mean_pooling=True), None),
    "data2vec_vision": ("Data2VecVisionConfig", dict(image_size=32, patch_size=8, hidden_size=16,
                                                     num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=32), None),
    "dinov2": ("Dinov2Config", dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3,
                                    num_attention_heads=2, mlp_ratio=2), None),
    "dinov2_registers": ("Dinov2WithRegistersConfig", dict(image_size=32, patch_size=8, hidden_size=16,
                                                           num_hidden_layers=2, num_attention_heads=2,
                                                           mlp_ratio=2, num_register_tokens=2), None),
    "ijepa": ("IJepaConfig", dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32), None),
    "convnext": ("ConvNextConfig", dict(image_size=32, num_channels=3, patch_size=2, hidden_sizes=[8, 16, 24, 32],
                                        depths=[1, 1, 2, 1]), None),
    "convnextv2": ("ConvNextV2Config", dict(image_size=32, patch_size=2, hidden_sizes=[8, 16, 24, 32],
                                            depths=[1, 1, 2, 1]), None),
    "swin": ("SwinConfig", dict(image_size=32, patch_size=2, embed_dim=8, depths=[1, 2], num_heads=[1, 2],
                                window_size=4), None),
    "swinv2": ("Swinv2Config", dict(image_size=32, patch_size=2, embed_dim=8, depths=[1, 2], num_heads=[1, 2],
                                    window_size=4), None),
    "focalnet": ("FocalNetConfig", dict(image_size=32, patch_size=2, embed_dim=8, depths=[1, 2, 1],
                                        focal_levels=[2, 2, 2], focal_windows=[3, 3, 3]), None),
    "resnet": ("ResNetConfig", dict(embedding_size=8, hidden_sizes=[8, 16, 24], depths=[1, 2, 1],
                                    layer_type="bottleneck"), None),
    "regnet": ("RegNetConfig", dict(embedding_size=8, hidden_sizes=[8, 16, 24], depths=[1, 2, 1],
                                    groups_width=8), None),
    "bit": ("BitConfig", dict(embedding_size=8, hidden_sizes=[8, 16, 24], depths=[1, 2, 1],
                              num_groups=4, layer_type="bottleneck"), None),
    "efficientnet": ("EfficientNetConfig", dict(image_size=32, width_coefficient=0.1, depth_coefficient=0.1,
                                                hidden_dim=128), None),
    # transformers defaults MobileNetV1 to classifier_dropout_prob=0.999: almost no gradient reaches the backbone
    "mobilenet_v1": ("MobileNetV1Config", dict(image_size=32, depth_multiplier=0.25, min_depth=4,
                                               classifier_dropout_prob=0.1), None),
    "mobilenet_v2": ("MobileNetV2Config", dict(image_size=32, depth_multiplier=0.25, min_depth=4), None),
    "mobilevit": ("MobileViTConfig", dict(image_size=32, patch_size=2, hidden_sizes=[16, 16, 16],
                                          neck_hidden_sizes=[8, 8, 16, 16, 16, 24, 32], num_attention_heads=2,
                                          expand_ratio=2.0), None),
    "poolformer": ("PoolFormerConfig", dict(image_size=32, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1],
                                            patch_sizes=[3, 3, 3, 3], strides=[2, 2, 2, 2],
                                            padding=[1, 1, 1, 1]), None),
    "pvt_v2": ("PvtV2Config", dict(image_size=32, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                   num_attention_heads=[1, 1, 1, 1], mlp_ratios=[2, 2, 2, 2]), None),
    "hiera": ("HieraConfig", dict(image_size=[32, 32], patch_size=[3, 3], patch_stride=[2, 2],
                                  patch_padding=[1, 1], embed_dim=8, num_heads=[1, 1, 1, 1],
                                  depths=[1, 1, 2, 1], query_stride=[2, 2], masked_unit_size=[8, 8],
                                  mlp_ratio=2.0), None),
    "levit": ("LevitConfig", dict(image_size=32, patch_size=16, hidden_sizes=[16, 24, 32], num_attention_heads=[1, 2, 2],
                                  depths=[1, 1, 1], key_dim=[8, 8, 8], down_ops=[["Subsample", 8, 1, 4, 2, 2],
                                                                                 ["Subsample", 8, 2, 4, 2, 2]]),
              "LevitForImageClassification"),
    "cvt": ("CvtConfig", dict(embed_dim=[8, 16, 24], num_heads=[1, 2, 2], depth=[1, 2, 3]), None),
    "segformer": ("SegformerConfig", dict(image_size=32, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                          num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16), None),
    "hgnet_v2": ("HGNetV2Config", dict(embedding_size=8, hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1],
                                       stem_channels=[3, 8, 8],
                                       stage_in_channels=[8, 16, 24, 32], stage_mid_channels=[8, 8, 8, 8],
                                       stage_out_channels=[16, 24, 32, 48], stage_num_blocks=[1, 1, 1, 1],
                                       stage_downsample=[False, True, True, True],
                                       stage_light_block=[False, False, True, True],
                                       stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[2, 2, 2, 2]), None),
}

# arch -> (timm model name, create_model kwargs, extra model_args written to config.json)
_TIMM: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "timm_vit": ("test_vit", dict(img_size=32), {}),
    "timm_vit_numclasses": ("test_vit", dict(img_size=32), {"num_classes": 5}),
    "timm_resnet": ("test_resnet", dict(), {}),
    "timm_convnext": ("test_convnext", dict(), {}),
    "timm_efficientnet": ("test_efficientnet", dict(), {}),
    # the smallest real VGG timm registers (features ~9.2 M params); a tiny pre-logits MLP
    "timm_vgg": ("vgg11_bn", dict(mlp_ratio=0.004), {}),
}

TRANSFORMERS_ARCHS: tuple[str, ...] = tuple(_TRANSFORMERS)
TIMM_ARCHS: tuple[str, ...] = tuple(_TIMM)
TINY_ARCHS: tuple[str, ...] = TRANSFORMERS_ARCHS + TIMM_ARCHS


def tiny_image_size(arch: str) -> int:
    """Native input size of the tiny checkpoint `arch` (square)."""
    if arch not in TINY_ARCHS:
        raise KeyError(f"unknown tiny arch {arch!r}; known: {TINY_ARCHS}")
    return IMAGE_SIZE


def tiny_checkpoint(arch: str, path: str | Path, *, labels: Sequence[str] | None = None) -> Path:
    """Save a tiny random checkpoint of `arch` into folder `path` (reused if already there); return `path`.

    `labels` (default `ORIGINAL_LABELS`) become the checkpoint's head size and `id2label`.
    """
    import torch

    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    labels = list(labels or ORIGINAL_LABELS)
    torch.manual_seed(0)
    if arch in _TRANSFORMERS:
        _save_transformers(arch, path, labels)
    elif arch in _TIMM:
        _save_timm(arch, path, labels)
    else:
        raise KeyError(f"unknown tiny arch {arch!r}; known: {TINY_ARCHS}")
    return path


def _save_transformers(arch: str, path: Path, labels: list[str]) -> None:
    import transformers

    config_name, kwargs, model_name = _TRANSFORMERS[arch]
    config = getattr(transformers, config_name)(
        **kwargs,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    if model_name is None:
        model = transformers.AutoModelForImageClassification.from_config(config)
    else:
        model = getattr(transformers, model_name)(config)
    _randomise_norm_stats(model)
    model.save_pretrained(path, safe_serialization=True)
    # like a Hub checkpoint: a processor at the native size (timm folders carry it in config.json)
    transformers.ViTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(path)


def _save_timm(arch: str, path: Path, labels: list[str]) -> None:
    import timm
    from timm.models import save_for_hf

    name, kwargs, extra_args = _TIMM[arch]
    model = timm.create_model(name, pretrained=False, num_classes=len(labels), **kwargs)
    _randomise_norm_stats(model)
    model_args = {k: v for k, v in kwargs.items()}
    model_args.update(extra_args)
    data_config = {"input_size": (3, IMAGE_SIZE, IMAGE_SIZE), "crop_pct": 1.0}
    save_for_hf(model, str(path), model_args=model_args, safe_serialization=True, data_config=data_config)
    config_path = path / "config.json"
    config = json.loads(config_path.read_text())
    config["label_names"] = labels
    config["num_classes"] = len(labels)
    config.setdefault("pretrained_cfg", {})["num_classes"] = len(labels)
    if "num_classes" not in extra_args:
        config.get("model_args", {}).pop("num_classes", None)
    config_path.write_text(json.dumps(config, indent=2))


def _randomise_norm_stats(model: Any) -> None:
    """Give BatchNorm layers non-trivial running stats, as a pretrained checkpoint has."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
