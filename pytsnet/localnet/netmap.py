"""MapResponse composition: the full network map for one node, and the delta between two maps.

A map stream remembers what it last sent (a :class:`SentState`); after any change in the tailnet
it asks :func:`delta` for the smallest MapResponse that brings the client up to date: ``Node`` if
the self node changed, ``PeersRemoved`` for vanished peers, ``PeersChangedPatch`` when only
patchable fields changed (endpoints, DERP home, disco key, online, …), ``PeersChanged`` with the
full node otherwise (only the peers that changed: a Hostinfo change is one ``PeersChanged`` entry,
since ``tailcfg.PeerChange`` has no Hostinfo), plus ``PacketFilter`` / ``UserProfiles`` /
``DERPMap`` when they changed. The JSON keys are Go's field names (``tailcfg/tailcfg.go``).

One :class:`Tailnet` snapshot serves every stream woken by a change: it builds each peer's JSON
once (:meth:`Tailnet.peer_json`) and every stream's delta shares (and never mutates) it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pytsnet.localnet.routes import node_routes, primary_of, relayable
from pytsnet.localnet.store import Node, User
from pytsnet.wire.tailcfg.tka import CAPABILITY_TAILNET_LOCK  # 21c

JSON = dict[str, Any]
DEFAULT_DOMAIN = "localnet.ts.net"
#: Node capabilities every node gets (``tailcfg.NodeCapMap``). ``https`` (``tailcfg.CapabilityHTTPS``)
#: only on a tailnet with HTTPS enabled (``Tailnet.https``, localnet ``--https``), as Tailscale's control.
DEFAULT_CAPMAP: JSON = {"file-sharing": [],
                        "https://tailscale.com/cap/file-sharing": []}  # 22a: Go's CapabilityFileSharing
#: Node fields a ``PeersChangedPatch`` entry can carry, and the patch's key for each.
PATCHABLE = {"HomeDERP": "DERPRegion", "DERP": None, "Endpoints": "Endpoints", "DiscoKey": "DiscoKey",
             "Online": "Online", "LastSeen": "LastSeen", "Key": "Key", "KeyExpiry": "KeyExpiry",
             "Cap": "Cap", "CapMap": "CapMap"}
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ts: float | None) -> str:
    if ts is None:
        return ZERO_TIME
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_LABEL_BAD = re.compile(r"[^a-z0-9-]+")


def dns_label(hostname: str) -> str:
    """A DNS label from a client's hostname (what MagicDNS answers for)."""
    label = _LABEL_BAD.sub("-", hostname.lower()).strip("-")[:63]
    return label or "node"


def given_names(nodes: Sequence[Node]) -> dict[int, str]:
    """Unique MagicDNS labels: the oldest node keeps its hostname, later clashes get ``-<id>``."""
    seen: set[str] = set()
    out: dict[int, str] = {}
    for n in sorted(nodes, key=lambda n: n.id):
        label = dns_label(n.hostname)
        if label in seen:
            label = f"{label}-{n.id}"
        seen.add(label)
        out[n.id] = label
    return out


