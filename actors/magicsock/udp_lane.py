"""The UDP socket's send side, shared with the DiscoPinger: disco never waits behind bulk data.

The UDP router's mailbox carries every outbound WireGuard burst; a disco ping or pong told there
waits behind them (issue 14 measured 8-17 ms median under a bulk transfer). The router publishes its
bound socket here under its ``ActorRef`` (stable across restarts) and the DiscoPinger sends on it
from its own thread (``sendto`` on one UDP socket from two threads is safe; each call is one
datagram). A socket object that was closed raises ``OSError`` rather than touching a reused file
descriptor, so a stale entry can only fail a send, which the caller then routes through the mailbox.
"""

from __future__ import annotations

import socket
import threading

from pytsnet.actors.runtime import ActorRef

__all__ = ["publish", "send", "withdraw"]

_lock = threading.Lock()
_sockets: dict[ActorRef, socket.socket] = {}


def publish(owner: ActorRef, sock: socket.socket) -> None:
    """``owner`` (the UDP router) bound ``sock``: others may send on it until ``withdraw``."""
    with _lock:
        _sockets[owner] = sock


def withdraw(owner: ActorRef, sock: socket.socket) -> None:
    """``owner`` closes ``sock``; a newer incarnation's socket is left alone."""
    with _lock:
        if _sockets.get(owner) is sock:
            del _sockets[owner]


def send(owner: ActorRef | None, data: bytes, dst: tuple[str, int]) -> bool:
    """Send one datagram on ``owner``'s socket now. False when there is none (not bound yet, a
    replay, a test rig): the caller tells the router instead. An unreachable destination is not
    False: the path logic sees the missing pong, as with any send."""
    if owner is None:
        return False
    sock = _sockets.get(owner)
    if sock is None:
        return False
    try:
        sock.sendto(data, dst)
    except OSError:
        return sock.fileno() != -1  # closed under us (a restart): False, the router's mailbox takes it
    return True
