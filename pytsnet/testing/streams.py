"""Blocking stream pieces the test rigs share: an echo app, a thread-per-connection accept loop on a
node's tailnet listener, and an exact read for the client side.

The rigs (``tests/loopback``, ``tests/egress``, ``pytsnet.testing.egressnet``) each serve a few tiny
apps on a Python node (``ActorDevice.listen_blocking``) until their ``stop`` event is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from pytsnet.net import SocketLike, SocketListener

__all__ = ["accept_in_threads", "echo", "recv_exact"]

ACCEPT_POLL = 0.5
"""How often the accept loop looks at its stop event (seconds)."""


class _Stream(Protocol):
    def recv(self, bufsize: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> None: ...
    def close(self) -> None: ...


def echo(conn: _Stream, first: bytes = b"") -> None:
    """Send ``first``, then echo until the peer's EOF; a socket error ends it; ``conn`` is closed."""
    try:
        if first:
            conn.sendall(first)
        while data := conn.recv(65536):
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


def accept_in_threads(lst: SocketListener, stop: threading.Event,
                      handle: Callable[[SocketLike], object]) -> threading.Thread:
    """A daemon thread handing each connection ``lst`` accepts to ``handle`` on a daemon thread of its
    own, until ``stop`` is set; then it closes ``lst``. ``handle`` owns (and closes) its connection."""
    def run() -> None:
        lst.settimeout(ACCEPT_POLL)
        while not stop.is_set():
            try:
                conn, _ = lst.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
        lst.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def recv_exact(sock: _Stream, n: int) -> bytes:
    """``n`` bytes, or fewer if the peer ends the stream first (the caller compares)."""
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out
