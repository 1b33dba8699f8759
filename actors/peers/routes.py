"""Which peer routes this node uses: the exit node selection and the WireGuard AllowedIPs per peer.

Pure functions of the admitted peers and the app's ``RoutePrefs``; the bridge uses them to configure
the engine and the device to decide (and refuse) dials, so both always agree.

Facts (Go ``net/routemanager``, ``peerViewOf``/``eligible``, which replaced ``wgcfg/nmcfg.go``): a
peer's ``AllowedIPs`` splits into its own addresses (its ``Addresses`` and any single tailnet IP),
always routed, and its routes; an exit route (``0.0.0.0/0``, ``::/0``) is used only for the selected
exit node, any other route only with ``RouteAll`` (our ``accept_routes``; tsnet leaves Go's
``DefaultRouteAll`` in place, false on Linux/macOS, so the default is False here too). A prefix with
host bits set is skipped (Go logs and skips it). Control puts only approved exit routes and the
subnet routes a node is primary for into ``AllowedIPs``; we never route by anything else.

The exit node's health reasons name Go's "exit node unavailable" warning (tailscale#21014):
``not-yet-selected`` (no netmap yet), ``not-in-tailnet`` (no peer matches the selector),
``offline`` (control says ``Online: false``), ``no-exit-routes`` (its AllowedIPs hold no exit route).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pytsnet.messages.peers import ExitNodeInfo, PeerInfo, RoutePrefs

__all__ = ["EXIT_ROUTES", "TAILNET_V4", "TAILNET_V6", "ExitNodeSelection", "ExitReason", "allowed_ips",
           "is_tailnet_ip", "offers_exit", "own_addresses", "select_exit_node", "wg_peer_routes"]

ExitReason = Literal["not-yet-selected", "not-in-tailnet", "offline", "no-exit-routes"]

EXIT_V4, EXIT_V6 = ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")
EXIT_ROUTES = (EXIT_V4, EXIT_V6)
TAILNET_V4 = ipaddress.ip_network("100.64.0.0/10")
TAILNET_V6 = ipaddress.ip_network("fd7a:115c:a1e0::/48")

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_tailnet_ip(ip: _Addr) -> bool:
    """In Tailscale's address ranges (Go ``tsaddr.IsTailscaleIP``, without the ChromeOS hole)."""
    return ip in (TAILNET_V4 if ip.version == 4 else TAILNET_V6)


def _net(prefix: str) -> _Net | None:
    """A canonical prefix (a bare IP is a host route), or None for garbage or host bits set."""
    try:
        return ipaddress.ip_network(prefix, strict=True)
    except ValueError:
        return None


def _split(peer: PeerInfo) -> tuple[list[_Net], list[_Net]]:
    """The peer's own addresses and its routes (Go ``peerViewOf``: single tailnet IPs are its own)."""
    own: list[_Net] = []
    for a in peer.addresses:
        try:
            own.append(ipaddress.ip_interface(a).network)
        except ValueError:
            continue
    routes: list[_Net] = []
    for p in peer.allowed_ips:
        n = _net(p)
        if n is None or n in own:
            continue
        if n.num_addresses == 1 and is_tailnet_ip(n.network_address):
            own.append(n)
        else:
            routes.append(n)
    return own, routes


def own_addresses(peer: PeerInfo) -> list[str]:
    """Only the peer's own addresses (no route of any kind): the AllowedIPs with no prefs at all."""
    return [str(n) for n in dict.fromkeys(_split(peer)[0])]


def offers_exit(peer: PeerInfo) -> bool:
    """Control gave it an exit route (approved ``0.0.0.0/0`` or ``::/0``) in its AllowedIPs."""
    return any(r in EXIT_ROUTES for r in _split(peer)[1])


def _matches(selector: str, peer: PeerInfo) -> bool:
    """Go selects by stable ID or IP (prefs ``ExitNodeID``/``ExitNodeIP``); tsnet apps also name it."""
    if selector == peer.stable_id and selector:
        return True
    try:
        ip = ipaddress.ip_address(selector.strip("[]"))
    except ValueError:
        want = selector.lower().rstrip(".")
        fqdn = peer.name.lower().rstrip(".")
        short = fqdn.split(".", 1)[0] if fqdn else peer.hostname.lower()
        return bool(want) and want in (fqdn, short)
    return any(ip == ipaddress.ip_interface(a).ip for a in peer.addresses)


@dataclass(frozen=True)
class ExitNodeSelection:
    """The selector resolved against one netmap: the engaged node, or why none is (``reason``)."""

    selector: str | None = None
    node: PeerInfo | None = None
    reason: ExitReason | None = None

    @property
    def selected(self) -> bool:
        return self.selector is not None

    @property
    def engaged(self) -> bool:
        return self.node is not None

    def info(self) -> ExitNodeInfo | None:
        n = self.node
        if n is None:
            return None
        addrs = sorted((ipaddress.ip_interface(a).ip for a in n.addresses), key=lambda a: a.version)
        return ExitNodeInfo(stable_id=n.stable_id, name=n.name, address=str(addrs[0]) if addrs else "")


def select_exit_node(selector: str | None, peers: Iterable[PeerInfo], *,
                     have_netmap: bool) -> ExitNodeSelection:
    """Which admitted peer is the exit node now, fail closed: anything doubtful engages none."""
    if selector is None:
        return ExitNodeSelection()
    if not have_netmap:
        return ExitNodeSelection(selector, reason="not-yet-selected")
    found = next((p for p in peers if _matches(selector, p)), None)
    if found is None:
        return ExitNodeSelection(selector, reason="not-in-tailnet")
    if found.online is False:
        return ExitNodeSelection(selector, reason="offline")
    if not offers_exit(found):
        return ExitNodeSelection(selector, reason="no-exit-routes")
    return ExitNodeSelection(selector, node=found)


def allowed_ips(peer: PeerInfo, prefs: RoutePrefs, exit_node: ExitNodeSelection, *, ipv6: bool) -> list[str]:
    """The prefixes the engine routes to ``peer`` and accepts from it (WireGuard AllowedIPs).

    Its own addresses always; exit routes only if it is the engaged exit node (``::/0`` only when our
    node has IPv6); other routes only with ``accept_routes``."""
    own, routes = _split(peer)
    out = list(own)
    engaged = exit_node.node is not None and exit_node.node.node_id == peer.node_id
    for r in routes:
        if r in EXIT_ROUTES:
            if engaged and (r.version == 4 or ipv6):
                out.append(r)
        elif prefs.accept_routes:
            out.append(r)
    return [str(n) for n in dict.fromkeys(out)]


def wg_peer_routes(peers: Iterable[PeerInfo], prefs: RoutePrefs, exit_node: ExitNodeSelection, *,
                   ipv6: bool) -> dict[int, list[str]]:
    """``allowed_ips`` of every peer, by node ID."""
    return {p.node_id: allowed_ips(p, prefs, exit_node, ipv6=ipv6) for p in peers}
