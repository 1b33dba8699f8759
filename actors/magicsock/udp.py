"""The UDP socket: reads demultiplexed by ``classify``; ``WgDatagramOut`` routed by the peer's path.

Each peer's direct endpoint also gets a connected socket on the same port (``peer_sockets``), read
first, so a stranger's flood never shares a kernel queue with a tunnel.

The reader thread drops what needs no actor before anything is copied or queued
(``wire.udp_demux.early_drop``: oversize, wrong-length WireGuard, unknown receiver index, junk), counted
by reason; the engine publishes its live receiver indexes (``WgLiveIndexes``) before it sends any
datagram that could make the peer use a new one, so a session's first packet is never dropped here.

Routing follows Go ``addrForSendLocked``: the trusted best UDP address alone, else the stale UDP address
and the peer's DERP region, else DERP alone. A peer with no path yet (its home region not told, or
not in the path table yet) gets its datagrams held for a moment (``wire.magicsock.parking``) and sent
the instant a path appears, so a first handshake is not lost to WireGuard's 5 s retry; never sent
anywhere else, and dropped and counted once they outlive the wait (fail closed, never a host
socket). Path entries come from the DiscoPinger as ``PathUpdate``. The DERP region is the peer's home
or, while control has not told us that yet, the region the peer's packets came in on (``DerpRoute``,
Go ``fallbackDERPRegionForPeer``).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import time
from dataclasses import dataclass

from pytsnet.actors.keeper import recall, remember
from pytsnet.actors.magicsock import udp_lane
from pytsnet.actors.magicsock.disco_reply import PingAnswerer
from pytsnet.actors.magicsock.peer_sockets import PeerSockets
from pytsnet.actors.magicsock.udp_families import BindPlan, bind_plan  # 24d
from pytsnet.actors.magicsock.wg_sink import WgSinkDelivery
from pytsnet.actors.runtime import Actor, MailboxFull, StopReason, UnhandledMessage, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.magicsock import (
    DerpRoute,
    DerpSend,
    DerpSends,
    DiscoIn,
    LocalAddr,
    LocalAddrRequest,
    MagicsockResend,
    MagicsockSpawn,
    PathStatus,
    PathStatusRequest,
    PathUpdate,
    PeerActive,
    PeerPath,
    ResendPaths,
    StunIn,
    UdpBlackhole,
    UdpBound,
    UdpSend,
    WgDatagramOut,
    WgDatagramsOut,
    WgDirectActive,
    WgDirectPaths,
    WgDirectPathsRequest,
    WgHandshakeLoad,
    WgHandshakeQueueFull,
    WgLiveIndexes,
    WgLiveIndexesRequest,
)
from pytsnet.wire.magicsock import offload
from pytsnet.wire.magicsock.addr import AddrParseError, format_addr, parse_addr
from pytsnet.wire.magicsock.parking import ParkedSends
from pytsnet.wire.udp_demux import EARLY_DROP_REASONS, PacketKind, classify, early_drop, looks_like_wireguard
from pytsnet.wire.wireguard.ratelimit import TokenBucket

log = subsystem_logger("magicsock")

READ_TIMEOUT = 0.5
MAX_DATAGRAM = 65535  # the read buffer: a larger datagram is cut, and then dropped as oversize
INITIATIONS_PER_SECOND = 2048  # handshake initiations the reader hands on per second, all sources together
LOAD_NOTE_INTERVAL = 0.25  # how often shedding initiations is reported to the engine as load
READ_EXAMINE = 4 * 64  # datagrams one read call looks at, dropped ones included (the loop stays responsive)
ACTIVITY_NOTE_INTERVAL = 1.0  # how often a busy peer's sends are reported to the DiscoPinger
SOCKET_BUFFER = 4 << 20  # as Go's magicsock (7 MiB there): a burst of a full TCP window must not overflow
READ_BURST = 64  # datagrams already queued on the socket that one read hands over in one message
OFFLOAD_ENV = "PYTSNET_UDP_OFFLOAD"  # "0": force the plain send and read paths (tests run both)
_OFF = ("0", "off", "false", "no")
_ICMP_ERRORS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                          errno.ENETDOWN, errno.ENOPROTOOPT, errno.EPROTO})
"""What a read reports for an ICMP error (a connected peer socket gets each hard one as its error)."""
MAX_DERP_ROUTES = 4096  # DerpRoutes come for admitted peers only; a bound all the same


def _text(sockaddr: tuple) -> str:  # type: ignore[type-arg]
    return format_addr((_unmapped(sockaddr[0]), sockaddr[1]))


def _unmapped(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A source address as peers and paths know it: a v4-mapped IPv6 address (what a dual-stack
    socket reports for IPv4) as its IPv4 address; the zone of a link-local one dropped."""
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _enable_offload(sock: socket.socket) -> tuple[bool, bool]:
    """Turn on what the kernel has: (GSO sends, GRO reads). Each is probed on its own (Go
    ``tryEnableUDPOffload``): GSO by reading ``UDP_SEGMENT``, GRO by setting ``UDP_GRO``."""
    gso = gro = False
    with contextlib.suppress(OSError):
        sock.getsockopt(offload.SOL_UDP, offload.UDP_SEGMENT)
        gso = True
    with contextlib.suppress(OSError):
        sock.setsockopt(offload.SOL_UDP, offload.UDP_GRO, 1)
        gro = True
    return gso, gro


