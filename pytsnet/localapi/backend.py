"""What the LocalAPI answers, built from the device: Go's ``Status``, ``WhoIsResponse`` and prefs.

The device knows its peers (``PeerInfo``), their paths and counters (``DeviceStatus``) and the last
netmap (users, capabilities, tailnet name); this module maps them onto Go's shapes
(``pytsnet.localapi.types``). What this port does not track is written as Go writes its zero value
(``Created`` the zero time, ``OS`` empty, ``TUN`` false: a userspace node), never invented.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from pytsnet import __version__
from pytsnet.actors.wgengine.filter_rules import invalid_packet_filter_health
from pytsnet.errors import DeviceClosed
from pytsnet.localapi.types import (
    GO_ZERO_TIME,
    ExitNodeStatus,
    Hostinfo,
    Node,
    PeerStatus,
    PingResult,
    Status,
    TailnetStatus,
    UserProfile,
    WhoIsResponse,
)
from pytsnet.messages.control import DeviceState, LogoutDone
from pytsnet.messages.dataplane import DataplaneInfo, DataplaneNetmap, DeviceStatus
from pytsnet.messages.dataplane import PeerStatus as PathRow
from pytsnet.messages.netstack import IcmpEchoResult, TsmpPingResult
from pytsnet.messages.peers import ExitNodeInfo, PeerInfo, RoutePrefs
from pytsnet.messages.ping import DiscoPingResult
from pytsnet.tka import LockStatus

__all__ = ["Backend", "build_status", "go_time", "magic_dns_suffix", "peer_node", "ping", "whois"]

_EXIT_ROUTES = frozenset({"0.0.0.0/0", "::/0"})


class Backend(Protocol):
    """The device as the LocalAPI sees it (``ActorDevice`` is one)."""

    @property
    def state(self) -> DeviceState: ...
    def status(self, timeout: float = ...) -> DeviceStatus: ...
    def peers(self, timeout: float = ...) -> list[PeerInfo]: ...
    def tailscale_ips(self) -> list[str]: ...
    def dataplane_info(self) -> DataplaneInfo: ...
    def logout_blocking(self, timeout: float = ...) -> LogoutDone: ...
    def route_prefs(self) -> RoutePrefs: ...
    def set_route_prefs_blocking(self, prefs: RoutePrefs, timeout: float = ...) -> ExitNodeInfo | None: ...
    def disco_ping_blocking(self, node_key: str, timeout: float = ...) -> DiscoPingResult: ...
    def icmp_ping_blocking(self, ip: str, timeout: float = ...) -> IcmpEchoResult: ...
    def tsmp_ping_blocking(self, ip: str, timeout: float = ...) -> TsmpPingResult: ...


def go_time(ts: float | None) -> str:
    """Unix seconds as Go's ``time.Time`` JSON (RFC 3339, trailing zeros of the fraction trimmed);
    None as the zero time."""
    if ts is None:
        return GO_ZERO_TIME
    dt = datetime.fromtimestamp(ts, UTC)
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def magic_dns_suffix(self_name: str) -> str:
    """Go ``NetworkMap.MagicDNSSuffix``: the self node's FQDN minus its first label, no dots around."""
    _, _, rest = self_name.rstrip(".").partition(".")
    return rest


def _ips(p: PeerInfo) -> list[str]:
    return [a.split("/")[0] for a in p.addresses]


def _is_exit_option(p: PeerInfo) -> bool:
    return set(p.allowed_ips) >= _EXIT_ROUTES


