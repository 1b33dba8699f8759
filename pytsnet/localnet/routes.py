"""Subnet routes and exit nodes on the local control server: what a node advertises, what an admin
(or the policy's ``autoApprovers``) approved, and which node is primary for each subnet route.

A node advertises routes in ``Hostinfo.RoutableIPs`` (Go's ``ipn.Prefs.AdvertiseRoutes``; an exit
node advertises both ``0.0.0.0/0`` and ``::/0``, Go's ``tsaddr.ExitRoutes``). Control records them
(:func:`parse_advertised`: canonical prefixes only, at most ``MAX_ADVERTISED``, the rest counted and
ignored) and keeps the approvals, which persist across re-advertising. A route is *effective* when it
is both advertised and approved. In the netmap (Go's control is closed; this follows Tailscale's docs
and headscale): ``tailcfg.Node.AllowedIPs`` = the node's addresses + its effective exit routes + the
subnet routes it is primary for; ``Node.PrimaryRoutes`` = those subnet routes. One primary per subnet
prefix among online, authorized, unexpired nodes for which it is effective (:func:`elect`): the
current primary stays while it qualifies (sticky), else the lowest node ID takes over (failover).
Exit routes have no primary: every approved exit node offers them.

Approving either exit route approves both (Tailscale's admin console has one "use as exit node"
switch). Prefixes overlapping the tailnet's own ranges (100.64.0.0/10, fd7a:115c:a1e0::/48) other than
the exit routes are refused: a subnet route there would take over peers' addresses.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytsnet.localnet.store import Node, Store

EXIT_ROUTES = ("0.0.0.0/0", "::/0")
MAX_ADVERTISED = 256
"""Routes recorded per node; more are counted and ignored. Go has no bound; the Hostinfo size cap
(16 KiB) already holds a node to a few hundred, and 256 is far above any real subnet router."""
TAILNET_RANGES = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("fd7a:115c:a1e0::/48"))

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


class RouteError(ValueError):
    """An approval names a prefix that is malformed or that the node does not advertise."""


def canonical(text: object) -> str | None:
    """``text`` as a canonical prefix string, or None if it is not one we record (malformed, host
    bits set, zoned, or inside the tailnet's own ranges without being an exit route)."""
    if not isinstance(text, str) or "/" not in text or "%" in text or len(text) > 64:
        return None
    try:
        net = ipaddress.ip_network(text)  # strict: host bits set is refused, as Go's client does
    except ValueError:
        return None
    out = str(net)
    if out in EXIT_ROUTES:
        return out
    if any(net.version == r.version and net.overlaps(r) for r in TAILNET_RANGES):
        return None
    return out


def parse_advertised(raw: object) -> tuple[list[str], int]:
    """``Hostinfo.RoutableIPs`` → (canonical routes, deduplicated and sorted; how many entries were
    ignored as garbage or beyond ``MAX_ADVERTISED``)."""
    if not isinstance(raw, list):
        return [], 0 if raw is None else 1
    good: dict[str, None] = {}
    bad = 0
    for item in raw:
        c = canonical(item)
        if c is None or (c not in good and len(good) >= MAX_ADVERTISED):
            bad += 1
        else:
            good[c] = None
    return sorted(good, key=_sort_key), bad


def _sort_key(prefix: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(prefix)
    return net.version, int(net.network_address), net.prefixlen


_GO_PREFIX = re.compile(r"[0-9a-fA-F:.]{2,45}/[0-9]{1,3}")


def relayable(raw: object) -> list[str]:
    """The ``RoutableIPs`` entries a Go peer can unmarshal (``netip.ParsePrefix``: an address, "/",
    decimal bits; no zone, no netmask form), in the node's order. Peers get its Hostinfo with only
    these: one unparsable entry makes Go refuse the whole MapResponse."""
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw:
        if isinstance(item, str) and _GO_PREFIX.fullmatch(item):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                continue
            out.append(item)
    return out


def is_exit(prefix: str) -> bool:
    return prefix in EXIT_ROUTES


def normalize_approval(node: Node, prefixes: Iterable[str]) -> list[str]:
    """What approving ``prefixes`` on ``node`` stores: canonical, each advertised by the node
    (``RouteError`` otherwise), one exit route bringing the other if the node advertises it."""
    out: dict[str, None] = {}
    for p in prefixes:
        c = canonical(p)
        if c is None:
            raise RouteError(f"{p!r} is not a route prefix (CIDR with host bits clear, outside the tailnet)")
        if c not in node.advertised_routes:
            raise RouteError(f"node {node.id} ({node.hostname}) does not advertise {c}; it advertises "
                             f"{', '.join(node.advertised_routes) or 'nothing'}")
        out[c] = None
        if is_exit(c):
            out.update((e, None) for e in EXIT_ROUTES if e in node.advertised_routes)
    return sorted(out, key=_sort_key)


def effective(node: Node) -> list[str]:
    """Routes both advertised and approved (approvals of routes no longer advertised wait)."""
    approved = set(node.approved_routes)
    return [r for r in node.advertised_routes if r in approved]


def elect(nodes: Iterable[Node], eligible: set[int], previous: Mapping[str, int]) -> dict[str, int]:
    """Subnet prefix → primary node ID. ``eligible``: the IDs that may serve (online, authorized,
    unexpired). The previous primary keeps a prefix while it is eligible and the route effective;
    otherwise the eligible node with the lowest ID does; a prefix nobody eligible serves has none."""
    serving: dict[str, list[int]] = {}
    for n in sorted(nodes, key=lambda n: n.id):
        if n.id not in eligible:
            continue
        for r in effective(n):
            if not is_exit(r):
                serving.setdefault(r, []).append(n.id)
    return {r: (previous[r] if previous.get(r) in ids else ids[0]) for r, ids in serving.items()}


@dataclass(frozen=True)
class RouteStatus:
    """One node's routes as the admin sees them (``nodes routes``, ``LocalTailnet.routes``)."""

    advertised: list[str]
    approved: list[str]
    primary: list[str]
    """Subnet routes this node is primary for (exit routes have no primary)."""

    def to_json(self) -> dict[str, list[str]]:
        return {"advertised": self.advertised, "approved": self.approved, "primary": self.primary}


def node_routes(node: Node, primaries: Mapping[str, int]) -> list[str]:
    """Routes ``node`` carries in AllowedIPs: its effective exit routes + subnets it is primary for."""
    return [r for r in effective(node) if is_exit(r) or primaries.get(r) == node.id]


def primary_of(node: Node, primaries: Mapping[str, int]) -> list[str]:
    return sorted((r for r, nid in primaries.items() if nid == node.id), key=_sort_key)


META_PRIMARIES = "primary_routes"
"""Meta key of the last election (JSON prefix → node ID), for the admin CLI (another process). A
restarted server starts from it, but its first snapshot has no node online, so after a restart the
first advertiser to come back becomes primary."""


def load_primaries(store: Store) -> dict[str, int]:
    raw = store.get_meta(META_PRIMARIES)
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): v for k, v in doc.items() if isinstance(v, int)}


def save_primaries(store: Store, primaries: Mapping[str, int]) -> None:
    store.set_meta(META_PRIMARIES, json.dumps(dict(sorted(primaries.items()))))


def route_status(store: Store, node: Node) -> RouteStatus:
    """``node``'s advertised, approved and primary routes (primaries as the server last elected)."""
    return RouteStatus(advertised=list(node.advertised_routes),
                       approved=sorted(node.approved_routes, key=_sort_key),
                       primary=primary_of(node, load_primaries(store)))


def approve_routes(store: Store, node: Node, prefixes: Iterable[str]) -> list[str]:
    """Replace ``node``'s approved routes with ``prefixes`` (an empty list unapproves all);
    ``RouteError`` (nothing stored) if one is malformed or not advertised by the node."""
    approved = normalize_approval(node, prefixes)
    store.update_node(node.id, approved_routes=approved)
    return approved
