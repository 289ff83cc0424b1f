"""Regularisers ([6/7]): label smoothing, mixup/cutmix, the EMA of the weights, gradient checkpointing --
their rules, their effect in the real loop, and the model card. Exact resume with each one on is in
tests/test_resume.py (test_resume_with_each_regulariser)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tl_hub.config import RecipeConfig
from tl_hub.errors import ConfigError
from tl_hub.loss import LossSpec, compute_loss
from tl_hub.regularisers import (MixSpec, check_regularisers_for_policy, describe_regularisers, ema_weights_in,
                                 enable_gradient_checkpointing, make_ema, mix_batch)

pytestmark = pytest.mark.filterwarnings("ignore")


# ----------------------------------------------------------------------------------------------
# recipe keys: checks, CLI overrides
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, words", [
    ({"label_smoothing": 1.0}, ["label_smoothing", "1.0", "[0, 1)"]),
    ({"label_smoothing": -0.1}, ["label_smoothing", "-0.1"]),
    ({"mixup_alpha": -0.5}, ["mixup_alpha", "-0.5", "[0, inf]"]),
    ({"cutmix_alpha": -1.0}, ["cutmix_alpha", "-1.0"]),
    ({"ema_decay": 1.0}, ["ema_decay", "1.0", "(0, 1)"]),
    ({"ema_decay": 0.0}, ["ema_decay", "0.0"]),
    ({"policy": "head", "mixup_alpha": 0.2}, ["mixup_alpha", "0.2", "'head'", "feature_cache: off"]),
    ({"policy": "head", "cutmix_alpha": 1.0}, ["cutmix_alpha", "'head'"]),
    ({"policy": "head", "gradient_checkpointing": True}, ["gradient_checkpointing", "'head'", "frozen"]),
])
def test_bad_values_name_the_key_the_value_and_the_fix(kw, words):
    with pytest.raises(ConfigError) as err:
        RecipeConfig(dataset="x", **kw)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_allowed_combinations_and_cli_overrides():
    cfg = RecipeConfig(dataset="x", policy="head", feature_cache="off", mixup_alpha=0.2, ema_decay=0.99,
                       label_smoothing=0.1)  # the head on images: mixing works there
    assert cfg.mixup_alpha == 0.2
    cfg = RecipeConfig(dataset="x").apply_overrides(
        ["--label_smoothing", "0.1", "--mixup_alpha=0.2", "cutmix_alpha=1", "--ema_decay", "0.999",
         "--gradient_checkpointing"])
    assert (cfg.label_smoothing, cfg.mixup_alpha, cfg.cutmix_alpha, cfg.ema_decay, cfg.gradient_checkpointing) == \
        (0.1, 0.2, 1.0, 0.999, True)
    defaults = RecipeConfig(dataset="x")  # all off by default
    assert (defaults.label_smoothing, defaults.mixup_alpha, defaults.cutmix_alpha, defaults.ema_decay,
            defaults.gradient_checkpointing) == (0.0, 0.0, 0.0, None, False)
    help_text = RecipeConfig.format_help()
    for key in ("label_smoothing", "mixup_alpha", "cutmix_alpha", "ema_decay", "gradient_checkpointing"):
        assert f"--{key}" in help_text


def test_auto_is_checked_again_once_it_has_picked_head():
    RecipeConfig(dataset="x", policy="auto", mixup_alpha=0.2)  # auto may pick partial: accepted here
    with pytest.raises(ConfigError, match="mixup_alpha"):
        check_regularisers_for_policy("head", "auto", mixup_alpha=0.2, cutmix_alpha=0.0, gradient_checkpointing=False)
    check_regularisers_for_policy("lp-ft", "auto", mixup_alpha=0.2, cutmix_alpha=0.0, gradient_checkpointing=True)


# ----------------------------------------------------------------------------------------------
# label smoothing and soft targets in the one loss rule
# ----------------------------------------------------------------------------------------------
def test_label_smoothing_is_torch_cross_entropy_in_training_and_plain_in_evaluation():
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(8, 5, generator=gen), torch.randint(0, 5, (8,), generator=gen)
    spec = LossSpec(label_smoothing=0.2)
    assert torch.equal(compute_loss(spec, logits, labels, training=True),
                       F.cross_entropy(logits, labels, label_smoothing=0.2))
    assert torch.equal(compute_loss(spec, logits, labels), F.cross_entropy(logits, labels))
    soft = F.one_hot(labels, 5).float()  # one-hot soft targets give the same loss as the ids
    assert torch.allclose(compute_loss(LossSpec(), logits, soft), compute_loss(LossSpec(), logits, labels))
    assert LossSpec(label_smoothing=0.1).fingerprint()["label_smoothing"] == 0.1
    assert "label_smoothing" not in LossSpec().fingerprint()


# ----------------------------------------------------------------------------------------------
# mixup / cutmix
# ----------------------------------------------------------------------------------------------
def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 16, 16, generator=gen), torch.arange(n) % 3


@pytest.mark.parametrize("spec", [MixSpec(0.4, 0.0, 3), MixSpec(0.0, 1.0, 3), MixSpec(0.4, 1.0, 3)])
def test_mixing_is_a_function_of_its_seed_alone(spec):
    images, labels = _batch()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a_x, a_y = mix_batch(spec, images.clone(), labels, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before), "the loop's own generator was touched"
    torch.manual_seed(999)  # whatever the global state: the same seed mixes the same way
    b_x, b_y = mix_batch(spec, images.clone(), labels, seed=5)
    assert torch.equal(a_x, b_x) and torch.equal(a_y, b_y)
    draws = {tuple(mix_batch(spec, images.clone(), labels, seed=s)[1][0].tolist()) for s in range(8)}
    assert len(draws) > 1, "different seeds must mix differently"
    assert a_y.shape == (6, 3) and torch.allclose(a_y.sum(1), torch.ones(6))
    assert not torch.equal(a_x, images), "the images were not mixed"


def test_mixup_blends_each_image_with_its_neighbour_and_the_targets_alike():
    images, labels = _batch()
    x, y = mix_batch(MixSpec(0.4, 0.0, 3), images.clone(), labels, seed=3)
    lam = float(y[0, labels[0]]) if labels[0] != labels[-1] else None  # torchvision pairs image i with i-1
    assert lam is not None
    assert torch.allclose(x[0], lam * images[0] + (1 - lam) * images[-1], atol=1e-6)


# ----------------------------------------------------------------------------------------------
# EMA of the weights
# ----------------------------------------------------------------------------------------------
class _Data(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict:
        x = torch.full((4,), float(i % 4)) + 0.1 * i
        return {"features": x, "labels": torch.tensor(i % 2), "index": i}


class _Head(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def test_ema_follows_every_optimizer_step_and_is_what_is_checkpointed_evaluated_and_kept(tmp_path):
    """An independent EMA computed from the weights after each optimizer step equals the checkpoint's
    ema.safetensors; the model returned (the best epoch's) holds EMA weights, not the raw ones."""
    from tl_hub import checkpoint as ckpt
    from tl_hub.freezing import simple_param_groups
    from tl_hub.hardware import make_accelerator
    from tl_hub.train import Phase, TrainArgs, evaluate, train

    model, decay = _Head(), 0.7
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    steps = []

    def on_step(event, state):
        if event == "step":
            steps.append(state.global_step)
            for k, v in model.state_dict().items():
                expected[k].lerp_(v.detach(), 1 - decay)

    args = TrainArgs(epochs=3, batch_size=4, learning_rate=0.05, progress=False, ema_decay=decay, seed=1)
    out = train(model, _Data(), _Data(), args=args, accelerator=make_accelerator(), checkpoint_dir=tmp_path,
                phases=[Phase("train", 3, simple_param_groups)], callbacks=[on_step], log=lambda m: None)
    assert steps == list(range(1, 13))
    last = ckpt.latest_checkpoint(tmp_path)
    saved_ema, saved_raw = load_file(str(last / ckpt.EMA_FILE)), load_file(str(last / ckpt.MODEL_FILE))
    for k, v in expected.items():
        assert torch.allclose(saved_ema[k], v, atol=1e-6), k
    assert not torch.allclose(saved_ema["fc.weight"], saved_raw["fc.weight"]), "EMA == raw weights: no averaging"
    best = load_file(str(tmp_path / ckpt.BEST_MODEL_FILE))
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best), "the model must hold the best (EMA) weights"
    if out.best_epoch == 3:
        assert torch.equal(model.fc.weight, saved_ema["fc.weight"])
    assert out.best_metric == out.history[out.best_epoch - 1]["eval_accuracy"]
    assert args.fingerprint()["ema_decay"] == decay


