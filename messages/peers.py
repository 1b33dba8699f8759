"""Messages of the peer table (PeerTracker): netmap snapshots in, admitted peers and change events out.

Keys travel as their text forms (``nodekey:…``) so every message round-trips through JSON; the
tracker re-parses them at its trust chokepoint rather than trusting the sender.
"""

from __future__ import annotations

import base64
import binascii

from pytsnet.messages.base import Message, Request
from pytsnet.wire.control.expiry import key_expired, node_key_expiry
from pytsnet.wire.tailcfg import Node

PEERAPI_DNS_PROXY = "peerapi-dns-proxy"
"""Hostinfo service of a node serving DoH on its peerAPI to exit-node clients (Go ``tailcfg.PeerAPIDNS``)."""


def _key_text(key: object) -> str:
    return "" if key is None else str(key.to_text())  # type: ignore[attr-defined]


class PeerInfo(Message):
    """What the node knows about one tailnet node (a peer, or itself)."""

    node_id: int = 0
    stable_id: str = ""
    name: str = ""
    """MagicDNS FQDN with the trailing dot."""
    hostname: str = ""
    user: int = 0
    node_key: str = ""
    machine_key: str = ""
    disco_key: str = ""
    addresses: list[str] = []
    allowed_ips: list[str] = []
    endpoints: list[str] = []
    home_derp: int = 0
    online: bool | None = None
    tags: list[str] = []
    key_expiry: float | None = None
    """Unix seconds; None = never expires."""
    machine_authorized: bool = False
    expired: bool = False
    peerapi_ports: dict[str, int] = {}
    """Its peerAPI, from Hostinfo ``Services``: ``peerapi4``/``peerapi6`` → TCP port (Go ``peerAPIPorts``)."""
    primary_routes: list[str] = []
    """Subnet routes control made this node the primary router for (``Node.PrimaryRoutes``)."""
    dns_proxy: bool = False
    """It serves DoH for its exit-node clients: Hostinfo ``Services`` has ``peerapi-dns-proxy``
    (Go ``peerCanProxyDNS``, service branch)."""
    key_signature: bytes = b""
    """Its Tailnet Lock ``KeySignature`` (a serialized ``NodeKeySignature``; empty: unsigned)."""
    unsigned_peer_api_only: bool = False
    """Go ``Node.UnsignedPeerAPIOnly``: control says it is not subject to the lock (peerAPI only)."""

    def key_expired(self, now: float) -> bool:
        """Control marked the key expired, or its ``KeyExpiry`` is not after ``now``."""
        return key_expired(self.expired, self.key_expiry, now)

    @classmethod
    def from_node(cls, n: Node) -> PeerInfo:
        return cls(
            node_id=n.ID, stable_id=n.StableID, name=n.Name,
            hostname=n.Hostinfo.Hostname if n.Hostinfo is not None else "",
            user=n.User, node_key=_key_text(n.Key), machine_key=_key_text(n.Machine),
            disco_key=_key_text(n.DiscoKey), addresses=list(n.Addresses),
            allowed_ips=list(n.Addresses if n.AllowedIPs is None else n.AllowedIPs),
            endpoints=list(n.Endpoints), home_derp=n.HomeDERP, online=n.Online, tags=list(n.Tags),
            key_expiry=node_key_expiry(n),
            machine_authorized=n.MachineAuthorized, expired=n.Expired,
            peerapi_ports={s.Proto: s.Port for s in (n.Hostinfo.Services if n.Hostinfo is not None else [])
                           if s.Proto in ("peerapi4", "peerapi6") and 0 < s.Port < 65536},
            primary_routes=list(n.PrimaryRoutes),
            dns_proxy=any(s.Proto == PEERAPI_DNS_PROXY and s.Port >= 1
                          for s in (n.Hostinfo.Services if n.Hostinfo is not None else [])),
            key_signature=_signature_bytes(n.KeySignature),
            unsigned_peer_api_only=n.UnsignedPeerAPIOnly,
        )


def _signature_bytes(text: str) -> bytes:
    """``Node.KeySignature`` (Go ``[]byte``: std base64 in JSON). Bad base64 counts as no signature,
    so under a lock such a peer is refused ("missing signature"), never admitted."""
    try:
        return base64.b64decode(text, validate=True) if text else b""
    except (binascii.Error, ValueError):
        return b""


