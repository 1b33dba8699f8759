"""What a failed tailnet dial means to a proxy client: a SOCKS5 REP code, an HTTP status, a counter.

The dial is the device's (``tcp_connect_blocking``: netmap, MagicDNS, exit-node policy); its typed
errors are mapped here so SOCKS5 and HTTP clients hear the same story. A target outside the tailnet
is "not allowed" (REP 02 / 403) when the client named an address, "host unreachable" (REP 04 / 502)
when it named a host that does not resolve to a tailnet address; nothing is dialed either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytsnet.dial import is_ip_literal
from pytsnet.errors import DataplaneNotReady, DeviceClosed, ExitNodeUnavailable, UnknownTailnetHost
from pytsnet.messages.loopback import LoopbackEventKind
from pytsnet.wire.socks5 import Rep

__all__ = ["DialOutcome", "dial_outcome"]


@dataclass(frozen=True)
class DialOutcome:
    rep: Rep
    status: int
    kind: LoopbackEventKind
    reason: str


def dial_outcome(host: str, error: BaseException) -> DialOutcome:
    """The answer for a dial to ``host`` that raised ``error``."""
    if isinstance(error, UnknownTailnetHost):
        if is_ip_literal(host):
            return DialOutcome(Rep.NOT_ALLOWED, 403, "refused_not_tailnet", "not a tailnet address")
        return DialOutcome(Rep.HOST_UNREACHABLE, 502, "refused_not_tailnet", "not a tailnet host")
    if isinstance(error, ExitNodeUnavailable):
        return DialOutcome(Rep.NETWORK_UNREACHABLE, 502, "refused_exit_node", "exit node unavailable")
    if isinstance(error, DataplaneNotReady | DeviceClosed):
        return DialOutcome(Rep.GENERAL_FAILURE, 503, "dial_failed", "tailnet not ready")
    if isinstance(error, ConnectionRefusedError):
        return DialOutcome(Rep.CONNECTION_REFUSED, 502, "dial_refused", "connection refused")
    if isinstance(error, TimeoutError):
        return DialOutcome(Rep.HOST_UNREACHABLE, 504, "dial_timeout", "dial timed out")
    return DialOutcome(Rep.GENERAL_FAILURE, 502, "dial_failed", "dial failed")
