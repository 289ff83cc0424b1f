"""Run under `accelerate launch --num_processes 2`: every rank builds the training dataset of one image folder
with one image cache folder, then writes what its dataset did (`cache_info`) to <out>/rank<r>.json.

Usage: python tests/helpers/cache_ranks.py IMAGE_FOLDER CACHE_FOLDER OUT_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tl_hub.data import load_data
from tl_hub.data.dataset import ImageClassificationDataset
from tl_hub.data.transforms import ImageSpec
from tl_hub.hardware import make_accelerator


def main(images: str, cache: str, out: str) -> None:
    state = make_accelerator("no")  # the CPU (gloo) when there is no GPU, as tl_hub runs
    bundle = load_data(images, eval_fraction=0.25)
    dataset = ImageClassificationDataset(bundle.train, ImageSpec(size=24, resize_size=28), train=True,
                                         cache_dir=cache)
    first = dataset.uint8(0).sum().item()
    info = {**dataset.cache_info, "rank": state.process_index, "world": state.num_processes, "first": first}
    Path(out, f"rank{state.process_index}.json").write_text(json.dumps(info))
    state.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:4])
