"""The sans-IO interface: IP packets in, IP packets out, time passed in (smoltcp's ``iface``).

``Stack.receive`` parses and demultiplexes one packet to its flow; ``Stack.poll`` returns every
outbound IP packet that is ready; ``Stack.next_deadline`` says when ``poll`` must run again. Nothing
a peer sends can raise out of ``receive``: unparseable or unwanted packets are dropped and counted
in ``Stack.drops`` by reason. Every table and queue has a bound from ``StackConfig``.

A TCP flow can be owned outside the stack (the per-flow actors do this): ``detach(conn)`` takes it
out of the flow table, after which ``receive`` only demultiplexes its segments (by ports, unparsed)
into ``take_flow_segments()``; the owner parses them, drives the ``TcpConnection`` and wraps its
output with ``emit_tcp_packet``; ``release(key, time_wait, now)`` gives the 4-tuple back (into the
TIME_WAIT table when the flow ended there).

SYN floods: a listener starts a stateful handshake only while fewer than ``backlog`` connections
are half-open or waiting for ``accept``, one remote address holds at most
``max_half_open_per_source`` half-open ones (stack-wide), and half-open entries die after
``TcpConfig.synack_retries``. A SYN beyond those bounds is answered with a SYN cookie
(``tcp.syncookie``; no state until a valid final ACK) unless ``syncookies`` is off; only a full
accept queue drops SYNs, as on Linux. ``Stack.stats`` counts cookies sent and validated.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import random
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from pytsnet.netstack import icmp, ipv4, ipv6, udp
from pytsnet.netstack.checksum import verify
from pytsnet.netstack.config import IPAddress, StackConfig
from pytsnet.netstack.errors import (
    AddressInUse,
    Ipv4ParseError,
    Ipv6ParseError,
    ParseError,
    SocketError,
    WouldBlock,
)
from pytsnet.netstack.forward import Forwarded, ForwardedDatagram, ForwardedEcho, ForwardedTcp
from pytsnet.netstack.tcp import segment as tcpseg
from pytsnet.netstack.tcp import syncookie
from pytsnet.netstack.tcp.connection import DEFAULT_MSS_V4, DEFAULT_MSS_V6, TcpConfig, TcpConnection, TcpState
from pytsnet.netstack.tcp.errors import TcpParseError
from pytsnet.netstack.tcp.segment import TcpSegment
from pytsnet.netstack.tcp.timewait import TimeWaitTable

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_TSMP = 99  # Tailscale Message Protocol (Go net/packet/tsmp.go): 'p' ping / 'o' pong here
TSMP_PING, TSMP_PONG = b"p", b"o"

Endpoint = tuple[IPAddress, int]
EchoKey = tuple[IPAddress, int, int]  # (peer address, echo identifier, sequence)
FlowKey = tuple[int, IPAddress, int, IPAddress, int]  # (protocol, local ip, local port, remote ip, port)
IsnGenerator = Callable[[IPAddress, int, IPAddress, int, float], int]


def rfc6528_isn(secret: bytes) -> IsnGenerator:
    """ISN = M + F(4-tuple, secret) (RFC 6528): a 4 µs clock plus a keyed hash of the connection id."""

    def isn(local: IPAddress, lport: int, remote: IPAddress, rport: int, now: float) -> int:
        h = hashlib.blake2s(local.packed + lport.to_bytes(2, "big") + remote.packed
                            + rport.to_bytes(2, "big"), key=secret[:32], digest_size=4)
        return (int(now * 250_000) + int.from_bytes(h.digest(), "big")) & 0xFFFFFFFF

    return isn


@dataclass
class _Datagram:
    data: bytes
    source: Endpoint


class UdpEndpoint:
    """A bound UDP port: ``sendto`` queues a packet for the next ``poll``, ``recvfrom`` pops one.

    The receive queue is bounded in datagrams and bytes; overflow drops the newest datagram and
    counts it as ``udp_queue_full`` (as a kernel socket does).
    """

    def __init__(self, stack: Stack, local: IPAddress | None, port: int) -> None:
        self._stack = stack
        self.local_address = local
        self.port = port
        self.remote: Endpoint | None = None
        self._queue: collections.deque[_Datagram] = collections.deque()
        self._queued_bytes = 0
        self.closed = False

    # -- app side ----------------------------------------------------------------------------
    def connect(self, remote: tuple[str | IPAddress, int]) -> None:
        """Fix the peer: ``send`` goes there and datagrams from anyone else are dropped."""
        self.remote = (ipaddress.ip_address(remote[0]), remote[1])

    def sendto(self, data: bytes, remote: tuple[str | IPAddress, int]) -> None:
        self._check_open()
        dst = ipaddress.ip_address(remote[0])
        src = self.local_address or self._stack.source_for(dst)
        self._stack._send_udp(src, self.port, dst, remote[1], bytes(data))

    def send(self, data: bytes) -> None:
        if self.remote is None:
            raise SocketError("send on an unconnected UDP endpoint")
        self.sendto(data, self.remote)

    def recvfrom(self) -> tuple[bytes, Endpoint] | None:
        """The oldest queued datagram and its source, or None if the queue is empty."""
        if not self._queue:
            return None
        d = self._queue.popleft()
        self._queued_bytes -= len(d.data)
        return d.data, d.source

    def recv(self) -> bytes | None:
        got = self.recvfrom()
        return None if got is None else got[0]

    @property
    def readable(self) -> bool:
        return bool(self._queue)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stack._udp.pop((self.local_address, self.port), None)
            self._queue.clear()
            self._queued_bytes = 0

    def _check_open(self) -> None:
        if self.closed:
            raise SocketError("UDP endpoint is closed")

    # -- stack side --------------------------------------------------------------------------
    def _deliver(self, data: bytes, source: Endpoint) -> bool:
        cfg = self._stack.config
        if self.remote is not None and source != self.remote:
            self._stack._drop("udp_not_connected_peer")
            return True
        full = len(self._queue) >= cfg.udp_queue_datagrams
        if full or self._queued_bytes + len(data) > cfg.udp_queue_bytes:
            self._stack._drop("udp_queue_full")
            return True
        self._queue.append(_Datagram(data, source))
        self._queued_bytes += len(data)
        return True


class TcpListener:
    """A passive open on a port: handshakes in progress plus established connections not yet accepted.

    A SYN starts a stateful handshake only while both together are fewer than ``backlog``; beyond
    that it gets a SYN cookie (no state), so a silent SYN flood costs bounded memory and shuts out
    no one. A cookie's ACK is accepted while fewer than ``backlog`` connections wait for ``accept``,
    so at most ``2 * backlog`` are ever held. A full accept queue (the app is not accepting) drops
    SYNs and cookie ACKs silently, as Linux does; the peer's retransmission gets in once the app
    accepts.
    """

    def __init__(self, stack: Stack, local: IPAddress | None, port: int, backlog: int) -> None:
        self._stack = stack
        self.local_address = local
        self.port = port
        self.backlog = backlog
        self._pending: set[FlowKey] = set()
        self._ready: collections.deque[TcpConnection] = collections.deque()
        self._cookies_until = float("-inf")  # cookie ACKs are only checked while cookies are live
        self.closed = False

    def accept(self) -> TcpConnection | None:
        """The oldest fully established connection, or None."""
        return self._ready.popleft() if self._ready else None

    @property
    def readable(self) -> bool:
        return bool(self._ready)

    def close(self) -> None:
        """Stop listening; connections not yet accepted are reset."""
        if self.closed:
            return
        self.closed = True
        self._stack._listeners.pop((self.local_address, self.port), None)
        for key in list(self._pending):
            conn = self._stack._tcp.get(key)
            if conn is not None:
                conn.abort()
        for conn in self._ready:
            conn.abort()
        self._pending.clear()
        self._ready.clear()

    def _full(self) -> bool:
        return len(self._pending) + len(self._ready) >= self.backlog

    def _accept_queue_full(self) -> bool:
        return len(self._ready) >= self.backlog


class Stack:
    """One userspace IP host: owns ``config.addresses``, its UDP endpoints and TCP flows."""

    def __init__(self, config: StackConfig, *, rng: random.Random | None = None,
                 isn: IsnGenerator | None = None, tcp_config: TcpConfig | None = None,
                 cookie_keys: Callable[[int], bytes] = secrets.token_bytes) -> None:
        if not config.addresses:
            raise ValueError("StackConfig.addresses is empty")
        self.config = config
        self.tcp_config = tcp_config or TcpConfig(mtu=config.mtu, send_buffer=config.send_buffer,
                                                  recv_buffer=config.recv_buffer,
                                                  congestion_control=config.congestion_control)
        self._time_wait = TimeWaitTable(config.max_time_wait, self.tcp_config.time_wait)
        self._isn = isn or rfc6528_isn(rng.randbytes(32) if rng is not None else secrets.token_bytes(32))
        self._rng = rng or random.Random()
        self._cookies = syncookie.SynCookies(config.syncookie_period, key_source=cookie_keys)
        self.drops: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()  # events that are not drops
        self.received = 0
        self._out: collections.deque[bytes] = collections.deque()
        self._udp: dict[tuple[IPAddress | None, int], UdpEndpoint] = {}
        self._ident = self._rng.randrange(0x10000)
        self._tcp: dict[FlowKey, TcpConnection] = {}
        self._listeners: dict[tuple[IPAddress | None, int], TcpListener] = {}
        self._pending_of: dict[FlowKey, TcpListener] = {}
        self._half_open_by_src: collections.Counter[IPAddress] = collections.Counter()
        self._external: set[FlowKey] = set()
        self._flow_in: list[tuple[FlowKey, bytes]] = []
        self._fwd_syn: dict[FlowKey, TcpSegment] = {}  # forwarded SYNs whose destination is being dialed
        self._fwd_new: list[Forwarded] = []
        self.fallback_tcp = False
        """A SYN for our own address on a port nobody listens on waits (as a forwarded one, bounded)
        for the app's fallback TCP handlers (Go's ``RegisterFallbackTCPHandler``) instead of an RST."""
        self.service_addresses: frozenset[IPAddress] = frozenset()
        """VIPs of the services this node hosts (20d): every TCP SYN to one waits, as a forwarded one,
        for the app's service listeners; ICMP echo is answered; nothing else is accepted there."""
        self._echoes: dict[EchoKey, list[float | None]] = {}  # our echo requests: [sent at, RTT or None]
        self._tsmp: dict[tuple[IPAddress, bytes], tuple[float, tuple[float, int] | None]] = {}

    # -- the three sans-IO entry points ------------------------------------------------------
    def receive(self, ip_packet: bytes, now: float) -> None:
        """Accept one IP packet from the link. Never raises for anything the peer sent."""
        self.received += 1
        try:
            self._receive(bytes(ip_packet), now)
        except ParseError as exc:
            self._drop(exc.reason)

    def poll(self, now: float) -> list[bytes]:
        """Every outbound IP packet ready at ``now`` (the caller writes them to the link)."""
        out = list(self._out)
        self._out.clear()
        self._time_wait.expire(now)
        for key, conn in list(self._tcp.items()):
            _, local, _, remote, _ = key
            for seg in conn.poll(now):
                out.append(self._ip_packet(local, remote, PROTO_TCP, tcpseg.emit_segment(seg, local, remote)))
            self._tcp_housekeeping(key, conn)
            if conn.state is TcpState.TIME_WAIT:
                # Its last ACK is out: keep only the few ints TIME_WAIT needs (bounded table).
                snd_nxt, rcv_nxt = conn.time_wait_state()
                self._time_wait.add(key, key[2], key[4], snd_nxt, rcv_nxt, now)
                del self._tcp[key]
        return out

    def next_deadline(self) -> float | None:
        """The earliest time ``poll`` has work to do; ``None`` when nothing is scheduled."""
        best = self._time_wait.next_deadline()
        for conn in self._tcp.values():
            d = conn.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        return best

    @property
    def tcp_flows(self) -> int:
        """Connections in the flow table, owned here or detached to an external owner."""
        return len(self._tcp) + len(self._external)

    # -- externally owned flows ----------------------------------------------------------------
    def detach(self, conn: TcpConnection) -> FlowKey:
        """Hand ``conn`` to an outside owner; from now on its segments go to ``take_flow_segments``."""
        key: FlowKey = (PROTO_TCP, conn.local[0], conn.local[1], conn.remote[0], conn.remote[1])
        if self._tcp.get(key) is not conn:
            raise SocketError(f"TCP flow {key} is not owned by this stack")
        del self._tcp[key]
        self._forget_half_open(key)
        self._external.add(key)
        return key

    def adopt(self, key: FlowKey) -> None:
        """Route ``key``'s segments to ``take_flow_segments``: a flow detached by an earlier stack
        (its owner outlived a restart of this one) and still open."""
        if key in self._tcp:
            raise AddressInUse(f"TCP flow {key} is owned by this stack")
        self._external.add(key)

    def take_flow_segments(self) -> list[tuple[FlowKey, bytes]]:
        """TCP segments (raw, checksum not yet verified) received for detached flows since the last call."""
        got, self._flow_in = self._flow_in, []
        return got

    def release(self, key: FlowKey, time_wait: tuple[int, int] | None, now: float) -> None:
        """A detached flow ended; with ``(snd_nxt, rcv_nxt)`` its 4-tuple enters TIME_WAIT."""
        if key not in self._external:
            return
        self._external.discard(key)
        if time_wait is not None:
            self._time_wait.add(key, key[2], key[4], time_wait[0], time_wait[1], now)

    # -- app-facing endpoints ----------------------------------------------------------------
    def udp_bind(self, port: int = 0, address: str | IPAddress | None = None) -> UdpEndpoint:
        """Bind a UDP port (0 picks an ephemeral one) on ``address`` or on every stack address."""
        local = None if address is None else ipaddress.ip_address(address)
        if local is not None and not self.config.owns(local):
            raise SocketError(f"{local} is not an address of this stack")
        if len(self._udp) >= self.config.max_udp_endpoints:
            raise WouldBlock("UDP endpoint table full")
        if port == 0:
            port = self._ephemeral_port(lambda p: (None, p) not in self._udp and (local, p) not in self._udp)
        elif (local, port) in self._udp or (None, port) in self._udp or (
                local is None and any(p == port for _, p in self._udp)):
            raise AddressInUse(f"UDP port {port}")
        ep = UdpEndpoint(self, local, port)
        self._udp[(local, port)] = ep
        return ep

    def tcp_listen(self, port: int, address: str | IPAddress | None = None,
                   backlog: int | None = None) -> TcpListener:
        """Passive open on ``port``; ``backlog`` defaults to (and is capped by) the config's."""
        local = None if address is None else ipaddress.ip_address(address)
        if local is not None and not self.config.owns(local):
            raise SocketError(f"{local} is not an address of this stack")
        if (local, port) in self._listeners or (None, port) in self._listeners or (
                local is None and any(p == port for _, p in self._listeners)):
            raise AddressInUse(f"TCP port {port}")
        cap = self.config.accept_backlog
        lst = TcpListener(self, local, port, cap if backlog is None else max(1, min(backlog, cap)))
        self._listeners[(local, port)] = lst
        return lst

    def tcp_connect(self, remote: tuple[str | IPAddress, int], now: float,
                    local_port: int = 0) -> TcpConnection:
        """Active open: the SYN goes out on the next ``poll``."""
        dst = ipaddress.ip_address(remote[0])
        src = self.source_for(dst)
        if self.tcp_flows >= self.config.max_tcp_connections:
            raise WouldBlock("TCP flow table full")
        rport = remote[1]
        if local_port == 0:
            local_port = self._ephemeral_port(
                lambda p: (PROTO_TCP, src, p, dst, rport) not in self._tcp
                and (PROTO_TCP, src, p, dst, rport) not in self._external
                and (PROTO_TCP, src, p, dst, rport) not in self._time_wait
                and (src, p) not in self._listeners and (None, p) not in self._listeners)
        key: FlowKey = (PROTO_TCP, src, local_port, dst, rport)
        if key in self._tcp or key in self._external:
            raise AddressInUse(f"TCP flow {key}")
        if key in self._time_wait:
            raise AddressInUse(f"TCP flow {key} is in TIME_WAIT")
        conn = TcpConnection.connect((src, local_port), (dst, rport),
                                     self._isn(src, local_port, dst, rport, now), now, self.tcp_config)
        self._tcp[key] = conn
        return conn

    # -- our own echo requests (the LocalAPI's ``ping?type=ICMP``) ------------------------------
    def send_echo_request(self, dst: IPAddress, ident: int, seq: int, data: bytes, now: float) -> None:
        """Queue an echo request to ``dst`` from our address of its family and remember it, so the
        matching reply yields a round-trip time (``echo_rtt``) instead of being ignored. At most
        ``max_pending_echoes`` are remembered: the oldest is forgotten (its reply then ignored).
        ``SocketError`` without an address of ``dst``'s family; ``WouldBlock`` if the queue is full."""
        src = self.source_for(dst)
        if len(self._out) >= self.config.max_outbound_packets:
            raise WouldBlock("outbound queue full")
        key = (dst, ident & 0xFFFF, seq & 0xFFFF)
        self._echoes.pop(key, None)
        while len(self._echoes) >= self.config.max_pending_echoes:
            del self._echoes[next(iter(self._echoes))]
            self._drop("echo_pending_evicted")
        self._echoes[key] = [now, None]
        if dst.version == 4:
            req = icmp.echo(icmp.ICMP_ECHO_REQUEST, ident, seq, data)
            self._send_ip(src, dst, PROTO_ICMP, icmp.emit_icmpv4(req))
        else:
            msg = icmp.echo(icmp.ICMPV6_ECHO_REQUEST, ident, seq, data)
            self._send_ip(src, dst, PROTO_ICMPV6, icmp.emit_icmpv6(msg, src, dst))

    def echo_rtt(self, dst: IPAddress, ident: int, seq: int) -> float | None:
        """Seconds from the request to its reply once it came (then forgotten), else None."""
        key = (dst, ident & 0xFFFF, seq & 0xFFFF)
        entry = self._echoes.get(key)
        if entry is None or entry[1] is None:
            return None
        del self._echoes[key]
        return entry[1]

    def forget_echo(self, dst: IPAddress, ident: int, seq: int) -> None:
        """The asker gave up (timeout): a late reply is ignored."""
        self._echoes.pop((dst, ident & 0xFFFF, seq & 0xFFFF), None)

    def send_tsmp_ping(self, dst: IPAddress, data: bytes, now: float) -> None:
        """Go ``sendTSMPPing``: a TSMP ping (``'p'`` + 8 opaque bytes) to ``dst``; the pong echoing
        ``data`` yields (RTT, its PeerAPI port) through ``tsmp_pong``. Bounded as echo requests."""
        if len(data) != 8:
            raise ValueError("a TSMP ping carries 8 bytes")
        src = self.source_for(dst)
        if len(self._out) >= self.config.max_outbound_packets:
            raise WouldBlock("outbound queue full")
        key = (dst, bytes(data))
        self._tsmp.pop(key, None)
        while len(self._tsmp) >= self.config.max_pending_echoes:
            del self._tsmp[next(iter(self._tsmp))]
            self._drop("tsmp_pending_evicted")
        self._tsmp[key] = (now, None)
        self._send_ip(src, dst, PROTO_TSMP, TSMP_PING + key[1])

    def tsmp_pong(self, dst: IPAddress, data: bytes) -> tuple[float, int] | None:
        """(seconds from ping to pong, the pong's PeerAPI port) once it came (then forgotten)."""
        entry = self._tsmp.get((dst, bytes(data)))
        if entry is None or entry[1] is None:
            return None
        del self._tsmp[(dst, bytes(data))]
        return entry[1]

    def forget_tsmp(self, dst: IPAddress, data: bytes) -> None:
        self._tsmp.pop((dst, bytes(data)), None)

    def _receive_tsmp(self, src: IPAddress, dst: IPAddress, payload: bytes, now: float) -> None:
        """A TSMP ping is answered with a pong (Go's tstun ``injectOutboundPong``: the 8 bytes, then
        the PeerAPI port, big-endian); a pong to our ping is recorded; anything else is counted."""
        kind = payload[:1]
        if kind == TSMP_PING and len(payload) >= 9:
            ours = self.config.tsmp_peerapi_port.to_bytes(2, "big")
            self._send_ip(dst, src, PROTO_TSMP, TSMP_PONG + payload[1:9] + ours)
            return
        if kind == TSMP_PONG and len(payload) >= 9:
            key = (src, bytes(payload[1:9]))
            entry = self._tsmp.get(key)
            if entry is not None and entry[1] is None:
                port = int.from_bytes(payload[9:11], "big") if len(payload) >= 11 else 0
                self._tsmp[key] = (entry[0], (max(0.0, now - entry[0]), port))
                return
        self._drop("tsmp_ignored")

    def _echo_reply(self, src: IPAddress, msg: icmp.IcmpMessage, now: float) -> None:
        entry = self._echoes.get((src, msg.echo_ident, msg.echo_seq))
        if entry is None or entry[1] is not None:
            self._drop("icmp_ignored")  # not ours, or a duplicate
            return
        sent = entry[0]
        assert sent is not None
        entry[1] = max(0.0, now - sent)

    def source_for(self, dst: IPAddress) -> IPAddress:
        """Our address of the same family as ``dst``."""
        for a in self.config.addresses:
            if a.version == dst.version:
                return a
        raise SocketError(f"no local address for {dst}")

    # -- internals: demultiplexing ------------------------------------------------------------
    def _drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def _receive(self, raw: bytes, now: float) -> None:
        if not raw:
            raise ParseError("empty")
        version = raw[0] >> 4
        src: IPAddress
        dst: IPAddress
        if version == 4:
            pkt4 = ipv4.parse_ipv4(raw)
            src, dst, proto, payload = pkt4.src, pkt4.dst, pkt4.protocol, pkt4.payload
        elif version == 6 and self.config.enable_ipv6:
            pkt6 = ipv6.parse_ipv6(raw)
            src, dst, proto, payload = pkt6.src, pkt6.dst, pkt6.next_header, pkt6.payload
        else:
            raise ParseError("ip_version", str(version))
        forwarded = service = False
        if not self.config.owns(dst):
            if dst in self.service_addresses:  # a VIP we host (20d)
                service = True
            else:
                policy = self.config.forward
                reason = "not_our_address" if policy is None else policy.decide(dst)
                if reason is not None:
                    self._drop(reason)
                    return
                forwarded = True
        if src.is_multicast or src.is_unspecified or src == dst:
            self._drop("bad_source")
            return
        if forwarded:
            self._receive_forwarded(src, dst, proto, payload, now)
        elif service:
            self._receive_service(src, dst, proto, payload, now)
        elif proto == PROTO_UDP:
            self._receive_udp(raw, src, dst, payload)
        elif proto == PROTO_TCP:
            self._receive_tcp(src, dst, payload, now)
        elif proto == PROTO_ICMP and version == 4:
            self._receive_icmpv4(src, dst, icmp.parse_icmpv4(payload), now)
        elif proto == PROTO_ICMPV6 and version == 6:
            self._receive_icmpv6(src, dst, icmp.parse_icmpv6(payload, src, dst), now)
        elif proto == PROTO_TSMP:
            self._receive_tsmp(src, dst, payload, now)
        else:
            self._drop("protocol_unsupported")

    def _receive_udp(self, raw: bytes, src: IPAddress, dst: IPAddress, payload: bytes) -> None:
        d = udp.parse_udp(payload, src, dst)
        ep = self._udp.get((dst, d.dst_port)) or self._udp.get((None, d.dst_port))
        if ep is None:
            self._drop("udp_port_unreachable")
            if src.version == 4:
                self._send_ip(dst, src, PROTO_ICMP, icmp.emit_icmpv4(icmp.port_unreachable_v4(raw)))
            else:
                msg = icmp.port_unreachable_v6(raw)
                self._send_ip(dst, src, PROTO_ICMPV6, icmp.emit_icmpv6(msg, dst, src))
            return
        ep._deliver(d.payload, (src, d.src_port))

    def _receive_icmpv4(self, src: IPAddress, dst: IPAddress, msg: icmp.IcmpMessage, now: float) -> None:
        if msg.type == icmp.ICMP_ECHO_REQUEST and msg.code == 0 and self.config.icmp_echo:
            reply = icmp.IcmpMessage(icmp.ICMP_ECHO_REPLY, 0, msg.rest, msg.body)
            self._send_ip(dst, src, PROTO_ICMP, icmp.emit_icmpv4(reply))
        elif msg.type == icmp.ICMP_ECHO_REPLY and msg.code == 0:
            self._echo_reply(src, msg, now)
        else:
            self._drop("icmp_ignored")

    def _receive_icmpv6(self, src: IPAddress, dst: IPAddress, msg: icmp.IcmpMessage, now: float) -> None:
        if msg.type == icmp.ICMPV6_ECHO_REQUEST and msg.code == 0 and self.config.icmp_echo:
            reply = icmp.IcmpMessage(icmp.ICMPV6_ECHO_REPLY, 0, msg.rest, msg.body)
            self._send_ip(dst, src, PROTO_ICMPV6, icmp.emit_icmpv6(reply, dst, src))
        elif msg.type == icmp.ICMPV6_ECHO_REPLY and msg.code == 0:
            self._echo_reply(src, msg, now)
        else:
            self._drop("icmp_ignored")

    def _receive_forwarded(self, src: IPAddress, dst: IPAddress, proto: int, payload: bytes,
                           now: float) -> None:
        """A packet the forward policy admitted: TCP to its flow (or a new SYN for a forwarder), UDP
        and ICMP echo requests queued for ``take_forwards``; nothing else is forwarded."""
        if proto == PROTO_TCP:
            self._receive_tcp(src, dst, payload, now, forwarded=True)
            return
        if len(self._fwd_new) >= self.config.max_forward_pending:
            self._drop("forward_queue_full")
            return
        if proto == PROTO_UDP:
            d = udp.parse_udp(payload, src, dst)
            self._fwd_new.append(ForwardedDatagram(src, d.src_port, dst, d.dst_port, d.payload))
            return
        if proto == PROTO_ICMP and src.version == 4:
            msg = icmp.parse_icmpv4(payload)
            if msg.type == icmp.ICMP_ECHO_REQUEST and msg.code == 0:
                self._fwd_new.append(ForwardedEcho(src, dst, msg.rest, msg.body))
                return
        elif proto == PROTO_ICMPV6 and src.version == 6:
            msg = icmp.parse_icmpv6(payload, src, dst)
            if msg.type == icmp.ICMPV6_ECHO_REQUEST and msg.code == 0:
                self._fwd_new.append(ForwardedEcho(src, dst, msg.rest, msg.body))
                return
        self._drop("forward_protocol_unsupported")

    def _receive_service(self, src: IPAddress, dst: IPAddress, proto: int, payload: bytes,
                         now: float) -> None:
        """A packet to one of our VIPs (20d): TCP as a forwarded flow (the service listeners decide
        on a SYN), ICMP echo answered (Go's netstack does too), everything else dropped, counted."""
        if proto == PROTO_TCP:
            self._receive_tcp(src, dst, payload, now, forwarded=True)
        elif proto == PROTO_ICMP and src.version == 4:
            self._receive_icmpv4(src, dst, icmp.parse_icmpv4(payload), now)
        elif proto == PROTO_ICMPV6 and src.version == 6:
            self._receive_icmpv6(src, dst, icmp.parse_icmpv6(payload, src, dst), now)
        else:
            self._drop("service_protocol_unsupported")

    def _forward_syn(self, key: FlowKey, seg: TcpSegment, src: IPAddress, dst: IPAddress) -> None:
        """A segment to a forwarded destination with no connection: a SYN waits (bounded) while a
        forwarder dials, as Go's netstack does before completing the handshake; else a RST."""
        flags = seg.flags
        if flags & tcpseg.SYN and not flags & (tcpseg.RST | tcpseg.ACK | tcpseg.FIN):
            if key in self._fwd_syn:
                self.stats["forward_syn_retransmitted"] += 1  # still dialing
            elif len(self._fwd_syn) >= self.config.max_forward_pending:
                self._drop("forward_pending_full")
            elif self.tcp_flows >= self.config.max_tcp_connections:
                self._drop("tcp_table_full")
            else:
                self._fwd_syn[key] = seg
                self._fwd_new.append(ForwardedTcp(key))
            return
        if flags & tcpseg.RST:
            if self._fwd_syn.pop(key, None) is not None:
                self.stats["forward_syn_abandoned"] += 1  # the peer gave up while we dialed
            return
        _reset_closed_port(self, src, dst, seg)

    # -- forwarding (subnet router / exit node) --------------------------------------------------------
    def pending_forward_syns(self) -> list[FlowKey]:
        """The SYNs held for a forwarder's (or the fallback handlers') decision."""
        return list(self._fwd_syn)

    def take_forwards(self) -> list[Forwarded]:
        """New forwarded SYNs, datagrams and echo requests since the last call."""
        got, self._fwd_new = self._fwd_new, []
        return got

    def accept_forward(self, key: FlowKey, now: float) -> TcpConnection | None:
        """The forwarder reached the destination: answer the peer's SYN (the SYN-ACK goes out when the
        connection is next polled). None if the SYN is no longer pending (the peer reset it)."""
        seg = self._fwd_syn.pop(key, None)
        if seg is None:
            return None
        _, local, lport, remote, rport = key
        conn = TcpConnection.accept(seg, (local, lport), (remote, rport),
                                    self._isn(local, lport, remote, rport, now), now, self.tcp_config)
        self._tcp[key] = conn
        self.stats["forward_tcp_accepted"] += 1
        return conn

    def refuse_forward(self, key: FlowKey) -> None:
        """The forwarder could not reach the destination: reset the peer's SYN (Go does the same)."""
        seg = self._fwd_syn.pop(key, None)
        if seg is None:
            return
        self.stats["forward_tcp_refused"] += 1
        _send_reset(self, key[3], key[1], seg)

    def send_forwarded_udp(self, src: IPAddress, sport: int, dst: IPAddress, dport: int, data: bytes) -> None:
        """A reply from a forwarded destination, sent to the peer as a packet from that destination."""
        self._send_udp(src, sport, dst, dport, data)

    def send_forwarded_echo_reply(self, src: IPAddress, dst: IPAddress, rest: bytes, data: bytes) -> None:
        """An echo reply from a forwarded destination to the peer that pinged it."""
        if src.version == 4:
            self._send_ip(src, dst, PROTO_ICMP,
                          icmp.emit_icmpv4(icmp.IcmpMessage(icmp.ICMP_ECHO_REPLY, 0, rest, data)))
        else:
            reply = icmp.IcmpMessage(icmp.ICMPV6_ECHO_REPLY, 0, rest, data)
            self._send_ip(src, dst, PROTO_ICMPV6, icmp.emit_icmpv6(reply, src, dst))

    def _receive_tcp(self, src: IPAddress, dst: IPAddress, payload: bytes, now: float,
                     forwarded: bool = False) -> None:
        if self._external and len(payload) >= 4:
            ext: FlowKey = (PROTO_TCP, dst, int.from_bytes(payload[2:4], "big"), src,
                            int.from_bytes(payload[0:2], "big"))
            if ext in self._external:
                self._flow_in.append((ext, payload))
                return
        try:
            seg = tcpseg.parse_segment(payload, src, dst)
        except TcpParseError:
            self._drop("tcp_parse")
            return
        key: FlowKey = (PROTO_TCP, dst, seg.dst_port, src, seg.src_port)
        conn = self._tcp.get(key)
        if conn is not None:
            lst = self._pending_of.get(key)
            if lst is not None and self._acks_a_cookie_instead(lst, conn, seg, src, dst, now):
                del self._tcp[key]  # its SYN's earlier copy got a cookie, and the peer took that one
                self._forget_half_open(key)
                self._cookie_ack(lst, key, seg, src, dst, now)
                return
            conn.on_segment(seg, now)
            self._tcp_housekeeping(key, conn)
            return
        lst = None if forwarded else (self._listeners.get((dst, seg.dst_port))
                                      or self._listeners.get((None, seg.dst_port)))
        if key in self._time_wait:
            if seg.flags & tcpseg.SYN and not seg.flags & (tcpseg.ACK | tcpseg.RST) and (
                    lst is not None or forwarded):
                # A new incarnation of the 4-tuple (RFC 9293 §3.6.1).
                self._time_wait.forget(key)
            else:
                reply = self._time_wait.on_segment(key, seg, now)
                if reply is not None:
                    self._send_ip(dst, src, PROTO_TCP, tcpseg.emit_segment(reply, dst, src))
                return
        if forwarded or (self.fallback_tcp and lst is None and _fallback_candidate(self, key, seg)):
            self._forward_syn(key, seg, src, dst)  # the fallback handlers decide as a forwarder does
            return
        flags = seg.flags
        if lst is not None and flags & tcpseg.SYN and not flags & (tcpseg.RST | tcpseg.ACK | tcpseg.FIN):
            self._listener_syn(lst, key, seg, src, dst, now)
        elif lst is not None and lst._cookies_until >= now and syncookie.is_cookie_ack(seg):
            self._cookie_ack(lst, key, seg, src, dst, now)
        else:
            # No connection: RFC 9293 §3.10.7.1 (a listener answers a stray ACK with RST too).
            _reset_closed_port(self, src, dst, seg)

    def _listener_syn(self, lst: TcpListener, key: FlowKey, seg: TcpSegment, src: IPAddress,
                      dst: IPAddress, now: float) -> None:
        """A SYN for a listener: a half-open connection if every bound allows, else a cookie."""
        cfg = self.config
        if lst._accept_queue_full():
            self._drop("tcp_backlog_full")  # a cookie's ACK would overflow it too (Linux drops as well)
            return
        bound = None
        if self._half_open_by_src[src] >= cfg.max_half_open_per_source:
            bound = "tcp_half_open_source_limit"
            self._drop(bound)  # refused a half-open entry, whether a cookie answers or not
        elif lst._full():
            bound = "tcp_backlog_full"
        elif len(self._pending_of) >= cfg.max_half_open:
            bound = "tcp_table_full"
        if bound is not None:
            if cfg.syncookies:
                self._send_cookie(lst, seg, src, dst, now)
            elif bound != "tcp_half_open_source_limit":
                self._drop(bound)
            return
        if self.tcp_flows >= cfg.max_tcp_connections:
            self._drop("tcp_table_full")
            return
        conn = TcpConnection.accept(seg, (dst, seg.dst_port), (src, seg.src_port),
                                    self._isn(dst, seg.dst_port, src, seg.src_port, now), now,
                                    self.tcp_config)
        self._tcp[key] = conn
        lst._pending.add(key)
        self._pending_of[key] = lst
        self._half_open_by_src[src] += 1
        self._tcp_housekeeping(key, conn)

    def _acks_a_cookie_instead(self, lst: TcpListener, conn: TcpConnection, seg: TcpSegment,
                               src: IPAddress, dst: IPAddress, now: float) -> bool:
        """Whether ``seg``, for a half-open connection, acknowledges a SYN cookie rather than its ISN.

        A SYN beyond a half-open bound gets a cookie; if the peer retransmits that SYN once a slot
        is free, the copy gets a stateful entry with another ISN. The peer completes with the first
        SYN-ACK it got (the cookie's); the entry would answer that ACK with a RST and the peer's
        connection would die. Only a segment that validates as a cookie hands over."""
        return (lst._cookies_until >= now and syncookie.is_cookie_ack(seg)
                and seg.ack != (conn.iss + 1) & 0xFFFFFFFF
                and self._cookies.check(dst, seg.dst_port, src, seg.src_port, (seg.seq - 1) & 0xFFFFFFFF,
                                        (seg.ack - 1) & 0xFFFFFFFF, now) is not None)

    def _send_cookie(self, lst: TcpListener, seg: TcpSegment, src: IPAddress, dst: IPAddress,
                     now: float) -> None:
        """Answer ``seg`` with a SYN-ACK whose ISN is a SYN cookie; nothing is stored."""
        peer_mss = seg.mss or (DEFAULT_MSS_V4 if src.version == 4 else DEFAULT_MSS_V6)
        cookie = self._cookies.make(dst, seg.dst_port, src, seg.src_port, seg.seq,
                                    syncookie.mss_index(peer_mss), now)
        synack = TcpConnection.cookie_synack(seg, (dst, seg.dst_port), cookie, now, self.tcp_config)
        lst._cookies_until = now + self._cookies.validity
        self.stats["tcp_syncookies_sent"] += 1
        self._send_ip(dst, src, PROTO_TCP, tcpseg.emit_segment(synack, dst, src))

    def _cookie_ack(self, lst: TcpListener, key: FlowKey, seg: TcpSegment, src: IPAddress,
                    dst: IPAddress, now: float) -> None:
        """An ACK for a listener that recently sent cookies: a connection if it carries a valid one."""
        cookie = (seg.ack - 1) & 0xFFFFFFFF
        index = self._cookies.check(dst, seg.dst_port, src, seg.src_port, (seg.seq - 1) & 0xFFFFFFFF,
                                    cookie, now)
        conn = None
        if index is not None:
            if lst._accept_queue_full():
                self._drop("tcp_backlog_full")  # the peer retransmits; it gets in once the app accepts
                return
            if self.tcp_flows >= self.config.max_tcp_connections:
                self._drop("tcp_table_full")
                return
            conn = TcpConnection.from_cookie(seg, (dst, seg.dst_port), (src, seg.src_port), cookie,
                                             syncookie.MSS_TABLE[index], now, self.tcp_config,
                                             max_ts_age=self._cookies.validity)
        if conn is None:
            self._drop("tcp_syncookie_rejected")
            _send_reset(self, src, dst, seg)
            return
        self.stats["tcp_syncookies_validated"] += 1
        self._tcp[key] = conn
        lst._ready.append(conn)

    def _tcp_housekeeping(self, key: FlowKey, conn: TcpConnection) -> None:
        """Hand established connections to their listener; forget closed ones."""
        lst = self._pending_of.get(key)
        if lst is not None and (conn.is_closed or _established(conn)):
            self._forget_half_open(key)
            if not conn.is_closed and not lst.closed:
                lst._ready.append(conn)
        if conn.is_closed:
            self._tcp.pop(key, None)

    def _forget_half_open(self, key: FlowKey) -> None:
        lst = self._pending_of.pop(key, None)
        if lst is None:
            return
        lst._pending.discard(key)
        src = key[3]
        left = self._half_open_by_src[src] - 1
        if left > 0:
            self._half_open_by_src[src] = left
        else:
            del self._half_open_by_src[src]

    # -- internals: output ---------------------------------------------------------------------
    def _send_udp(self, src: IPAddress, sport: int, dst: IPAddress, dport: int, data: bytes) -> None:
        limit = self.config.mtu - (20 if dst.version == 4 else 40) - udp.HEADER_LEN
        if len(data) > limit:
            raise SocketError(f"UDP payload of {len(data)} bytes exceeds the {limit}-byte MTU budget")
        if len(self._out) >= self.config.max_outbound_packets:
            raise WouldBlock("outbound queue full")
        self._send_ip(src, dst, PROTO_UDP, udp.emit_udp(udp.UdpDatagram(sport, dport, data), src, dst))

    def _send_ip(self, src: IPAddress, dst: IPAddress, proto: int, payload: bytes) -> None:
        """Wrap ``payload`` in an IP header and queue it; beyond the outbound cap it is dropped."""
        if len(self._out) >= self.config.max_outbound_packets:
            self._drop("outbound_queue_full")
            return
        self._out.append(self._ip_packet(src, dst, proto, payload))

    def _ip_packet(self, src: IPAddress, dst: IPAddress, proto: int, payload: bytes) -> bytes:
        self._ident = (self._ident + 1) & 0xFFFF
        return ip_packet(src, dst, proto, payload, self.config.ip_ttl, self._ident)

    def _ephemeral_port(self, free: Callable[[int], bool]) -> int:
        lo, hi = self.config.ephemeral_ports
        start = self._rng.randrange(lo, hi + 1)
        for i in range(hi - lo + 1):
            port = lo + (start - lo + i) % (hi - lo + 1)
            if free(port):
                return port
        raise AddressInUse("no free ephemeral port")


