"""Messages of the LocalAPI's unix-socket server (``pytsnet/localapi/unix.py``).

The accept loop tells the server ``LocalApiAccepted``; each connection's actor reports
``LocalApiEvent`` (``closed`` frees its slot) and itself ``LocalApiConnDone`` when its one request
is answered.
"""

from __future__ import annotations

from typing import Literal

from pytsnet.messages.base import Message

__all__ = ["LocalApiAccepted", "LocalApiConnDone", "LocalApiEvent", "LocalApiEventKind"]

LocalApiEventKind = Literal["connections", "busy", "closed", "requests", "bad_http", "too_large", "timeout"]


class LocalApiAccepted(Message, tag="localapi.accepted"):
    """The accept loop took a connection (queued for the server's thread to spawn its actor)."""


class LocalApiEvent(Message, tag="localapi.event"):
    kind: LocalApiEventKind
    conn: str = ""
    n: int = 1


class LocalApiConnDone(Message, tag="localapi.conn_done"):
    """A connection's thread finished."""