@dataclass
class _Route:
    udp: tuple[str, int] | None
    udp_text: str | None
    trusted_until: float
    derp_region: int
    rtt: float | None
    udp_out: int = 0
    derp_out: int = 0
    last_active_note: float = float("-inf")


class MagicsockUdp(Actor):
    """The router (this actor: outbound sends, path table, status) and the reader thread beside it.

    The reader (``_read``) demultiplexes on its own thread and tells each datagram's consumer
    directly: WireGuard bursts to W as one ``WgDatagramsIn``, disco to the DiscoPinger, STUN to the
    StunProber; nothing inbound passes through this actor's mailbox, which carries the bulk sends.
    The reader alone writes the inbound counters; it reads the path table the router publishes
    (``by_addr``, replaced never mutated under it, and ``_paths_version``)."""

    def __init__(self, config: MagicsockSpawn) -> None:
        self.config = config
        self.bound_port = 0  # ours alone: the StunProber and the keeper are told it (UdpBound)
        self.routes: dict[str, _Route] = {}
        self.by_addr: dict[tuple[str, int], str] = {}  # replaced whole on a path change (the reader reads it)
        self._paths_version = 0  # bumped after by_addr is replaced: the reader drops its peer cache
        self.sock: socket.socket | None = None
        self.blackhole = False
        self.dropped_unknown_peer = 0
        self.dropped_no_path = 0
        self.parked = ParkedSends()  # datagrams for a peer with no path yet
        self.parked_sent = 0  # ... sent once it got one
        self.dropped_blackhole = 0
        self.dropped_unknown_kind = 0  # neither STUN, disco nor WireGuard-shaped
        self.dropped_derp_full = 0
        self.dropped_queue_full = 0  # disco/STUN reads their actor's full mailbox refused (the reader's)
        self.unknown_udp_source = 0
        self._src_cache: dict[tuple, tuple[str, str | None]] = {}  # type: ignore[type-arg]
        self._src_version = -1  # the _paths_version _src_cache was filled under
        self._peer_socks: PeerSockets | None = None  # the reader's, once bound
        self._peer_endpoints: frozenset[tuple[str, int]] = frozenset()  # the router's (replaced whole)
        self._peer_endpoints_seen: frozenset[tuple[str, int]] | None = None  # what the reader synced to
        self._read_order: tuple[socket.socket, ...] = ()  # the reader's: peer sockets, then the shared one
        self._udp_in: dict[str, int] = {}  # bytes read per peer (the reader's)
        self._wg_sink = WgSinkDelivery()
        self.derp_routes: dict[str, tuple[int, int]] = {}  # peer -> (region, conn) it was heard on
        self._live: frozenset[int] | None = None  # the engine's receiver indexes; None: not known yet
        self._initiations_full = False  # the engine's handshake queue is full: drop initiations on read
        # all initiations together, whoever sends them: what the engine can answer with cookies while
        # the reader still keeps up with a flood (the kernel drops established tunnels' packets else)
        self._initiations = TokenBucket(INITIATIONS_PER_SECOND, INITIATIONS_PER_SECOND / 4)
        self._shed_noted = 0
        self._load_noted_at = float("-inf")
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)  # never released: the buffer is never resized
        self.early_drops: dict[str, int] = dict.fromkeys(EARLY_DROP_REASONS, 0)  # written by the reader only
        self.datagrams_read = 0
        self.bytes_read = 0
        self._gso = False  # the socket takes UDP_SEGMENT sends (turned off for good if one fails)
        self._gro = False  # the socket has UDP_GRO on: reads may carry several datagrams
        self.gso_sends = self.gso_datagrams = self.gro_reads = self.gro_datagrams = 0
        self.peer_socket_datagrams = 0  # the reader's
        self._pings: PingAnswerer | None = None  # the reader's, made once the router has its ref

    def on_start(self) -> None:
        c = self.config
        plan = bind_plan(c)  # 24d: Config.ipv6 decides the families (udp_families)
        try:
            sock = socket.socket(plan.family, socket.SOCK_DGRAM)
        except OSError as e:  # a kernel without IPv6: IPv4 alone, as Go goes on without pconn6
            if not plan.dual:
                raise
            log.warning("no IPv6 UDP socket (%s): binding IPv4 only", e)
            plan = BindPlan(socket.AF_INET, "0.0.0.0", False)
            sock = socket.socket(plan.family, socket.SOCK_DGRAM)
        if plan.dual:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # the kernel caps it at [rw]mem_max; best effort
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        if c.udp_offload and os.environ.get(OFFLOAD_ENV, "1").strip().lower() not in _OFF:
            self._gso, self._gro = _enable_offload(sock)
        before = recall(self, c.memory)  # a restart rebinds the port peers know
        sock.bind((plan.host, before.port if isinstance(before, UdpBound) else c.bind_port))
        sock.setblocking(False)
        self.bound_port = sock.getsockname()[1]
        bound = UdpBound(port=self.bound_port)
        remember(self, c.memory, bound)
        self.tell_named(c.name("stun"), bound)
        self.sock = sock
        udp_lane.publish(self.ref, sock)
        self._pings = PingAnswerer(self.ref)
        self._publish_direct()  # a restart: the engine forgets the old incarnation's table
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self._read_order = (sock,)
        peer_socks = self._peer_socks = PeerSockets(sock, buffer=SOCKET_BUFFER, gro=self._gro)

        def close() -> None:
            sock.close()
            peer_socks.close_all()

        self.start_io_loop(self._read, close)
        self.tell_named(c.name("disco"), ResendPaths())  # a restarted router asks for the path table again
        with contextlib.suppress(UnhandledMessage):  # a sink that is no engine (test rigs) publishes none
            self.tell_named(c.wg_sink, WgLiveIndexesRequest())

    def on_stop(self, reason: StopReason) -> None:
        if self.sock is not None:
            udp_lane.withdraw(self.ref, self.sock)
            self.sock.close()
        if self._peer_socks is not None:
            self._peer_socks.close_all()

    @handles(MagicsockResend)
    def on_resend(self, msg: MagicsockResend) -> None:
        """A (re)started StunProber wants the bound port (for the bound endpoint it advertises)."""
        if self.bound_port:
            self.tell_named(msg.reply_to, UdpBound(port=self.bound_port))

    # -- inbound: the reader thread ----------------------------------------------------------------
    def _read(self) -> None:
        """Wait for datagrams, then read what is queued and hand each to its consumer: the WireGuard
        ones to W as one message at the end.

        The peers' own sockets (``PeerSockets``) are read first, then the shared one: per socket at
        most ``READ_BURST`` datagrams kept and ``READ_EXAMINE`` looked at (the loop stays responsive).
        The sockets are non-blocking (a timeout-mode socket would poll for the full timeout before a
        ``MSG_DONTWAIT`` read too): the wait is an explicit ``poll`` bounded by ``READ_TIMEOUT``.
        """
        assert self.sock is not None
        closing = self._sync_peer_sockets()
        ready = {fd for fd, _ in self._poller.poll(READ_TIMEOUT * 1000)}
        if not ready and not closing:
            return None
        datas: list[bytes] = []
        srcs: list[str] = []
        peers: list[str | None] = []
        if self._src_version != self._paths_version:
            self._src_version = self._paths_version
            self._src_cache = {}
        examined = got = 0
        main = self.sock
        try:
            # the ready ones, peers' first; then what a path change left on sockets about to close
            for sock in [s for s in self._read_order if s.fileno() in ready] + closing:
                n, b = self._read_socket(sock, datas, srcs, peers)
                examined += n
                got += b
                if sock is not main:
                    self.peer_socket_datagrams += n
        finally:
            for sock in closing:
                sock.close()
            self.datagrams_read += examined
            self.bytes_read += got
            if datas:
                self._wg_sink.deliver(self.lookup(self.config.wg_sink), "udp", datas, srcs, peers)
            self._note_shedding()
        return None

    def _sync_peer_sockets(self) -> list[socket.socket]:
        """Reader thread: follow the endpoint set the router published (a connected socket per peer
        endpoint); returns the sockets to read one last time and close."""
        wanted = self._peer_endpoints
        if wanted is self._peer_endpoints_seen or self._peer_socks is None:
            return []
        self._peer_endpoints_seen = wanted
        gone = self._peer_socks.sync(wanted)
        assert self.sock is not None
        self._read_order = (*self._peer_socks.socks.values(), self.sock)
        poller = select.poll()
        for sock in self._read_order:
            poller.register(sock, select.POLLIN)
        self._poller = poller
        return gone

    def _read_socket(self, sock: socket.socket, datas: list[bytes], srcs: list[str],
                     peers: list[str | None]) -> tuple[int, int]:
        """Read ``sock`` until it is empty or a budget is spent; (datagrams examined, bytes read).
        Each read lands in one reused buffer (with GRO, several datagrams of one source: split by
        ``offload.gro_segments``); a datagram is copied only if ``early_drop`` keeps it."""
        buf, view, drops = self._buf, self._view, self.early_drops
        live, full, budget = self._live, self._initiations_full, self._initiations.allow
        gro, bufs = self._gro, [self._buf]
        known, cache = self.by_addr, self._src_cache
        keep = len(datas) + READ_BURST
        examined = got = 0
        while len(datas) < keep and examined < READ_EXAMINE:
            segment = 0
            try:
                if gro:
                    n, anc, _flags, src = sock.recvmsg_into(bufs, offload.GRO_CMSG_SPACE)
                    if anc:
                        segment = offload.gro_segment_size(anc)
                else:
                    n, src = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in _ICMP_ERRORS:  # an ICMP error for an earlier send (read, so cleared): skip it
                    continue
                if examined or datas or sock is not self.sock:
                    break  # hand over what we have (a peer socket's error costs it this turn alone)
                raise
            got += n
            key = (src[0], src[1])
            cached = cache.get(key)
            if cached is None:
                if len(cache) >= 1024:
                    cache.clear()
                ip = _unmapped(src[0])  # 24d: a dual-stack socket's IPv4 peers are ::ffff:a.b.c.d
                cached = cache[key] = (format_addr((ip, src[1])), known.get((str(ip), src[1])))
            text, peer = cached
            ranges = offload.gro_segments(n, segment) if segment else ((0, n),)
            if len(ranges) > 1:
                self.gro_reads += 1
                self.gro_datagrams += len(ranges)
            for a, b in ranges:
                examined += 1
                data = view[a:b]
                reason = early_drop(data, live, initiations_full=full)
                if (reason is None and data[0] == 1 and peer is None
                        and not budget(time.monotonic())):
                    reason = "initiation_budget"  # strangers' initiations; a peer's endpoint is exempt
                if reason is not None:
                    drops[reason] += 1
                    continue
                if self.blackhole:
                    self.dropped_blackhole += 1
                    continue
                if looks_like_wireguard(data):
                    if peer is None:
                        self.unknown_udp_source += 1
                    else:
                        self._udp_in[peer] = self._udp_in.get(peer, 0) + (b - a)
                    datas.append(bytes(data))
                    srcs.append(text)
                    peers.append(peer)
                else:
                    self._other(bytes(data), text)
        return examined, got

    def _other(self, data: bytes, src: str) -> None:
        """A datagram that is not WireGuard (reader thread): disco and STUN go to their actors; one
        whose mailbox stayed full past its block timeout is dropped and counted (a wire drops too)."""
        kind = classify(data).kind
        try:
            if kind is PacketKind.DISCO:
                at = self.clock.monotonic()
                answered = self._pings is not None and self._pings.answer(data, src, at)
                self.tell_named(self.config.name("disco"), DiscoIn.model_construct(
                    data=data, src=src, derp_region=0, derp_src=None, at=at, answered=answered))
            elif kind is PacketKind.STUN_BINDING:
                at = self.clock.monotonic()
                self.tell_named(self.config.name("stun"), StunIn(data=data, src=src, at=at))
            else:
                self.dropped_unknown_kind += 1
        except MailboxFull:
            self.dropped_queue_full += 1

    def _note_shedding(self) -> None:
        """The reader is shedding initiations over budget: tell the engine it is under load (at most
        every ``LOAD_NOTE_INTERVAL``), so the ones that get through earn cookies, not DH."""
        shed = self.early_drops["initiation_budget"]
        if shed == self._shed_noted:
            return
        now = self.clock.monotonic()
        if now - self._load_noted_at < LOAD_NOTE_INTERVAL:
            return
        self._shed_noted, self._load_noted_at = shed, now
        with contextlib.suppress(UnhandledMessage):  # a sink that is no engine (test rigs)
            self.tell_named(self.config.wg_sink, WgHandshakeLoad())

    # -- outbound ----------------------------------------------------------------------------------
    @handles(WgDatagramOut)
    def on_wg_out(self, msg: WgDatagramOut) -> None:
        self._send_wg(msg.peer, (msg.data,))

    @handles(WgDatagramsOut)
    def on_wgs_out(self, msg: WgDatagramsOut) -> None:
        self._send_wg(msg.peer, msg.datas)

    def _send_wg(self, peer: str, datas: tuple[bytes, ...]) -> None:
        r = self.routes.get(peer)
        if r is None:
            self._park(peer, datas)
            return
        now = self.clock.monotonic()
        use_derp = True
        if r.udp is not None:
            self._send_udp(r.udp, datas)
            r.udp_out += sum(map(len, datas))
            use_derp = now > r.trusted_until
        if use_derp:
            region = self._derp_region(peer, r)
            if region:
                derp = self.lookup(self.config.derp_name(region))
                if derp is not None:
                    try:
                        derp.tell(DerpSend.model_construct(peer=peer, data=datas[0]) if len(datas) == 1
                                  else DerpSends.model_construct(peer=peer, datas=datas))
                    except MailboxFull:  # the relay connection stalled past the block timeout
                        self.dropped_derp_full += len(datas)
                r.derp_out += sum(map(len, datas))
            elif r.udp is None:
                self._park(peer, datas)
        if now - r.last_active_note >= ACTIVITY_NOTE_INTERVAL or now > r.trusted_until:
            r.last_active_note = now
            self.tell_named(self.config.name("disco"), PeerActive(peer=peer))

    def _park(self, peer: str, datas: tuple[bytes, ...]) -> None:
        """Hold datagrams for a peer with no path yet (``_unpark`` sends them when one appears)."""
        now = self.clock.monotonic()
        self._count_lost(self.parked.expire(now))
        lost = self.parked.park(peer, datas, now)
        if lost:
            self._count_lost({peer: lost})

    def _unpark(self, peer: str) -> None:
        """``peer`` may have a path now: send what it had held, in order, if so."""
        if peer not in self.parked:
            return
        r = self.routes.get(peer)
        if r is None or (r.udp is None and not self._derp_region(peer, r)):
            return
        datas, expired = self.parked.take(peer, self.clock.monotonic())
        if expired:
            self._count_lost({peer: expired})
        if datas:
            self.parked_sent += len(datas)
            self._send_wg(peer, datas)

    def _count_lost(self, lost: dict[str, int]) -> None:
        """Held datagrams that found no path in time: a peer in the path table had none, else unknown."""
        for peer, n in lost.items():
            if peer in self.routes:
                self.dropped_no_path += n
            else:
                self.dropped_unknown_peer += n

    def _derp_region(self, peer: str, r: _Route) -> int:
        """The peer's home region, else the region it was heard on (0: none)."""
        if r.derp_region:
            return r.derp_region
        route = self.derp_routes.get(peer)
        return route[0] if route is not None else 0

    @handles(DerpRoute)
    def on_derp_route(self, msg: DerpRoute) -> None:
        before = self.derp_routes.get(msg.peer)
        if msg.present:
            if msg.peer in self.derp_routes or len(self.derp_routes) < MAX_DERP_ROUTES:
                self.derp_routes[msg.peer] = (msg.region, msg.conn)
        elif before == (msg.region, msg.conn):
            del self.derp_routes[msg.peer]
        after = self.derp_routes.get(msg.peer)
        if msg.peer in self.routes and (before[0] if before else 0) != (after[0] if after else 0):
            self._publish_direct(msg.peer)  # the region a home-less peer is reached on changed
            self._unpark(msg.peer)

    def _sendto(self, dst: tuple[str, int], data: bytes) -> None:
        assert self.sock is not None
        with contextlib.suppress(OSError):  # unreachable/refused: the path logic sees missing pongs
            self.sock.sendto(data, udp_lane.dst_for(self.sock, dst))  # 24d: v4-mapped on dual-stack

    def _send_udp(self, dst: tuple[str, int], datas: tuple[bytes, ...]) -> None:
        """Send a burst in order (``udp_lane.send_on``: GSO runs where the socket has GSO)."""
        sock = self.sock
        assert sock is not None
        try:
            res = udp_lane.send_on(sock, dst, datas, self._gso)
        except OSError:  # our socket closed: we are stopping
            return
        self.gso_sends += res.gso_sends
        self.gso_datagrams += res.gso_datagrams
        if not res.gso and self._gso:
            self._gso = False
            self._publish_direct()

    def _publish_direct(self, peer: str | None = None) -> None:
        """Tell the engine which peers it may send to without this actor: those with a UDP address
        on the socket itself, until that address stops being trusted alone (``_send_wg``'s rule for
        UDP only); those with no UDP address but a DERP region through that region's client (the
        rule for DERP only). The whole table, or with ``peer`` that peer's row (or its removal)."""
        routes = self.routes
        names = tuple(routes) if peer is None else (peer,)
        peers: list[str] = []
        derp_peers: list[str] = []
        derp_actors: list[str] = []
        removed: tuple[str, ...] = ()
        for p in names:
            r = routes.get(p)
            region = 0 if r is None or r.udp is not None else self._derp_region(p, r)
            if r is not None and r.udp is not None:
                peers.append(p)
            elif r is not None and region:
                derp_peers.append(p)
                derp_actors.append(self.config.derp_name(region))
            elif peer is not None:
                removed = (p,)
        msg = WgDirectPaths(peers=tuple(peers), addrs=tuple(routes[p].udp for p in peers),
                            until=tuple(routes[p].trusted_until for p in peers), gso=self._gso,
                            reset=peer is None, removed=removed, derp_peers=tuple(derp_peers),
                            derp_actors=tuple(derp_actors))
        with contextlib.suppress(UnhandledMessage, MailboxFull):  # a sink that is no engine (rigs)
            self.tell_named(self.config.wg_sink, msg)

    @handles(WgDirectPathsRequest)
    def on_direct_request(self, msg: WgDirectPathsRequest) -> None:
        self._publish_direct()

    @handles(WgDirectActive)
    def on_direct_active(self, msg: WgDirectActive) -> None:
        """The engine sent to ``peer`` itself: note the activity to disco as ``_send_wg`` does."""
        r = self.routes.get(msg.peer)
        if r is None:
            return
        now = self.clock.monotonic()
        if now - r.last_active_note >= ACTIVITY_NOTE_INTERVAL or now > r.trusted_until:
            r.last_active_note = now
            self.tell_named(self.config.name("disco"), PeerActive(peer=msg.peer))

    @handles(UdpSend)
    def on_udp_send(self, msg: UdpSend) -> None:
        try:
            ip, port = parse_addr(msg.dst)
        except AddrParseError:
            return
        self._sendto((str(ip), port), msg.data)

    @handles(PathUpdate)
    def on_path(self, msg: PathUpdate) -> None:
        """Update the route and the address map; the map is replaced, not changed in place, and the
        version bumped after, so the reader never caches a half-updated view for long."""
        by_addr = {k: v for k, v in self.by_addr.items() if v != msg.peer}
        try:
            if msg.removed:
                self.routes.pop(msg.peer, None)
                self.derp_routes.pop(msg.peer, None)
                self.dropped_unknown_peer += self.parked.forget(msg.peer)
                return
            old = self.routes.get(msg.peer)
            udp = None
            if msg.udp is not None:
                ip, port = parse_addr(msg.udp)
                udp = (str(ip), port)
            r = _Route(udp, msg.udp, msg.trusted_until, msg.derp_region, msg.rtt)
            if old is not None:
                r.udp_out, r.derp_out = old.udp_out, old.derp_out
                r.last_active_note = old.last_active_note
            self.routes[msg.peer] = r
            for a in msg.addrs + ((msg.udp,) if msg.udp else ()):
                ip, port = parse_addr(a)
                by_addr[(str(ip), port)] = msg.peer
        finally:
            self.by_addr = by_addr
            self._paths_version += 1
            self._publish_direct(msg.peer)
            self._publish_peer_endpoints()
        self._unpark(msg.peer)

    def _publish_peer_endpoints(self) -> None:
        """The endpoints the reader gives a socket of their own (``PeerSockets``): each peer's best
        UDP address, trusted or not yet expired from the table (a peer on DERP alone has none)."""
        wanted = frozenset(r.udp for r in self.routes.values() if r.udp is not None)
        if wanted != self._peer_endpoints:
            self._peer_endpoints = wanted

    @handles(WgLiveIndexes)
    def on_live_indexes(self, msg: WgLiveIndexes) -> None:
        """The engine's receiver indexes now: transport for any other index is dropped on read."""
        self._live = frozenset(msg.indexes)

    @handles(WgHandshakeQueueFull)
    def on_handshake_queue(self, msg: WgHandshakeQueueFull) -> None:
        self._initiations_full = msg.full

    @handles(UdpBlackhole)
    def on_blackhole(self, msg: UdpBlackhole) -> None:
        self.blackhole = msg.enabled

    @handles(LocalAddrRequest)
    def local_addr(self, msg: LocalAddrRequest) -> LocalAddr:
        assert self.sock is not None
        return LocalAddr(addr=_text(self.sock.getsockname()))

    @handles(PathStatusRequest)
    def status(self, msg: PathStatusRequest) -> PathStatus:
        """The path table and counters; what the engine sent on our socket itself is counted in."""
        now = self.clock.monotonic()
        self._count_lost(self.parked.expire(now))
        lane_gso = udp_lane.gso_counts(self.ref)
        peers = []
        for peer, r in sorted(self.routes.items()):
            direct = r.udp is not None and now <= r.trusted_until
            region = self._derp_region(peer, r)
            path = "direct" if direct else ("derp" if region else "none")
            peers.append(PeerPath(peer=peer, path=path, addr=r.udp_text if direct else None,
                                  derp_region=region, rtt=r.rtt if direct else None,
                                  udp_bytes_out=r.udp_out + udp_lane.sent_bytes(self.ref, peer),
                                  udp_bytes_in=self._udp_in.get(peer, 0),
                                  derp_bytes_out=r.derp_out + udp_lane.derp_counts(self.ref, peer)[0]))
        return PathStatus(peers=tuple(peers), dropped_unknown_peer=self.dropped_unknown_peer,
                          dropped_no_path=self.dropped_no_path, parked_sent=self.parked_sent,
                          dropped_blackhole=self.dropped_blackhole,
                          unknown_udp_source=self.unknown_udp_source,
                          dropped_unknown_kind=self.dropped_unknown_kind,
                          early_drops=dict(self.early_drops),
                          dropped_derp_full=self.dropped_derp_full + udp_lane.derp_counts(self.ref, "")[1],
                          dropped_queue_full=self.dropped_queue_full + self._wg_sink.dropped,
                          datagrams_read=self.datagrams_read, bytes_read=self.bytes_read,
                          offload="+".join(n for n, on in (("gso", self._gso), ("gro", self._gro)) if on)
                          or "plain",
                          gso_sends=self.gso_sends + lane_gso[0],
                          gso_datagrams=self.gso_datagrams + lane_gso[1],
                          gro_reads=self.gro_reads, gro_datagrams=self.gro_datagrams,
                          peer_sockets=len(ps.socks) if (ps := self._peer_socks) is not None else 0,
                          peer_socket_datagrams=self.peer_socket_datagrams,
                          peer_socket_failures=ps.open_failures if ps is not None else 0,
                          pings_answered=self._pings.answered if self._pings is not None else 0)
