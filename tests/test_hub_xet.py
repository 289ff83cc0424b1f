"""Xet uploads and downloads through the local Hub (tests/helpers/hub_server.py + helpers/xet_cas.py).

The round trips run the real clients (huggingface_hub + hf_xet + transformers) in child processes whose
environment surely lacks HF_HUB_DISABLE_XET (huggingface_hub reads it once, at import) and whose HF cache
(and so hf_xet's own chunk / shard caches) starts empty. The server runs in this process, so its request
log and storage can be checked here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("hf_xet")

_UPLOAD = """
import sys
from huggingface_hub import HfApi
from huggingface_hub.utils._runtime import is_xet_available
assert is_xet_available(), "Xet is off in the child process"
api = HfApi()
api.create_repo(sys.argv[1], exist_ok=True)
api.upload_folder(repo_id=sys.argv[1], folder_path=sys.argv[2], commit_message="xet upload")
"""

_DOWNLOAD = """
import hashlib, json, sys
import torch
from huggingface_hub import hf_hub_download
from transformers import AutoModelForImageClassification
repo_id, local, names = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
digests = {n: hashlib.sha256(open(hf_hub_download(repo_id, n), "rb").read()).hexdigest() for n in names}
hub_model = AutoModelForImageClassification.from_pretrained(repo_id)
local_model = AutoModelForImageClassification.from_pretrained(local)
same = all(torch.equal(a, b) for a, b in zip(hub_model.state_dict().values(), local_model.state_dict().values()))
print(json.dumps({"digests": digests, "same_weights": same}))
"""


def _xet_env(hf_home: Path) -> dict[str, str]:
    """The session's environment (local Hub, token) with Xet on and a fresh HF cache."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_XET"}
    env["HF_HOME"] = str(hf_home)
    return env