def ip_packet(src: IPAddress, dst: IPAddress, proto: int, payload: bytes, ttl: int, ident: int) -> bytes:
    """Wrap ``payload`` in an IPv4 or IPv6 header (a pure function: detached flows call it too)."""
    if src.version == 4:
        return ipv4.emit_ipv4(ipv4.Ipv4Packet(src, dst, proto, payload,  # type: ignore[arg-type]
                                              ttl=ttl, ident=ident))
    return ipv6.emit_ipv6(ipv6.Ipv6Packet(src, dst, proto, payload,  # type: ignore[arg-type]
                                          hop_limit=ttl))


def tcp_payload(raw: bytes | bytearray | memoryview) -> memoryview:
    """The TCP segment inside an IP packet whose route is already known (the engine's fast path to a
    flow): the IP checks ``Stack.receive`` makes, without its address objects or payload copy.

    The router read the 4-tuple and the protocol from these very bytes, so only what it did not
    check is checked here: the IPv4 header checksum and lengths, or the IPv6 payload length and
    next header (TCP, no extension headers). ``ParseError`` (an ``Ipv4ParseError``/``Ipv6ParseError``)
    for anything ``Stack.receive`` would have dropped.
    """
    n = len(raw)
    if n < 1:
        raise ParseError("empty")
    version = raw[0] >> 4
    if version == 4:
        if n < ipv4.HEADER_LEN:
            raise Ipv4ParseError("ipv4_truncated", f"{n} bytes")
        ihl = (raw[0] & 0x0F) * 4
        total = raw[2] << 8 | raw[3]
        if ihl < ipv4.HEADER_LEN:
            raise Ipv4ParseError("ipv4_header_len", str(ihl))
        if total < ihl or total > n:
            raise Ipv4ParseError("ipv4_total_len", f"{total} with header {ihl}, buffer {n}")
        view = memoryview(raw)
        if not verify(view[:ihl]):
            raise Ipv4ParseError("ipv4_checksum")
        if raw[6] & 0x3F or raw[7]:  # MF or a fragment offset
            raise Ipv4ParseError("ipv4_fragment")
        if raw[9] != PROTO_TCP:
            raise Ipv4ParseError("ipv4_protocol", str(raw[9]))
        return view[ihl:total]
    if version == 6:
        if n < ipv6.HEADER_LEN:
            raise Ipv6ParseError("ipv6_truncated", f"{n} bytes")
        plen = raw[4] << 8 | raw[5]
        if ipv6.HEADER_LEN + plen > n:
            raise Ipv6ParseError("ipv6_payload_len", f"{plen} in a buffer of {n}")
        if raw[6] != PROTO_TCP:
            raise Ipv6ParseError("ipv6_next_header", str(raw[6]))
        return memoryview(raw)[ipv6.HEADER_LEN:ipv6.HEADER_LEN + plen]
    raise ParseError("ip_version", str(version))


