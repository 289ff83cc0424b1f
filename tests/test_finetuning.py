"""tl_hub.finetuning.finetune(): the whole flow on a tiny checkpoint and a small image folder; the
output-folder contract."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tl_hub
from tl_hub.config import RecipeConfig
from tl_hub.errors import ConfigError
from helpers.images import write_image_folder
from helpers.tiny_models import tiny_checkpoint

LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imgs"), LABELS, per_label=10, seed=0)


@pytest.fixture(scope="module")
def vit(tiny) -> str:
    return str(tiny("vit"))


def _cfg(vit, data, out, **kw):
    base = dict(model=vit, dataset=str(data), image_size=32, epochs=2, batch_size=8, eval_fraction=0.3,
                seed=0, output_dir=str(out), num_workers=0, augment=False)
    base.update(kw)
    return RecipeConfig(**base)


def test_output_folder_contract(tmp_path, vit, image_folder, caplog):
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        result = tl_hub.finetune(_cfg(vit, image_folder, tmp_path / "out", policy="full", checkpointing_steps=2))
    out = Path(result.output_dir)
    for name in ("model.safetensors", "config.json", "recipe.yaml", "metrics.json", "run_info.json", "README.md"):
        assert (out / name).is_file(), name
    assert (out / "preprocessor_config.json").is_file() or "pretrained_cfg" in json.loads((out / "config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(3)] == sorted(LABELS) or set(config["id2label"].values()) == set(LABELS)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"epochs", "best_epoch", "metric_for_best_model", "final", "per_label", "confusion_matrix", "labels"}
    assert len(metrics["epochs"]) == 2
    assert set(metrics["epochs"][0]) >= {"epoch", "step", "train_loss", "learning_rate", "images_per_second", "eval_accuracy"}
    assert metrics["final"]["accuracy"] == result.metrics["accuracy"]
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["num_eval_examples"] == 9
    info = json.loads((out / "run_info.json").read_text())
    for key in ("tl_hub_version", "base_model", "base_model_revision", "parent_model", "labels", "policy", "data",
                "hyperparameters", "command", "framework_versions", "num_processes", "mixed_precision", "device",
                "train_runtime_s", "feature_cache_used"):
        assert key in info, key
    assert info["policy"]["name"] == "full" and "summary" in info["policy"]
    assert info["parent_model"] is None and info["num_processes"] == 1
    assert RecipeConfig.from_yaml(out / "recipe.yaml").epochs == 2
    # the saved model is the best epoch's
    best = load_file(str(out / "checkpoints" / "best_model.safetensors"))
    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(saved[k], best[k]) for k in saved if k in best)
    assert "policy: full" in caplog.text and "tl-hub push" in caplog.text  # progress goes through the tl_hub logger


def test_feature_path_trains_the_same_head_as_the_plain_path(tmp_path, vit, image_folder):
    fast = tl_hub.finetune(_cfg(vit, image_folder, tmp_path / "fast", policy="head", feature_cache="on",
                                feature_cache_dir=str(tmp_path / "fc")))
    plain = tl_hub.finetune(_cfg(vit, image_folder, tmp_path / "plain", policy="head", feature_cache="off"))
    assert fast.feature_cache_used and not plain.feature_cache_used
    a = load_file(str(tmp_path / "fast" / "model.safetensors"))
    b = load_file(str(tmp_path / "plain" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # backbone identical, head equal up to float16 feature rounding
        torch.testing.assert_close(a[k], b[k], atol=2e-3, rtol=1e-2)
    assert fast.metrics["accuracy"] == pytest.approx(plain.metrics["accuracy"], abs=0.12)


def test_lp_ft_runs_both_phases_and_continuing_records_the_parent(tmp_path, vit, image_folder):
    first = tl_hub.finetune(_cfg(vit, image_folder, tmp_path / "lpft", policy="lp-ft", epochs=2))
    assert [r["phase"] for r in first.history] == ["head", "full"]
    metrics = json.loads((Path(first.output_dir) / "metrics.json").read_text())
    assert first.feature_cache_used and metrics["feature_extraction"]["images"] == 30  # the head phase on features
    second = tl_hub.finetune(_cfg(first.output_dir, image_folder, tmp_path / "child", policy="head", epochs=1))
    info = json.loads((Path(second.output_dir) / "run_info.json").read_text())
    assert info["parent_model"] == first.output_dir


def test_lp_ft_full_phase_after_cached_features_trains_in_channels_last(tmp_path, tiny, image_folder, monkeypatch):
    """The head phase on cached features has no images to lay out; the full phase after it trains on images, in
    the conv net's faster channels_last layout on the CPU, as `full` does (it had lost it: 62 vs 87 img/s)."""
    from tl_hub import train as loop_module
    from tl_hub.backbone import load_backbone
    from tl_hub.hardware import wants_channels_last

    resnet = str(tiny("resnet"))
    if torch.cuda.is_available() or not wants_channels_last(load_backbone(resnet, LABELS), "cpu"):
        pytest.skip("channels_last is the layout of conv nets on the CPU")
    layouts: list[tuple[str, bool]] = []
    real = loop_module.forward_logits

    def forward_logits(model, batch, channels_last=False):
        layouts.append((type(model).__name__, channels_last))
        return real(model, batch, channels_last)

    monkeypatch.setattr(loop_module, "forward_logits", forward_logits)
    result = tl_hub.finetune(_cfg(resnet, image_folder, tmp_path / "lpft", policy="lp-ft", epochs=2))
    assert result.feature_cache_used
    assert {flag for name, flag in layouts if name == "HeadOnFeatures"} == {False}  # features: no layout
    assert {flag for name, flag in layouts if name != "HeadOnFeatures"} == {True}  # the full phase's images


