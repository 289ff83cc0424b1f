"""Trackers (`log_with`): a misspelt or uninstalled tracker is a clear error (exit 2 on the command line),
`tracker_project` / `run_name` name the run, and the hyperparameters logged are what the run really used
(the resolved policy and learning rate, the data sizes) -- read back from TensorBoard's event files."""

from __future__ import annotations

from pathlib import Path

import pytest

import tl_hub
from helpers.images import write_image_folder
from tl_hub.cli import main
from tl_hub.errors import ConfigError
from tl_hub.trackers import installed_trackers

pytestmark = pytest.mark.skipif("tensorboard" not in installed_trackers(), reason="tensorboard (the test extra)")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("trk") / "imgs", ["red", "green", "blue"], per_label=6, seed=2)


def _recipe(tiny, images: Path, out: Path, **kw) -> dict:
    return {**dict(model=str(tiny("vit")), dataset=str(images), image_size=32, epochs=2, batch_size=6,
                   output_dir=str(out), num_workers=0, seed=0), **kw}


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, f"no event files under {folder}"
    loaded = []
    for file in files:
        acc = EventAccumulator(str(file), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        loaded.append(acc)
    return loaded


def _hparams(accumulators) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    for acc in accumulators:
        try:
            data = acc.PluginTagToContent("hparams")  # {tag: the plugin's serialized data}
        except KeyError:  # this event file holds no hparams
            continue
        for content in data.values():
            parsed = plugin_data_pb2.HParamsPluginData.FromString(content)
            if parsed.HasField("session_start_info"):
                return {k: (v.string_value or v.number_value or v.bool_value)
                        for k, v in parsed.session_start_info.hparams.items()}
    return {}


def test_tensorboard_logs_the_run_under_project_and_run_name_with_the_resolved_hparams(tiny, images, tmp_path):
    out = tmp_path / "out"
    tl_hub.finetune(_recipe(tiny, images, out, log_with=["tensorboard"], tracker_project="colours",
                            run_name="vit-try-1", policy="auto"))
    run_dir = out / "runs" / "colours" / "vit-try-1"
    accumulators = _events(run_dir)
    scalars = {tag for acc in accumulators for tag in acc.Tags()["scalars"]}
    assert "train_loss" in scalars or any("train_loss" in t for t in scalars), scalars
    hparams = _hparams(accumulators)
    assert hparams["policy"] == "head" and hparams["requested_policy"] == "auto"  # 18 images: auto -> head
    assert hparams["learning_rate"] == pytest.approx(1e-3)  # head's default peak rate, not "null"
    assert hparams["n_train"] + hparams["n_eval"] == 18 and hparams["n_labels"] == 3


def test_the_run_name_defaults_to_the_output_folder(tiny, images, tmp_path):
    out = tmp_path / "my-run"
    tl_hub.finetune(_recipe(tiny, images, out, log_with=["tensorboard"], epochs=1))
    assert list((out / "runs" / "tl_hub" / "my-run").rglob("events.out.tfevents.*"))


def test_a_misspelt_tracker_is_named_with_the_fix_and_exits_2(tiny, images, tmp_path, capsys):
    code = main(["train", "--model", str(tiny("vit")), "--dataset", str(images), "--output_dir", str(tmp_path / "o"),
                 "--log_with", "tensorbord"])
    assert code == 2
    err = capsys.readouterr().err
    assert "log_with: unknown tracker 'tensorbord' (did you mean 'tensorboard'?)" in err
    assert "installed here: tensorboard" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_an_uninstalled_tracker_stops_the_run_before_it_starts(tiny, images, tmp_path):
    missing = next(n for n in ("comet_ml", "aim", "dvclive", "swanlab", "clearml") if n not in installed_trackers())
    with pytest.raises(ConfigError, match=rf"log_with: '{missing}' is not installed here \(pip install .*\); "
                                          r"installed trackers: .*tensorboard"):
        tl_hub.finetune(_recipe(tiny, images, tmp_path / "o", log_with=[missing]))
    assert not (tmp_path / "o").exists()