@dataclass
class Tailnet:
    """A consistent snapshot of everything a map is built from."""

    nodes: list[Node]
    users: list[User]
    online: set[int]
    packet_filter: list[JSON]
    derp_map: JSON
    domain: str = DEFAULT_DOMAIN
    capmap: JSON = field(default_factory=lambda: dict(DEFAULT_CAPMAP))
    names: dict[int, str] = field(default_factory=dict)
    dns: JSON | None = None
    """``tailcfg.DNSConfig`` (None: ``dns_config(domain)``, MagicDNS on with no extras)."""
    now: float = field(default_factory=time.time)
    node_capmap: dict[int, JSON] = field(default_factory=dict)
    """Node ID → attributes only that node gets, over ``capmap`` (Funnel's, 20c)."""
    """The instant the snapshot was taken: node keys whose expiry is not after it are expired."""
    primaries: dict[str, int] = field(default_factory=dict)
    """Subnet prefix → the node ID primary for it (:func:`pytsnet.localnet.routes.elect`)."""
    https: bool = False
    """HTTPS enabled (20a): every node gets the ``https`` capability and its own MagicDNS name as its
    ``DNSConfig.CertDomains``."""
    service_routes: dict[int, list[str]] = field(default_factory=dict)
    """Services (20d): node ID → the VIP /32s peers route to it (:mod:`pytsnet.localnet.services`)."""
    service_caps: dict[int, JSON] = field(default_factory=dict)
    """Services (20d): node ID → its ``service-host`` value (services → VIPs), on its self node only."""
    tka_info: JSON | None = None
    """``TKAInfo`` every map carries (None: the lock was never used; :mod:`pytsnet.localnet.tka`)."""
    key_sigs: dict[int, str] = field(default_factory=dict)
    """Node ID → its ``KeySignature`` (base64 NodeKeySignature) while the lock is on."""
    # -- unsigned peerAPI-only (21h) --
    unsigned_peer_api_only: frozenset[int] = frozenset()
    """Node IDs sent with ``UnsignedPeerAPIOnly`` (not subject to the lock; peers confine them to peerAPI)."""
    ssh_policies: dict[int, JSON] = field(default_factory=dict)
    """Node ID → its ``SSHPolicy`` (policy.json's ``ssh``; absent: the node gets none)."""

    _by_id: dict[int, Node] = field(default_factory=dict, init=False, repr=False)
    _peer_json: dict[int, JSON] = field(default_factory=dict, init=False, repr=False)
    _visible: list[Node] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.names:
            self.names = given_names(self.nodes)
        if self.https:
            self.capmap = {**self.capmap, "https": []}
        self._by_id = {n.id: n for n in self.nodes}

    def node(self, node_id: int) -> Node | None:
        return self._by_id.get(node_id)

    def peer_json(self, n: Node) -> JSON:
        """``n`` as every peer sees it, built once per snapshot (shared: callers must not mutate it)."""
        out = self._peer_json.get(n.id)
        if out is None:
            out = self._peer_json[n.id] = node_json(n, self)
        return out

    def visible_nodes(self) -> list[Node]:
        """Nodes that belong in netmaps: authorized and not logged out."""
        if self._visible is None:
            self._visible = [n for n in self.nodes if n.authorized and not n.logged_out]
        return self._visible

    def expired(self, n: Node) -> bool:
        return n.key_expiry is not None and n.key_expiry <= self.now


def node_json(n: Node, net: Tailnet, *, cap: int = 0) -> JSON:
    """One ``tailcfg.Node``. ``AllowedIPs`` = its addresses + its approved exit routes + the subnet
    routes it is primary for, ``PrimaryRoutes`` = those subnet routes (:mod:`routes`). An expired
    node is sent as Tailscale's control sends it: ``Expired``, no endpoints and no DERP home (peers
    then cannot reach it; Go's ``flagExpiredPeers`` does the same)."""
    addrs = ([f"{n.ipv4}/32"] if n.ipv4 else []) + ([f"{n.ipv6}/128"] if n.ipv6 else [])  # none while pending
    out: JSON = {
        "ID": n.id,
        "StableID": n.stable_id,
        "Name": f"{net.names.get(n.id, dns_label(n.hostname))}.{net.domain}.",
        "User": n.user_id,
        "Key": n.node_key,
        "KeyExpiry": rfc3339(n.key_expiry),
        "Machine": n.machine_key,
        "DiscoKey": n.disco_key or None,
        "Addresses": addrs,
        "AllowedIPs": addrs + node_routes(n, net.primaries) + net.service_routes.get(n.id, []),
        "Endpoints": list(n.endpoints),
        "HomeDERP": n.home_derp,
        "Hostinfo": _peer_hostinfo(n.hostinfo),
        "Created": rfc3339(n.created),
        "Tags": list(n.tags),
        "MachineAuthorized": n.authorized,
        "Online": n.id in net.online,
        "CapMap": {**net.capmap, **net.node_capmap.get(n.id, {})},  # node_capmap: Funnel (20c)
        "Capabilities": sorted({**net.capmap, **net.node_capmap.get(n.id, {})}),
    }
    primary = primary_of(n, net.primaries)
    if primary:  # tailcfg.Node.PrimaryRoutes is omitempty
        out["PrimaryRoutes"] = primary
    if net.expired(n):
        out.update(Expired=True, Endpoints=[], HomeDERP=0)
    elif n.home_derp:
        out["DERP"] = f"127.3.3.40:{n.home_derp}"
    if cap:
        out["Cap"] = cap
    if n.id not in net.online and n.last_seen is not None:
        out["LastSeen"] = rfc3339(n.last_seen)
    if out["DiscoKey"] is None:
        del out["DiscoKey"]
    sig = net.key_sigs.get(n.id)  # 21c: tailcfg.Node.KeySignature is omitempty
    if sig:
        out["KeySignature"] = sig
    # -- unsigned peerAPI-only (21h) --
    if n.id in net.unsigned_peer_api_only:  # tailcfg.Node.UnsignedPeerAPIOnly is omitempty
        out["UnsignedPeerAPIOnly"] = True
    return out


