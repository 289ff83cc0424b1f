"""`free_port()`: a TCP port on 127.0.0.1 that nothing listens on (for the local Hub and process groups)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS reports free right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