def test_fp16_on_cpu_falls_back_with_a_message(tmp_path, vit, image_folder, caplog):
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    with caplog.at_level(logging.WARNING, logger="tl_hub"):
        tl_hub.finetune(_cfg(vit, image_folder, tmp_path / "fp16", policy="head", epochs=1, mixed_precision="fp16"))
    assert "ignores fp16" in caplog.text
    info = json.loads((tmp_path / "fp16" / "run_info.json").read_text())
    assert info["mixed_precision"] == "no"


def test_partial_policy_keeps_frozen_batchnorm_statistics(tmp_path, image_folder):
    """Frozen layers' BatchNorm running stats must not drift although the loop calls model.train()."""
    resnet = tiny_checkpoint("resnet", tmp_path / "resnet")
    result = tl_hub.finetune(RecipeConfig(model=str(resnet), dataset=str(image_folder), image_size=32, epochs=1,
                                          batch_size=8, eval_fraction=0.3, seed=0, output_dir=str(tmp_path / "o"),
                                          num_workers=0, policy="partial", train_fraction=0.3))
    before = load_file(str(resnet / "model.safetensors"))
    after = load_file(str(Path(result.output_dir) / "model.safetensors"))
    stats = [k for k in after if k.endswith("running_mean") and k in before]
    frozen = [k for k in stats if k.startswith("resnet.embedder")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in stats)  # the trained (deepest) layers did update


def test_importing_the_module_keeps_tl_hub_finetune_callable() -> None:
    import tl_hub
    import tl_hub.finetuning  # noqa: F401  (a module named like the function would shadow it)

    assert callable(tl_hub.finetune)
    assert tl_hub.finetune is tl_hub.finetuning.finetune


def test_misspelled_keyword_is_a_config_error_naming_the_fix() -> None:
    import pytest

    import tl_hub
    from tl_hub.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        tl_hub.finetune(dataset="bundled:digits", epocs=3)


def test_a_python_caller_sees_the_progress_lines_the_cli_prints(tmp_path, vit, image_folder):
    """finetune() from plain Python (no logging set up) shows the run's progress on stdout, as `tl-hub` does;
    nothing but warnings goes to stderr."""
    import os
    import subprocess
    import sys

    recipe = _cfg(vit, image_folder, tmp_path / "py", policy="head", epochs=1).to_dict()
    code = f"import tl_hub; tl_hub.finetune({recipe!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("policy: head (set in the recipe)", "trainable parameters:", "epoch 1/1 [head]", "final eval: accuracy",
                 "Hub-ready folder:", "push it with:  tl-hub push"):
        assert line in proc.stdout, (line, proc.stdout[-2000:])
    assert "final eval" not in proc.stderr



def test_compile_trains_what_the_plain_loop_trains(tmp_path, vit, image_folder):
    """`compile: true` runs the head through torch.compile (tested on the CPU, where the compiler also works):
    the same head as without it, and checkpoints/outputs hold the plain model's names."""
    plain = tl_hub.finetune(_cfg(vit, image_folder, tmp_path / "plain", policy="head", epochs=2))
    compiled = tl_hub.finetune(_cfg(vit, image_folder, tmp_path / "compiled", policy="head", epochs=2, compile=True))
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "compiled" / "model.safetensors"))
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert [r["eval_loss"] for r in compiled.history] == pytest.approx([r["eval_loss"] for r in plain.history], rel=1e-4)


def test_the_accelerator_path_of_batched_augmentation_runs_end_to_end(tmp_path, vit, image_folder, monkeypatch):
    """What a GPU runs, forced on the CPU: uint8 items, the loop's copy to the device and `augment_batch` on
    whole batches (each sample from its own seed), and the non-finite check read a step late. Two runs with
    one seed train the same weights, whether the check is read at once or a step late; the augmentation
    really changes the data (a run without it differs)."""
    import tl_hub.finetuning as finetuning
    import tl_hub.train as train_mod

    monkeypatch.setattr(finetuning, "augments_batches_on_device", lambda device_type: True)
    runs = [tl_hub.finetune(_cfg(vit, image_folder, tmp_path / "a", policy="full", augment=True))]
    monkeypatch.setattr(train_mod, "defers_checks", lambda device: True)
    runs += [tl_hub.finetune(_cfg(vit, image_folder, tmp_path / name, policy="full", augment=augment))
             for name, augment in (("b", True), ("plain", False))]
    weights = [load_file(str(tmp_path / name / "model.safetensors")) for name in ("a", "b", "plain")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in runs[0].history)


def test_the_card_says_no_augmentation_ran_on_cached_features(tmp_path, vit, image_folder):
    """`augment: true` with the head trained on cached features: nothing was augmented, and the card says so."""
    tl_hub.finetune(_cfg(vit, image_folder, tmp_path / "head", policy="head", augment=True, feature_cache="on"))
    info = json.loads((tmp_path / "head" / "run_info.json").read_text())
    assert info["feature_cache_used"] and info["hyperparameters"]["augmentation"].startswith("none: the head trained")
    assert "augment has no effect there" in (tmp_path / "head" / "README.md").read_text()
    tl_hub.finetune(_cfg(vit, image_folder, tmp_path / "full", policy="full", augment=True, epochs=1))
    full = json.loads((tmp_path / "full" / "run_info.json").read_text())["hyperparameters"]
    assert full["augmentation"].startswith("random resized crop") and full["optimizer"].startswith("AdamW")
