"""The magicsock actors' spawn message (``messages.magicsock.MagicsockSpawn``) read into wire types."""

from __future__ import annotations

from pytsnet.messages.magicsock import MagicsockTimings
from pytsnet.wire.magicsock.endpoint import Timings

__all__ = ["timings_message", "wire_timings"]


def wire_timings(t: MagicsockTimings) -> Timings:
    return Timings(heartbeat=t.heartbeat, trust=t.trust, session_active=t.session_active, upgrade=t.upgrade,
                   ping_timeout=t.ping_timeout, ping_interval=t.ping_interval)


def timings_message(t: Timings) -> MagicsockTimings:
    return MagicsockTimings(heartbeat=t.heartbeat, trust=t.trust, session_active=t.session_active,
                            upgrade=t.upgrade, ping_timeout=t.ping_timeout, ping_interval=t.ping_interval)
