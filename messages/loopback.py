"""Messages of the loopback proxies (``pytsnet/loopback``): the spawn, accepted connections, counters.

``dev.loopback()`` spawns one server (the 127.0.0.1 listener's accept loop) and one actor per proxied
connection, configured by ``LoopbackSpawn``; each connection tells the server what happened
(``LoopbackEvent``) for the counters ``dev.loopback_status()`` reports, and itself ``LoopbackConnDone``
when its copy threads finish. The credentials are never in a message (constructor arguments only).
"""

from __future__ import annotations

from typing import Literal

from pytsnet.messages.base import Message, Request

__all__ = ["LoopbackAccepted", "LoopbackConnDone", "LoopbackEvent", "LoopbackEventKind", "LoopbackSpawn",
           "LoopbackStatus", "LoopbackStatusRequest"]

LoopbackEventKind = Literal[
    "connections", "busy", "closed",
    "socks_connect", "socks_udp", "http_connect", "http_forward",
    "auth_failed", "bad_socks", "bad_http", "head_too_large", "handshake_timeout",
    "refused_not_tailnet", "refused_exit_node", "dial_refused", "dial_timeout", "dial_failed",
    "local_api", "not_found", "udp_datagrams", "udp_dropped", "reset"]


class LoopbackSpawn(Message, tag="loopback.spawn"):
    """The server's and its connections' configuration (shared, immutable)."""

    port: int
    """The 127.0.0.1 TCP port, for ``status``."""
    server: str = "loopback"
    conns: str = "loopback.conns"
    """The supervisor the per-connection actors are spawned under (never restarted)."""
    max_connections: int = 128
    """Connections proxied at once; one more is accepted and closed at once (counted ``busy``)."""
    handshake_timeout: float = 10.0
    """From accept to a complete SOCKS5 request or HTTP request head (a slowloris is cut here)."""
    dial_timeout: float = 15.0
    max_head: int = 16 * 1024
    """An HTTP request or response head past this is refused (431 / 502)."""
    buffer: int = 64 * 1024
    """One read of either side of a proxied connection."""
    idle_timeout: float = 7200.0
    """A tunnel silent both ways this long is reset (as the exit node's forwarder)."""
    udp_max_datagram: int = 65535


class LoopbackAccepted(Message, tag="loopback.accepted"):
    """The accept loop took a connection (queued for the server's thread to spawn its actor)."""


class LoopbackEvent(Message, tag="loopback.event"):
    """A connection tells the server what happened, for its counters (``closed`` frees its slot)."""

    kind: LoopbackEventKind
    conn: str = ""
    n: int = 1


class LoopbackConnDone(Message, tag="loopback.conn_done"):
    """A connection's thread finished (``error`` None: both sides ended cleanly)."""

    error: str | None = None


class LoopbackStatus(Message, tag="loopback.status"):
    port: int
    open: int = 0
    counters: dict[str, int] = {}


class LoopbackStatusRequest(Request[LoopbackStatus], tag="loopback.status_request"):
    pass
