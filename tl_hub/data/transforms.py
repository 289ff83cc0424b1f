"""Image transforms read from the backbone's image processor, and the fast training dataset.

The eval transform is *the processor's own* resize and centre crop, re-implemented on uint8 tensors so
that it can be cached: `export_processor` returns the processor to save with the model, and
`transformers.pipeline("image-classification")` then preprocesses exactly like tl_hub evaluated
(checked in the tests to 1e-5).

Three resize back ends are reproduced bit-for-bit:

* ``"torchvision"`` - transformers' fast processors (torchvision ``resize`` on uint8 tensors, antialias);
* ``"pil"`` - transformers' PIL processors (``PIL.Image.resize``);
* ``"timm"`` - ``TimmWrapperImageProcessor`` (timm eval transform: PIL resize, torchvision centre
  crop, which rounds its offset).

The torch dataset that applies these transforms is `tl_hub.data.dataset.ImageClassificationDataset`.

Example:
    >>> from transformers import ViTImageProcessor
    >>> spec = image_spec(ViTImageProcessor(), image_size=112)
    >>> spec.size, spec.resize_size, spec.resize_mode
    (112, 112, 'squash')
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tl_hub.errors import ConfigError, DataError
from tl_hub.data.images import open_image
from tl_hub.data.options import check_image_size

logger = logging.getLogger(__name__)

_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_PIL_RESAMPLE = {name: code for code, name in _RESAMPLE_NAMES.items()}


@dataclass(frozen=True)
class ImageSpec:
    """How images are sized and normalised for one backbone.

    Attributes:
        size: side of the square the model sees (the eval crop).
        resize_size: shortest edge before the centre crop (``resize_mode="shortest_edge"``), or the
            side of the square the image is squashed to (``resize_mode="squash"``, then equals size).
        mean, std: per-channel normalisation of values in [0, 1].
        interpolation: ``"bilinear"``, ``"bicubic"``, ``"nearest"``, ``"lanczos"``, ``"box"``, ``"hamming"``.
        resize_mode: ``"shortest_edge"`` (keep aspect, centre crop) or ``"squash"`` (resize to size x size).
        backend: ``"torchvision"``, ``"pil"`` or ``"timm"`` (see module docstring).

    Example:
        >>> ImageSpec(size=112, resize_size=128, mean=(0.5,) * 3, std=(0.5,) * 3).crop_pct
        0.875
    """

    size: int
    resize_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    resize_mode: str = "shortest_edge"
    backend: str = "torchvision"

    def __post_init__(self) -> None:
        if self.size < 1 or self.resize_size < self.size:
            raise ConfigError(
                f"image size: got size={self.size}, resize_size={self.resize_size}; "
                "need 1 <= size <= resize_size"
            )
        if self.interpolation not in _PIL_RESAMPLE:
            raise ConfigError(
                f"interpolation: got {self.interpolation!r}; use one of {sorted(_PIL_RESAMPLE)}"
            )
        if self.resize_mode not in ("shortest_edge", "squash"):
            raise ConfigError(f"resize_mode: got {self.resize_mode!r}; use 'shortest_edge' or 'squash'")
        if self.backend not in ("torchvision", "pil", "timm"):
            raise ConfigError(f"backend: got {self.backend!r}; use 'torchvision', 'pil' or 'timm'")
        mean = torch.tensor(self.mean, dtype=torch.float64).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float64).view(3, 1, 1)
        # (x / 255 - mean) / std  ==  x * scale + shift, precomputed once
        affine = ((1.0 / (255.0 * std)).float(), (-mean / std).float())
        object.__setattr__(self, "_affine", affine)

    @property
    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)``, each ``[3, 1, 1]`` float32: normalising is ``x * scale + shift`` for uint8 ``x``."""
        return self._affine

    @property
    def crop_pct(self) -> float:
        """``size / resize_size`` (timm's name for the centre-crop fraction)."""
        return self.size / self.resize_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for run_info.json).

        Example:
            >>> ImageSpec(size=8, resize_size=8).to_dict()["size"]
            8
        """
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    # -- pixel operations ------------------------------------------------------------------------
    def resize_uint8(self, image: Image.Image, side: int, *, crop: int | None) -> torch.Tensor:
        """Resize an RGB PIL image like the processor (shortest edge ``side`` or squash to side x side)
        and centre-crop to ``crop`` (None: no crop); returns uint8 ``[3, H, W]``.

        Example:
            >>> from PIL import Image
            >>> spec = ImageSpec(size=4, resize_size=6)
            >>> spec.resize_uint8(Image.new("RGB", (12, 9)), 6, crop=4).shape
            torch.Size([3, 4, 4])
        """
        width, height = image.size
        if self.resize_mode == "squash":
            new_h, new_w = side, side
        else:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = side, int(side * long / short)
            new_h, new_w = (new_long, new_short) if width <= height else (new_short, new_long)
        if self.backend == "torchvision":
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms.v2 import functional as tvF

            tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
            if (new_h, new_w) != (height, width):
                tensor = tvF.resize(
                    tensor, [new_h, new_w], interpolation=InterpolationMode(self.interpolation), antialias=True
                )
        else:
            if (new_w, new_h) != (width, height):
                image = image.resize((new_w, new_h), resample=_PIL_RESAMPLE[self.interpolation])
            tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        if crop is None:
            return tensor.contiguous()
        h, w = tensor.shape[-2:]
        if self.backend == "timm":
            top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
        else:
            top, left = int((h - crop) / 2.0), int((w - crop) / 2.0)
        return tensor[:, top : top + crop, left : left + crop].contiguous()

    def eval_uint8(self, image: Image.Image) -> torch.Tensor:
        """The deterministic eval geometry of an RGB image: uint8 ``[3, size, size]``.

        Example:
            >>> from PIL import Image
            >>> ImageSpec(size=4, resize_size=5).eval_uint8(Image.new("RGB", (2, 3))).shape
            torch.Size([3, 4, 4])
        """
        side = self.resize_size if self.resize_mode == "shortest_edge" else self.size
        return self.resize_uint8(image, side, crop=self.size)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., 3, H, W]`` -> float32 ``(x / 255 - mean) / std``.

        Example:
            >>> import torch
            >>> white = torch.full((3, 1, 1), 255, dtype=torch.uint8)
            >>> ImageSpec(size=1, resize_size=1).normalize(white).flatten().tolist()
            [1.0, 1.0, 1.0]
        """
        scale, shift = self.affine_on(pixels.device)
        return pixels.to(torch.float32).mul_(scale).add_(shift)

    def affine_on(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """`affine` on `device`, copied without waiting for the device (a blocking copy to a GPU would wait
        for every kernel queued before it; see `tl_hub.train.device_batch`).

        Example:
            >>> ImageSpec(size=1, resize_size=1).affine_on("cpu")[0].shape
            torch.Size([3, 1, 1])
        """
        scale, shift = self._affine
        if scale.device == torch.device(device):
            return scale, shift
        return scale.to(device, non_blocking=True), shift.to(device, non_blocking=True)

    def eval_transform(self, image: Image.Image) -> torch.Tensor:
        """Full eval transform of any PIL image (converted with `tl_hub.data.images.to_rgb`): float32 ``[3, S, S]``.

        Example:
            >>> from PIL import Image
            >>> ImageSpec(size=4, resize_size=4).eval_transform(Image.new("L", (9, 9))).dtype
            torch.float32
        """
        return self.normalize(self.eval_uint8(open_image(image)))


# ---------------------------------------------------------------------------------------------------
def _is_timm(processor: Any) -> bool:
    return type(processor).__name__ == "TimmWrapperImageProcessor" or hasattr(processor, "data_config")


def _size_value(size: Any, key: str) -> int | None:
    if size is None:
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def image_spec(processor: Any, image_size: int | None = None) -> ImageSpec:
    """Read the eval geometry and normalisation from a transformers/timm image processor.

    ``image_size`` overrides the crop size (CPU users train at 96-128 px); the resize size scales
    with it so the crop fraction stays the processor's.

    Example:
        >>> from transformers import ViTImageProcessor
        >>> image_spec(ViTImageProcessor(), image_size=96).size
        96
    """
    check_image_size(image_size)
    if _is_timm(processor):
        cfg = dict(processor.data_config)
        base = int(cfg["input_size"][-1])
        size = image_size or base
        crop_pct = float(cfg.get("crop_pct") or 0.875)
        return ImageSpec(
            size=size,
            resize_size=max(size, math.floor(size / crop_pct)),
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            interpolation=str(cfg.get("interpolation") or "bicubic"),
            resize_mode="shortest_edge",  # exported with crop_mode "center" (see export_processor)
            backend="timm",
        )
    # pipeline() reloads the saved processor with AutoImageProcessor, which picks the fast (torchvision)
    # back end whatever back end the processor was saved from: reproduce that one.
    backend = "torchvision"
    resample = getattr(processor, "resample", 2)
    interpolation = _RESAMPLE_NAMES.get(int(resample) if resample is not None else 2, "bilinear")
    mean = tuple(float(v) for v in (processor.image_mean if getattr(processor, "do_normalize", True) else (0, 0, 0)))
    std = tuple(float(v) for v in (processor.image_std if getattr(processor, "do_normalize", True) else (1, 1, 1)))
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    size_cfg = getattr(processor, "size", None)
    crop_cfg = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    height, shortest = _size_value(size_cfg, "height"), _size_value(size_cfg, "shortest_edge")
    crop = _size_value(crop_cfg, "height")
    crop_pct = getattr(processor, "crop_pct", None)
    if shortest and crop:  # resize shortest edge, then centre crop (ResNet, DeiT, BEiT, DINOv2, CLIP...)
        base, base_resize = crop, shortest
    elif shortest and crop_pct and shortest < 384:  # ConvNeXt: shortest/crop_pct, then crop
        base, base_resize = shortest, int(shortest / crop_pct)
    elif shortest and crop_pct:  # ConvNeXt at >= 384 px squashes
        size = image_size or shortest
        return ImageSpec(size, size, mean, std, interpolation, "squash", backend)
    elif shortest:
        base, base_resize = shortest, shortest
    elif height:  # squash to height x width (ViT, Swin, ...)
        size = image_size or height
        return ImageSpec(size, size, mean, std, interpolation, "squash", backend)
    else:
        raise ConfigError(
            f"image processor {type(processor).__name__}: cannot read its size ({size_cfg!r}); "
            "pass image_size=... explicitly"
        )
    size = image_size or base
    resize = max(size, round(size * base_resize / base)) if image_size else base_resize
    return ImageSpec(size, resize, mean, std, interpolation, "shortest_edge", backend)


def _probe_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (61, 97, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (83, 40, 3), dtype=np.uint8)),
    ]