def _peer_status(p: PeerInfo, row: PathRow | None, *, exit_id: str, region_codes: dict[int, str],
                 caps: list[str] | None) -> PeerStatus:
    v4 = next((a for a in _ips(p) if ":" not in a), None)
    v6 = next((a for a in _ips(p) if ":" in a), None)
    urls = [f"http://{v4}:{port}" for k, port in sorted(p.peerapi_ports.items()) if k == "peerapi4" and v4]
    urls += [f"http://[{v6}]:{port}" for k, port in sorted(p.peerapi_ports.items()) if k == "peerapi6" and v6]
    relay = region_codes.get(p.home_derp, "") if p.home_derp else ""
    return PeerStatus(
        ID=p.stable_id, PublicKey=p.node_key, HostName=p.hostname, DNSName=p.name, OS="", UserID=p.user,
        TailscaleIPs=_ips(p), AllowedIPs=list(p.allowed_ips) or None, Tags=list(p.tags) or None,
        PrimaryRoutes=list(p.primary_routes) or None, Addrs=list(p.endpoints) or None,
        CurAddr=(row.addr or "") if row is not None and row.path == "direct" else "", Relay=relay,
        PeerRelay="", RxBytes=row.bytes_in if row is not None else 0,
        TxBytes=row.bytes_out if row is not None else 0, Created=GO_ZERO_TIME, LastWrite=GO_ZERO_TIME,
        LastSeen=GO_ZERO_TIME, LastHandshake=go_time(row.last_handshake if row is not None else None),
        Online=bool(p.online), ExitNode=bool(exit_id) and p.stable_id == exit_id,
        ExitNodeOption=_is_exit_option(p), Active=row is not None and row.path != "none",
        PeerAPIURL=urls or None, TaildropTarget=0, NoFileSharingReason="",
        Capabilities=caps or None, CapMap={c: None for c in caps} if caps else None,
        InNetworkMap=True, InMagicSock=row is not None, InEngine=bool(row is not None and row.has_session),
        Expired=p.expired, KeyExpiry=go_time(p.key_expiry) if p.key_expiry is not None else None)


@runtime_checkable
class _LockHealth(Protocol):
    """A backend with Tailnet Lock (``ActorDevice``): its lock warnings go in the status Health."""

    def lock_status(self, timeout: float = ...) -> LockStatus: ...


def _lock_health(b: Backend) -> list[str]:
    """Go's TKA health line (``healthmsg.LockedOut``, set by ``tkaFilterNetmapLocked`` when our own
    key is not signed) as ``Status.Health`` shows it; nothing when the lock cannot be asked now."""
    if not isinstance(b, _LockHealth):
        return []
    try:
        return list(b.lock_status(timeout=2.0).warnings)
    except (DeviceClosed, TimeoutError):
        return []


def _region_codes(nm: DataplaneNetmap | None) -> dict[int, str]:
    """Region ID → its ``RegionCode`` from the DERP map (Go's ``Relay``/``DERPRegionCode``)."""
    if nm is None:
        return {}
    return {r.region_id: r.code for r in nm.derp_regions}


def build_status(b: Backend, *, peers: bool = True) -> Status:
    """Go ``LocalBackend.Status`` / ``StatusWithoutPeers``."""
    st, info = b.state, b.dataplane_info()
    ds = b.status()
    nm = info.netmap
    rows = {r.node_key: r for r in ds.peers}
    exit_id = ds.exit_node.stable_id if ds.exit_node is not None else ""
    codes = _region_codes(nm)
    self_ps: PeerStatus | None = None
    users: dict[str, UserProfile] = {}

    def user(uid: int) -> None:
        if nm is not None and uid in nm.user_profiles:
            u = nm.user_profiles[uid]
            users[str(uid)] = UserProfile(ID=u.id, LoginName=u.login_name, DisplayName=u.display_name)

    if nm is not None:
        me = nm.self_node
        self_ps = _peer_status(me, None, exit_id="", region_codes=codes, caps=nm.capabilities.get(me.node_id))
        self_ps = self_ps.model_copy(update={"Online": True, "Relay": codes.get(ds.home_region, ""),
                                             "Addrs": list(ds.endpoints) or None, "InMagicSock": False})
        user(me.user)
    peer_map: dict[str, PeerStatus] | None = None
    if peers:
        peer_map = {}
        for p in b.peers():
            peer_map[p.node_key] = _peer_status(p, rows.get(p.node_key), exit_id=exit_id, region_codes=codes,
                                                caps=None)
            user(p.user)
    suffix = magic_dns_suffix(nm.self_node.name) if nm is not None else ""
    health = [f"exit node unavailable: {ds.exit_node_unavailable}"] if ds.exit_node_unavailable else []
    if nm is not None and (bad := invalid_packet_filter_health(b.peers(), nm.packet_filter)):  # 21h
        health.append(bad)
    health += _lock_health(b)  # 21i
    exit_status = None
    if ds.exit_node is not None:
        exit_peer = next((p for p in b.peers() if p.stable_id == ds.exit_node.stable_id), None)
        exit_status = ExitNodeStatus(ID=ds.exit_node.stable_id, Online=bool(exit_peer and exit_peer.online),
                                     TailscaleIPs=list(exit_peer.addresses) if exit_peer else None)
    return Status(
        Version=__version__, TUN=False, BackendState=st.state, HaveNodeKey=bool(info.state.node_key),
        AuthURL=st.auth_url, TailscaleIPs=b.tailscale_ips(), Self=self_ps, ExitNodeStatus=exit_status,
        Health=health, MagicDNSSuffix=suffix,
        CurrentTailnet=TailnetStatus(Name=nm.domain, MagicDNSSuffix=suffix,
                                     MagicDNSEnabled=bool(nm.dns is not None and nm.dns.proxied))
        if nm is not None else None,
        CertDomains=list(nm.dns.cert_domains) or None if nm is not None and nm.dns is not None else None,
        Peer=peer_map, User=users, ClientVersion=None)


