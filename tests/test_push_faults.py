"""Pushes that survive faults (issue 6), against the local Hub server with fault injection.

Every test checks the repo afterwards: the branch holds only *complete* commits (each commit's tl_hub
files equal one output folder, byte for byte), and exactly as many commits as pushes that succeeded.
Retry waits are shortened with TL_HUB_PUSH_BACKOFF; huggingface_hub's own retries (preupload, LFS)
still wait its fixed 1 s, which is why a few tests take a couple of seconds.

Pushes go through Xet (xorb + shard uploads to the local Hub's CAS, helpers/xet_cas.py) like on the real
Hub; the faults named "lfs-..." and the kill during an LFS upload run with the `xet_off` fixture (the
LFS batch + basic-transfer path), the "xorb-..." / "shard-..." ones hit the CAS.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tl_hub
from tl_hub.errors import HubError
from tl_hub.output_folder import hub_files as files_to_push

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> tuple[Path, Path]:
    """Two different tl_hub output folders (same file names, different weights/metrics)."""
    from helpers.outputs import make_output_dir

    root = tmp_path_factory.mktemp("push_faults")
    return (make_output_dir(root / "a", epochs=1, seed=0), make_output_dir(root / "b", epochs=1, seed=1))


@pytest.fixture(autouse=True)
def _fast_retries(hub, monkeypatch):
    monkeypatch.setenv("TL_HUB_PUSH_BACKOFF", "0.05")
    monkeypatch.delenv("TL_HUB_PUSH_RETRIES", raising=False)
    hub.faults.clear()
    yield
    hub.faults.clear()


def fresh_copy(out: Path, dest: Path) -> Path:
    """A copy of an output folder whose model.safetensors is new to the server (LFS uploads really happen:
    the server's blob store is shared by the whole test session)."""
    import shutil
    import uuid

    from safetensors.torch import load_file, save_file

    shutil.copytree(out, dest)
    save_file(load_file(out / "model.safetensors"), dest / "model.safetensors",
              metadata={"format": "pt", "nonce": uuid.uuid4().hex})
    return dest


def _tl_files(tree_or_files: dict) -> dict:
    return {k: v for k, v in tree_or_files.items() if k != ".gitattributes"}


def local_files(out: Path) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in files_to_push(out).items()}


def commits_since_creation(hub, repo_id: str, revision: str = "main") -> list:
    """Commits after the repo's initial commit, oldest first."""
    return list(reversed(hub.history(repo_id, revision=revision)))[1:]


def assert_complete(hub, repo_id: str, commit, *outs: Path) -> Path:
    """The commit's tl_hub files equal one of the output folders exactly; returns which."""
    tree = {p: hub.server.state.read_blob(e.sha256) for p, e in commit.tree.items()}
    for out in outs:
        if _tl_files(tree) == local_files(out):
            return out
    raise AssertionError(f"commit {commit.sha[:8]} of {repo_id} is not one complete push: {sorted(_tl_files(tree))}")


def commit_posts(hub, repo_id: str) -> list:
    return [r for r in hub.requests if r.method == "POST" and r.path.startswith(f"/api/models/{repo_id}/commit/")]


def new_repo(hub, prefix: str) -> str:
    """A fresh repo with only its initial commit (so the fault under test hits the real push)."""
    from huggingface_hub import HfApi

    repo_id = hub.new_repo_id(prefix)
    HfApi().create_repo(repo_id, private=True)
    return repo_id


