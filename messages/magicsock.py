"""Messages of the data plane's path half (magicsock): the W contract, peer/DERP config, status.

``WgDatagramIn``/``WgDatagramOut`` are the contract with the WireGuard engine (W). Endpoints travel as
text (``192.0.2.1:5``, ``[::1]:5``; DERP as ``127.3.3.40:<region>``), node keys as ``nodekey:…``.
"""

from __future__ import annotations

from typing import Literal

from pytsnet.messages.base import Message, Request
from pytsnet.messages.portmap import PortmapSpawn
from pytsnet.messages.redact import DiscoPrivateText, NodePrivateText
from pytsnet.wire.magicsock import endpoint as _ep

ITEM_OVERHEAD = 512
"""What one datagram costs in memory beyond its payload (the model object, its dict, the bytes
header; ~490 B measured with tracemalloc): ``payload_size()`` charges it so that a mailbox's byte
bound also holds for a flood of tiny datagrams."""


def _weigh(datas: tuple[bytes, ...]) -> int:
    return sum(map(len, datas)) + ITEM_OVERHEAD * len(datas)


# --- the contract with W ----------------------------------------------------------------------------


class WgDatagramIn(Message, tag="magicsock.wg_in"):
    """M → W: a WireGuard datagram; ``peer`` None when the UDP source is not mapped to a peer yet."""

    peer: str | None
    data: bytes
    via: Literal["udp", "derp"]
    src: str

    def payload_size(self) -> int:
        return len(self.data) + ITEM_OVERHEAD


class WgDatagramOut(Message, tag="magicsock.wg_out"):
    """W → M: send to ``peer`` over its current path; unknown peers are dropped and counted."""

    peer: str
    data: bytes

    def payload_size(self) -> int:
        return len(self.data) + ITEM_OVERHEAD


class WgDatagramsIn(Message, tag="magicsock.wg_in_batch"):
    """M → W: the WireGuard datagrams of one read burst, in arrival order, all come ``via`` one path.

    Parallel tuples (``datas[i]`` came from ``srcs[i]``, sent by ``peers[i]``), not one model per
    datagram: the reader thread builds this per burst and per-datagram objects cost more than the
    datagrams' own parsing (docs/performance.md, issue 14)."""

    via: Literal["udp", "derp"]
    datas: tuple[bytes, ...]
    srcs: tuple[str, ...]
    peers: tuple[str | None, ...]

    def payload_size(self) -> int:
        return _weigh(self.datas)


class WgDatagramsOut(Message, tag="magicsock.wg_out_batch"):
    """W → M: several datagrams for one peer, sent in order over its current path."""

    peer: str
    datas: tuple[bytes, ...]

    def payload_size(self) -> int:
        return _weigh(self.datas)


class WgLiveIndexes(Message, tag="magicsock.wg_live_indexes"):
    """W → M: every receiver index W has a session or pending handshake under, told before any
    datagram that lets a peer use a new one; the reader drops transport for any other index."""

    indexes: tuple[int, ...]


class WgDirectPaths(Message, tag="magicsock.wg_direct_paths"):
    """M → W: the peers whose WireGuard datagrams W may write to the UDP socket itself
    (``actors/magicsock/udp_lane.py``), each with its trusted address and the monotonic time until
    which that address alone is the path (after it the router must add DERP: W tells it again).
    With ``reset`` the rows are the whole table, else they replace those peers' rows and
    ``removed`` peers leave it (one path change costs one row, not the table); ``gso``: the socket
    takes UDP_SEGMENT sends. ``derp_peers`` are those whose only path is DERP, each with the DERP
    client actor (``derp_actors``, by name) of its region: W tells that actor their bursts itself
    (``DerpSends``), one hop fewer than through the router. A peer is in one table at most."""

    peers: tuple[str, ...]
    addrs: tuple[tuple[str, int], ...]
    until: tuple[float, ...]
    gso: bool
    reset: bool = True
    removed: tuple[str, ...] = ()
    derp_peers: tuple[str, ...] = ()
    derp_actors: tuple[str, ...] = ()