def peer_node(p: PeerInfo, caps: list[str] | None) -> Node:
    """A ``tailcfg.Node`` from what we keep of it (``ComputedName``: the MagicDNS base name)."""
    base = p.name.split(".")[0] if p.name else p.hostname
    return Node(
        ID=p.node_id, StableID=p.stable_id, Name=p.name, User=p.user, Key=p.node_key,
        KeyExpiry=go_time(p.key_expiry), Machine=p.machine_key, DiscoKey=p.disco_key,
        Addresses=list(p.addresses), AllowedIPs=list(p.allowed_ips), Endpoints=list(p.endpoints) or None,
        HomeDERP=p.home_derp, Hostinfo=Hostinfo(Hostname=p.hostname), Created=GO_ZERO_TIME,
        Tags=list(p.tags) or None, PrimaryRoutes=list(p.primary_routes) or None, Online=p.online,
        MachineAuthorized=p.machine_authorized, Capabilities=caps or None,
        CapMap={c: None for c in caps} if caps else None, ComputedName=base,
        ComputedNameWithHost=base if not p.hostname or p.hostname == base else f"{base} ({p.hostname})",
        Expired=p.expired)


class WhoIsNotFound(LookupError):
    """No node owns that address or key (Go: 404 "no match for IP:port")."""


def whois(b: Backend, addr: str) -> WhoIsResponse:
    """Go ``serveWhoIsWithBackend`` after parsing: ``addr`` is ``nodekey:…``, an IP or ``IP:port``
    (the port and ``proto`` do not change the answer here: this port has no proxy mapper, so the
    node owning the IP answers, as Go's fallback does). ``ValueError`` for unparsable input."""
    nm = b.dataplane_info().netmap
    nodes = b.peers()
    if nm is not None:
        nodes.append(nm.self_node)
    if addr.startswith("nodekey:"):
        match = [n for n in nodes if n.node_key == addr]
    else:
        ip = _parse_addr(addr)
        match = [n for n in nodes if any(ipaddress.ip_interface(a).ip == ip for a in n.addresses)]
    if not match:
        raise WhoIsNotFound(addr)
    n = match[0]
    caps = nm.capabilities.get(n.node_id) if nm is not None else None
    profile = nm.user_profiles.get(n.user) if nm is not None else None
    up = UserProfile(ID=n.user, LoginName=profile.login_name if profile else "",
                     DisplayName=profile.display_name if profile else "")
    return WhoIsResponse(Node=peer_node(n, caps), UserProfile=up, CapMap=None)


PING_TIMEOUT = 5.0
"""How long a LocalAPI ping waits for its Pong (Go's CLI waits 10 s per attempt over several)."""


