"""Training faults (issue 6), as users meet them: a NaN/inf loss stops the run naming the step and the
batch's image files; `skip_nonfinite_batches: true` skips such batches instead, counts them and reports
them (metrics.json, the run's log). The loop-level result of a skipped batch is in tests/test_train.py.

The runs are real `finetune` calls (tiny ViT, a folder of PNGs). The bad numbers come from two sources:
an absurd learning rate (the weights blow up for real), and one image file whose batch is made to give
a NaN loss (so the test knows exactly which file must be named).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from helpers.images import write_image_folder

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nonfinite")
    data = write_image_folder(root / "data", ["red", "green"], per_label=8, seed=1)
    (data / "green" / "11.png").rename(data / "green" / "poison.png")  # the file the `poison` fixture breaks
    return {"model": tiny("vit"), "data": data, "root": root}


def run(assets, out: str, **kw):
    from tl_hub.finetuning import finetune

    base = dict(model=str(assets["model"]), dataset=str(assets["data"]), output_dir=str(assets["root"] / out),
                epochs=2, batch_size=4, eval_fraction=0.25, num_workers=0, seed=0, policy="full",
                checkpointing_steps=None, feature_cache="off", mixed_precision="no", overwrite_output_dir=True)
    return finetune({**base, **kw})


@pytest.fixture
def poison(monkeypatch, assets):
    """Batches holding data/green/poison.png give NaN logits (a numerically broken sample)."""
    import tl_hub.train as train_mod

    real = train_mod.forward_logits
    poisoned: list[list[int]] = []

    def forward_logits(model, batch, channels_last=False):
        logits = real(model, batch, channels_last)
        ids = getattr(forward_logits, "ids", None)
        if model.training and ids is not None:
            names = [ids[i] for i in batch["index"].tolist()]
            if any(n.endswith("poison.png") for n in names):
                poisoned.append(names)
                logits = logits * float("nan")
        return logits

    real_train = train_mod.train

    def train(*a, ids=None, **kw):
        forward_logits.ids = ids
        return real_train(*a, ids=ids, **kw)

    monkeypatch.setattr(train_mod, "forward_logits", forward_logits)
    monkeypatch.setattr(train_mod, "train", train)
    return poisoned


def test_nan_loss_stops_naming_the_step_and_the_batch_files(assets, poison):
    from tl_hub.train import NonFiniteLossError

    with pytest.raises(NonFiniteLossError) as err:
        run(assets, "stop")
    message = str(err.value)
    assert poison, "the poisoned image never reached a training batch"
    batch = poison[0]
    assert "loss is nan" in message and "optimizer step" in message
    for name in batch:  # every image of that batch, by its path on disk
        assert name in message and Path(name).is_file()
    assert "skip_nonfinite_batches: true" in message  # says how to go on


def test_exploding_weights_stop_with_real_file_paths(assets):
    from tl_hub.train import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"loss is (nan|inf|-inf) at epoch \d+, batch \d+, optimizer step \d+") as err:
        run(assets, "explode", learning_rate=1e30, max_grad_norm=None, warmup_ratio=0.0, lr_scheduler="constant")
    named = [part.strip(" '[]") for part in str(err.value).split("images of this batch (this process): ")[1]
             .split("]")[0].split(",")]
    assert len(named) == 4 and all(Path(n).is_file() and str(assets["data"]) in n for n in named), named


def test_skip_option_counts_and_reports_the_batches(assets, poison, caplog):
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        result = run(assets, "skip", skip_nonfinite_batches=True)
    out = Path(result.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(poison) == 2  # the poisoned image is in one batch per epoch
    assert metrics["nonfinite_batches_skipped"] == 2
    assert caplog.text.count("skipped a batch with non-finite loss") == 2 and "poison.png" in caplog.text
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(out / "model.safetensors").values())


@pytest.mark.parametrize("checkpointing_steps", [None, 1])
def test_a_gpu_reads_the_check_a_step_later_and_names_the_same_step(assets, poison, monkeypatch, checkpointing_steps):
    """On a GPU the non-finite flags of step k are read at step k+1 (`defers_checks`), forced here on the CPU:
    the error names the same step and images as the immediate check, and no checkpoint holds that step."""
    import tl_hub.train as train_mod
    from tl_hub.train import NonFiniteLossError

    with pytest.raises(NonFiniteLossError) as immediate:
        run(assets, "now", checkpointing_steps=checkpointing_steps)
    poison.clear()
    monkeypatch.setattr(train_mod, "defers_checks", lambda device: True)
    with pytest.raises(NonFiniteLossError) as deferred:
        run(assets, "later", checkpointing_steps=checkpointing_steps)
    assert str(deferred.value) == str(immediate.value)
    step = int(str(deferred.value).split("optimizer step ")[1].split(";")[0])
    saved = sorted((assets["root"] / "later" / "checkpoints").glob("checkpoint-*"))
    assert bool(saved) == bool(checkpointing_steps)
    assert all(int(path.name.split("-")[1]) < step for path in saved), saved