def _run(script: str, args: list[str], hf_home: Path, timeout: int = 240) -> str:
    """Run a client script in a child process with Xet on; its stdout (fails the test on an error)."""
    proc = subprocess.run([sys.executable, "-c", script, *args], env=_xet_env(hf_home), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def _model_folder(path: Path) -> Path:
    """A ViT checkpoint whose model.safetensors is > 1 MiB, plus small text files."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=128, num_hidden_layers=3, num_attention_heads=2,
                       intermediate_size=256, num_labels=3)
    ViTForImageClassification(config).save_pretrained(path)
    (path / "README.md").write_text("# xet demo\n")
    (path / "notes").mkdir()
    (path / "notes" / "labels.txt").write_text("a\nb\nc\n")
    assert (path / "model.safetensors").stat().st_size > 1 << 20
    return path


def _paths(hub, start: int) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.status) for r in hub.requests[start:]]


def test_xet_upload_then_download(hub, tmp_path):
    folder = _model_folder(tmp_path / "model")
    repo_id = hub.new_repo_id("xet")
    start = len(hub.requests)
    _run(_UPLOAD, [repo_id, str(folder)], tmp_path / "hf_up")
    seen = _paths(hub, start)
    assert ("GET", f"/api/models/{repo_id}/xet-write-token/main", 200) in seen
    assert any(m == "POST" and p.startswith("/xet-cas/v1/xorbs/default/") and s == 200 for m, p, s in seen)
    assert any(m == "POST" and p in ("/xet-cas/v1/shards", "/xet-cas/v2/shards") and s == 200 for m, p, s in seen)
    assert not any("/info/lfs/" in p or p.startswith("/lfs-") for _m, p, _s in seen), "took the LFS path"

    local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert hub.files(repo_id) == {**local, ".gitattributes": hub.files(repo_id)[".gitattributes"]}
    tree = hub.server.tree(repo_id)
    assert tree["model.safetensors"].xet_hash and tree["model.safetensors"].lfs
    assert tree["config.json"].xet_hash is None and not tree["config.json"].lfs
    assert hub.history(repo_id)[0].title == "xet upload"

    start = len(hub.requests)
    out = _run(_DOWNLOAD, [repo_id, str(folder), json.dumps(sorted(local))], tmp_path / "hf_down")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["same_weights"]
    assert result["digests"] == {n: hashlib.sha256(b).hexdigest() for n, b in local.items()}
    seen = _paths(hub, start)
    assert any(p.startswith("/xet-cas/") and "/reconstructions/" in p and s == 200 for _m, p, s in seen)
    assert any(p.startswith("/xet-cas/xorb-data/") and s == 206 for _m, p, s in seen)


def _cas(hub, method: str, path: str, token: str | None, body: bytes = b"") -> tuple[int, bytes]:
    request = urllib.request.Request(f"{hub.url}/xet-cas{path}", data=body if method == "POST" else None,
                                     method=method, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _xet_token(hub, repo_id: str, kind: str, hub_token: str) -> str:
    request = urllib.request.Request(f"{hub.url}/api/models/{repo_id}/xet-{kind}-token/main",
                                     headers={"Authorization": f"Bearer {hub_token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
        assert response.headers["X-Xet-Access-Token"] == payload["accessToken"]
        assert payload["casUrl"] == f"{hub.url}/xet-cas"
        return payload["accessToken"]


def _shard(file_hash: str, xorb: str, chunk: bytes, *, start: int = 0, end: int = 1, size: int = 5,
           sha256: str = hashlib.sha256(b"hello").hexdigest(), verification: bytes | None = None) -> bytes:
    """An upload shard (no footer): one file of one term over `xorb`, which it declares as one chunk of
    5 bytes with raw hash `chunk`; the verification hash is the right one unless given."""
    import struct

    from helpers.xet_cas import hex_to_hash
    from helpers.xet_hashing import verification_hash

    flags = (1 << 31) | (1 << 30)  # verification entries + metadata extension
    out = b"tl-hub-test-shard".ljust(32, b"\0") + struct.pack("<QQ", 2, 0)
    out += hex_to_hash(file_hash) + struct.pack("<IIQ", flags, 1, 0)
    out += hex_to_hash(xorb) + struct.pack("<IIII", 0, size, start, end)
    out += (verification or verification_hash([chunk])) + bytes(16)
    out += hex_to_hash(sha256) + bytes(16)
    bookend = b"\xff" * 32 + bytes(16)
    out += bookend + hex_to_hash(xorb) + struct.pack("<IIII", 0, 1, 5, 13)
    out += chunk + struct.pack("<IIQ", 0, 5, 0)
    return out + bookend


def test_cas_rejects_bad_tokens_and_bad_objects(hub):
    """Token scopes, and uploads the CAS must refuse: malformed xorbs, shards with wrong hashes / sizes /
    ranges / content, or referencing xorbs it never received."""
    from huggingface_hub import HfApi

    from helpers.xet_cas import hash_to_hex
    from helpers.xet_hashing import chunk_hash, file_hash

    repo_id = hub.new_repo_id("cas")
    HfApi().create_repo(repo_id)
    write = _xet_token(hub, repo_id, "write", hub.token)
    read = _xet_token(hub, repo_id, "read", hub.read_token)
    with pytest.raises(urllib.error.HTTPError) as err:
        _xet_token(hub, repo_id, "write", hub.read_token)
    assert err.value.code == 403
    raw = chunk_hash(b"hello")
    xorb = hash_to_hex(raw)  # a one-chunk xorb's Merkle root is its chunk hash
    file_id = hash_to_hex(file_hash([(raw, 5)]))
    xorb_path = f"/v1/xorbs/default/{xorb}"
    chunk = bytes([0, 5, 0, 0, 0, 5, 0, 0]) + b"hello"  # version 0, 5 bytes stored, no compression, 5 bytes
    assert _cas(hub, "POST", xorb_path, None, chunk)[0] == 401
    assert _cas(hub, "POST", xorb_path, read, chunk)[0] == 403
    assert _cas(hub, "POST", xorb_path, write, chunk[:-1])[0] == 400  # truncated chunk
    assert _cas(hub, "POST", xorb_path, write, bytes([0, 5, 0, 0, 1, 9, 0, 0]) + b"\x50abcd")[0] == 400  # not LZ4
    assert _cas(hub, "POST", xorb_path, write, chunk) == (200, b'{"was_inserted": true}')
    assert _cas(hub, "HEAD", xorb_path, read)[0] == 200
    assert _cas(hub, "POST", "/v1/shards", write, b"not a shard")[0] == 400
    other = chunk_hash(b"other")
    assert _cas(hub, "POST", f"/v1/xorbs/default/{hash_to_hex(other)}", write, chunk)[0] == 200  # misnamed
    bad = {
        "xorb never uploaded": _shard(file_id, "ef" * 32, raw),
        "xorb hash is not the root": _shard(file_id, xorb, other),
        "file hash": _shard("12" * 32, xorb, raw),
        "verification hash": _shard(file_id, xorb, raw, verification=bytes(32)),
        "chunk range": _shard(file_id, xorb, raw, end=2),
        "term size": _shard(file_id, xorb, raw, size=4),
        "sha256": _shard(file_id, xorb, raw, sha256=hashlib.sha256(b"other").hexdigest()),
        "chunk bytes vs declared hash": _shard(file_id, hash_to_hex(other), other),
    }
    for what, shard in bad.items():
        status, body = _cas(hub, "POST", "/v1/shards", write, shard)
        assert status == 400, (what, status, body)
    shard = _shard(file_id, xorb, raw)
    assert _cas(hub, "POST", "/v1/shards", read, shard)[0] == 403
    assert _cas(hub, "POST", "/v1/shards", write, shard) == (200, b'{"result": 1}')
    assert _cas(hub, "GET", "/v2/reconstructions/" + "cd" * 32, read)[0] == 404
    status, body = _cas(hub, "GET", f"/v2/reconstructions/{file_id}", read)
    answer = json.loads(body)
    assert status == 200 and answer["terms"] == [{"hash": xorb, "unpacked_length": 5,
                                                  "range": {"start": 0, "end": 1}}]
    fetch = answer["xorbs"][xorb][0]
    span = fetch["ranges"][0]["bytes"]
    request = urllib.request.Request(fetch["url"], headers={"Range": f"bytes={span['start']}-{span['end']}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 206 and response.read() == chunk
    request = urllib.request.Request(fetch["url"], headers={"Range": "bytes=0-1,8-9"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("multipart/byteranges")
        assert b"Content-Range: bytes 8-9/13\r\n\r\nhe" in response.read()
    request = urllib.request.Request(f"{hub.url}/xet-cas/v1/reconstructions/{file_id}",
                                     headers={"Authorization": f"Bearer {read}", "Range": "bytes=2-3"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert answer["offset_into_first_range"] == 2 and answer["fetch_info"][xorb][0]["url_range"] == span
    assert _cas(hub, "GET", f"/v2/reconstructions/{file_id}", None)[0] == 401


# First 32 bytes of `keyed_hash` in the official BLAKE3 test vectors (BLAKE3-team/BLAKE3,
# test_vectors/test_vectors.json): input byte i = i % 251, key b"whats the Elvish word for friend".
KEYED_VECTORS = {
    0: "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26",
    1025: "357dc55de0c7e382c900fd6e320acc04146be01db6a8ce7210b7189bd664ea69",
    2049: "9f29700902f7c86e514ddc4df1e3049f258b2472b6dd5267f61bf13983b78dd5",
    3073: "68dede9bef00ba89e43f31a6825f4cf433389fedae75c04ee9f0cf16a427c95a",
    5121: "6ccf1c34753e7a044db80798ecd0782a8f76f33563accaddbfbb2e0ea4b2d024",
}


def test_blake3_matches_the_published_vectors():
    """helpers.xet_hashing's pure-Python BLAKE3 (keyed mode) against the official test vectors: empty
    input, one chunk + 1 byte, and the uneven trees of 3, 4 and 6 chunks."""
    from helpers.xet_hashing import blake3_keyed

    key = b"whats the Elvish word for friend"
    data = bytes(i % 251 for i in range(max(KEYED_VECTORS)))
    for length, expected in KEYED_VECTORS.items():
        assert blake3_keyed(key, data[:length]).hex() == expected, length