def ping(b: Backend, ip: str, timeout: float = PING_TIMEOUT, kind: str = "disco") -> PingResult:
    """Go ``LocalBackend.Ping`` for ``type=disco``, ``ICMP`` and ``TSMP``: the peer owning ``ip``, then
    one ping; failures in ``Err`` as Go's (``no matching peer``; a timeout's ``Err`` starts with
    ``timeout``, where Go's handler times out its request context).

    ``disco``: one disco Ping, the first Pong's latency and path (``Endpoint`` direct, else
    ``DERPRegionID``). ``ICMP`` (Go's ``sendICMPEchoRequest``): an echo request from our netstack
    through WireGuard to ``ip`` itself; ``NodeIP`` is ``ip`` and no path is reported. ``TSMP``
    (``sendTSMPPing``): the same with a TSMP ping, plus the pong's ``PeerAPIPort``."""
    addr = ipaddress.ip_address(ip)
    nm = b.dataplane_info().netmap
    owns = [p for p in b.peers() if any(ipaddress.ip_interface(a).ip == addr for a in p.addresses)]
    peer = owns[0] if owns else None
    empty = PingResult(IP=ip, NodeIP="", NodeName="", Err="", LatencySeconds=0.0, Endpoint="", PeerRelay="",
                       DERPRegionID=0, DERPRegionCode="")
    if nm is not None and any(ipaddress.ip_interface(a).ip == addr for a in nm.self_node.addresses):
        return empty.model_copy(update={"Err": "is local Tailscale IP", "IsLocalIP": True})
    if peer is None:
        return empty.model_copy(update={"Err": "no matching peer"})
    name = peer.name.split(".")[0] or peer.hostname
    if kind in ("ICMP", "TSMP"):
        return _ip_ping(b, nm, empty, addr, name, timeout, kind)
    node_ip = _ips(peer)[0] if peer.addresses else ""
    base = empty.model_copy(update={"NodeIP": node_ip, "NodeName": name})
    got = b.disco_ping_blocking(peer.node_key, timeout)
    if not got.done:
        return base.model_copy(update={"Err": f"timeout waiting for pong after {timeout:g}s"})
    if got.error:
        return base.model_copy(update={"Err": got.error})
    return base.model_copy(update={
        "LatencySeconds": got.latency or 0.0, "Endpoint": got.endpoint, "DERPRegionID": got.derp_region,
        "DERPRegionCode": _region_codes(nm).get(got.derp_region, "") if got.derp_region else ""})


def _ip_ping(b: Backend, nm: DataplaneNetmap | None, empty: PingResult,
             addr: ipaddress.IPv4Address | ipaddress.IPv6Address, name: str, timeout: float,
             kind: str) -> PingResult:
    """Go fills ``NodeIP``/``NodeName`` only on a reply; its ``mySelfIPMatchingFamily`` errors first."""
    if nm is None:
        return empty.model_copy(update={"Err": "no netmap"})
    mine = [ipaddress.ip_interface(a) for a in nm.self_node.addresses]
    if not mine:
        return empty.model_copy(update={"Err": "no self address in netmap"})
    if not any(i.network.prefixlen == i.max_prefixlen and i.ip.version == addr.version for i in mine):
        return empty.model_copy(update={"Err": "no self address in netmap matching address family"})
    got: IcmpEchoResult | TsmpPingResult
    if kind == "TSMP":
        got = b.tsmp_ping_blocking(str(addr), timeout)
    else:
        got = b.icmp_ping_blocking(str(addr), timeout)
    if not got.done:
        what = "TSMP pong" if kind == "TSMP" else "ICMP echo reply"
        return empty.model_copy(update={"Err": f"timeout waiting for {what} after {timeout:g}s"})
    if got.error:
        return empty.model_copy(update={"Err": got.error})
    port = got.peerapi_port if isinstance(got, TsmpPingResult) else 0
    return empty.model_copy(update={"LatencySeconds": got.latency or 0.0, "NodeIP": str(addr),
                                    "NodeName": name, "PeerAPIPort": port})


def _parse_addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``netip.ParseAddr`` then ``netip.ParseAddrPort`` (``[v6]:port``), as Go's handler tries them."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 0xFFFF:
        raise ValueError("invalid 'addr' parameter")
    if ":" in host:
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError("invalid 'addr' parameter")
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("invalid 'addr' parameter") from None