def test_ema_weights_in_swaps_and_restores_exactly():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    ema = make_ema(model, 0.5)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(1.0)
    with ema_weights_in(model, ema):
        assert torch.equal(model[0].weight, ema.module[0].weight)
    assert all(torch.equal(model.state_dict()[k], raw[k]) for k in raw)


# ----------------------------------------------------------------------------------------------
# gradient checkpointing
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["vit", "timm_efficientnet"])
def test_gradient_checkpointing_gives_the_same_gradients(tmp_path, arch):
    """The same loss and gradients (up to float rounding) with checkpointing on, the frozen stem included
    (partial): the recomputed blocks still pass gradients to the trainable ones."""
    from helpers.tiny_models import tiny_checkpoint, tiny_image_size

    from tl_hub.backbone import load_backbone
    from tl_hub.freezing import apply_policy
    from tl_hub.policy import resolve_policy

    path = tiny_checkpoint(arch, tmp_path / arch)
    size = tiny_image_size(arch)
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0])
    grads, stats = [], []
    for on in (False, True):
        torch.manual_seed(0)
        model = load_backbone(str(path), ["a", "b", "c"])
        apply_policy(model, resolve_policy("partial", num_examples=100, num_labels=3, num_depths=None,
                                           train_fraction=0.5, head_epochs_fraction=None))
        if on:
            enable_gradient_checkpointing(model, arch)
        model.train()
        out = model(pixel_values=x)
        loss = F.cross_entropy(out.logits, labels)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        stats.append({n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 2
    deep = [n for n in grads[0] if "classifier" not in n and "head" not in n]
    assert deep, "no backbone parameter trains"
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name
    # the documented difference: a trainable BatchNorm's statistics take one more update in the recompute
    moved = [n for n in stats[0] if not torch.equal(stats[0][n], stats[1][n])]
    assert bool(moved) == (arch == "timm_efficientnet"), moved


def test_gradient_checkpointing_refused_for_a_model_that_cannot():
    with pytest.raises(ConfigError, match=r"gradient_checkpointing: got true, but my-net \(Linear\)"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2), "my-net")


# ----------------------------------------------------------------------------------------------
# a real run: every regulariser on, the card says so
# ----------------------------------------------------------------------------------------------
def _colour_folder(root: Path) -> Path:
    from helpers.images import write_tinted_folder

    return write_tinted_folder(root, {"red": 8, "green": 8, "blue": 8}, np.random.default_rng(0))


def test_a_run_with_every_regulariser_writes_them_in_run_info_and_the_card(tmp_path):
    from helpers.tiny_models import tiny_checkpoint

    import tl_hub
    from tl_hub import checkpoint as ckpt

    model = tiny_checkpoint("vit", tmp_path / "vit")
    out = tmp_path / "out"
    result = tl_hub.finetune(model=str(model), dataset=str(_colour_folder(tmp_path / "data")), output_dir=str(out),
                             policy="full", epochs=2, batch_size=6, eval_fraction=0.25, num_workers=0, seed=0,
                             label_smoothing=0.1, mixup_alpha=0.2, cutmix_alpha=1.0, ema_decay=0.9,
                             gradient_checkpointing=True, progress=False, feature_cache="off")
    run_info = json.loads((out / "run_info.json").read_text())
    line = run_info["hyperparameters"]["regularisers"]
    for part in ("label smoothing 0.1", "mixup (alpha 0.2) or cutmix (alpha 1)", "EMA of the weights (decay 0.9)",
                 "gradient checkpointing"):
        assert part in line, line
    card = (out / "README.md").read_text()
    assert "exponential moving average (decay 0.9" in card and "label smoothing 0.1" in card
    latest = ckpt.latest_checkpoint(out / "checkpoints")
    assert latest is not None and (latest / ckpt.EMA_FILE).is_file()
    best = load_file(str(out / "checkpoints" / ckpt.BEST_MODEL_FILE)) if (
        out / "checkpoints" / ckpt.BEST_MODEL_FILE).is_file() else None
    saved = load_file(str(out / "model.safetensors"))
    if best is not None:  # the output folder holds the best EMA weights
        shared = [k for k in best if k in saved]
        assert shared and all(torch.equal(best[k], saved[k]) for k in shared)
    assert result is not None


def test_card_without_regularisers_says_none_and_has_no_ema_sentence():
    assert describe_regularisers(label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, ema_decay=None,
                                 gradient_checkpointing=False, policy="partial", feature_cache_used=False) == "none"
    lpft = describe_regularisers(label_smoothing=0.0, mixup_alpha=0.2, cutmix_alpha=0.0, ema_decay=None,
                                 gradient_checkpointing=False, policy="lp-ft", feature_cache_used=True)
    assert "full phase only" in lpft


def test_golden_card_run_renders_the_ema_sentence_only_with_an_ema(tmp_path):
    from tl_hub.card import render_model_card

    golden = Path(__file__).parent / "golden" / "card_run"
    out = tmp_path / "run"
    shutil.copytree(golden, out)
    assert "exponential moving average" not in str(render_model_card(out, repo_id="t/x", plots=[]))
    info = json.loads((out / "run_info.json").read_text())
    info["regularisers_detail"] = {"ema_decay": 0.999}
    (out / "run_info.json").write_text(json.dumps(info))
    assert "exponential moving average (decay 0.999" in str(render_model_card(out, repo_id="t/x", plots=[]))