class WgDirectPathsRequest(Message, tag="magicsock.wg_direct_paths_request"):
    """W → M: a (re)started engine asks for the direct-path table (``WgDirectPaths``)."""


class WgDirectActive(Message, tag="magicsock.wg_direct_active"):
    """W → M: W wrote to ``peer`` on the socket itself, or told its DERP client (at most every half
    second per peer): the router notes the activity to disco as it does for its own sends."""

    peer: str


class WgHandshakeQueueFull(Message, tag="magicsock.wg_handshake_queue_full"):
    """W → M: W's handshake queue is full (``full``), or has room again (half empty): meanwhile the
    reader drops handshake initiations, which W would only drop at its queue."""

    full: bool


class WgHandshakeLoad(Message, tag="magicsock.wg_handshake_load"):
    """M → W: the reader is shedding handshake initiations over its budget: W is under load (for
    ``UNDER_LOAD_AFTER``) even though its queue, fed within budget, never backs up."""


class WgLiveIndexesRequest(Message, tag="magicsock.wg_live_indexes_request"):
    """M → W: tell me ``WgLiveIndexes`` now (a restarted UDP actor forgot them)."""


# --- configuration ----------------------------------------------------------------------------------


class MagicsockPeer(Message, tag="magicsock.peer"):
    node_key: str
    disco_key: str
    endpoints: tuple[str, ...] = ()
    home_derp: int = 0


class SetPeers(Message, tag="magicsock.set_peers"):
    """The admitted peer set (replaces the previous one)."""

    peers: tuple[MagicsockPeer, ...]


class DerpRegion(Message, tag="magicsock.derp_region"):
    """One DERP node to dial for a region (the first reachable node of ``tailcfg.DERPRegion``)."""

    region_id: int
    host: str
    port: int
    stun_port: int = 0
    tls: bool = False
    insecure_for_tests: bool = False
    code: str = ""
    """The region's ``RegionCode`` (``nyc``): what the LocalAPI's ``Relay``/``DERPRegionCode`` show."""
    host6: str = ""
    """The node's ``IPv6`` (empty: none, or ``"none"``): dialled and STUNed only with ``ipv6`` on,
    DERP when ``host`` is missing or does not answer (Go ``DERPNode.IPv6``)."""


class MagicsockTimings(Message, tag="magicsock.timings"):
    """``wire.magicsock.endpoint.Timings`` as a message: Go's constants unless a test shortens them."""

    heartbeat: float = _ep.HEARTBEAT_INTERVAL
    trust: float = _ep.TRUST_UDP_ADDR_DURATION
    session_active: float = _ep.SESSION_ACTIVE_TIMEOUT
    upgrade: float = _ep.UPGRADE_UDP_DIRECT_INTERVAL
    ping_timeout: float = _ep.PING_TIMEOUT_DURATION
    ping_interval: float = _ep.DISCO_PING_INTERVAL


