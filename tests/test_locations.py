"""tl_hub.locations: sources are classified before any network call -- a mistyped local path is "no such
local folder" with the closest existing name, and a Hub id with the Hub off or out of reach fails at
once in one line. "No network call" is proven by the local Hub server's request log, not by a clock."""

from __future__ import annotations

import logging
from pathlib import Path

import huggingface_hub.constants  # read its environment now, before a fixture sets HF_HUB_OFFLINE
import pytest

from helpers.ports import free_port
from tl_hub.errors import ConfigError, DataError, HubError
from tl_hub.locations import (closest_path, hub_offline_reason, hub_unreachable_reason, in_local_cache, locate,
                              looks_like_path)

LABELS = ["cat", "dog"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder with an image folder `my_images/{cat,dog}/` and a `labels.csv`."""
    for label in LABELS:
        (tmp_path / "my_images" / label).mkdir(parents=True)
    (tmp_path / "labels.csv").write_text("image,label\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def unreachable(monkeypatch):
    """huggingface_hub's endpoint on a local port nothing listens on."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    return endpoint


@pytest.mark.parametrize(("text", "path_shaped"), [
    ("my_imagse/", True), ("data\\train", True), ("a/b/c", True), ("./x", True), ("../x", True), ("~/x", True),
    ("/abs", True), ("labels.csv", True), ("train.parquet", True), ("data.jsonl", True), ("my_images/catt", True),
    ("org/name", False), ("beans", False), ("timm/resnet18.a1_in1k", False), ("no_such_folder", False),
])
def test_what_looks_like_a_path(workdir, text, path_shaped):
    assert looks_like_path(text) is path_shaped


def test_closest_existing_name(workdir):
    assert closest_path("my_imagse/") == "my_images/"
    assert closest_path("./My_Images") == "./my_images/"  # case-insensitive, written as the user wrote it
    assert closest_path("my_images/catt") == "my_images/cat/"
    assert closest_path("my_imagse/dog") == "my_images/dog/"  # the rest of the path kept when it exists
    assert closest_path("lables.csv") == "labels.csv"
    assert closest_path(f"{workdir}/my_imags") == f"{workdir}/my_images/"
    assert closest_path("completely-different") is None


def test_existing_paths_and_bundled_are_classified_without_the_hub(workdir, offline, unreachable):
    assert locate("my_images/", "dataset").kind == "local"
    assert locate("my_images/", "dataset").path == Path("my_images")
    assert locate("labels.csv", "dataset").kind == "local"
    assert locate("bundled:fashion_mnist", "dataset").kind == "bundled"


def test_mistyped_local_paths_name_the_closest_existing_one(workdir, hub):
    from tl_hub import load_backbone, load_data

    seen = len(hub.requests)
    with pytest.raises(DataError) as err:
        load_data("my_imagse/")
    assert str(err.value) == "dataset: no such local folder: 'my_imagse/' (did you mean 'my_images/'?); check the path"
    with pytest.raises(DataError) as err:
        load_data("lables.csv")
    assert str(err.value) == "dataset: no such local file: 'lables.csv' (did you mean 'labels.csv'?); check the path"
    with pytest.raises(DataError) as err:
        load_data("my_images/catt")  # `my_images` exists here: a path, not the Hub id 'my_images/catt'
    assert str(err.value) == ("dataset: no such local folder or file: 'my_images/catt' (did you mean "
                              "'my_images/cat/'?); check the path")
    with pytest.raises(ConfigError) as err:
        load_backbone("./my_imagse", LABELS)
    assert str(err.value) == "model: no such local folder: './my_imagse' (did you mean './my_images/'?); check the path"
    with pytest.raises(DataError) as err:
        load_data("nothing/like/it")
    assert str(err.value) == (f"dataset: no such local folder or file: 'nothing/like/it' (nothing of that name in "
                              f"{workdir}); check the path")
    assert len(hub.requests) == seen  # none of them asked the Hub


def test_names_that_are_neither_local_nor_a_hub_id(workdir):
    from tl_hub import load_backbone, load_data

    with pytest.raises(DataError) as err:
        load_data("my images")
    assert str(err.value) == ("dataset: 'my images' is neither a local folder or file (did you mean 'my_images/'?) "
                              "nor a valid Hub dataset id ('name' or 'org/name': letters, digits, '-', '_', '.'); "
                              "check the path or the id")
    with pytest.raises(ConfigError, match=r"^model: 'a\.\.b' is neither a local folder \(nothing of that name in "):
        load_backbone("a..b", LABELS)
    with pytest.raises(ConfigError, match="model: got None"):
        locate(None, "model")


def test_offline_hub_ids_fail_at_once_without_a_request(workdir, hub, offline, caplog, capfd):
    from tl_hub import load, load_backbone, load_data, predict

    seen = len(hub.requests)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(HubError) as err:
            load_data("my_imagse")  # no slash: a Hub id in form, but a local name is close
        assert str(err.value) == (
            "dataset: 'my_imagse' is neither a local folder or file (did you mean 'my_images/'?) nor a Hub dataset "
            "in the local cache, and the Hub is disabled (HF_HUB_OFFLINE=1); check the name, or unset "
            "HF_HUB_OFFLINE to download it")
        with pytest.raises(HubError) as err:
            load_backbone("tester/no-such-model", LABELS)
        assert str(err.value) == (
            f"model: 'tester/no-such-model' is neither a local folder (nothing of that name in {workdir}) nor a Hub "
            "model in the local cache, and the Hub is disabled (HF_HUB_OFFLINE=1); check the name, or unset "
            "HF_HUB_OFFLINE to download it")
        with pytest.raises(HubError, match=r"^model: 'tester/no-such-model' is neither .*\(HF_HUB_OFFLINE=1\)"):
            load("tester/no-such-model")
        with pytest.raises(HubError, match="HF_HUB_OFFLINE=1"):
            predict("tester/no-such-model", [])
    assert len(hub.requests) == seen, hub.requests[seen:]
    assert "Retrying" not in caplog.text + "".join(capfd.readouterr())


def test_the_request_log_does_see_an_online_attempt(workdir, hub):
    """The proof above can fail: without HF_HUB_OFFLINE the same call reaches the server."""
    from tl_hub import load_data

    seen = len(hub.requests)
    with pytest.raises(DataError, match="cannot load it from the Hub"):
        load_data("tester/no-such-dataset")
    assert len(hub.requests) > seen


def test_unreachable_hub_is_one_line_naming_the_endpoint(workdir, hub, unreachable, caplog, capfd):
    from tl_hub import load_backbone, load_data

    seen = len(hub.requests)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(HubError) as err:
            load_data("no_such_folder")
        message = str(err.value)
        assert message == (
            f"dataset: 'no_such_folder' is neither a local folder or file (nothing of that name in {workdir}) nor a "
            f"Hub dataset in the local cache, and the Hub cannot be reached at {unreachable} (connection refused); "
            "check the name, or check your network, HF_ENDPOINT or proxy settings to download it")
        with pytest.raises(HubError, match=rf"^model: 'org/model' .* cannot be reached at {unreachable} "):
            load_backbone("org/model", LABELS)
    assert "\n" not in message
    assert "Retrying" not in caplog.text + "".join(capfd.readouterr())
    assert len(hub.requests) == seen


def test_a_cached_hub_model_still_loads_offline_or_unreachable(workdir, hub, tiny, monkeypatch):
    from huggingface_hub import HfApi

    from tl_hub import load_backbone

    repo_id = hub.new_repo_id("cached-vit")
    api = HfApi(endpoint=hub.url, token=hub.token)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=str(tiny("vit")))
    assert not in_local_cache(repo_id, "model")
    load_backbone(repo_id, LABELS)  # online: downloads into the cache
    assert in_local_cache(repo_id, "model")
    seen = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert locate(repo_id, "model").local_only
    assert load_backbone(repo_id, LABELS).config.id2label == {0: "cat", 1: "dog"}
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert load_backbone(repo_id, ["dog", "cat"]).config.id2label == {0: "dog", 1: "cat"}
    assert len(hub.requests) == seen  # both loads read the cache only


