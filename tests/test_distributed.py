"""Launches tl_hub refuses at start (DeepSpeed, FSDP2, FSDP without use_orig_params), read from the state accelerate
exposes (no deepspeed package needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tl_hub.distributed import check_launch
from tl_hub.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _fake(distributed_type: str, **plugin) -> SimpleNamespace:
    from accelerate.utils import DistributedType

    state = SimpleNamespace(fsdp_plugin=SimpleNamespace(**{"fsdp_version": 1, "use_orig_params": True, **plugin}))
    return SimpleNamespace(distributed_type=getattr(DistributedType, distributed_type), state=state)


def test_a_deepspeed_launch_stops_at_start_naming_the_configs_to_use(monkeypatch):
    """What `accelerate launch` with a DeepSpeed config sets (ACCELERATE_USE_DEEPSPEED) stops tl_hub's accelerator
    before accelerate looks for the deepspeed package; an accelerator in DEEPSPEED mode is refused too."""
    from tl_hub.hardware import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match=r"DEEPSPEED is not supported.*fsdp\.yaml.*ddp\.yaml"):
        make_accelerator("no")
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    with pytest.raises(ConfigError, match=r"DEEPSPEED is not supported.*accelerate_configs/fsdp\.yaml"):
        check_launch(_fake("DEEPSPEED"))
    assert not (ROOT / "recipes" / "accelerate_configs" / "deepspeed_zero2.yaml").exists()


def test_fsdp2_and_fsdp_without_orig_params_are_refused():
    with pytest.raises(ConfigError, match="fsdp_version 2 is not supported.*fsdp_version: 1"):
        check_launch(_fake("FSDP", fsdp_version=2))
    with pytest.raises(ConfigError, match="fsdp_use_orig_params is false.*fsdp_use_orig_params: true"):
        check_launch(_fake("FSDP", use_orig_params=False))
    check_launch(_fake("FSDP"))
    check_launch(_fake("MULTI_CPU"))