def _peer_hostinfo(hi: dict[str, object]) -> JSON:
    """The stored Hostinfo as sent in maps: ``RoutableIPs`` cut to what Go can parse."""
    out = dict(hi)
    if "RoutableIPs" in out:
        out["RoutableIPs"] = relayable(out["RoutableIPs"])
    return out


def user_profiles(users: Iterable[User]) -> list[JSON]:
    return [{"ID": u.id, "LoginName": u.login_name, "DisplayName": u.display_name} for u in users]


def dns_config(domain: str) -> JSON:
    """MagicDNS on (``Proxied``), the tailnet domain as search domain, no upstream resolvers."""
    return {"Domains": [domain], "Proxied": True, "Resolvers": []}


def net_dns(net: Tailnet) -> JSON:
    return net.dns if net.dns is not None else dns_config(net.domain)


def cert_domain(node_id: int, net: Tailnet) -> str:
    """The one name a node may get a TLS cert for: its MagicDNS name, without the trailing dot."""
    node = net.node(node_id)
    label = net.names.get(node_id, dns_label(node.hostname if node is not None else ""))
    return f"{label}.{net.domain}"


def cert_domains(node_id: int, net: Tailnet) -> list[str]:
    """Every name a node may get a TLS cert for: its MagicDNS name, then (20f) the FQDN of each service
    control approved it to host (``<label>.<domain>``: Go's ``ListenService`` HTTPS asks for it)."""
    hosted = sorted(net.service_caps.get(node_id) or {})
    return [cert_domain(node_id, net), *(f"{s.removeprefix('svc:')}.{net.domain}" for s in hosted)]


def node_dns(node_id: int, net: Tailnet) -> JSON:
    """``DNSConfig`` for one node: the tailnet's, plus its ``CertDomains`` when HTTPS is enabled (20a)."""
    dns = net_dns(net)
    return {**dns, "CertDomains": cert_domains(node_id, net)} if net.https else dns


@dataclass
class SentState:
    """What one map stream has told its client so far."""

    node: JSON | None = None
    peers: dict[int, JSON] = field(default_factory=dict)
    packet_filter: list[JSON] | None = None
    user_ids: set[int] = field(default_factory=set)
    derp_map: JSON | None = None
    dns: JSON | None = None
    tka_info: JSON | None = None  # 21c
    ssh_policy: JSON | None = None  # 22b


def _peers(self_id: int, net: Tailnet) -> dict[int, JSON]:
    """Every other visible node; none for a node whose own key expired (it must re-authenticate)."""
    me = net.node(self_id)
    if me is None or net.expired(me):
        return {}
    return {n.id: net.peer_json(n) for n in net.visible_nodes() if n.id != self_id}


def _self(self_id: int, net: Tailnet, cap: int) -> JSON | None:
    me = net.node(self_id)
    if me is None:
        return None
    out = node_json(me, net, cap=cap)
    host = net.service_caps.get(self_id)
    if host:  # 20d: the VIPs this host accepts (tailcfg.NodeAttrServiceHost, one value)
        out["CapMap"] = {**out["CapMap"], "service-host": [host]}
        out["Capabilities"] = sorted(out["CapMap"])
    # 21c: a Go node ignores Tailnet Lock without this capability (network-lock.go capTailnetLock)
    out["CapMap"] = {**out["CapMap"], CAPABILITY_TAILNET_LOCK: []}
    out["Capabilities"] = sorted(out["CapMap"])
    return out


