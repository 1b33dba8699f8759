"""Which non-local destinations a subnet router / exit node forwards: a pure decision, no sockets.

A packet from a peer to an address that is not ours reaches the stack only when the engine's filter
counts the destination as local (our advertised routes are). ``ForwardPolicy.decide`` then says
whether a forwarder may carry it to the host network: a destination inside an advertised route
(subnet router), or any non-tailnet destination when we advertise an exit node. Some destinations
are refused whatever is advertised (``never_forwarded``): a forwarded flow leaves through the host's
sockets, so loopback or link-local there would reach the host itself or its LAN's link, and the
tailnet ranges would loop back into the tailnet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pytsnet.netstack.config import IPAddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = ["EXIT_ROUTES", "TAILNET_RANGES", "ForwardPolicy", "never_forwarded"]

EXIT_ROUTES: tuple[IPNetwork, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
"""What advertising an exit node adds to Hostinfo.RoutableIPs (Go's tsaddr.ExitRoutes)."""

TAILNET_RANGES: tuple[IPNetwork, ...] = (ipaddress.ip_network("100.64.0.0/10"),
                                          ipaddress.ip_network("fd7a:115c:a1e0::/48"))
"""Tailscale's CGNAT IPv4 range and its ULA IPv6 range: peers, never the host network."""

_BROADCAST = ipaddress.ip_address("255.255.255.255")


def never_forwarded(dst: IPAddress) -> str | None:
    """The drop reason for a destination no forwarder may reach, or None."""
    if dst.is_unspecified:
        return "forward_unspecified"
    if dst.is_loopback:
        return "forward_loopback"
    if dst.is_link_local:
        return "forward_link_local"
    if dst.is_multicast or dst == _BROADCAST:
        return "forward_multicast"
    if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped is not None:
        return "forward_mapped"  # ::ffff:127.0.0.1 would reach the host's loopback on a dual-stack socket
    if any(dst in n for n in TAILNET_RANGES if n.version == dst.version):
        return "forward_tailnet"
    return None


@dataclass(frozen=True)
class ForwardPolicy:
    """What this node advertises: subnet routes, and whether it is an exit node.

    ``lan``/``lan_hosts``: for an exit node, the prefixes of the host's own interfaces and its own
    addresses on them. As Go's ``shrinkDefaultRoute`` ("guest wifi"), an exit node's default route
    does not reach those LANs unless they are advertised as routes too; the host's own addresses
    stay reachable. The device fills them from the node's namespace (``actors/forwarder/lan.py``).
    """

    routes: tuple[IPNetwork, ...] = field(default_factory=tuple)
    exit_node: bool = False
    lan: tuple[IPNetwork, ...] = field(default_factory=tuple)
    lan_hosts: tuple[IPAddress, ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        return self.exit_node or bool(self.routes)

    def decide(self, dst: IPAddress) -> str | None:
        """None: forward ``dst``; else the counted drop reason."""
        refused = never_forwarded(dst)
        if refused is not None:
            return refused
        if any(dst.version == n.version and dst in n for n in self.routes):
            return None
        if not self.exit_node:
            return "not_our_address"
        if dst not in self.lan_hosts and any(dst.version == n.version and dst in n for n in self.lan):
            return "forward_exit_lan"  # the exit node's own LAN: only if advertised as a route
        return None


@dataclass(frozen=True, slots=True)
class ForwardedTcp:
    """A peer's SYN to a forwarded destination: dial, then ``Stack.accept_forward``/``refuse_forward``."""

    key: tuple[int, IPAddress, int, IPAddress, int]
    """(protocol, destination, its port, the peer's address, its port): the flow key once accepted."""


@dataclass(frozen=True, slots=True)
class ForwardedDatagram:
    """A peer's UDP datagram to a forwarded destination."""

    src: IPAddress
    sport: int
    dst: IPAddress
    dport: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ForwardedEcho:
    """A peer's ICMP echo request to a forwarded destination (``rest``: identifier and sequence)."""

    src: IPAddress
    dst: IPAddress
    rest: bytes
    data: bytes


Forwarded = ForwardedTcp | ForwardedDatagram | ForwardedEcho
