"""One map poll's accumulated state: full MapResponses and deltas in, a ``NetworkMap`` value out.

Sans-IO mirror of Go's ``control/controlclient/map.go`` (``mapSession``): a session lives for one
long poll; the first non-keep-alive response must carry ``Node``; later responses are deltas where
``None``/absent means "unchanged". Peers are applied in Go's order (``updatePeersStateFromResponse``):
``Peers`` (non-empty: replace all, deltas ignored) else ``PeersRemoved`` → ``PeersChanged`` →
``PeerSeenChange`` → ``OnlineChange`` → ``PeersChangedPatch``. A patch field is applied only when
present in the JSON (``model_fields_set``), as Go applies only non-nil pointers/slices.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pytsnet.wire.errors import ProtocolError
from pytsnet.wire.tailcfg import DERPMap, DNSConfig, FilterRule, MapResponse, Node, UserProfile

__all__ = ["DERP_MAGIC_IP", "MapSession", "MapSessionError", "NetworkMap", "upgrade_node"]

DERP_MAGIC_IP = "127.3.3.40"
"""``tailcfg.DerpMagicIP``: the legacy ``Node.DERP`` string is ``"127.3.3.40:<regionID>"``."""


class MapSessionError(ProtocolError):
    """A MapResponse that is illegal at this point of the session (first response without ``Node``)."""


@dataclass(frozen=True)
class NetworkMap:
    """The node's view of the tailnet after a response (Go's ``netmap.NetworkMap`` essentials)."""

    self_node: Node
    peers: tuple[Node, ...]
    """Sorted by ``ID``, like Go's ``sortedPeers``."""
    derp_map: DERPMap | None
    dns_config: DNSConfig | None
    packet_filter: tuple[FilterRule, ...]
    """The named filters concatenated in sorted name order (``"base"`` is ``PacketFilter``)."""
    packet_filter_set: bool
    """False until control sent any filter: then nothing is allowed in (fail closed)."""
    user_profiles: dict[int, UserProfile]
    domain: str
    collect_services: bool
    ssh_policy: dict[str, object] | None
    tka_info: dict[str, object] | None
    health: tuple[str, ...]

    def peer(self, node_id: int) -> Node | None:
        return next((p for p in self.peers if node_id == p.ID), None)

    @property
    def tka_head(self) -> str:
        """``TKAInfo.Head`` if it is a valid AUM hash text (base32, no padding, 32 bytes), else ""."""
        head = (self.tka_info or {}).get("Head")
        return head if isinstance(head, str) and _valid_aum_hash_text(head) else ""

    @property
    def tka_disabled(self) -> bool:
        return bool((self.tka_info or {}).get("Disabled"))

    @property
    def tka_enabled(self) -> bool:
        """Go's ``NetworkMap.TKAEnabled``: ``TKAInfo`` seen in this session and not ``Disabled``; a head
        that does not parse turns it off as in Go (the PeerTracker keeps enforcing a verified
        authority it already holds, so this cannot switch the lock off by itself)."""
        info = self.tka_info
        if info is None or self.tka_disabled:
            return False
        head = info.get("Head")
        return not head or self.tka_head != ""


def _valid_aum_hash_text(text: str) -> bool:
    """Go ``AUMHash.UnmarshalText``: ``base32.StdEncoding.WithPadding(NoPadding)`` of 32 bytes."""
    if len(text) != 52:  # ceil(32 * 8 / 5)
        return False
    try:
        return len(base64.b32decode(text + "====", casefold=False)) == 32
    except (binascii.Error, ValueError):
        return False


def upgrade_node(node: Node) -> Node:
    """Go's ``upgradeNode``: legacy ``DERP`` string → ``HomeDERP``; ``AllowedIPs`` nil → ``Addresses``."""
    updates: dict[str, object] = {}
    if node.LegacyDERPString:
        if node.HomeDERP == 0:
            host, _, port = node.LegacyDERPString.rpartition(":")
            if host == DERP_MAGIC_IP and port.isdigit():
                updates["HomeDERP"] = int(port)
        updates["LegacyDERPString"] = ""
    if node.AllowedIPs is None:
        updates["AllowedIPs"] = list(node.Addresses)
    return node.model_copy(update=updates) if updates else node