def full_map(self_id: int, net: Tailnet, state: SentState, *, cap: int = 0,
             omit_peers: bool = False, now: float | None = None) -> JSON:
    """The first MapResponse of a stream (or the only one of a non-streaming request)."""
    node = _self(self_id, net, cap)
    if node is None:
        raise KeyError(self_id)
    peers = {} if omit_peers else _peers(self_id, net)
    users = user_profiles(net.users)
    resp: JSON = {
        "Node": node,
        "DERPMap": net.derp_map,
        "Domain": net.domain,
        "PacketFilter": net.packet_filter,
        "DNSConfig": node_dns(self_id, net),
        "UserProfiles": users,
        "ControlTime": rfc3339(time.time() if now is None else now),
    }
    if not omit_peers:
        resp["Peers"] = [peers[i] for i in sorted(peers)]
    if net.tka_info is not None:  # 21c
        resp["TKAInfo"] = net.tka_info
    state.tka_info = net.tka_info
    state.ssh_policy = net.ssh_policies.get(self_id)  # 22b
    if state.ssh_policy is not None:
        resp["SSHPolicy"] = state.ssh_policy
    state.node, state.peers, state.packet_filter = node, peers, net.packet_filter
    state.user_ids, state.derp_map = {u.id for u in net.users}, net.derp_map
    state.dns = resp["DNSConfig"]
    return resp


def _patch(old: JSON, new: JSON) -> JSON | None:
    """A PeersChangedPatch entry if only patchable fields differ, else None (send the full node)."""
    keys = set(old) | set(new)
    changed = {k for k in keys if old.get(k) != new.get(k)}
    if not changed <= set(PATCHABLE):
        return None
    patch: JSON = {"NodeID": new["ID"]}
    for k in sorted(changed):
        pk = PATCHABLE[k]
        if pk is None:
            continue
        if k not in new:  # e.g. LastSeen dropped while coming online: not expressible as a patch
            if k == "LastSeen":
                continue
            return None
        patch[pk] = new[k]
    return patch


def delta(self_id: int, net: Tailnet, state: SentState, *, cap: int = 0) -> JSON | None:
    """The MapResponse that moves the client from ``state`` to ``net`` (None when nothing changed).

    Raises KeyError when the self node no longer exists (the stream should end).
    """
    node = _self(self_id, net, cap)
    if node is None:
        raise KeyError(self_id)
    resp: JSON = {}
    if node != state.node:
        resp["Node"] = node
    peers = _peers(self_id, net)
    removed = sorted(set(state.peers) - set(peers))
    if removed:
        resp["PeersRemoved"] = removed
    changed, patches = [], []
    for pid in sorted(peers):
        old, new = state.peers.get(pid), peers[pid]
        if old is new or old == new:  # shared JSON: identity first
            continue
        p = None if old is None else _patch(old, new)
        if p is None:
            changed.append(new)
        elif len(p) > 1:
            patches.append(p)
    if changed:
        resp["PeersChanged"] = changed
    if patches:
        resp["PeersChangedPatch"] = patches
    if net.packet_filter != state.packet_filter:
        resp["PacketFilter"] = net.packet_filter
    new_users = [u for u in net.users if u.id not in state.user_ids]
    if new_users:
        resp["UserProfiles"] = user_profiles(new_users)
    if net.derp_map != state.derp_map:
        resp["DERPMap"] = net.derp_map
    state.node, state.peers, state.packet_filter = node, peers, net.packet_filter
    state.user_ids, state.derp_map = {u.id for u in net.users}, net.derp_map
    if node_dns(self_id, net) != state.dns:
        resp["DNSConfig"] = state.dns = node_dns(self_id, net)
    if net.tka_info != state.tka_info and net.tka_info is not None:  # 21c: nil TKAInfo = unchanged
        resp["TKAInfo"] = net.tka_info
    state.tka_info = net.tka_info
    ssh = net.ssh_policies.get(self_id)  # 22b: nil = unchanged, so a removed ssh section sends no rules
    if ssh != state.ssh_policy:
        resp["SSHPolicy"] = ssh if ssh is not None else {"rules": []}
        state.ssh_policy = ssh
    return resp or None