class RejectedPeer(Message):
    """A peer the tracker refused, and why; with what Go's ``ipnstate.TKAPeer`` shows of a peer the
    lock filtered (21i: name, stable ID, addresses, node key and its signature as the netmap gave
    them; empty when unknown)."""

    node_id: int
    reason: str
    name: str = ""
    stable_id: str = ""
    addresses: list[str] = []
    """The peer's ``Addresses`` prefixes (``100.64.0.5/32``), as ``PeerInfo``."""
    node_key: str = ""
    key_signature: bytes = b""
    """Its ``KeySignature`` (a serialized ``NodeKeySignature``; empty: unsigned)."""


class NetmapUpdate(Message, tag="peers.netmap_update"):
    """The whole current peer list after a MapResponse (deltas already applied by the map session)."""

    self_node: PeerInfo
    peers: list[PeerInfo] = []
    domain: str = ""
    tka_enabled: bool = False
    """The netmap says Tailnet Lock is on (``TKAInfo`` present, not ``Disabled``): peers need a
    signature the TKA actor's verified authority accepts."""
    tka_head: str = ""
    """Control's TKA head (base32 text; "" if none)."""


class PeerExpiryTick(Message, tag="peers.expiry_tick"):
    """PeerTracker's own timer: a node key (a peer's or ours) reached its ``KeyExpiry`` (Go's
    ``nmExpiryTimer``); the last netmap is admitted again so the expired key leaves the table."""

    at: float = 0.0
    """The expiry (Unix seconds) the timer was armed for."""


class ResendNetmap(Message, tag="peers.resend_netmap"):
    """Told by a restarted PeerTracker to the netmap's sender (the ControlRunner): the new incarnation
    has no peer table, so tell it the current ``NetmapUpdate`` again. Until it arrives the tracker
    admits no one; the re-sent netmap is admitted afresh (keys, expiry by the clock now)."""


class ClearPeers(Message, tag="peers.clear"):
    """Forget every peer (logout, or the control session ended for good)."""


class PeerTable(Message, tag="peers.table"):
    """Reply to ``GetPeers``: admitted peers sorted by node ID, and who was refused and why."""

    peers: list[PeerInfo] = []
    rejected: list[RejectedPeer] = []
    locked_out: bool = False
    """Tailnet Lock is on and our own node key is not authorized by it (Go's ``healthmsg.LockedOut``):
    signed peers will not talk to us until we are signed."""


class GetPeers(Request[PeerTable], tag="peers.get"):
    pass


class PeersChanged(Message, tag="peers.changed"):
    """Published to the device's listener after a netmap changed the admitted set."""

    added: list[PeerInfo] = []
    changed: list[PeerInfo] = []
    removed: list[int] = []
    peers: list[PeerInfo] = []
    """The whole table after the change."""


class PeerTrackerSpawn(Message, tag="peers.spawn"):
    """The PeerTracker's spawn message: who is told each ``PeersChanged``, by name (the route from
    the trust chokepoint to the data plane and the device, readable off the tree), and who sends it
    netmaps."""

    subscribers: tuple[str, ...] = ()
    control: str = ""
    """The netmap's sender, told ``ResendNetmap`` by a restarted tracker (empty: none)."""
    tka: str = ""
    """The TKA authority actor, told ``TkaAuthorityWanted`` by a restarted tracker (empty: none)."""


class RoutePrefs(Message, tag="peers.route_prefs"):
    """Which peer routes this node uses (Go prefs ``ExitNodeID``/``ExitNodeIP`` and ``RouteAll``).

    ``exit_node`` is the app's selector (stable ID, tailnet IP or MagicDNS name; None: no exit node);
    it is resolved against each netmap (``actors.peers.routes.select_exit_node``)."""

    exit_node: str | None = None
    accept_routes: bool = False


class ExitNodeInfo(Message):
    """The engaged exit node (``dev.active_exit_node()``, ``status().exit_node``): resolved, not the
    selector."""

    stable_id: str
    name: str
    """MagicDNS FQDN with the trailing dot."""
    address: str
    """Its tailnet IPv4 (IPv6 if it has none)."""


class RoutePrefsSet(Message, tag="peers.route_prefs_set"):
    prefs: RoutePrefs
    exit_node: ExitNodeInfo | None = None
    """The exit node the engine and resolver were just plumbed with (the bridge's netmap, which may
    lag the device's peer list): engaged here means the resolver already has its DoH."""


class SetRoutePrefs(Request[RoutePrefsSet], tag="peers.set_route_prefs"):
    """Device → bridge: use these prefs from now on (the engine is re-plumbed before the reply)."""

    prefs: RoutePrefs