def test_offline_variables_and_the_probe(monkeypatch, hub):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert hub_offline_reason("model") is None
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    assert hub_offline_reason("model") == "TRANSFORMERS_OFFLINE=yes"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")  # datasets: its own variable decides when set
    assert hub_offline_reason("dataset") is None
    assert hub_unreachable_reason(hub.url) == (hub.url, None)
    closed = f"http://127.0.0.1:{free_port()}"
    assert hub_unreachable_reason(closed) == (closed, "connection refused")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", closed)  # the Hub is only reachable through a proxy: probe the proxy
    assert hub_unreachable_reason(hub.url) == (hub.url, f"connection refused through the proxy {closed}")



def test_load_and_predict_name_what_is_wrong_locally(workdir, tiny):
    from PIL import Image

    from tl_hub import load, load_backbone, load_image_processor, predict

    with pytest.raises(HubError) as err:
        load("labels.csv")
    assert str(err.value) == "'labels.csv': is a file, not a folder; pass a tl_hub output folder or a Hub repo id"
    with pytest.raises(HubError, match="^'my_images': folder has no config.json"):
        load("my_images")
    with pytest.raises(ConfigError, match=r"^model: no such local folder: 'my_imagse/' \(did you mean 'my_images/'"):
        load("my_imagse/")
    Image.new("RGB", (8, 8)).save(workdir / "shoe.png")
    pair = (load_backbone(str(tiny("vit")), LABELS), load_image_processor(str(tiny("vit"))))
    with pytest.raises(DataError) as err:
        predict(pair, ["shoe.png", "shoe.pnh"])
    assert str(err.value) == ("images[1]: 'shoe.pnh' is not a file (did you mean 'shoe.png'?); pass image paths or "
                              "PIL images")
    with pytest.raises(DataError, match=r"^images\[0\]: 'my_images' is not a file \(a folder\)"):
        predict(pair, "my_images")
    assert len(predict(pair, "shoe.png")[0]) == 2


def test_a_cached_hub_dataset_still_loads_offline(workdir, hub, monkeypatch):
    """As in a process started with HF_HUB_OFFLINE=1 (the libraries read it at import: set theirs too)."""
    import datasets.config
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from huggingface_hub import HfApi
    from PIL import Image

    from tl_hub import load_data

    repo_id = hub.new_repo_id("cached-data")
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["x", "y"])})
    images = [Image.new("L", (6, 6), 20 * i) for i in range(8)]
    (workdir / "upload" / "data").mkdir(parents=True)
    Dataset.from_dict({"image": images, "label": [0, 1] * 4}, features=features).to_parquet(
        str(workdir / "upload" / "data" / "train-00000-of-00001.parquet"))
    api = HfApi(endpoint=hub.url, token=hub.token)
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(folder_path=str(workdir / "upload"), repo_id=repo_id, repo_type="dataset")
    assert not in_local_cache(repo_id, "dataset")
    assert len(load_data(repo_id).train) == 6  # online: prepared into the datasets cache
    assert in_local_cache(repo_id, "dataset")
    seen = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert locate(repo_id, "dataset").local_only
    assert len(load_data(repo_id).train) == 6
    assert len(hub.requests) == seen
