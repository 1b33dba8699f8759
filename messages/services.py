"""Messages of Tailscale Services (issue 20d): the app's fallback TCP handlers and VIP service listeners.

The device turns the netstack's fallback on while the app has handlers registered
(``ActorDevice.register_fallback_tcp_handler``); the held SYNs travel through a channel in the
netstack's ``FlowRegistry`` (``actors/netstack/fallback.py``), and the decision comes back as the
forwarder's own ``ForwardTcpAccept`` / ``ForwardTcpRefuse`` (the same pending-SYN table).
"""

from __future__ import annotations

from pytsnet.messages.base import Message, Request
from pytsnet.messages.netstack import NetstackReply

__all__ = ["ServicesMemory", "TcpFallbackSet", "TcpServiceAddresses"]


class TcpFallbackSet(Request[NetstackReply], tag="services.tcp_fallback_set"):
    """App -> netstack: hold SYNs for unlistened ports of our own addresses for the fallback
    handlers (``enabled``), or answer them with an RST again (the default)."""

    enabled: bool


class TcpServiceAddresses(Message, tag="services.tcp_service_addresses"):
    """Bridge -> netstack after each netmap: the VIP services this node hosts → their VIPs (the
    self node's ``service-host`` capability). The netstack answers ICMP echo on a VIP and hands
    every TCP SYN to one to the app's service listeners (no match: RST); nothing else is accepted
    on a VIP (fail closed)."""

    services: dict[str, list[str]] = {}


class ServicesMemory(Message, tag="services.memory"):
    """The ControlRunner's restart memory (``messages.memory``): the ``Hostinfo.ServicesHash`` the
    device last asked for, so a restarted runner keeps advertising the services we host."""

    services_hash: str = ""
    ingress_enabled: bool = False
    """20g: ``Hostinfo.IngressEnabled`` / ``WireIngress`` last asked for (the serve config's Funnel)."""
    wire_ingress: bool = False
