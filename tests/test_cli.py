"""tl_hub.cli: `tl-hub train` with a recipe file, with keys alone, or both (a flag's value is never taken for
the recipe); `quickstart --help` says how to overwrite; Ctrl-C or `kill` ends a run with how to resume it.
(`tl-hub policy` is tested in tests/test_policy.py, push/predict in tests/test_hub.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.images import write_image_folder
from tl_hub.cli import main

LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("cli_images") / "my_images", LABELS, per_label=6, seed=1)


def keys(tiny, images: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(tiny("vit")), "--dataset", str(images), "--image_size", "32", "--epochs", "1",
            "--batch_size", "6", "--output_dir", str(out), "--num_workers", "0", *extra]


def test_train_with_keys_alone_in_every_spelling(tiny, images, tmp_path):
    assert main(["train", *keys(tiny, images, tmp_path / "a")]) == 0
    flags = keys(tiny, images, tmp_path / "b")
    assert main(["train", *(f"{flag}={value}" for flag, value in zip(flags[::2], flags[1::2]))]) == 0
    for out in ("a", "b"):
        assert json.loads((tmp_path / out / "run_info.json").read_text())["data"]["source"] == str(images)


def test_train_with_a_recipe_file_and_keys(tiny, images, tmp_path):
    recipe = tmp_path / "my.yaml"
    recipe.write_text(f"model: {tiny('vit')}\ndataset: {images}\nimage_size: 32\nepochs: 2\nnum_workers: 0\n")
    assert main(["train", str(recipe), "--epochs", "1", "--output_dir", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["best_epoch"] == 1


def test_a_folder_in_the_recipe_place_says_how_to_pass_it(images, capsys):
    assert main(["train", str(images), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"tl-hub train: error: {str(images)!r} is a folder; the optional first argument of `tl-hub train` is a "
        f"recipe YAML. To train without one, give every key as a flag, e.g. tl-hub train --dataset {images} --epochs 1"
    )
    assert main(["train", "--epochs", "1"]) == 2
    assert "dataset: missing" in capsys.readouterr().err


def test_help_texts(capsys):
    for command in (["train", "--help"], ["quickstart", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(command)
        assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "usage: tl-hub train [RECIPE.yaml] [--key value ...]" in out and "--dataset" in out
    assert "--overwrite_output_dir true" in out and "--resume_from_checkpoint none" in out


DRIVER = r"""
import os, signal, sys
import tl_hub.checkpoint as ckpt
real, calls = ckpt.save_checkpoint, []
def save_checkpoint(*a, **kw):
    path = real(*a, **kw)
    calls.append(path)
    if len(calls) == int(os.environ["KILL_AT_SAVE"]):
        os.kill(os.getpid(), signal.SIGTERM)  # `kill PID` in the middle of training
    return path
ckpt.save_checkpoint = save_checkpoint
from tl_hub.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_ends_the_run_saying_how_to_resume_and_the_same_command_does(tiny, images, tmp_path):
    command = [sys.executable, "-c", DRIVER, "train",
               *keys(tiny, images, tmp_path / "run", "--checkpointing_steps", "1", "--policy", "full")]
    command[command.index("--epochs") + 1] = "2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    killed = subprocess.run(command, env={**env, "KILL_AT_SAVE": "2"}, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 130, killed.stderr[-3000:]
    assert killed.stderr.rstrip().endswith("interrupted")
    assert "the run was interrupted; " in killed.stderr
    assert "holds checkpoint-00000002 (epoch 1, global step 2): run the same command again to resume from it " \
           "(resume_from_checkpoint: none starts over)" in killed.stderr
    resumed = subprocess.run(command, env={**env, "KILL_AT_SAVE": "0"}, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the run in" in resumed.stdout and "from checkpoint-00000002" in resumed.stdout