@dataclass(frozen=True, slots=True)
class TcpPacketEmitter:
    """``emit_tcp_packet`` for one address pair, with the IP header's constant part computed once.

    Every packet of a flow has the same addresses, TTL and protocol; only the length and the IPv4
    identification change, so the header checksum is the precomputed sum of the constant words plus
    those two (RFC 1071 is a sum: RFC 1624's incremental update). The bytes are exactly
    ``emit_tcp_packet``'s, without its per-packet ``Ipv4Packet`` and header checksum pass. Frozen and
    stateless (the identification is the caller's), so the flows of one address pair share one.
    """

    local: IPAddress
    remote: IPAddress
    ttl: int
    prefix: bytes = field(init=False)
    """Source and destination addresses, packed."""
    const: int = field(init=False)
    """The unfolded sum of the IPv4 header's constant words (0 for IPv6: no header checksum)."""

    _V4: ClassVar[struct.Struct] = struct.Struct("!BBHHHBBH8s")
    _V6: ClassVar[struct.Struct] = struct.Struct("!IHBB32s")

    def __post_init__(self) -> None:
        local, remote = self.local, self.remote
        if local.version != remote.version:
            raise ValueError("local and remote addresses of different families")
        prefix = local.packed + remote.packed
        const = 0
        if local.version == 4:
            const = (0x45 << 8) + ipv4.FLAG_DF + (self.ttl << 8 | PROTO_TCP)
            const += sum(int.from_bytes(prefix[i:i + 2], "big") for i in range(0, 8, 2))
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "const", const)

    def emit(self, seg: TcpSegment, ident: int) -> bytes:
        segment = tcpseg.emit_segment(seg, self.local, self.remote)
        if not self.const:
            return self._V6.pack(ipv6.VERSION << 28, len(segment), PROTO_TCP, self.ttl,
                                 self.prefix) + segment
        total = ipv4.HEADER_LEN + len(segment)
        if total > 0xFFFF:
            raise ValueError(f"IPv4 datagram of {total} bytes")
        ident &= 0xFFFF
        s = self.const + total + ident
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        return self._V4.pack(0x45, 0, total, ident, ipv4.FLAG_DF, self.ttl, PROTO_TCP, ~s & 0xFFFF,
                             self.prefix) + segment


