"""tl_hub.hub against the local Hub: one verified commit, visibility, the edited-card guard, bad input,
token hygiene, pull + predict (also from a fresh process that never imports tl_hub), and the CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tl_hub
from helpers.images import write_image_folder
from helpers.ports import free_port
from tl_hub.cli import main as cli_main
from tl_hub.errors import DataError, HubError
from tl_hub.hub import verify_remote

COLOURS = ["red", "green", "blue"]  # the labels of helpers.outputs.make_output_dir's run
EXPECTED_FILES = {".gitattributes", "model.safetensors", "config.json", "preprocessor_config.json", "README.md",
                  "recipe.yaml", "metrics.json", "run_info.json", "confusion_matrix.png", "training_curves.png"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from helpers.outputs import make_output_dir

    return make_output_dir(tmp_path_factory.mktemp("hub") / "run")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    """One image file per colour of the run (red, green, blue)."""
    folder = write_image_folder(tmp_path_factory.mktemp("imgs"), COLOURS, per_label=1, seed=7)
    return [str(next((folder / colour).iterdir())) for colour in COLOURS]


@pytest.fixture(scope="module")
def pushed(hub, run_dir):
    """A repo pushed once by tl_hub (shared by the read-only tests below)."""
    repo_id = hub.new_repo_id("colours")
    url = tl_hub.push_to_hub(run_dir, repo_id)
    return repo_id, url


def test_push_is_one_verified_private_commit(hub, run_dir, pushed):
    from huggingface_hub import ModelCard

    from tl_hub.card import write_model_card

    repo_id, url = pushed
    write_model_card(run_dir, repo_id=repo_id)  # other tests may have re-rendered it for their repos
    history = hub.history(repo_id)
    assert len(history) == 2 and url.endswith(f"/commit/{history[0].sha}")  # create_repo + ONE push commit
    files = hub.files(repo_id)
    assert set(files) == EXPECTED_FILES  # never checkpoints/ or anything else
    for name in EXPECTED_FILES - {".gitattributes"}:
        assert files[name] == (run_dir / name).read_bytes(), name
    assert hub.is_private(repo_id)  # private by default
    assert hub.server.tree(repo_id)["model.safetensors"].lfs
    assert hub.server.tree(repo_id)["model.safetensors"].xet_hash  # pushed through Xet, as on the real Hub
    card = ModelCard.load(repo_id)
    assert card.data == ModelCard((run_dir / "README.md").read_text()).data
    assert f'model="{repo_id}"' in card.text
    assert "confusion_matrix.png" in card.text and "training_curves.png" in card.text


def test_existing_repo_keeps_visibility(hub, run_dir, caplog):
    repo_id = hub.new_repo_id("public")
    with caplog.at_level(logging.INFO, logger="tl_hub.hub"):
        tl_hub.push_to_hub(run_dir, repo_id, private=False)
    assert not hub.is_private(repo_id) and "public repo, created" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tl_hub.hub"):
        tl_hub.push_to_hub(run_dir, repo_id, private=True, commit_message="again")
    assert not hub.is_private(repo_id)
    assert "public repo, existing, visibility unchanged" in caplog.text and "left unchanged" in caplog.text
    assert "nothing to commit" in caplog.text and len(hub.history(repo_id)) == 2  # unchanged: no empty commit


def test_edited_card_is_not_overwritten(hub, run_dir):
    from huggingface_hub import HfApi

    repo_id = hub.new_repo_id("edited")
    tl_hub.push_to_hub(run_dir, repo_id)
    tl_hub.push_to_hub(run_dir, repo_id)  # an unedited tl_hub card may be replaced
    edited = hub.files(repo_id)["README.md"].decode().replace("## Limitations", "## Limitations\n\nMy notes.")
    HfApi().upload_file(path_or_fileobj=edited.encode(), path_in_repo="README.md", repo_id=repo_id)
    with pytest.raises(HubError, match="force=True"):
        tl_hub.push_to_hub(run_dir, repo_id)
    assert hub.files(repo_id)["README.md"].decode() == edited
    tl_hub.push_to_hub(run_dir, repo_id, force=True)
    assert "My notes." not in hub.files(repo_id)["README.md"].decode()


def test_locally_edited_card_is_pushed_as_is(hub, run_dir, tmp_path, caplog):
    import shutil

    copy = shutil.copytree(run_dir, tmp_path / "run")
    readme = copy / "README.md"
    edited = readme.read_text().replace("## Limitations", "## Limitations\n\n- My own caveat.")
    readme.write_text(edited)
    repo_id = hub.new_repo_id("local-edit")
    with caplog.at_level(logging.WARNING, logger="tl_hub.hub"):
        tl_hub.push_to_hub(copy, repo_id)
    assert hub.files(repo_id)["README.md"].decode() == edited == readme.read_text()
    assert "pushing it as it is" in caplog.text
    tl_hub.push_to_hub(copy, repo_id)  # the remote card equals the local one: no force needed


def test_pr_and_branch(hub, run_dir, pushed, tmp_path):
    import shutil

    repo_id, _ = pushed
    main_sha = hub.history(repo_id)[0].sha
    changed = shutil.copytree(run_dir, tmp_path / "run")
    (changed / "recipe.yaml").write_text((changed / "recipe.yaml").read_text() + "# changed\n")
    url = tl_hub.push_to_hub(changed, repo_id, create_pr=True)
    assert hub.history(repo_id)[0].sha == main_sha  # main untouched
    pr_files = hub.files(repo_id, revision="refs/pr/1")
    assert set(pr_files) == EXPECTED_FILES and pr_files["recipe.yaml"].endswith(b"# changed\n")
    assert url.endswith(hub.server.repo(repo_id).prs[1])
    tl_hub.push_to_hub(changed, repo_id, revision="dev")
    assert hub.files(repo_id, revision="dev")["recipe.yaml"].endswith(b"# changed\n")
    assert hub.history(repo_id)[0].sha == main_sha


def test_verify_remote_reports_missing_and_different(hub, run_dir, pushed, tmp_path):
    from huggingface_hub import HfApi

    from tl_hub.output_folder import hub_files as files_to_push

    from tl_hub.card import write_model_card

    repo_id, _ = pushed
    write_model_card(run_dir, repo_id=repo_id)  # other tests may have re-rendered it for their repos
    files = files_to_push(run_dir)
    verify_remote(HfApi(), repo_id, "main", files)
    changed = tmp_path / "metrics.json"
    changed.write_text((run_dir / "metrics.json").read_text().replace("1", "2"))
    extra = tmp_path / "extra.png"
    extra.write_bytes(b"\x89PNG")
    with pytest.raises(HubError, match=r"extra.png: missing on the Hub; metrics.json: content differs"):
        verify_remote(HfApi(), repo_id, "main", {**files, "metrics.json": changed, "extra.png": extra})


def test_bad_input_errors(hub, run_dir, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(HubError, match="not a tl_hub output folder: missing run_info.json, model.safetensors"):
        tl_hub.push_to_hub(empty, hub.new_repo_id("x"))
    with pytest.raises(HubError, match="is not a folder"):
        tl_hub.push_to_hub(tmp_path / "nope", hub.new_repo_id("x"))
    with pytest.raises(HubError, match="not a valid Hub repo id"):
        tl_hub.push_to_hub(run_dir, "bad id with spaces!")
    with pytest.raises(HubError, match="changed while pushing"):  # a 412 from the server is explained
        hub.server.faults.add("POST", r"/commit/", status=412)
        tl_hub.push_to_hub(run_dir, hub.new_repo_id("stale"))
    monkeypatch.setenv("HF_TOKEN", "hf_wrongTOKEN000000000000000000000")
    with pytest.raises(HubError, match="401"):
        tl_hub.push_to_hub(run_dir, hub.new_repo_id("x"))
    monkeypatch.setenv("HF_TOKEN", hub.read_token)
    with pytest.raises(HubError, match="403"):
        tl_hub.push_to_hub(run_dir, hub.new_repo_id("x"))
    with pytest.raises(HubError, match="403"):
        tl_hub.push_to_hub(run_dir, f"someone-else/{hub.new_repo_id('x').split('/')[1]}")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="hf auth login"):
        tl_hub.push_to_hub(run_dir, hub.new_repo_id("x"))


def test_token_never_leaks(hub, run_dir, caplog, capsys):
    repo_id = hub.new_repo_id("leak")
    with caplog.at_level(logging.DEBUG):
        assert cli_main(["push", str(run_dir), repo_id, "--public"]) == 0
    captured = capsys.readouterr()
    assert repo_id in captured.out
    token = hub.token
    assert token not in caplog.text and token not in captured.out + captured.err
    for name, content in hub.files(repo_id).items():
        assert token.encode() not in content, name
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    # the server never saw the token on the LFS upload URL (which carries no Authorization); the Xet CAS
    # gets its own short-lived token (it answers 401 to anything else, the Hub token included)
    assert all(not r.has_auth for r in hub.server.requests if r.path.startswith("/lfs-upload/"))
    assert all(r.status != 401 for r in hub.server.requests if r.path.startswith("/xet-cas/"))


def test_tl_hub_parent(hub, run_dir, pushed, tmp_path):
    from tl_hub.hub import tl_hub_parent

    repo_id, _ = pushed
    assert tl_hub_parent(repo_id) == repo_id and tl_hub_parent(str(run_dir)) == str(run_dir)
    assert tl_hub_parent(str(tmp_path)) is None and tl_hub_parent("bundled:efficientnet_lite0") is None
    assert tl_hub_parent(f"{hub.user}/missing-repo") is None


def test_load_and_predict_local_and_hub_agree(hub, run_dir, pushed, images, capsys):
    repo_id, _ = pushed
    model, processor = tl_hub.load(run_dir)
    assert model.config.id2label == {0: "red", 1: "green", 2: "blue"} and not model.training
    local = tl_hub.predict(run_dir, images, top_k=2)
    remote = tl_hub.predict(repo_id, images, top_k=2)
    assert len(local) == 3 and all(len(p) == 2 for p in local)
    for a, b in zip(local, remote, strict=True):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        assert np.allclose([x["score"] for x in a], [x["score"] for x in b], atol=1e-6)
    assert tl_hub.predict(run_dir, images[0], top_k=10)[0][0]["score"] >= 1 / 3  # capped at 3 labels
    with pytest.raises(HubError, match="not found"):
        tl_hub.load(f"{hub.user}/does-not-exist")
    assert cli_main(["predict", str(run_dir), *images, "--top-k", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["predictions"][0]["label"] for p in printed] == [p[0]["label"] for p in local]
    assert cli_main(["predict", str(run_dir), "missing.png"]) == 2
    with pytest.raises(DataError, match=r"threshold: got 0\.5, but this model is single-label"):
        tl_hub.predict(run_dir, images, threshold=0.5)


FRESH_PROCESS = r"""
import json, sys
from transformers import pipeline
classifier = pipeline("image-classification", model=sys.argv[1])
out = [classifier(path, top_k=int(sys.argv[2])) for path in sys.argv[3:]]
assert not any(m == "tl_hub" or m.startswith("tl_hub.") for m in sys.modules), "tl_hub was imported"
print("RESULT" + json.dumps(out))
"""


def fresh_pipeline(hub, repo_id: str, images: list[str], top_k: int, tmp_path: Path) -> list[list[dict]]:
    """Run transformers.pipeline in a new process with an empty HF cache that never imports tl_hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TL_HUB", "HUGGINGFACE"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "fresh_hf_home"),
               HF_TOKEN=hub.token, OMP_NUM_THREADS="1", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, repo_id, str(top_k), *images], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_plain_transformers_pipeline_in_fresh_process(hub, run_dir, pushed, images, tmp_path):
    """The pushed repo works with plain transformers: same labels and scores as tl_hub.predict on the folder."""
    repo_id, _ = pushed
    expected = tl_hub.predict(run_dir, images, top_k=3)
    start = len(hub.requests)
    got = fresh_pipeline(hub, repo_id, images, 3, tmp_path)
    assert any("/reconstructions/" in r.path for r in hub.requests[start:]), "the weights did not come via Xet"
    for want, have in zip(expected, got, strict=True):
        assert [w["label"] for w in want] == [h["label"] for h in have]
        assert np.allclose([w["score"] for w in want], [h["score"] for h in have], atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# End to end with tl_hub.finetune: backbone + dataset from the (local) Hub → train → push → plain
# transformers in a fresh process; then continue training from the pushed model.


@pytest.fixture(scope="module")
def hub_sources(hub, tmp_path_factory):
    """A tiny ViT backbone (with its image processor) and a small parquet image dataset on the local Hub."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from huggingface_hub import HfApi
    from transformers import ViTImageProcessor

    from helpers.images import synthetic_images
    from helpers.tiny_models import tiny_checkpoint

    folder = tiny_checkpoint("vit", tmp_path_factory.mktemp("backbone") / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    backbone = hub.new_repo_id("tiny-vit-backbone")
    api = HfApi()
    api.create_repo(backbone, private=False)
    api.upload_folder(repo_id=backbone, folder_path=str(folder))
    images, labels = synthetic_images(COLOURS, 16, seed=3)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=COLOURS)})
    dataset = hub.new_repo_id("colour-images")
    Dataset.from_dict({"image": images, "label": labels}, features=features).push_to_hub(dataset, private=True)
    return backbone, dataset


@pytest.fixture(scope="module")
def finetuned(hub, hub_sources, tmp_path_factory):
    """A recipe naming the backbone and dataset by repo id, trained with push_to_hub: true."""
    import yaml

    from tl_hub.finetuning import finetune

    backbone, dataset = hub_sources
    repo_id = hub.new_repo_id("colours-finetuned")
    work = tmp_path_factory.mktemp("e2e")
    recipe = work / "colours.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": backbone, "dataset": dataset, "epochs": 2, "batch_size": 8, "image_size": 32, "seed": 0,
        "policy": "full", "output_dir": str(work / "out"), "num_workers": 0,
        "push_to_hub": True, "hub_model_id": repo_id,
    }))
    lines: list[str] = []
    capture = logging.Handler()
    capture.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("tl_hub").addHandler(capture)
    try:
        result = finetune(str(recipe))
    finally:
        logging.getLogger("tl_hub").removeHandler(capture)
    return Path(result.output_dir), repo_id, lines


def test_e2e_recipe_from_hub_push_and_plain_pipeline(hub, hub_sources, finetuned, images, tmp_path):
    """The decisive test: train → push → plain transformers in a fresh process with an empty cache."""
    from huggingface_hub import ModelCard

    backbone, dataset = hub_sources
    out, repo_id, log_lines = finetuned
    # the run's log shows the push's own progress (tl_hub.hub) as well as the run's
    pushed = len(EXPECTED_FILES - {".gitattributes"})
    assert any(line.startswith(f"pushed {pushed} files to {repo_id}") for line in log_lines), log_lines
    assert any(line.startswith("pushed to the Hub: ") for line in log_lines)
    run_info = json.loads((out / "run_info.json").read_text())
    assert run_info["base_model"] == backbone and run_info["labels"] == COLOURS
    assert set(hub.files(repo_id)) == EXPECTED_FILES
    assert not any(p.startswith("checkpoints/") for p in hub.files(repo_id))
    card = ModelCard.load(repo_id)
    assert card.data.base_model == backbone and card.data.datasets == [dataset]
    assert f'model="{repo_id}"' in card.text
    expected = tl_hub.predict(out, images, top_k=3)
    got = fresh_pipeline(hub, repo_id, images, 3, tmp_path)
    for want, have in zip(expected, got, strict=True):
        assert [h["label"] for h in have] == [w["label"] for w in want] and set(w["label"] for w in want) == set(COLOURS)
        assert np.allclose([w["score"] for w in want], [h["score"] for h in have], atol=1e-5)


def test_e2e_continue_from_pushed_model(hub, hub_sources, finetuned, tmp_path):
    """Fine-tune the pushed model further: same labels keep its head, new labels rebuild it; cards name the parent."""
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file

    from tl_hub.finetuning import finetune

    _, dataset = hub_sources
    _, parent, _ = finetuned
    from huggingface_hub import hf_hub_download

    parent_weights = load_file(hf_hub_download(parent, "model.safetensors"))
    parent_head = {k: v for k, v in parent_weights.items() if k.startswith("classifier")}
    assert parent_head
    same = finetune(model=parent, dataset=dataset, epochs=1, batch_size=8, image_size=32, seed=1, policy="head",
                    output_dir=str(tmp_path / "same"), num_workers=0, learning_rate=1e-9)
    same_dir = Path(same.output_dir)
    assert json.loads((same_dir / "run_info.json").read_text())["parent_model"] == parent
    child = load_file(str(same_dir / "model.safetensors"))
    for key, value in parent_head.items():  # same labels: training continued from the parent's head
        assert np.allclose(child[key].numpy(), value.numpy(), atol=1e-5), key
    new = finetune(model=parent, dataset="bundled:digits", examples_per_label=4, epochs=1, batch_size=8,
                   image_size=32, seed=1, policy="head", output_dir=str(tmp_path / "new"), num_workers=0)
    new_dir = Path(new.output_dir)
    config = json.loads((new_dir / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(10)] == [str(i) for i in range(10)]  # head rebuilt
    assert json.loads((new_dir / "run_info.json").read_text())["parent_model"] == parent
    child_repo = hub.new_repo_id("digits-from-colours")
    tl_hub.push_to_hub(new_dir, child_repo)
    card = ModelCard.load(child_repo)
    assert card.data.base_model == parent and f"continues training from the tl_hub model [`{parent}`]" in card.text


DISTRIBUTED_PUSH = r"""
import os, sys
from accelerate import PartialState
import tl_hub
state = PartialState(cpu=True)
url = tl_hub.push_to_hub(sys.argv[1], sys.argv[2])
with open(f"rank{state.process_index}.txt", "w") as handle:  # one file per rank: no interleaved output
    handle.write(f"RANK{state.process_index} {url} {state.num_processes}")
"""


@pytest.mark.multiprocess
def test_only_main_process_pushes(hub, run_dir, tmp_path):
    """Under a 2-process launch, rank 0 pushes once; rank 1 waits and gets the same commit URL."""
    repo_id = hub.new_repo_id("ddp")
    script = tmp_path / "push.py"
    script.write_text(DISTRIBUTED_PUSH)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(script), str(run_dir), repo_id],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [(tmp_path / f"rank{i}.txt").read_text().split() for i in range(2)]
    urls = {rank: url for rank, url, _ in lines}
    assert set(urls) == {"RANK0", "RANK1"} and urls["RANK0"] == urls["RANK1"]
    assert {world for _, _, world in lines} == {"2"}  # a real 2-process group
    mine = [r for r in hub.server.requests if f"/{repo_id}" in r.path]
    assert sum(r.method == "POST" and "/preupload/" in r.path for r in mine) == 1
    assert sum(r.method == "GET" and r.path == f"/api/models/{repo_id}" for r in mine) == 1  # only rank 0 asked
    assert len(hub.history(repo_id)) == 2


def test_cli_push_errors_and_token_in_file_refused(hub, run_dir, tmp_path, capsys):
    import shutil

    assert cli_main(["push", str(tmp_path), hub.new_repo_id("cli")]) == 2
    err = capsys.readouterr().err
    assert "tl-hub push: error:" in err and "not a tl_hub output folder" in err and "Traceback" not in err
    leaky = shutil.copytree(run_dir, tmp_path / "leaky")
    (leaky / "recipe.yaml").write_text((leaky / "recipe.yaml").read_text() + f"# token: {hub.token}\n")
    repo_id = hub.new_repo_id("leaky")
    assert cli_main(["push", str(leaky), repo_id]) == 2
    err = capsys.readouterr().err
    assert "contains your Hugging Face token" in err and hub.token not in err
    assert not hub.server.has_repo(repo_id)  # refused before anything was created


def test_bare_repo_name_goes_to_token_user(hub, run_dir):
    name = hub.new_repo_id("bare").split("/")[1]
    url = tl_hub.push_to_hub(run_dir, name)
    assert f"/{hub.user}/{name}/commit/" in url and hub.server.has_repo(f"{hub.user}/{name}")
    assert f'model="{hub.user}/{name}"' in hub.files(f"{hub.user}/{name}")["README.md"].decode()