# ---------------------------------------------------------------------------------------------------
FAULTS = {
    # name: (method, path regex (after /api/models/<repo>), fault kwargs)
    "commit-500": ("POST", r"/commit/main$", {"status": 500}),
    "commit-502": ("POST", r"/commit/main$", {"status": 502}),
    "commit-503-twice": ("POST", r"/commit/main$", {"status": 503, "times": 2}),
    "commit-429-retry-after": ("POST", r"/commit/main$", {"status": 429, "retry_after": 1}),
    # no Retry-After, but the RateLimit header says the window is spent and resets in 1 s
    "commit-429-ratelimit-reset": ("POST", r"/commit/main$", {"status": 429, "headers": {
        "RateLimit": '"api";r=0;t=1', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'}}),
    "commit-connection-dropped": ("POST", r"/commit/main$", {"status": None, "drop": True}),
    "preupload-503": ("POST", r"/preupload/main$", {"status": 503}),
    "lfs-batch-429-retry-after": ("POST", r"\.git/info/lfs/objects/batch$", {"status": 429, "retry_after": 0}),
    "lfs-upload-dropped-mid-body": ("PUT", r"^/lfs-upload/", {"status": None, "cut": True}),
    "lfs-upload-502": ("PUT", r"^/lfs-upload/", {"status": 502}),
    "xorb-upload-500": ("POST", r"^/xet-cas/v1/xorbs/", {"status": 500}),
    "xorb-upload-dropped-mid-body": ("POST", r"^/xet-cas/v1/xorbs/", {"status": None, "cut": True}),
    "xorb-upload-connection-dropped": ("POST", r"^/xet-cas/v1/xorbs/", {"status": None, "drop": True}),
    "shard-upload-503": ("POST", r"^/xet-cas/v[12]/shards$", {"status": 503}),
    "xet-write-token-503": ("GET", r"/xet-write-token/main$", {"status": 503}),
    "head-read-503": ("GET", r"/revision/main$", {"status": 503}),
    "validate-yaml-500": ("POST", r"^/api/validate-yaml$", {"status": 500}),
    "verify-tree-503": ("GET", r"/tree/[0-9a-f]{40}$", {"status": 503, "times": 2}),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_transient_fault_is_retried_into_one_complete_commit(hub, outputs, name, tmp_path, request):
    method, regex, kwargs = FAULTS[name]
    if name.startswith("lfs-"):
        request.getfixturevalue("xet_off")
    out = fresh_copy(outputs[0], tmp_path / "out")
    repo_id = new_repo(hub, name)
    fault = hub.faults.add(method, regex, **kwargs)
    started = time.monotonic()
    url = tl_hub.push_to_hub(out, repo_id)
    assert fault.hits == kwargs.get("times", 1), "the fault never fired: the test did not test anything"
    commits = commits_since_creation(hub, repo_id)
    assert len(commits) == 1, f"{name}: {len(commits)} commits instead of one"
    assert url.endswith(commits[0].sha)
    assert_complete(hub, repo_id, commits[0], out)
    asked = kwargs.get("retry_after") or (1 if "RateLimit" in kwargs.get("headers", {}) else 0)
    if asked:
        failed = next(r for r in hub.requests if r.at >= started and r.status == 429)
        retry = next(r for r in hub.requests if r.at > failed.at and r.method == method and r.path == failed.path)
        assert retry.at - failed.at >= asked, "the wait the Hub asked for (Retry-After / RateLimit) was not honoured"


def test_lost_commit_answer_is_adopted_not_duplicated(hub, outputs):
    """The commit lands but its answer is lost: tl_hub finds it instead of committing again."""
    repo_id = new_repo(hub, "lost-answer")
    hub.faults.add("POST", r"/commit/main$", status=None, drop_after=True)
    url = tl_hub.push_to_hub(outputs[0], repo_id)
    commits = commits_since_creation(hub, repo_id)
    assert len(commits) == 1 and url.endswith(commits[0].sha)
    assert_complete(hub, repo_id, commits[0], outputs[0])
    assert len(commit_posts(hub, repo_id)) == 1, "the commit was sent again after it had landed"


def test_lost_pull_request_answer_opens_one_pr(hub, outputs):
    repo_id = new_repo(hub, "lost-pr")
    hub.faults.add("POST", r"/commit/main$", status=None, drop_after=True)
    tl_hub.push_to_hub(outputs[0], repo_id, create_pr=True)
    prs = hub.server.repo(repo_id).prs
    assert len(prs) == 1, f"{len(prs)} pull requests opened for one push"
    assert len(commits_since_creation(hub, repo_id)) == 0  # main untouched
    assert _tl_files(hub.files(repo_id, revision="refs/pr/1")) == local_files(outputs[0])


def test_push_that_gives_up_leaves_repo_unchanged_and_rerun_commits_once(hub, outputs, monkeypatch):
    repo_id = new_repo(hub, "gives-up")
    monkeypatch.setenv("TL_HUB_PUSH_RETRIES", "2")
    fault = hub.faults.add("POST", r"/commit/main$", status=503, times=100)
    with pytest.raises(HubError, match=r"the commit failed 3 times \(HTTP 503\); nothing was committed, run the "
                                        r"push again"):
        tl_hub.push_to_hub(outputs[0], repo_id)
    assert fault.hits == 3
    assert commits_since_creation(hub, repo_id) == []
    hub.faults.clear()
    tl_hub.push_to_hub(outputs[0], repo_id)
    tl_hub.push_to_hub(outputs[0], repo_id)  # a second re-run: nothing changed, nothing committed
    commits = commits_since_creation(hub, repo_id)
    assert len(commits) == 1
    assert_complete(hub, repo_id, commits[0], outputs[0])


@pytest.mark.parametrize("answer", [{"retry_after": 3600}, {"headers": {"RateLimit": '"api";r=0;t=3600'}}])
def test_rate_limit_longer_than_the_cap_fails_clearly(hub, outputs, answer):
    repo_id = new_repo(hub, "rate-limit")
    hub.faults.add("POST", r"/commit/main$", status=429, **answer)
    with pytest.raises(HubError, match=r"the Hub asks to wait 3600 s \(HTTP 429\); the repo is unchanged"):
        tl_hub.push_to_hub(outputs[0], repo_id)
    assert commits_since_creation(hub, repo_id) == []


def test_verification_catches_a_file_the_hub_lost(hub, outputs):
    """The server answers 200 but drops metrics.json from the commit: the push must not report success."""
    repo_id = new_repo(hub, "lost-file")

    def lose_metrics(body: bytes) -> bytes:
        return b"\n".join(line for line in body.split(b"\n") if b'"metrics.json"' not in line)

    hub.faults.add("POST", r"/commit/main$", status=None, mutate=lose_metrics)
    with pytest.raises(HubError, match=r"is incomplete: metrics.json: missing on the Hub"):
        tl_hub.push_to_hub(outputs[0], repo_id)


def _push_in_subprocess(out: Path, repo_id: str, **env: str) -> subprocess.Popen:
    code = "import sys; from tl_hub.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "push", str(out), repo_id],
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_request(hub, method: str, needle: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r.method == method and needle in r.path for r in list(hub.requests)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"push exited early ({proc.returncode}): {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no {method} {needle} request within {timeout} s")


@pytest.mark.parametrize("kill_at", ["during-lfs-upload", "during-xorb-upload", "after-commit-before-verify"])
def test_killed_push_rerun_ends_in_exactly_one_commit(hub, outputs, kill_at, tmp_path, request):
    """SIGKILL a `tl-hub push` process, then run the same push again: exactly one complete commit."""
    out = fresh_copy(outputs[0], tmp_path / "out")
    repo_id = new_repo(hub, kill_at)
    if kill_at == "during-lfs-upload":
        request.getfixturevalue("xet_off")
        hub.faults.add("PUT", r"^/lfs-upload/", status=None, delay=30)
        method, needle = "PUT", "/lfs-upload/"
    elif kill_at == "during-xorb-upload":
        hub.faults.add("POST", r"^/xet-cas/v1/xorbs/", status=None, delay=30)
        method, needle = "POST", "/xet-cas/v1/xorbs/"
    else:
        hub.faults.add("GET", rf"/api/models/{repo_id}/tree/", status=None, delay=30)
        method, needle = "GET", f"/api/models/{repo_id}/tree/"
    proc = _push_in_subprocess(out, repo_id)
    try:
        _wait_for_request(hub, method, needle, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    landed = commits_since_creation(hub, repo_id)
    assert len(landed) == (0 if kill_at.startswith("during-") else 1)
    hub.faults.clear()
    tl_hub.push_to_hub(out, repo_id)
    commits = commits_since_creation(hub, repo_id)
    assert len(commits) == 1
    assert_complete(hub, repo_id, commits[0], out)


@pytest.mark.parametrize("retries", ["5", "0"])
def test_two_pushes_at_once(hub, outputs, retries):
    """Both push processes read the same head and send their commits together (server barrier).

    With retries (default) both succeed, one on top of the other; with TL_HUB_PUSH_RETRIES=0 the loser
    fails with a clear message. Either way every commit is complete and the head is one whole push.
    """
    repo_id = new_repo(hub, f"race-{retries}")
    fault = hub.faults.add("POST", r"/commit/main$", status=None, barrier=2, times=2)
    procs = [_push_in_subprocess(out, repo_id, TL_HUB_PUSH_RETRIES=retries, TL_HUB_PUSH_BACKOFF="0.05")
             for out in outputs]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert fault.hits == 2 and not fault.barrier.broken, "the two commits did not race"
    codes = [rc for rc, _, _ in results]
    assert any(r.status == 412 for r in commit_posts(hub, repo_id)), "no stale-parent conflict happened"
    commits = commits_since_creation(hub, repo_id)
    if retries == "0":
        assert codes.count(0) == 1 and max(codes) == 2, results  # 2 = the CLI's exit code for a tl_hub error
        loser = results[codes.index(2)][2]
        assert "the branch moved: another push?" in loser and "HTTP 412" in loser and "run the push again" in loser
        assert len(commits) == 1
    else:
        assert codes == [0, 0], results
        assert len(commits) == 2
    pushed = [assert_complete(hub, repo_id, c, *outputs) for c in commits]
    assert len(set(pushed)) == len(commits)  # each push is in the history once
    head_files = _tl_files(hub.files(repo_id))
    assert head_files == local_files(pushed[-1])
    json.loads(head_files["metrics.json"])  # readable, not a mix
