"""Test-session isolation: every HF client talks to a local Hub server, never to huggingface.co.

The environment is set here, at import time, *before* huggingface_hub / transformers / datasets are
imported by any test module, because those libraries read HF_ENDPOINT when they are imported.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="tl_hub_tests_"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HUB_PORT = _free_port()
HUB_URL = f"http://127.0.0.1:{HUB_PORT}"
# A token the local server maps to the user "tester"; a sentinel so tests can grep for leaks.
HUB_TOKEN = "hf_tlhubSENTINELtoken0123456789abcdef"
HUB_USER = "tester"

os.environ.update(
    {
        "HF_HOME": str(_SESSION_DIR / "hf_home"),
        "HF_ENDPOINT": HUB_URL,
        "HF_HUB_DISABLE_XET": "1",
        "HF_TOKEN": HUB_TOKEN,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "TL_HUB_CACHE": str(_SESSION_DIR / "tl_hub_cache"),
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
    }
)
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN_PATH"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    """A temporary folder shared by the whole test session."""
    return _SESSION_DIR
