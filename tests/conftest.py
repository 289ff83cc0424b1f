"""Test-session isolation: every HF client talks to a local Hub server, never to huggingface.co.

The environment is set here, at import time, *before* huggingface_hub / transformers / datasets are
imported by any test module, because those libraries read HF_ENDPOINT when they are imported.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from helpers.ports import free_port

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="tl_hub_tests_"))

HUB_PORT = free_port()
HUB_URL = f"http://127.0.0.1:{HUB_PORT}"
# A token the local server maps to the user "tester"; a sentinel so tests can grep for leaks.
HUB_TOKEN = "hf_tlhubSENTINELtoken0123456789abcdef"
HUB_USER = "tester"

os.environ.update(
    {
        "HF_HOME": str(_SESSION_DIR / "hf_home"),
        "HF_ENDPOINT": HUB_URL,
        "HF_TOKEN": HUB_TOKEN,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "TL_HUB_CACHE": str(_SESSION_DIR / "tl_hub_cache"),
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
    }
)
# Xet stays on (when hf_xet is installed): the local Hub speaks it (helpers/xet_cas.py). Tests of the LFS
# upload path use the `xet_off` fixture.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN_PATH", "HF_HUB_DISABLE_XET"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    """A temporary folder shared by the whole test session."""
    return _SESSION_DIR


# ---------------------------------------------------------------------------------------------------
# The local Hub (tests/helpers/hub_server.py): one server per session on HUB_PORT, token HUB_TOKEN -> HUB_USER.
# A second, read-only account exists for 403 tests: HUB_READ_TOKEN -> HUB_READ_USER.
HUB_READ_TOKEN = "hf_tlhubREADONLYtoken0123456789abcd"
HUB_READ_USER = "reader"


class LocalHub:
    """Handle on the session's local Hub server, for tests.

    Attributes: url, token, user, read_token, server (helpers.hub_server.HubServer: .faults, .requests,
    .files(repo_id, repo_type, revision), .history(...), .tree(...), .repo(...)).

    Example:
        >>> def test_x(hub):
        ...     repo_id = hub.new_repo_id("demo")      # "tester/demo-<unique>"
        ...     files = hub.files(repo_id)             # after a push: path -> bytes
    """

    def __init__(self, server) -> None:
        self.server = server
        self.url = server.url
        self.token = HUB_TOKEN
        self.user = HUB_USER
        self.read_token = HUB_READ_TOKEN
        self._counter = 0

    @property
    def faults(self):
        """The server's FaultQueue: `hub.faults.add("POST", r"/commit/", status=503, retry_after=1)`."""
        return self.server.faults

    @property
    def requests(self):
        """Every request the server saw (method, path, user, has_auth, status, range); never the token."""
        return self.server.requests

    def new_repo_id(self, prefix: str = "repo") -> str:
        """A repo id in the test user's namespace that no other test uses."""
        import uuid

        self._counter += 1
        return f"{self.user}/{prefix}-{self._counter}-{uuid.uuid4().hex[:6]}"

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Raw content of every file of a repo at a revision."""
        return self.server.files(repo_id, repo_type, revision)

    def history(self, repo_id: str, repo_type: str = "model", revision: str = "main"):
        """Commits of a repo (newest first): .sha, .title, .tree, .author."""
        return self.server.history(repo_id, repo_type, revision)

    def is_private(self, repo_id: str, repo_type: str = "model") -> bool:
        return self.server.repo(repo_id, repo_type).private


@pytest.fixture(scope="session")
def hub():
    """The session's local Hub-compatible server (see LocalHub); every HF client already points at it."""
    from helpers.hub_server import HubServer

    server = HubServer(
        port=HUB_PORT,
        tokens={HUB_TOKEN: HUB_USER},
        read_only_tokens={HUB_READ_TOKEN: HUB_READ_USER},
        root=_SESSION_DIR / "local_hub",
    ).start()
    try:
        yield LocalHub(server)
    finally:
        server.stop()


@pytest.fixture
def xet_off(monkeypatch):
    """Make huggingface_hub take the LFS path for one test, as HF_HUB_DISABLE_XET=1 at import would
    (child processes get the variable itself)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


@pytest.fixture(scope="session")
def tiny(session_dir: Path):
    """tiny("vit") -> path of a tiny random checkpoint of that architecture (built once per session)."""
    from helpers.tiny_models import tiny_checkpoint

    def get(arch: str) -> Path:
        return tiny_checkpoint(arch, session_dir / "tiny" / arch)

    return get
