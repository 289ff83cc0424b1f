"""Every ordinary `tl-hub` command prints its own lines and nothing else: no other library's progress bars
("Loading weights", "Writing model shards", upload bars, per-epoch bars written into a pipe) and no
warning that reports no problem (transformers' "Requested torchvision backend is not available" for timm
processors). Each command runs as a user runs it, in its own process with its output going to a pipe and
without the test session's progress-bar switches. Real warnings still show (the last test)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.images import write_image_folder

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["red", "green", "blue"]
#: what a quiet command never prints: progress bars (tqdm's bar, rate and carriage returns) and known chatter
NOISE = ("Loading weights", "Writing model shards", "backend is not available", "Falling back to", "%|", "it/s]",
         "s/it]", "\r", "Upload ", "Processing Files", "New Data Upload")

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    """The session's environment without its progress-bar switches (a user has none of them)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def tl_hub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tl_hub.cli", *args], capture_output=True, text=True,
                          timeout=900, cwd=ROOT, env=env or _env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def assert_quiet(proc: subprocess.CompletedProcess) -> None:
    output = proc.stdout + proc.stderr
    assert not [n for n in NOISE if n in output], output[-3000:]
    assert proc.stderr == "", proc.stderr[-3000:]  # no warnings: nothing went wrong


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory) -> Path:
    """A quickstart run (the bundled timm Lite0: its processor is the one transformers warns about)."""
    out = tmp_path_factory.mktemp("quiet") / "qs"
    proc = tl_hub("quickstart", "--output-dir", str(out), "--epochs", "1", "--examples_per_label", "2",
                  "--image_size", "32")
    assert_quiet(proc)
    assert "Hub-ready folder:" in proc.stdout
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("quiet_imgs"), LABELS, per_label=6, seed=3)


def test_quickstart_is_quiet(quickstart_dir):
    assert (quickstart_dir / "model.safetensors").is_file()  # the run itself is checked by the fixture


def test_train_is_quiet(tiny, images, tmp_path):
    from tl_hub.config import RecipeConfig

    recipe = tmp_path / "recipe.yaml"
    RecipeConfig(model=str(tiny("vit")), dataset=str(images), image_size=32, epochs=2, batch_size=4,
                 eval_fraction=0.3, policy="full", output_dir=str(tmp_path / "out")).to_yaml(recipe)
    proc = tl_hub("train", str(recipe))
    assert_quiet(proc)
    assert "epoch 2/2 [full]" in proc.stdout


def test_predict_is_quiet(quickstart_dir, images):
    image = str(next((images / "red").iterdir()))
    proc = tl_hub("predict", str(quickstart_dir), image, "--top-k", "2")
    assert_quiet(proc)
    assert proc.stdout.splitlines()[0] == image and len(proc.stdout.splitlines()) == 3


def test_policy_is_quiet():
    proc = tl_hub("policy", "--examples", "1000", "--labels", "10", "--model", "bundled:efficientnet_lite0")
    assert_quiet(proc)
    assert proc.stdout.startswith("policy: head")


def test_push_is_quiet(hub, quickstart_dir):
    repo_id = hub.new_repo_id("quiet")
    proc = tl_hub("push", str(quickstart_dir), repo_id, env=_env(HF_ENDPOINT=hub.url, HF_TOKEN=hub.token))
    assert_quiet(proc)
    assert proc.stdout.strip().splitlines()[-1].startswith(f"{hub.url}/{repo_id}/commit/")


def test_quiet_library_chatter_keeps_real_warnings():
    """Only the listed spurious message is dropped; other warnings, from the same logger too, still show."""
    from transformers.utils import logging as hf_logging

    from tl_hub.reporting import quiet_library_chatter

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    auto = logging.getLogger("transformers.models.auto.image_processing_auto")
    modeling = logging.getLogger("transformers.modeling_utils")
    handler = Keep(level=logging.WARNING)
    library = logging.getLogger("transformers")
    before = (library.level, auto.disabled, modeling.disabled)  # earlier tests may have quietened transformers
    library.setLevel(logging.WARNING)
    auto.disabled = modeling.disabled = False
    for target in (auto, modeling):
        target.addHandler(handler)
    bars = hf_logging.is_progress_bar_enabled()
    try:
        with quiet_library_chatter():
            assert not hf_logging.is_progress_bar_enabled()
            auto.warning("Requested torchvision backend is not available. Falling back to pil backend.")
            auto.warning("Unrecognized image processor in model_dir.")
            modeling.warning("Some weights of the checkpoint were not used")
        auto.warning("Requested torchvision backend is not available. Falling back to pil backend.")  # outside: shown
    finally:
        for target in (auto, modeling):
            target.removeHandler(handler)
        library.setLevel(before[0])
        auto.disabled, modeling.disabled = before[1], before[2]
    assert seen == ["Unrecognized image processor in model_dir.", "Some weights of the checkpoint were not used",
                    "Requested torchvision backend is not available. Falling back to pil backend."]
    assert hf_logging.is_progress_bar_enabled() == bars  # restored


def test_progress_false_shows_no_bar_and_predict_shows_one_over_many_images(tmp_path, tiny, capsys):
    """`progress: false` switches tl_hub's bars off (training epochs, feature pass); `predict` over more than 4
    batches of images draws one (decoding a batch at a time), and `progress=False` switches it off."""
    import os

    import tl_hub
    from helpers.images import write_image_folder

    data = write_image_folder(tmp_path / "imgs", ["a", "b"], per_label=40, seed=5)
    os.environ.pop("TQDM_DISABLE", None)
    out = tmp_path / "out"
    tl_hub.finetune(model=str(tiny("vit")), dataset=str(data), image_size=32, epochs=1, batch_size=8,
                    output_dir=str(out), num_workers=0, progress=False, policy="full")
    assert "epoch 1:" not in capsys.readouterr().err
    files = sorted(str(p) for p in data.rglob("*.png"))
    assert len(files) == 80
    tl_hub.predict(out, files, top_k=1)
    assert "predict" in capsys.readouterr().err
    results = tl_hub.predict(out, files, top_k=1, progress=False)
    assert "predict" not in capsys.readouterr().err and len(results) == 80
