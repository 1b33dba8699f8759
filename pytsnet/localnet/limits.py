"""Connection and session limits of the control listener, and the gate that counts connections.

An exposed localnet must not let one client pin unbounded memory or sockets. Each limit here is
enforced where the resource is held: connections in :meth:`ControlServer._on_conn` (through
:class:`ConnectionGate`), streams, buffered request bytes and idleness in
:class:`~pytsnet.localnet.noise_h2.NoiseH2Session`. Defaults follow Go's ``x/net/http2`` server
(250 concurrent streams, 1 MiB upload buffer per stream) where it has one; Go's testcontrol sets no
idle timeout and no connection cap, so those are ours.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

IDLE_TIMEOUT = 120.0
"""Seconds a Noise session may sit with no request being served and nothing received (PINGs aside).
Go's clients redial on the next request after a GOAWAY, so closing an idle session costs them one
handshake; a session with a live map poll is never idle."""
MAX_STREAMS = 250
"""SETTINGS_MAX_CONCURRENT_STREAMS (x/net/http2's default); a stream beyond it is refused
(RST_STREAM REFUSED_STREAM, which a client may retry), the session lives on."""
MAX_REQUEST_BODY = 1 << 20
"""Bytes one stream may buffer (its request body): its initial flow-control window. Go's testcontrol
caps a request at 1 MiB (``msgLimit``), as x/net/http2's default per-stream upload buffer."""
MAX_SESSION_BUFFER = 2 << 20
"""Bytes all streams of one session may buffer together: the connection flow-control window. Bytes
are returned to the window only when their stream ends (a request's body is held while its handler
runs), so twice the per-stream cap keeps one maximal body from waiting on a live poll's small one."""
MAX_CONNECTIONS = 1024
"""Open connections to the control listener (plain HTTP, Noise sessions, DERP on the listener)."""
MAX_CONNECTIONS_PER_IP = 256
"""Open connections from one source address; generous because tests run every node from loopback."""
MIN_SESSION_BUFFER = 65535
"""HTTP/2's initial connection window: a session can never be held to less."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The control listener's knobs (``ControlServer(limits=…)``, ``LocalTailnet(limits=…)``)."""

    idle_timeout: float | None = IDLE_TIMEOUT
    """None: sessions are never closed for idleness."""
    max_streams: int = MAX_STREAMS
    max_stream_buffer: int = MAX_REQUEST_BODY
    max_session_buffer: int = MAX_SESSION_BUFFER
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP

    def __post_init__(self) -> None:
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive or None, got {self.idle_timeout}")
        if self.max_streams < 1 or self.max_connections < 1 or self.max_connections_per_ip < 1:
            raise ValueError("stream and connection caps must be at least 1")
        if not 1 <= self.max_stream_buffer < 1 << 31:
            raise ValueError(f"max_stream_buffer must be in [1, 2**31), got {self.max_stream_buffer}")
        if not MIN_SESSION_BUFFER <= self.max_session_buffer < 1 << 31:
            raise ValueError(f"max_session_buffer must be in [{MIN_SESSION_BUFFER}, 2**31), "
                             f"got {self.max_session_buffer}")


class ConnectionGate:
    """Counts open connections in total and per source address; refuses beyond the caps."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_ip: collections.Counter[str] = collections.Counter()

    def admit(self, ip: str) -> str | None:
        """Take a slot for a connection from ``ip``; None if admitted, else which cap is full."""
        if self.total >= self.limits.max_connections:
            return f"total connection cap {self.limits.max_connections}"
        if self.per_ip[ip] >= self.limits.max_connections_per_ip:
            return f"per-address connection cap {self.limits.max_connections_per_ip}"
        self.total += 1
        self.per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        """Give back the slot ``admit`` took."""
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]
