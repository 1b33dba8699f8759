"""A bridged tailnet connection says AF_INET, so asyncio and libraries set TCP-level options on it; its
fd is AF_UNIX underneath. Those options must be taken (and read back), not fail with EOPNOTSUPP, and
socket-level options must still reach the fd."""

from __future__ import annotations

import socket

from pytsnet.net.bridge import TailnetConnection


def _pair() -> tuple[TailnetConnection, socket.socket]:
    a, b = socket.socketpair()
    conn = TailnetConnection(fileno=a.detach(), local=("100.64.0.1", 22), remote=("100.64.0.2", 40000))
    return conn, b


def test_tcp_options_are_taken_and_read_back() -> None:
    conn, other = _pair()
    with conn, other:
        assert conn.family == socket.AF_INET
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # still the fd's
        assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > 0

