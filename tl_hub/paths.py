"""Where tl_hub keeps its cache (converted bundled backbones, extracted datasets, feature caches).

Example:
    >>> from tl_hub.paths import cache_dir
    >>> cache_dir().name  # doctest: +SKIP
    'tl_hub'
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$TL_HUB_CACHE`, else `$XDG_CACHE_HOME/tl_hub`, else `~/.cache/tl_hub` (created on demand)."""
    env = os.environ.get("TL_HUB_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "tl_hub"
    path.mkdir(parents=True, exist_ok=True)
    return path
