"""Free TCP ports on loopback. Its own module, without torch, because the sweep driver needs one to start
Ray and never imports torch (the driver's start-up is on every sweep's critical path)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; a race with other processes is possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