def _matches(processor: Any, spec: ImageSpec) -> bool:
    for probe in _probe_images():
        try:
            got = processor(probe, return_tensors="pt")["pixel_values"][0]
        except (ValueError, TypeError, KeyError, RuntimeError) as exc:
            logger.debug("processor check failed: %s", exc)
            return False
        want = spec.eval_transform(probe)
        if got.shape != want.shape or float((got - want).abs().max()) > 1e-4:
            return False
    return True


def _timm_cfg(spec: ImageSpec) -> dict[str, Any]:
    crop_pct = round(spec.size / spec.resize_size, 6)
    if math.floor(spec.size / crop_pct) != spec.resize_size:
        crop_pct = spec.size / (spec.resize_size + 0.5)
    return {
        "input_size": [3, spec.size, spec.size],
        "interpolation": spec.interpolation,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "crop_pct": crop_pct,
        "crop_mode": "center",
    }


def export_processor(processor: Any, spec: ImageSpec) -> Any:
    """The image processor to save with the fine-tuned model: its preprocessing equals `spec`'s eval
    transform, so ``pipeline("image-classification")`` sees what tl_hub evaluated.

    The processor's own class is kept when it can express the spec (checked on probe images);
    otherwise a plain ``ViTImageProcessor`` (same back end) with shortest-edge resize + centre crop
    is returned. For ``TimmWrapperImageProcessor`` (which does not save itself: transformers reads
    its settings from the model's ``config.json``), the returned processor carries
    ``.pretrained_cfg`` and a ``save_pretrained`` that merges it into ``config.json``: call it (or
    `save_processor`) **after** ``model.save_pretrained``.

    Example:
        >>> from transformers import ViTImageProcessor
        >>> spec = image_spec(ViTImageProcessor(), image_size=64)
        >>> export_processor(ViTImageProcessor(), spec).size["height"]
        64
    """
    if _is_timm(processor):
        if spec.backend != "timm" or spec.resize_mode != "shortest_edge":
            raise ConfigError(f"export_processor: spec {spec} was not made from a timm processor")
        cfg = _timm_cfg(spec)
        exported = _exported_timm_class()(
            pretrained_cfg=cfg, architecture=getattr(processor, "architecture", None)
        )
        exported.pretrained_cfg = cfg
        return exported
    overrides: dict[str, Any] = {
        "do_resize": True,
        "resample": _PIL_RESAMPLE[spec.interpolation],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(spec.mean),
        "image_std": list(spec.std),
    }
    if spec.resize_mode == "squash":
        overrides.update(size={"height": spec.size, "width": spec.size}, do_center_crop=False)
    else:
        overrides.update(
            size={"shortest_edge": spec.resize_size},
            do_center_crop=True,
            crop_size={"height": spec.size, "width": spec.size},
        )
    params = {k: v for k, v in processor.to_dict().items() if k not in ("image_processor_type", "processor_class")}
    candidates: list[Any] = []
    try:
        candidates.append(type(processor)(**{**params, **overrides}))
    except (TypeError, ValueError) as exc:
        logger.debug("cannot rebuild %s: %s", type(processor).__name__, exc)
    if spec.backend == "pil":
        from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil as Generic
    else:
        from transformers import ViTImageProcessor as Generic
    candidates.append(Generic(**overrides))
    for candidate in candidates:
        if _matches(candidate, spec):
            return candidate
    raise DataError(
        f"export_processor: no image processor reproduces {spec} on probe images; "
        "please report this with the backbone name"
    )


