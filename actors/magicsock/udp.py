"""The one UDP socket: reads demultiplexed by ``classify``; ``WgDatagramOut`` routed by the peer's path.

The reader thread drops what needs no actor before anything is copied or queued
(``wire.udp_demux.early_drop``: oversize, wrong-length WireGuard, unknown receiver index, junk), counted
by reason; the engine publishes its live receiver indexes (``WgLiveIndexes``) before it sends any
datagram that could make the peer use a new one, so a session's first packet is never dropped here.

Routing follows Go ``addrForSendLocked``: the trusted best UDP address alone, else the stale UDP address
and the peer's DERP region, else DERP alone; an unknown peer is dropped and counted (fail closed,
never a host socket). Path entries come from the DiscoPinger as ``PathUpdate``. The DERP region is the
peer's home or, while control has not told us that yet, the region the peer's packets came in on
(``DerpRoute``, Go ``fallbackDERPRegionForPeer``).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import select
import socket
import time
from dataclasses import dataclass

from pytsnet.actors.keeper import recall, remember
from pytsnet.actors.magicsock.wg_sink import WgSinkDelivery
from pytsnet.actors.runtime import Actor, MailboxFull, StopReason, UnhandledMessage, handles
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
    UdpRead,
    UdpReads,
    UdpSend,
    WgDatagramIn,
    WgDatagramOut,
    WgDatagramsOut,
    WgHandshakeLoad,
    WgHandshakeQueueFull,
    WgLiveIndexes,
    WgLiveIndexesRequest,
)
from pytsnet.wire.magicsock.addr import AddrParseError, format_addr, parse_addr
from pytsnet.wire.udp_demux import EARLY_DROP_REASONS, PacketKind, classify, early_drop
from pytsnet.wire.wireguard.ratelimit import TokenBucket

READ_TIMEOUT = 0.5
MAX_DATAGRAM = 65535  # the read buffer: a larger datagram is cut, and then dropped as oversize
INITIATIONS_PER_SECOND = 2048  # handshake initiations the reader hands on per second, all sources together
LOAD_NOTE_INTERVAL = 0.25  # how often shedding initiations is reported to the engine as load
READ_EXAMINE = 4 * 64  # datagrams one read call looks at, dropped ones included (the loop stays responsive)
ACTIVITY_NOTE_INTERVAL = 1.0  # how often a busy peer's sends are reported to the DiscoPinger
SOCKET_BUFFER = 4 << 20  # as Go's magicsock (7 MiB there): a burst of a full TCP window must not overflow
READ_BURST = 64  # datagrams already queued on the socket that one read hands over in one message
MAX_DERP_ROUTES = 4096  # DerpRoutes come for admitted peers only; a bound all the same


def _text(sockaddr: tuple) -> str:  # type: ignore[type-arg]
    return format_addr((ipaddress.ip_address(sockaddr[0].split("%")[0]), sockaddr[1]))


@dataclass
class _Route:
    udp: tuple[str, int] | None
    udp_text: str | None
    trusted_until: float
    derp_region: int
    rtt: float | None
    udp_out: int = 0
    udp_in: int = 0
    derp_out: int = 0
    last_active_note: float = float("-inf")


class MagicsockUdp(Actor):
    def __init__(self, config: MagicsockSpawn) -> None:
        self.config = config
        self.bound_port = 0  # ours alone: the StunProber and the keeper are told it (UdpBound)
        self.routes: dict[str, _Route] = {}
        self.by_addr: dict[tuple[str, int], str] = {}
        self.sock: socket.socket | None = None
        self.blackhole = False
        self.dropped_unknown_peer = 0
        self.dropped_no_path = 0
        self.dropped_blackhole = 0
        self.dropped_unknown_kind = 0  # neither STUN, disco nor WireGuard-shaped
        self.dropped_bad_source = 0
        self.dropped_derp_full = 0
        self.unknown_udp_source = 0
        self._src_cache: dict[tuple, str] = {}  # type: ignore[type-arg]
        self._wg_sink = WgSinkDelivery()
        self._peer_at: dict[str, str | None] = {}  # src text -> peer (by_addr), reset on PathUpdate
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

    def on_start(self) -> None:
        c = self.config
        fam = socket.AF_INET6 if ":" in c.bind_host else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # the kernel caps it at [rw]mem_max; best effort
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        before = recall(self, c.memory)  # a restart rebinds the port peers know
        sock.bind((c.bind_host, before.port if isinstance(before, UdpBound) else c.bind_port))
        sock.setblocking(False)
        self.bound_port = sock.getsockname()[1]
        bound = UdpBound(port=self.bound_port)
        remember(self, c.memory, bound)
        self.tell_named(c.name("stun"), bound)
        self.sock = sock
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self.start_io_loop(self._read, sock.close)
        self.tell_named(c.name("disco"), ResendPaths())  # a restarted router asks for the path table again
        with contextlib.suppress(UnhandledMessage):  # a sink that is no engine (test rigs) publishes none
            self.tell_named(c.wg_sink, WgLiveIndexesRequest())

    def on_stop(self, reason: StopReason) -> None:
        if self.sock is not None:
            self.sock.close()

    @handles(MagicsockResend)
    def on_resend(self, msg: MagicsockResend) -> None:
        """A (re)started StunProber wants the bound port (for the bound endpoint it advertises)."""
        if self.bound_port:
            self.tell_named(msg.reply_to, UdpBound(port=self.bound_port))

    def _read(self) -> UdpRead | UdpReads | None:
        """Wait for one datagram, then take what else is already queued (up to ``READ_BURST`` kept).

        The socket is non-blocking (a timeout-mode socket would poll for the full timeout before a
        ``MSG_DONTWAIT`` read too): the wait is an explicit ``poll`` bounded by ``READ_TIMEOUT``.
        Each datagram lands in one reused buffer and is copied only if ``early_drop`` keeps it.
        """
        sock = self.sock
        assert sock is not None
        if not self._poller.poll(READ_TIMEOUT * 1000):
            return None
        reads: list[UdpRead] = []
        buf, view, drops = self._buf, self._view, self.early_drops
        live, full, budget, known = self._live, self._initiations_full, self._initiations.allow, self.by_addr
        examined = got = 0
        try:
            while len(reads) < READ_BURST and examined < READ_EXAMINE:
                try:
                    n, src = sock.recvfrom_into(buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    if e.errno == errno.ECONNREFUSED:  # an ICMP error for an earlier send: skip it
                        continue
                    if reads:
                        break  # hand over what we have; the next call sees the error again
                    raise
                examined += 1
                got += n
                data = view[:n]
                reason = early_drop(data, live, initiations_full=full)
                if (reason is None and data[0] == 1 and (src[0], src[1]) not in known
                        and not budget(time.monotonic())):
                    reason = "initiation_budget"  # strangers' initiations; a peer's endpoint is exempt
                if reason is not None:
                    drops[reason] += 1
                    continue
                reads.append(UdpRead.model_construct(data=bytes(data), src=self._src_text(src)))
        finally:
            self.datagrams_read += examined
            self.bytes_read += got
        if not reads:
            return None
        return reads[0] if len(reads) == 1 else UdpReads.model_construct(reads=tuple(reads))

    def _src_text(self, src: tuple) -> str:  # type: ignore[type-arg]
        """``_text`` memoised per socket address (a handful of peers; parsing per packet shows up)."""
        cache = self._src_cache
        text = cache.get(src)
        if text is None:
            if len(cache) >= 1024:
                cache.clear()
            text = cache[src] = _text(src)
        return text

    # -- inbound -----------------------------------------------------------------------------------
    @handles(UdpRead)
    def on_read(self, msg: UdpRead) -> None:
        wg = self._classify(msg)
        if wg is not None:
            self.tell_named(self.config.wg_sink, wg)
        self._note_shedding()

    @handles(UdpReads)
    def on_reads(self, msg: UdpReads) -> None:
        """A burst: WireGuard datagrams go on to the engine as one message, the rest one by one."""
        wg = [d for d in map(self._classify, msg.reads) if d is not None]
        if wg:
            self._wg_sink.deliver(self.lookup(self.config.wg_sink), wg)
        self._note_shedding()

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

    def _classify(self, msg: UdpRead) -> WgDatagramIn | None:
        """Route one read: DISCO and STUN are told on here; a WireGuard datagram is returned."""
        if self.blackhole:
            self.dropped_blackhole += 1
            return None
        kind = classify(msg.data).kind
        if kind is PacketKind.WIREGUARD:
            peer = self._peer_at.get(msg.src, "")
            if peer == "":
                try:
                    ip, port = parse_addr(msg.src)
                except AddrParseError:
                    self.dropped_bad_source += 1
                    return None
                peer = self.by_addr.get((str(ip), port))
                if len(self._peer_at) >= 1024:
                    self._peer_at.clear()
                self._peer_at[msg.src] = peer
            if peer is None:
                self.unknown_udp_source += 1
            else:
                self.routes[peer].udp_in += len(msg.data)
            return WgDatagramIn.model_construct(peer=peer, data=msg.data, via="udp", src=msg.src)
        if kind is PacketKind.DISCO:
            self.tell_named(self.config.name("disco"), DiscoIn(data=msg.data, src=msg.src))
        elif kind is PacketKind.STUN_BINDING:
            self.tell_named(self.config.name("stun"), StunIn(data=msg.data, src=msg.src,
                                                                      at=self.clock.monotonic()))
        else:
            self.dropped_unknown_kind += 1
        return None


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
            self.dropped_unknown_peer += len(datas)
            return
        now = self.clock.monotonic()
        use_derp = True
        if r.udp is not None:
            for data in datas:
                self._sendto(r.udp, data)
                r.udp_out += len(data)
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
                self.dropped_no_path += len(datas)
        if now - r.last_active_note >= ACTIVITY_NOTE_INTERVAL or now > r.trusted_until:
            r.last_active_note = now
            self.tell_named(self.config.name("disco"), PeerActive(peer=peer))

    def _derp_region(self, peer: str, r: _Route) -> int:
        """The peer's home region, else the region it was heard on (0: none)."""
        if r.derp_region:
            return r.derp_region
        route = self.derp_routes.get(peer)
        return route[0] if route is not None else 0

    @handles(DerpRoute)
    def on_derp_route(self, msg: DerpRoute) -> None:
        if msg.present:
            if msg.peer in self.derp_routes or len(self.derp_routes) < MAX_DERP_ROUTES:
                self.derp_routes[msg.peer] = (msg.region, msg.conn)
        elif self.derp_routes.get(msg.peer) == (msg.region, msg.conn):
            del self.derp_routes[msg.peer]

    def _sendto(self, dst: tuple[str, int], data: bytes) -> None:
        assert self.sock is not None
        with contextlib.suppress(OSError):  # unreachable/refused: the path logic sees missing pongs
            self.sock.sendto(data, dst)

    @handles(UdpSend)
    def on_udp_send(self, msg: UdpSend) -> None:
        try:
            ip, port = parse_addr(msg.dst)
        except AddrParseError:
            return
        self._sendto((str(ip), port), msg.data)

    @handles(PathUpdate)
    def on_path(self, msg: PathUpdate) -> None:
        self._peer_at.clear()
        for k in [k for k, v in self.by_addr.items() if v == msg.peer]:
            del self.by_addr[k]
        if msg.removed:
            self.routes.pop(msg.peer, None)
            self.derp_routes.pop(msg.peer, None)
            return
        old = self.routes.get(msg.peer)
        udp = None
        if msg.udp is not None:
            ip, port = parse_addr(msg.udp)
            udp = (str(ip), port)
        r = _Route(udp, msg.udp, msg.trusted_until, msg.derp_region, msg.rtt)
        if old is not None:
            r.udp_out, r.udp_in, r.derp_out = old.udp_out, old.udp_in, old.derp_out
            r.last_active_note = old.last_active_note
        self.routes[msg.peer] = r
        for a in msg.addrs + ((msg.udp,) if msg.udp else ()):
            ip, port = parse_addr(a)
            self.by_addr[(str(ip), port)] = msg.peer

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
        now = self.clock.monotonic()
        peers = []
        for peer, r in sorted(self.routes.items()):
            direct = r.udp is not None and now <= r.trusted_until
            region = self._derp_region(peer, r)
            path = "direct" if direct else ("derp" if region else "none")
            peers.append(PeerPath(peer=peer, path=path, addr=r.udp_text if direct else None,
                                  derp_region=region, rtt=r.rtt if direct else None,
                                  udp_bytes_out=r.udp_out, udp_bytes_in=r.udp_in, derp_bytes_out=r.derp_out))
        return PathStatus(peers=tuple(peers), dropped_unknown_peer=self.dropped_unknown_peer,
                          dropped_no_path=self.dropped_no_path, dropped_blackhole=self.dropped_blackhole,
                          unknown_udp_source=self.unknown_udp_source,
                          dropped_unknown_kind=self.dropped_unknown_kind,
                          dropped_bad_source=self.dropped_bad_source, early_drops=dict(self.early_drops),
                          dropped_derp_full=self.dropped_derp_full,
                          datagrams_read=self.datagrams_read, bytes_read=self.bytes_read)