class MagicsockSpawn(Message, tag="magicsock.spawn"):
    """What every magicsock actor of one node is spawned with: names, bind address, DERP regions,
    timings. Immutable: what changes (home region, bound port, peers) has one owner actor each and
    travels as messages. No keys: the DiscoPinger and DerpClients get theirs as ``MagicsockKeys``."""

    node_public: str  # nodekey:…, for disco's pings (the private half stays with the DerpClients)
    wg_sink: str  # name of W's actor in the same system
    regions: tuple[DerpRegion, ...] = ()
    home_region: int = 0  # the home at spawn (the caller's, else the lowest region id until netcheck)
    home_fixed: bool = False  # the caller chose the home: netcheck never moves it
    derp_idle_close: float = 60.0  # a non-home region closes this long after our last write to it
    bind_host: str = "0.0.0.0"
    bind_port: int = 0
    advertise_endpoints: bool = True  # False: never tell peers our UDP endpoints (DERP only)
    extra_endpoints: tuple[str, ...] = ()
    control: str | None = None  # told LocalEndpoints / NetcheckReport / HomeRegion (the bridge)
    memory: str | None = None  # the restart-memory keeper (``MemoryKeeper``), if the tree has one
    prefix: str = "magicsock"
    timings: MagicsockTimings = MagicsockTimings()
    stun_interval: tuple[float, float] = (20.0, 26.0)
    portmap: PortmapSpawn | None = None
    """Map the UDP port on the gateway (NAT-PMP/PCP/UPnP, ``actors/portmap``); None: no port mapper."""
    udp_offload: bool = True
    """Use UDP GSO/GRO where the kernel has them; False (or env ``PYTSNET_UDP_OFFLOAD=0``) forces
    the plain one-datagram-per-syscall paths (both are tested)."""
    ipv6: bool = False
    """24d, ``Config.ipv6``: bind a dual-stack socket (wildcard ``bind_host``), STUN and dial DERP over
    IPv6 too; False: IPv4 only, nothing IPv6 bound or advertised."""

    def name(self, what: str) -> str:
        return f"{self.prefix}.{what}"

    def derp_name(self, region: int) -> str:
        return f"{self.prefix}.derp.{region}"

    def derp_names(self) -> tuple[str, ...]:
        return tuple(self.derp_name(r.region_id) for r in self.regions)


class MagicsockKeys(Message, tag="magicsock.keys"):
    """The private keys a magicsock actor needs (only those): redacted in traces, as secrets are."""

    node_private: NodePrivateText = ""
    disco_private: DiscoPrivateText = ""


class HomeRegion(Message, tag="magicsock.home_region"):
    """StunProber (the home's one owner) → DerpClients and the bridge: our home DERP region now."""

    region: int


class AdmittedPeers(Message, tag="magicsock.admitted_peers"):
    """DiscoPinger (owner of the peer set) → DerpClients: the node keys a relayed packet may come from."""

    peers: tuple[str, ...]


class MagicsockResend(Message, tag="magicsock.resend"):
    """A (re)started DerpClient → the StunProber and DiscoPinger: tell ``reply_to`` the home and peers."""

    reply_to: str


class UdpBound(Message, tag="magicsock.udp_bound"):
    """MagicsockUdp (the socket's owner) → the StunProber: the port it bound (a bound endpoint)."""

    port: int


class StunSeed(Message, tag="magicsock.stun_seed"):
    """The StunProber → itself at start: the seed of its transaction IDs and jitter, drawn from
    ``os.urandom`` and recorded in its inbox, so a replay draws the same IDs."""

    seed: bytes


class LocalEndpoints(Message, tag="magicsock.local_endpoints"):
    """StunProber → DiscoPinger (and the control runner): our endpoints to advertise."""

    endpoints: tuple[str, ...]


class NetcheckReport(Message, tag="magicsock.netcheck_report"):
    udp: bool
    global_v4: str | None
    preferred_derp: int
    region_latency: dict[int, float]
    global_v6: str | None = None
    mapping_varies_by_dest_ip: bool | None = None
    """None: not known (fewer than two regions answered over IPv4)."""
    derp_latency: dict[str, float] = {}
    """Go ``NetInfo.DERPLatency``: ``"<region>-v4"``/``"<region>-v6"`` → seconds."""
    have_port_map: bool = False
    """A port mapping (NAT-PMP, PCP or UPnP) is held and advertised."""
    portmap_protocols: dict[str, bool] = {}
    """``pmp``/``pcp``/``upnp`` → whether the gateway mapped with it (absent: not tried)."""
    os_has_ipv6: bool | None = None
    """True when our socket has IPv6 (``Config.ipv6``); None: IPv6 is off, so not looked at."""


# --- internal traffic between the magicsock actors --------------------------------------------------


class UdpSend(Message, tag="magicsock.udp_send"):
    dst: str
    data: bytes

    def payload_size(self) -> int:
        return len(self.data) + ITEM_OVERHEAD


