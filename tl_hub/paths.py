"""Where tl_hub keeps its cache, and where it finds the files it ships (card template, quickstart recipe).

Example:
    >>> from tl_hub.paths import cache_dir, shipped_file
    >>> cache_dir().name  # doctest: +SKIP
    'tl_hub'
    >>> shipped_file("model_cards/image_classification.md", "model_cards/image_classification.md").name
    'image_classification.md'
"""

from __future__ import annotations

import os
from pathlib import Path

from tl_hub.errors import TlHubError

__all__ = ["cache_dir", "shipped_file"]


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


def shipped_file(in_package: str, in_source_tree: str) -> Path:
    """A file tl_hub ships: inside the installed package (the wheel copies it to `tl_hub/<in_package>`),
    else at `<in_source_tree>` of the repository (an editable install or a source checkout).

    Raises TlHubError naming both places when neither holds it.
    """
    from importlib import resources

    packaged = resources.files("tl_hub").joinpath(*in_package.split("/"))
    if packaged.is_file():
        return Path(str(packaged))
    source_tree = Path(__file__).resolve().parent.parent.joinpath(*in_source_tree.split("/"))
    if source_tree.is_file():
        return source_tree
    raise TlHubError(
        f"{Path(in_package).name}: not found in the tl_hub package ({packaged}) nor in the source tree "
        f"({source_tree}); reinstall tl_hub (the wheel ships it as tl_hub/{in_package})"
    )
