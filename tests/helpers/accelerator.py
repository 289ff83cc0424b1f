"""`cpu_accelerator()`: the `accelerate.Accelerator` the tests hand to `tl_hub.train.train` and friends.

`batch_size` is the global batch in tl_hub (split across processes), so the loop wants
`split_batches=True`; accelerate takes it only through `DataLoaderConfiguration` (its old
`Accelerator(split_batches=...)` keyword is ignored), as `tl_hub.finetuning` builds it.
"""

from __future__ import annotations

from typing import Any


def cpu_accelerator() -> Any:
    """An Accelerator on the CPU that splits each global batch across processes (as finetune's does)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    return Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(split_batches=True))
