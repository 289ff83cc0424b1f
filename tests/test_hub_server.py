"""The local Hub server (tests/helpers/hub_server.py) against the unmodified huggingface_hub / transformers /
datasets / timm clients: a round trip of everything tl_hub and its tests rely on."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def api(hub):
    from huggingface_hub import HfApi

    return HfApi()


def _tiny_vit(labels):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=len(labels),
                       id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    return model, processor


def _image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))


def test_accounts_and_auth_errors(hub, api):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    assert api.whoami()["name"] == hub.user
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_not_a_real_token").whoami()
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=hub.read_token).create_repo(hub.new_repo_id("ro"))
    assert err.value.response.status_code == 403


def test_model_round_trip(hub, api, tmp_path):
    from huggingface_hub import ModelCard, hf_hub_download, snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
    from transformers import AutoModelForImageClassification, pipeline

    repo_id = hub.new_repo_id("vit")
    url = api.create_repo(repo_id, private=True)
    assert url.repo_id == repo_id and hub.is_private(repo_id)
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id  # 409 + url
    model, processor = _tiny_vit(["cat", "dog", "bird"])
    model.push_to_hub(repo_id)
    processor.push_to_hub(repo_id)

    info = api.model_info(repo_id, files_metadata=True)
    names = {s.rfilename: s for s in info.siblings}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", ".gitattributes"} <= set(names)
    weights = hub.files(repo_id)["model.safetensors"]
    import hashlib

    assert names["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert names["model.safetensors"].size == len(weights)
    assert set(api.list_repo_files(repo_id)) == set(names)
    assert {f.path for f in api.get_paths_info(repo_id, ["config.json", "nope.txt"])} == {"config.json"}
    refs = api.list_repo_refs(repo_id)
    assert [b.name for b in refs.branches] == ["main"] and refs.branches[0].target_commit == info.sha
    assert len(api.list_repo_commits(repo_id)) == len(hub.history(repo_id)) >= 3

    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "config.json", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(f"{hub.user}/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):  # private: invisible without a token
        api.model_info(repo_id, token=False)

    local = snapshot_download(repo_id, cache_dir=tmp_path / "cache")
    assert json.loads((tmp_path / local / "config.json").read_text())["id2label"]["2"] == "bird"
    pixel = processor(images=_image(), return_tensors="pt")["pixel_values"]
    reloaded = AutoModelForImageClassification.from_pretrained(repo_id).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(pixel).logits, model(pixel).logits, atol=1e-6)
    result = pipeline("image-classification", model=repo_id)(_image(), top_k=3)
    assert {r["label"] for r in result} == {"cat", "dog", "bird"}

    # cards: validate (POST /api/validate-yaml), push, load back equal
    card = ModelCard.from_template(__import__("huggingface_hub").ModelCardData(license="mit", tags=["x"]),
                                   model_id=repo_id)
    card.validate()
    card.push_to_hub(repo_id)
    assert ModelCard.load(repo_id).data.to_dict() == card.data.to_dict()
    assert api.model_info(repo_id).card_data["license"] == "mit"


def test_refs_commits_prs_and_stale_parent(hub, api):
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    repo_id = hub.new_repo_id("refs")
    api.create_repo(repo_id)
    first = api.upload_file(path_or_fileobj=b"one", path_in_repo="a/x.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"two", path_in_repo="a/y.txt", repo_id=repo_id)
    api.create_branch(repo_id, branch="dev")
    api.create_tag(repo_id, tag="v1", revision="main")
    with pytest.raises(HfHubHTTPError):
        api.create_branch(repo_id, branch="dev")  # 409
    api.create_commit(repo_id, [CommitOperationDelete("a/x.txt")], commit_message="rm", revision="dev")
    assert set(api.list_repo_files(repo_id, revision="dev")) == {".gitattributes", "a/y.txt"}
    assert "a/x.txt" in api.list_repo_files(repo_id, revision="v1")
    tree = {e.path for e in api.list_repo_tree(repo_id)}
    assert tree == {".gitattributes", "a"}  # non-recursive: a folder entry
    with pytest.raises(HfHubHTTPError) as err:  # stale parent commit
        api.create_commit(repo_id, [CommitOperationAdd("b.txt", b"b")], commit_message="late",
                          parent_commit=first.oid)
    assert err.value.response.status_code == 412
    pr = api.create_commit(repo_id, [CommitOperationAdd("c.txt", b"pr")], commit_message="pr", create_pr=True)
    assert pr.pr_num == 1 and "c.txt" not in api.list_repo_files(repo_id)
    assert open(hf_hub_download(repo_id, "c.txt", revision=pr.pr_revision), "rb").read() == b"pr"
    assert hub.files(repo_id, revision="refs/pr/1")["c.txt"] == b"pr"


def test_timm_and_datasets(hub, api):
    import timm
    from datasets import ClassLabel, Dataset, Features, load_dataset
    from datasets import Image as ImageFeature

    repo_id = hub.new_repo_id("timm")
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3).eval()
    timm.models.push_to_hf_hub(model, repo_id)
    pulled = timm.create_model(f"hf-hub:{repo_id}", pretrained=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(pulled(x), model(x))

    ds_id = hub.new_repo_id("images")
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    ds = Dataset.from_dict({"image": [_image(i) for i in range(6)], "label": [0, 1] * 3}, features=features)
    ds.push_to_hub(ds_id, private=True)
    assert any(p.endswith(".parquet") for p in hub.files(ds_id, repo_type="dataset"))
    loaded = load_dataset(ds_id, split="train")
    assert loaded.features["label"].names == ["a", "b"] and len(loaded) == 6
    assert np.array_equal(np.asarray(loaded[3]["image"]), np.asarray(_image(3)))

    api.delete_repo(ds_id, repo_type="dataset")
    assert not api.repo_exists(ds_id, repo_type="dataset")


def test_range_and_fault_injection(hub, api):
    repo_id = hub.new_repo_id("faults")
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="f.txt", repo_id=repo_id)
    url = f"{hub.url}/{repo_id}/resolve/main/f.txt"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=2-4"})) as resp:
        assert resp.status == 206 and resp.read() == b"234"
    hub.server.faults.add("GET", r"/resolve/main/f\.txt$", status=503, retry_after=0, times=1)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url)
    assert err.value.code == 503 and err.value.headers["Retry-After"] == "0"
    assert urllib.request.urlopen(url).read() == b"0123456789"  # the fault was used up
    hub.server.faults.add("GET", r"/resolve/main/f\.txt$", drop=True)
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(url)
    assert urllib.request.urlopen(url).read() == b"0123456789"


def test_truncated_download_resumes_and_delay(hub, api, tmp_path, xet_off):
    """A download cut in the middle is fetched again by the client; a delay only delays (the plain
    HTTP path: with Xet on, the content would come from the CAS, see test_hub_xet.py)."""
    import time

    from huggingface_hub import hf_hub_download

    repo_id = hub.new_repo_id("resume")
    api.create_repo(repo_id)
    payload = bytes(range(256)) * 4096  # 1 MiB, LFS
    api.upload_file(path_or_fileobj=payload, path_in_repo="blob.bin", repo_id=repo_id)
    fault = hub.server.faults.add("GET", rf"/{repo_id}/resolve/.*/blob\.bin$", status=None, truncate=True)
    path = hf_hub_download(repo_id, "blob.bin", cache_dir=tmp_path / "cache")
    assert fault.hits == 1 and open(path, "rb").read() == payload
    gets = [r for r in hub.server.requests if r.method == "GET" and r.path.endswith(f"{repo_id}/resolve/main/blob.bin")]
    assert len(gets) == 2  # cut once, fetched again (the client restarts or resumes with Range)
    hub.server.faults.add("GET", r"/api/whoami-v2$", status=None, delay=0.3)
    start = time.perf_counter()
    request = urllib.request.Request(f"{hub.url}/api/whoami-v2", headers={"Authorization": f"Bearer {hub.token}"})
    assert json.loads(urllib.request.urlopen(request).read())["name"] == hub.user
    assert time.perf_counter() - start >= 0.3


def test_chunked_request_body_and_dataset_info(hub, api):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(hub.url.rsplit(":", 1)[1]), timeout=10)
    body = json.dumps({"content": "---\nlicense: 3\n---\n# card", "repoType": "model"}).encode()
    conn.request("POST", "/api/validate-yaml", body=iter([body[:10], body[10:]]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    answer = conn.getresponse()
    assert answer.status == 400 and "license" in json.loads(answer.read())["errors"][0]
    conn.close()
    ds_id = hub.new_repo_id("ds-info")
    api.create_repo(ds_id, repo_type="dataset", private=True)
    info = api.dataset_info(ds_id)
    assert info.id == ds_id and info.private and [s.rfilename for s in info.siblings] == [".gitattributes"]