def emit_tcp_packet(seg: TcpSegment, local: IPAddress, remote: IPAddress, ttl: int, ident: int) -> bytes:
    """One outbound IP packet carrying ``seg`` of a detached flow."""
    return ip_packet(local, remote, PROTO_TCP, tcpseg.emit_segment(seg, local, remote), ttl, ident)


_SYNCHRONIZED = frozenset({TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.FIN_WAIT_1,
                           TcpState.FIN_WAIT_2, TcpState.CLOSING, TcpState.LAST_ACK, TcpState.TIME_WAIT})


def _fallback_candidate(stack: Stack, key: FlowKey, seg: TcpSegment) -> bool:
    """A new SYN, or a segment of one the fallback handlers are still deciding on."""
    flags = seg.flags
    new_syn = flags & tcpseg.SYN and not flags & (tcpseg.RST | tcpseg.ACK | tcpseg.FIN)
    return key in stack._fwd_syn or bool(new_syn)


def _established(conn: TcpConnection) -> bool:
    """The handshake finished (the connection may already be closing: the app still gets it)."""
    return conn.state in _SYNCHRONIZED


# -- RFC 9293 §3.10.7.1: a segment to a CLOSED port gets a RST -----------------------------------
def _reset_closed_port(stack: Stack, src: IPAddress, dst: IPAddress, seg: TcpSegment) -> None:
    """Answer a segment for which no connection or listener exists (no TCP machine needed)."""
    stack._drop("tcp_closed_port")
    _send_reset(stack, src, dst, seg)


def _send_reset(stack: Stack, src: IPAddress, dst: IPAddress, seg: TcpSegment) -> None:
    """The RST that answers ``seg`` (none for a RST)."""
    if seg.flags & tcpseg.RST:
        return
    if seg.flags & tcpseg.ACK:
        rst = TcpSegment(seg.dst_port, seg.src_port, seg.ack, 0, tcpseg.RST, 0)
    else:
        ack = (seg.seq + seg.seg_len) & 0xFFFFFFFF
        rst = TcpSegment(seg.dst_port, seg.src_port, 0, ack, tcpseg.RST | tcpseg.ACK, 0)
    stack._send_ip(dst, src, PROTO_TCP, tcpseg.emit_segment(rst, dst, src))
