"""Messages of Tailscale Services (issue 20d): the app's fallback TCP handlers and VIP service listeners.

The device turns the netstack's fallback on while the app has handlers registered
(``ActorDevice.register_fallback_tcp_handler``); the held SYNs travel through a channel in the
netstack's ``FlowRegistry`` (``actors/netstack/fallback.py``), and the decision comes back as the
forwarder's own ``ForwardTcpAccept`` / ``ForwardTcpRefuse`` (the same pending-SYN table).
"""

from __future__ import annotations

from pytsnet.messages.base import Request
from pytsnet.messages.netstack import NetstackReply

__all__ = ["TcpFallbackSet", "TcpServiceListen"]


class TcpFallbackSet(Request[NetstackReply], tag="services.tcp_fallback_set"):
    """App -> netstack: hold SYNs for unlistened ports of our own addresses for the fallback
    handlers (``enabled``), or answer them with an RST again (the default)."""

    enabled: bool


class TcpServiceListen(Request[NetstackReply], tag="services.tcp_service_listen"):
    """App -> netstack: the VIP addresses this node hosts services on (``addresses``); a VIP takes
    only the flows a listener bound to that very address and port accepts (fail closed)."""

    addresses: tuple[str, ...]
