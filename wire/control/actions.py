"""What the login machine asks its driver to do: network requests, persistence, publication, timers.

The driver (the ControlRunner actor and its I/O threads) performs them in order and feeds the
outcomes back as events; it decides nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.mapsession import NetworkMap
from pytsnet.wire.tailcfg import MapRequest, RegisterRequest

__all__ = [
    "Action",
    "ClearPeers",
    "CloseConnection",
    "Connect",
    "LiteUpdateFinished",
    "LoginStatus",
    "LogoutFinished",
    "Note",
    "OpenMapPoll",
    "PersistNetmap",
    "PersistNode",
    "PublishNetmap",
    "PublishStatus",
    "SendLiteUpdate",
    "SendRegister",
    "StateName",
    "StatusKind",
    "WakeAt",
]

StateName = Literal["NoState", "Starting", "NeedsLogin", "NeedsMachineAuth", "Running", "Stopped"]
StatusKind = Literal["", "auth_rejected", "key_expired", "network_unreachable", "server_error"]
"""``server_error``: control answered with an HTTP error or an unparsable body (retried, like
``network_unreachable``); ``auth_rejected`` and ``key_expired`` are permanent."""


@dataclass(frozen=True)
class LoginStatus:
    """The node's login state as the machine sees it (the actor publishes it as ``DeviceState``)."""

    state: StateName = "NoState"
    auth_url: str = ""
    error_kind: StatusKind = ""
    error: str = ""
    http_status: int = 0
    """The HTTP status behind a ``server_error``."""
    addresses: tuple[str, ...] = ()
    name: str = ""
    node_id: int = 0


@dataclass(frozen=True)
class Connect:
    """Drop any current connection; ``GET /key``, then the ts2021 Noise connection number ``conn``."""

    conn: int


@dataclass(frozen=True)
class CloseConnection:
    """Close the current connection now (in-flight requests on it fail and are ignored)."""


@dataclass(frozen=True)
class SendRegister:
    """POST ``/machine/register`` on connection ``conn``; answer within ``timeout`` seconds."""

    conn: int
    request: RegisterRequest
    timeout: float


@dataclass(frozen=True)
class OpenMapPoll:
    """Start the streaming ``/machine/map`` request number ``stream`` on connection ``conn``."""

    conn: int
    stream: int
    request: MapRequest


@dataclass(frozen=True)
class SendLiteUpdate:
    """POST a non-streaming ``/machine/map`` (endpoints, disco key, Hostinfo) for ``token``."""

    conn: int
    token: int
    request: MapRequest
    timeout: float


@dataclass(frozen=True)
class PersistNode:
    """Store the node record (``_node``): private node key, previous key, logged-in flag."""

    blob: bytes


@dataclass(frozen=True)
class PersistNetmap:
    """Store the last self node, domain and DERP map (``_netmap``); empty forgets them."""

    blob: bytes


@dataclass(frozen=True)
class PublishStatus:
    status: LoginStatus


@dataclass(frozen=True)
class PublishNetmap:
    """A new network map: hand it (with the node key it belongs to) to the peer table and data plane."""

    netmap: NetworkMap
    node: NodePrivate


@dataclass(frozen=True)
class ClearPeers:
    """Logged out: the peer table must forget every peer."""


@dataclass(frozen=True)
class WakeAt:
    """Tell the machine ``Tick(at)`` once the wall clock reaches ``at``."""

    at: float


@dataclass(frozen=True)
class LiteUpdateFinished:
    token: int
    ok: bool
    status: int = 0


@dataclass(frozen=True)
class LogoutFinished:
    tokens: tuple[int, ...]
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class Note:
    """A line for the log (the machine does no I/O, logging included)."""

    level: Literal["debug", "info", "warning"]
    text: str


Action = (Connect | CloseConnection | SendRegister | OpenMapPoll | SendLiteUpdate | PersistNode
          | PersistNetmap | PublishStatus | PublishNetmap | ClearPeers | WakeAt | LiteUpdateFinished
          | LogoutFinished | Note)
