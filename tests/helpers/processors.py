"""`lite0_timm_processor()`: the timm image processor of tf_efficientnet_lite0, built offline.

It is the processor `bundled:efficientnet_lite0` ships (224 px, bicubic, crop_pct 0.875, mean = std =
0.5), made from its pretrained_cfg without downloading or converting anything.
"""

from __future__ import annotations

from typing import Any

LITE0_PRETRAINED_CFG = dict(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.875, crop_mode="center",
                            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def lite0_timm_processor() -> Any:
    """A fresh `transformers.TimmWrapperImageProcessor` for tf_efficientnet_lite0."""
    from transformers import TimmWrapperImageProcessor

    return TimmWrapperImageProcessor(pretrained_cfg=dict(LITE0_PRETRAINED_CFG), architecture="tf_efficientnet_lite0")
