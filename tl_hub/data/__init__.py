"""The data step: any image source -> labelled train/eval splits, checked images, a report, torch datasets.

Modules, in the order a run uses them:

- `sources`: read a source (Hub id, folder, CSV/JSONL, in-memory, bundled) into per-split pools;
- `labels`: stable label names and codes, stratified splits, class-balanced subsets;
- `checks`: decode every selected image once, replace or report bad ones;
- `load`: `load_data`, the steps above in order, and `DataBundle`; `report`: `DataReport`;
- `images`: any image (path, bytes, array, PIL, any mode) -> correct 8-bit RGB;
- `transforms`: `ImageSpec` read from the backbone's processor, the processor saved with the model;
- `dataset`: `ImageClassificationDataset`, the torch Dataset the training loop reads;
- `options`: the rules for the data options (shared with `RecipeConfig`).

`from tl_hub.data import load_data` (or `tl_hub.load_data`) is the entry point; the names are
imported lazily so that `import tl_hub.data.options` stays light.

Example:
    >>> from tl_hub.data import load_data
    >>> bundle = load_data("bundled:fashion_mnist", examples_per_label=2)
    >>> len(bundle.train), bundle.report.accounted
    (20, True)
"""

from __future__ import annotations

from tl_hub.lazy import lazy_exports

_EXPORTS = {
    "load_data": "tl_hub.data.load",
    "DataBundle": "tl_hub.data.load",
    "DataReport": "tl_hub.data.report",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
