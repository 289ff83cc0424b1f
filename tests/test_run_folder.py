"""tl_hub.run_folder: whose run an output folder holds and what the same command does with it — resume an
unfinished run, start a finished or never-checkpointed one again, reuse the folder of a run that failed
before training, refuse someone else's files or another recipe's run (naming the way out) — and what a
stopped run says. (Bit-identical resumption after SIGKILL is proven in tests/test_resume.py.)"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

import tl_hub
from helpers.images import write_image_folder
from tl_hub import checkpoint as ckpt
from tl_hub.config import RecipeConfig
from tl_hub.errors import ConfigError, DataError

LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imgs"), LABELS, per_label=10, seed=0)


@pytest.fixture(scope="module")
def vit(tiny) -> str:
    return str(tiny("vit"))


def recipe(vit, data, out, **kw) -> RecipeConfig:
    base = dict(model=vit, dataset=str(data), image_size=32, epochs=3, batch_size=8, eval_fraction=0.3, seed=0,
                output_dir=str(out), num_workers=0, augment=False, policy="full", checkpointing_steps=1)
    return RecipeConfig(**{**base, **kw})


class Stop(KeyboardInterrupt):
    """Ctrl-C, pressed by the test after a given number of checkpoints."""


@pytest.fixture
def interrupt_after(monkeypatch):
    """interrupt_after(n): the n-th checkpoint written raises a KeyboardInterrupt (as Ctrl-C would there)."""

    def arm(n: int) -> None:
        real = ckpt.save_checkpoint
        calls = {"n": 0}

        def save_checkpoint(*args, **kwargs):
            path = real(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == n:
                monkeypatch.setattr(ckpt, "save_checkpoint", real)
                raise Stop
            return path

        monkeypatch.setattr(ckpt, "save_checkpoint", save_checkpoint)

    return arm


def test_the_same_command_resumes_an_interrupted_run_and_says_how(tmp_path, vit, image_folder, interrupt_after,
                                                                 caplog):
    config = recipe(vit, image_folder, tmp_path / "run")
    interrupt_after(5)
    with caplog.at_level(logging.INFO, logger="tl_hub"), pytest.raises(KeyboardInterrupt):
        tl_hub.finetune(config)
    assert "the run was interrupted; " in caplog.text
    assert re.search(r"holds checkpoint-00000004 \(epoch 2, global step 4\): run the same command again to resume "
                     r"from it \(resume_from_checkpoint: none starts over\)", caplog.text), caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        resumed = tl_hub.finetune(config)
    assert "resume_from_checkpoint: auto -- resuming the run in" in caplog.text and "global step 4" in caplog.text
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    uninterrupted = tl_hub.finetune(config.replace(output_dir=str(tmp_path / "whole")))
    assert [r["eval_loss"] for r in resumed.history] == [r["eval_loss"] for r in uninterrupted.history]


def test_resume_none_starts_over_and_a_finished_run_trains_again(tmp_path, vit, image_folder, interrupt_after,
                                                                caplog):
    config = recipe(vit, image_folder, tmp_path / "run")
    interrupt_after(2)
    with pytest.raises(KeyboardInterrupt):
        tl_hub.finetune(config)
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        tl_hub.finetune(config.replace(resume_from_checkpoint="none"))
    assert "resuming" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        again = tl_hub.finetune(config)
    assert "holds a finished run of this recipe: training it again" in caplog.text and len(again.history) == 3
    assert "resuming" not in caplog.text
    # `latest` takes the finished run's last checkpoint: nothing is left to train
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        tl_hub.finetune(config.replace(resume_from_checkpoint="latest"))
    assert "resume_from_checkpoint: latest -- resuming the run" in caplog.text and "epoch 1/3" not in caplog.text


def test_a_run_that_failed_before_training_does_not_block_the_corrected_retry(tmp_path, vit, image_folder, caplog):
    out = tmp_path / "typo"
    with pytest.raises(DataError, match="eval_split: got 'validaton'"):
        tl_hub.finetune(recipe(vit, image_folder, out, eval_split="validaton"))
    assert (out / "recipe.yaml").is_file()
    with caplog.at_level(logging.INFO, logger="tl_hub"):
        result = tl_hub.finetune(recipe(vit, image_folder, out, epochs=1))
    assert "replacing a run that stopped before its first checkpoint" in caplog.text
    assert RecipeConfig.from_yaml(out / "recipe.yaml").eval_split is None and len(result.history) == 1


def test_refuses_user_files_and_another_recipes_run_naming_the_way_out(tmp_path, vit, image_folder):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"busy is not empty and holds no tl_hub run \(notes.txt\).*overwrite_output_dir"):
        tl_hub.finetune(recipe(vit, image_folder, out, epochs=1))
    tl_hub.finetune(recipe(vit, image_folder, out, epochs=1, overwrite_output_dir=True))
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError) as refused:
        tl_hub.finetune(recipe(vit, image_folder, out, epochs=2, learning_rate=1e-3))
    message = str(refused.value)
    assert "holds a finished run of a different recipe (epochs: 1 there, 2 here; learning_rate: None there, 0.001 here)" \
        in message and f"--output_dir {out}-2" in message and "overwrite_output_dir: true" in message


def test_an_unfinished_run_of_another_recipe_is_refused_with_how_to_resume_it(tmp_path, vit, image_folder,
                                                                             interrupt_after):
    out = tmp_path / "half"
    interrupt_after(2)
    with pytest.raises(KeyboardInterrupt):
        tl_hub.finetune(recipe(vit, image_folder, out))
    with pytest.raises(ConfigError, match=r"holds an unfinished run of a different recipe \(seed: 0 there, 1 here\).*"
                                          r"rerun its own recipe \(.*recipe.yaml\) to resume it"):
        tl_hub.finetune(recipe(vit, image_folder, out, seed=1))


def test_output_dir_problems_name_the_path(tmp_path, vit, image_folder):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"output_dir: .*a_file is a file, not a folder"):
        tl_hub.finetune(recipe(vit, image_folder, a_file))
    with pytest.raises(ConfigError, match=r"output_dir: .*a_file/sub cannot be created: .*a_file is a file"):
        tl_hub.finetune(recipe(vit, image_folder, a_file / "sub"))
    with pytest.raises(ConfigError, match=r"output_dir: cannot write to /proc/tl_hub_run \(.*\); choose a folder"):
        tl_hub.finetune(recipe(vit, image_folder, "/proc/tl_hub_run"))


def test_null_in_an_older_recipe_means_auto(tmp_path):
    old = tmp_path / "recipe.yaml"
    old.write_text(json.dumps({"dataset": "beans", "resume_from_checkpoint": None}))
    assert RecipeConfig.from_yaml(old).resume_from_checkpoint == "auto"
    assert RecipeConfig.from_dict({"dataset": "b", "resume_from_checkpoint": "none"}).resume_from_checkpoint == "none"