def _merge_timm_cfg(cfg: dict[str, Any], output_dir: str | os.PathLike) -> None:
    out = Path(output_dir)
    config_path = out / "config.json"
    if not config_path.is_file():
        raise DataError(
            f"saving a timm image processor: {config_path} not found; transformers reads a timm model's "
            f"preprocessing from its config.json, so call model.save_pretrained({str(out)!r}) first"
        )
    config = json.loads(config_path.read_text())
    config["pretrained_cfg"] = {**config.get("pretrained_cfg", {}), **cfg}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


_EXPORTED_TIMM: list[type] = []


def _exported_timm_class() -> type:
    """A TimmWrapperImageProcessor whose save_pretrained writes its settings where transformers reads them
    (the model's config.json) instead of silently saving nothing. Created once, importable (picklable) as
    ``tl_hub.data.transforms.ExportedTimmWrapperImageProcessor``."""
    if not _EXPORTED_TIMM:
        from transformers import TimmWrapperImageProcessor

        class ExportedTimmWrapperImageProcessor(TimmWrapperImageProcessor):
            def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> list[str]:
                _merge_timm_cfg(self.pretrained_cfg, save_directory)
                return [str(Path(save_directory) / "config.json")]

        ExportedTimmWrapperImageProcessor.__qualname__ = "ExportedTimmWrapperImageProcessor"
        _EXPORTED_TIMM.append(ExportedTimmWrapperImageProcessor)
    return _EXPORTED_TIMM[0]


def __getattr__(name: str) -> Any:
    if name == "ExportedTimmWrapperImageProcessor":
        return _exported_timm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def save_processor(processor: Any, output_dir: str | os.PathLike) -> None:
    """Save an exported processor into a model folder (call after ``model.save_pretrained``).

    For timm backbones it rewrites ``pretrained_cfg`` in ``config.json`` (where transformers reads
    a ``TimmWrapperImageProcessor`` from); for all others it calls ``save_pretrained``.

    Example:
        >>> import tempfile
        >>> from transformers import ViTImageProcessor
        >>> save_processor(ViTImageProcessor(), tempfile.mkdtemp())
    """
    cfg = getattr(processor, "pretrained_cfg", None)
    if _is_timm(processor) and cfg is not None:
        _merge_timm_cfg(cfg, output_dir)
        return
    processor.save_pretrained(Path(output_dir))


__all__ = ["ImageSpec", "image_spec", "export_processor", "save_processor"]
