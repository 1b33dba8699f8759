"""Messages of an on-demand disco ping (``tailscale ping``, the LocalAPI's ``ping?type=disco``).

The device tells the DiscoPinger ``DiscoPingStart`` (a fresh ``tx``), which sends a disco Ping to
every candidate UDP address of the peer and through its DERP region; the first Pong with that
``tx`` is recorded, and the device polls ``DiscoPingPoll`` until it is done or its time is up.
"""

from __future__ import annotations

from pytsnet.messages.base import Message, Request

__all__ = ["DiscoPingPoll", "DiscoPingResult", "DiscoPingStart"]


class DiscoPingStart(Message, tag="ping.disco_start"):
    peer: str
    """The peer's ``nodekey:…``."""
    tx: str
    """The 12-byte disco transaction ID, hex."""


class DiscoPingResult(Message, tag="ping.disco_result"):
    done: bool = False
    latency: float | None = None
    """Seconds from the Ping to the first Pong."""
    endpoint: str = ""
    """``ip:port`` the Pong came from over UDP; empty when it came through DERP."""
    derp_region: int = 0
    """The DERP region the Pong came through (0: direct)."""
    error: str = ""
    """Why no Ping could be sent (unknown peer, no path at all)."""


class DiscoPingPoll(Request[DiscoPingResult], tag="ping.disco_poll"):
    tx: str