@dataclass
class MapSession:
    """Feed each decoded MapResponse of one long poll to ``apply``; it returns the new netmap."""

    _self: Node | None = None
    _peers: dict[int, Node] = field(default_factory=dict)
    _derp: DERPMap | None = None
    _dns: DNSConfig | None = None
    _filters: dict[str, list[FilterRule]] = field(default_factory=dict)
    _filter_set: bool = False
    _profiles: dict[int, UserProfile] = field(default_factory=dict)
    _domain: str = ""
    _collect_services: bool = False
    _ssh: dict[str, object] | None = None
    _tka: dict[str, object] | None = None
    _health: tuple[str, ...] = ()

    def apply(self, resp: MapResponse, now: float) -> NetworkMap | None:
        """Apply one response; None for a keep-alive (nothing else in it is state, per ``direct.go``).

        ``now`` (Unix seconds) is what a ``PeerSeenChange: true`` records as ``LastSeen``.
        """
        if resp.KeepAlive:
            return None
        if self._self is None and resp.Node is None:
            raise MapSessionError("initial MapResponse lacked node")
        self._apply_peers(resp, now)
        if resp.Node is not None:
            self._self = upgrade_node(resp.Node)
        for up in resp.UserProfiles:
            self._profiles[up.ID] = up
        if resp.DERPMap is not None:
            self._apply_derp(resp.DERPMap)
        self._apply_filters(resp)
        if resp.DNSConfig is not None:
            self._dns = resp.DNSConfig
        if resp.SSHPolicy is not None:
            self._ssh = resp.SSHPolicy
        if resp.CollectServices is not None:
            self._collect_services = resp.CollectServices
        if resp.Domain:
            self._domain = resp.Domain
        if "Health" in resp.model_fields_set:
            self._health = tuple(resp.Health)
        if resp.TKAInfo is not None:
            self._tka = resp.TKAInfo
        return self.netmap()

    def netmap(self) -> NetworkMap:
        if self._self is None:
            raise MapSessionError("no netmap before the first MapResponse with Node")
        return NetworkMap(
            self_node=self._self,
            peers=tuple(self._peers[k] for k in sorted(self._peers)),
            derp_map=self._derp,
            dns_config=self._dns,
            packet_filter=tuple(r for name in sorted(self._filters) for r in self._filters[name]),
            packet_filter_set=self._filter_set,
            user_profiles=dict(self._profiles),
            domain=self._domain,
            collect_services=self._collect_services,
            ssh_policy=self._ssh,
            tka_info=self._tka,
            health=self._health,
        )

    # -- the pieces, in Go's order ---------------------------------------------------------------
    def _apply_peers(self, resp: MapResponse, now: float) -> None:
        if resp.Peers:
            self._peers = {n.ID: upgrade_node(n) for n in resp.Peers}
            return
        for node_id in resp.PeersRemoved:
            self._peers.pop(node_id, None)
        for n in resp.PeersChanged:
            self._peers[n.ID] = upgrade_node(n)
        seen_at = datetime.fromtimestamp(now, UTC)
        for node_id, seen in resp.PeerSeenChange.items():
            if node_id in self._peers:
                self._peers[node_id] = self._peers[node_id].model_copy(
                    update={"LastSeen": seen_at if seen else None})
        for node_id, online in resp.OnlineChange.items():
            if node_id in self._peers:
                self._peers[node_id] = self._peers[node_id].model_copy(update={"Online": online})
        for pc in resp.PeersChangedPatch:
            node = self._peers.get(pc.NodeID)
            if node is None:
                continue  # Go: a patch for an unknown peer is dropped
            present = pc.model_fields_set
            upd: dict[str, object] = {}
            if pc.DERPRegion:
                upd["HomeDERP"] = pc.DERPRegion
            if pc.Cap:
                upd["Cap"] = pc.Cap
            if "Endpoints" in present:
                upd["Endpoints"] = list(pc.Endpoints)
            if pc.Key is not None:
                upd["Key"] = pc.Key
            if pc.DiscoKey is not None:
                upd["DiscoKey"] = pc.DiscoKey
            if pc.Online is not None:
                upd["Online"] = pc.Online
            if pc.LastSeen is not None:
                upd["LastSeen"] = pc.LastSeen
            if pc.KeyExpiry is not None:
                upd["KeyExpiry"] = pc.KeyExpiry
            if "KeySignature" in present:
                upd["KeySignature"] = pc.KeySignature
            if "CapMap" in present:
                upd["CapMap"] = dict(pc.CapMap)
            self._peers[pc.NodeID] = node.model_copy(update=upd)

    def _apply_derp(self, dm: DERPMap) -> None:
        regions = None if dm.Regions is None else {k: r for k, r in dm.Regions.items() if r is not None}
        omit = dm.OmitDefaultRegions
        home = dm.HomeParams
        last = self._derp
        if last is not None:
            if regions is None:  # Regions: null keeps the previous regions
                regions, omit = last.Regions, last.OmitDefaultRegions
            if home is None:
                home = last.HomeParams
            elif last.HomeParams is not None and "RegionScore" not in home.model_fields_set:
                home = home.model_copy(update={"RegionScore": last.HomeParams.RegionScore})
        self._derp = DERPMap(HomeParams=home, Regions=regions, OmitDefaultRegions=omit)

    def _apply_filters(self, resp: MapResponse) -> None:
        if resp.PacketFilter is not None:
            self._filter_set = True
            self._filters["base"] = list(resp.PacketFilter)
        if "PacketFilters" in resp.model_fields_set:
            self._filter_set = True
            m = resp.PacketFilters
            if "*" in m and m["*"] is None:
                self._filters = {}
            for name, rules in m.items():
                if name == "*":
                    continue
                if rules is None:
                    self._filters.pop(name, None)
                else:
                    self._filters[name] = list(rules)