class DiscoIn(Message, tag="magicsock.disco_in"):
    """A disco packet from UDP (``src`` = ip:port) or DERP (``derp_region``, ``derp_src`` node key)."""

    data: bytes
    src: str
    derp_region: int = 0
    derp_src: str | None = None
    at: float | None = None
    """When the UDP reader took it off the socket: a pong's RTT ends there, as Go's ends in its read
    loop, not behind the DiscoPinger's mailbox and its wait for the GIL (None: when handled)."""
    answered: bool = False
    """The reader already sent this ping's pong (``actors/magicsock/disco_reply.py``)."""

    def payload_size(self) -> int:
        return len(self.data) + ITEM_OVERHEAD


class StunIn(Message, tag="magicsock.stun_in"):
    data: bytes
    src: str
    at: float | None = None
    """Monotonic time the router handled it (the probe's RTT ends here, not in the prober's queue)."""

    def payload_size(self) -> int:
        return len(self.data) + ITEM_OVERHEAD


class DerpSend(Message, tag="magicsock.derp_send"):
    peer: str
    data: bytes

    def payload_size(self) -> int:
        return len(self.data) + ITEM_OVERHEAD


class DerpSends(Message, tag="magicsock.derp_sends"):
    """Several ``DerpSend`` to one peer: one socket write for the burst."""

    peer: str
    datas: tuple[bytes, ...]

    def payload_size(self) -> int:
        return _weigh(self.datas)


class DerpBytes(Message, tag="magicsock.derp_bytes"):
    conn: int
    data: bytes

    def payload_size(self) -> int:
        return len(self.data) + ITEM_OVERHEAD


class DerpClosed(Message, tag="magicsock.derp_closed"):
    conn: int
    reason: str = ""


class DerpConnect(Message, tag="magicsock.derp_connect"):
    pass


class DerpFlush(Message, tag="magicsock.derp_flush"):
    """The engine left bytes in connection ``conn``'s writer that the socket did not take at once:
    the DERP client writes them (blocking, on its own thread)."""

    conn: int


class DerpDialed(Message, tag="magicsock.derp_dialed"):
    """Connection ``conn`` is up (TCP, TLS, ``101``); ``leftover`` is the DERP bytes after the head."""

    conn: int
    leftover: bytes = b""


class DerpDialFailed(Message, tag="magicsock.derp_dial_failed"):
    """Connection ``conn`` could not be dialled (refused, timed out, not upgraded)."""

    conn: int
    reason: str


class DerpTick(Message, tag="magicsock.derp_tick"):
    pass


class DerpPeerGone(Message, tag="magicsock.derp_peer_gone"):
    region: int
    peer: str
    reason: int


class DerpRoute(Message, tag="magicsock.derp_route"):
    """DerpClient → router: ``peer`` (admitted) was heard on ``region`` over connection ``conn``, so
    replies can go back there (Go ``addDerpPeerRoute``); ``present=False`` on PeerGone undoes it."""

    peer: str
    region: int
    conn: int
    present: bool = True


class PeerActive(Message, tag="magicsock.peer_active"):
    """The router sent to ``peer``: keep its heartbeats going, start discovery if wanted."""

    peer: str


class PathUpdate(Message, tag="magicsock.path_update"):
    """DiscoPinger → router: where ``peer``'s datagrams go now."""

    peer: str
    udp: str | None
    trusted_until: float
    derp_region: int
    rtt: float | None
    addrs: tuple[str, ...] = ()
    removed: bool = False


class ResendPaths(Message, tag="magicsock.resend_paths"):
    """Router → DiscoPinger after a restart: send every peer's PathUpdate again."""


class DiscoTick(Message, tag="magicsock.disco_tick"):
    pass


class StunTick(Message, tag="magicsock.stun_tick"):
    """The StunProber's timer; ``at``: when it was due (its "now": a replay sees the same time)."""

    at: float | None = None


class UdpBlackhole(Message, tag="magicsock.udp_blackhole"):
    """Debug knob (like Go's TS_DEBUG_NEVER_DIRECT_UDP): drop every datagram read from the socket."""

    enabled: bool


# --- status -----------------------------------------------------------------------------------------


