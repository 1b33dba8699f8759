"""Messages of the peerAPI server (``actors/peerapi``): its spawn, a connection's reads, its counters.

The server and its per-connection actors are spawned with ``PeerApiSpawn`` (every edge a name: the
peer tracker and data-plane bridge for WhoIs, the resolver for DoH). A connection actor's read loop
tells it ``PeerApiRead``; each connection reports what it did to the server (``PeerApiEvent``), which
counts it for ``status()``.
"""

from __future__ import annotations

from typing import Literal

from pytsnet.messages.base import Message, Request
from pytsnet.messages.redact import Payload

__all__ = ["PeerApiAccepted", "PeerApiEvent", "PeerApiEventKind", "PeerApiRead", "PeerApiSpawn",
           "PeerApiStatus", "PeerApiStatusRequest"]

PeerApiEventKind = Literal["request", "dns", "not_found", "forbidden", "bad_request", "unknown_peer",
                           "dns_error", "idle_timeout", "busy", "closed", "dns_exit",
                           "ingress", "ingress_refused", "taildrop_put", "taildrop_refused"]
"""``ingress``: a Funnel connection handed to its listener; ``ingress_refused``: an ingress request
refused (bad headers, no listener for the target, the listener full)."""


class PeerApiSpawn(Message, tag="peerapi.spawn"):
    """The server's and its connections' configuration (shared, immutable)."""

    port: int
    """The tailnet TCP port, advertised in Hostinfo ``Services`` as ``peerapi4``/``peerapi6``."""
    server: str = "peerapi"
    conns: str = "peerapi.conns"
    """The supervisor the per-connection actors are spawned under (never restarted)."""
    peers: str = "peers"
    dataplane: str = "dataplane"
    dns: str = "dns"
    """The resolver asked ``DnsQuery(transport="doh")`` for ``/dns-query``."""
    idle_timeout: float = 30.0
    """A connection with no complete request (or a write not taken) this long is closed."""
    dns_timeout: float = 5.0
    """Go's ``arbitraryTimeout`` for a DoH answer; past it the caller gets a 500."""
    whois_timeout: float = 5.0
    max_connections: int = 64
    """Connections served at once; one more is accepted and closed at once (counted ``busy``)."""
    exit_dns: bool = False
    """We offer an exit node: ``/dns-query`` answers permitted clients' non-tailnet names through
    the host's resolver (``actors/peerapi/hostdns.py``)."""


class PeerApiAccepted(Message, tag="peerapi.accepted"):
    """The server's accept loop took a connection (queued for the server's thread to spawn its actor)."""


class PeerApiRead(Message, tag="peerapi.read"):
    """What a connection's read loop got: bytes, the end of the stream, or nothing within the idle timeout."""

    data: Payload = b""
    eof: bool = False
    idle: bool = False


class PeerApiLingerEnd(Message, tag="peerapi.linger_end"):
    """A connection that answered and shut its write side has waited long enough: it closes now."""


class PeerApiEvent(Message, tag="peerapi.event"):
    """A connection tells the server what happened, for its counters (``closed`` frees its slot)."""

    kind: PeerApiEventKind
    conn: str = ""


class PeerApiStatus(Message, tag="peerapi.status"):
    port: int
    open: int = 0
    counters: dict[str, int] = {}


class PeerApiStatusRequest(Request[PeerApiStatus], tag="peerapi.status_request"):
    pass
