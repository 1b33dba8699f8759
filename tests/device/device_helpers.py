"""Small helpers shared by the device tests."""

from __future__ import annotations

import socket

from pytsnet.testing.polling import wait_until as eventually

__all__ = ["eventually", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