class LocalAddr(Message, tag="magicsock.local_addr"):
    addr: str


class LocalAddrRequest(Request[LocalAddr], tag="magicsock.local_addr_request"):
    pass


class PeerPath(Message, tag="magicsock.peer_path"):
    peer: str
    path: Literal["direct", "derp", "none"]
    addr: str | None
    derp_region: int
    rtt: float | None
    udp_bytes_out: int = 0
    udp_bytes_in: int = 0
    derp_bytes_out: int = 0
    derp_bytes_in: int = 0


class PathStatus(Message, tag="magicsock.path_status"):
    peers: tuple[PeerPath, ...]
    dropped_unknown_peer: int = 0
    dropped_no_path: int = 0
    parked_sent: int = 0
    """WireGuard datagrams held while their peer had no path, sent once it got one (not dropped)."""
    dropped_blackhole: int = 0
    unknown_udp_source: int = 0
    dropped_unknown_kind: int = 0
    dropped_derp_full: int = 0
    dropped_queue_full: int = 0
    """Read datagrams dropped because W's, the DiscoPinger's or the StunProber's mailbox stayed full."""
    early_drops: dict[str, int] = {}
    """Dropped by the reader before queueing, by reason (``wire.udp_demux.EARLY_DROP_REASONS``)."""
    datagrams_read: int = 0
    bytes_read: int = 0
    offload: str = "plain"
    """The UDP paths in use: ``gso+gro``, ``gso``, ``gro`` or ``plain``."""
    gso_sends: int = 0
    """Sends that carried several datagrams in one GSO ``sendmsg``."""
    gso_datagrams: int = 0
    gro_reads: int = 0
    """Reads that returned several datagrams coalesced by GRO."""
    gro_datagrams: int = 0
    peer_sockets: int = 0
    """Peer endpoints whose datagrams queue on a socket of their own (``actors.magicsock.peer_sockets``)."""
    peer_socket_datagrams: int = 0
    """Datagrams read from those sockets (the rest of ``datagrams_read`` came on the shared one)."""
    peer_socket_failures: int = 0
    """Endpoints left on the shared socket because theirs could not be opened."""
    pings_answered: int = 0
    """Disco pings the reader thread answered itself (``actors.magicsock.disco_reply``)."""


class PathStatusRequest(Request[PathStatus], tag="magicsock.path_status_request"):
    pass


class DerpPeerCounters(Message, tag="magicsock.derp_peer_counters"):
    peer: str
    bytes_in: int
    bytes_out: int


class DerpStatus(Message, tag="magicsock.derp_status"):
    region: int
    connected: bool
    home: bool
    connects: int
    dropped: int
    health: str
    peers: tuple[DerpPeerCounters, ...]
    bytes_in_unknown_sources: int = 0  # relayed bytes from node keys that are not admitted peers
    idle_closes: int = 0  # non-home connections closed after derp_idle_close without a write
    peer_gone: int = 0  # PeerGone frames: the server told us a peer left (or was never here)
    last_error: str = ""  # why the last dial or connection failed


class DerpStatusRequest(Request[DerpStatus], tag="magicsock.derp_status_request"):
    pass


class DiscoStatus(Message, tag="magicsock.disco_status"):
    """The DiscoPinger's drop counters: disco datagrams it refused, by reason."""

    dropped_unknown_disco: int = 0  # disco key of no admitted peer, or DERP source not its owner
    dropped_bad_box: int = 0  # NaCl box failed to open or the sealed message did not parse
    dropped_malformed: int = 0  # too short to name a sender
    dropped_bad_source: int = 0  # source address text that does not parse


class DiscoStatusRequest(Request[DiscoStatus], tag="magicsock.disco_status_request"):
    pass


class StunStatus(Message, tag="magicsock.stun_status"):
    """The StunProber's drop counters."""

    dropped_unsolicited: int = 0  # STUN-looking datagrams that answer none of our probes


class StunStatusRequest(Request[StunStatus], tag="magicsock.stun_status_request"):
    pass


