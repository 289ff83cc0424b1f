"""`random_init_copy(source, dest)`: a checkpoint folder with a timm backbone's architecture and preprocessing
but freshly initialised (random) weights -- the control of a backbone screen.

Example:
    >>> from helpers.random_init import random_init_copy  # tests/ is on sys.path under pytest
    >>> folder = random_init_copy("bundled:efficientnet_lite0", tmp_path / "lite0_random")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def random_init_copy(source: str, dest: Path, *, seed: int = 0) -> Path:
    """Copy `source`'s config.json (timm architecture + pretrained_cfg) into `dest` with random weights
    (timm's own initialisation, seeded; BatchNorm statistics at their defaults)."""
    import timm
    import torch
    from safetensors.torch import save_file

    from tl_hub.bundled import resolve_bundled_backbone

    folder = Path(resolve_bundled_backbone(source))
    config = json.loads((folder / "config.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "config.json", dest / "config.json")
    torch.manual_seed(seed)
    model = timm.create_model(config["architecture"], pretrained=False, num_classes=config.get("num_classes", 1000))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest / "model.safetensors"),
              metadata={"format": "pt"})
    return dest
