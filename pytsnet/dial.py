"""Where a tailnet dial may go: peer names, addresses and the routes the node uses, nothing else.

``resolve`` maps a tailnet IP, a peer's MagicDNS short name (``web``) or FQDN (``web.tail.ts.net``,
trailing dot optional) to one of that peer's tailnet addresses, and the MagicDNS service address
(100.100.100.100, fd7a:115c:a1e0::53) to itself. An IP inside a route the engine uses (an accepted
subnet route, or any non-tailnet IP through the engaged exit node) is dialable as is. Anything else is
refused with a typed error: ``ExitNodeUnavailable`` for a non-tailnet IP while the selected exit node
cannot carry it, else ``UnknownTailnetHost``. tsnet never silently falls back to a host socket for a
tailnet dial, and neither do we.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from pytsnet.actors.peers.routes import ExitNodeSelection, is_tailnet_ip, own_addresses
from pytsnet.errors import DataplaneNotReady, ExitNodeUnavailable, UnknownTailnetHost
from pytsnet.messages.peers import PeerInfo
from pytsnet.wire.dns import SERVICE_V4, SERVICE_V6

SERVICE_ADDRESSES = (SERVICE_V4, SERVICE_V6)

# the errors: re-exported (old path)
__all__ = ["DataplaneNotReady", "ExitNodeUnavailable", "UnknownTailnetHost", "is_ip_literal", "resolve"]


def is_ip_literal(host: str) -> bool:
    """``host`` is an IP address (IPv6 with or without brackets), not a name to resolve."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _addr(prefix: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_interface(prefix).ip


def resolve(host: str, peers: Iterable[PeerInfo], *, ipv6: bool = False,
            routes: Mapping[int, list[str]] | None = None, exit_node: ExitNodeSelection | None = None) -> str:
    """The tailnet address to dial for ``host`` (IPv4 preferred unless ``ipv6``).

    Only admitted peers count: our own address is not dialable (no loopback through the tunnel).
    ``routes``: each peer's AllowedIPs as the engine routes them (``actors.peers.routes.wg_peer_routes``;
    None: own addresses only); ``exit_node``: the selection they were computed with."""
    nodes = list(peers)
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        if ip in SERVICE_ADDRESSES:
            return str(ip)  # the node's own resolver (quad-100): answered inside the node
        tailnet = is_tailnet_ip(ip)
        for n in nodes:
            for prefix in (routes.get(n.node_id, []) if routes is not None else own_addresses(n)):
                net = ipaddress.ip_network(prefix, strict=False)
                if ip in net and not (tailnet and net.prefixlen == 0):  # no tailnet IP via an exit node
                    return str(ip)
        if exit_node is not None and exit_node.reason is not None and not tailnet:
            # an engaged exit node's 0.0.0.0/0 (::/0) would have matched above
            raise ExitNodeUnavailable(str(exit_node.selector), exit_node.reason, host)
        raise UnknownTailnetHost(f"{host} is not an address of any tailnet peer: dial a peer's tailnet IP "
                                 "or MagicDNS name (see dev.status().peers)")
    want = host.lower().rstrip(".")
    for n in nodes:
        fqdn = n.name.lower().rstrip(".")
        short = fqdn.split(".", 1)[0] if fqdn else n.hostname.lower()
        if want and want in {fqdn, short}:
            addrs = sorted((_addr(a) for a in n.addresses), key=lambda a: a.version != (6 if ipv6 else 4))
            if addrs:
                return str(addrs[0])
    raise UnknownTailnetHost(f"{host!r} is not a tailnet peer's MagicDNS name: use a peer's short name, "
                             "FQDN or tailnet IP (see dev.status().peers); tailnet dials never use DNS")
