"""``DnsActor``: the MagicDNS resolver of one node, at 100.100.100.100:53 (UDP and TCP) and by ``DnsQuery``.

Quad-100 lives in a small sans-IO ``Stack`` of its own that owns only the service addresses
(100.100.100.100 and fd7a:115c:a1e0::53): the WireGuard engine hands every packet the node's netstack
sends to them here (``IpPacketsIn``), and this stack's answers go straight back into the node's
netstack as inbound packets. Nothing on the tunnel reaches it: a peer's packet to quad-100 is not
for one of our addresses and the engine's filter drops it, as Go's does (peers ask over DoH on the
peerAPI, which tells this actor a ``DnsQuery``).

Answers come from ``wire.dns.Resolver``; its ``Forward`` actions (split DNS routes, and
``Config.fallback_resolvers`` when the app set them, or the engaged exit node's peerAPI DoH instead
while one is selected: ``DnsExitNode`` from the bridge) run on worker threads through the injected
``Forwarder``, which the device implements over its own netstack: a forwarded query travels through
the tailnet, never through a host socket. Each worker tells the result back (``DnsForwardDone``).

A restart loses only what was in flight: quad-100 TCP connections are reset (the next segment of
the client gets an RST), queued UDP queries vanish (the client retries), and asks waiting on a
forward are answered SERVFAIL in ``on_stop``. The new incarnation asks the bridge for the netmap
and the PeerTracker for the peers, so it answers as before at once.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pytsnet.actors.dns.config import resolver_config
from pytsnet.actors.runtime import Actor, ActorStopped, AskTimeout, MailboxFull, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.base import Request
from pytsnet.messages.dataplane import DataplaneInfo, GetDataplaneInfo
from pytsnet.messages.dns import (
    DnsAnswer,
    DnsExitNode,
    DnsForwardDone,
    DnsNetmap,
    DnsQuery,
    DnsSettings,
    DnsSpawn,
    DnsStatus,
    DnsStatusRequest,
    DnsTick,
)
from pytsnet.messages.peers import GetPeers, PeerInfo, PeersChanged, PeerTable
from pytsnet.messages.wgengine import IpPacketIn, IpPacketsIn
from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.errors import NetstackError
from pytsnet.netstack.interface import Stack, TcpListener, UdpEndpoint
from pytsnet.netstack.tcp.connection import TcpConnection
from pytsnet.wire.dns import SERVICE_V4, SERVICE_V6, Forward, Resolver, Upstream
from pytsnet.wire.dns import Reply as DnsReply

__all__ = ["DNS", "DnsActor", "Forwarder"]

log = subsystem_logger("dns")
_R = TypeVar("_R")

DNS = "dns"
"""The resolver's name in a device's tree (the peerAPI's DoH asks it by this name)."""

Forwarder = Callable[[bytes, Upstream, float], "bytes | None"]
"""Blocking: send a DNS query to the upstream (plain DNS over UDP, or DoH when ``doh_path``) over the
tailnet, the answer within ``timeout`` s or None."""

MAX_TCP_BUFFER = 2 + 65535
"""A TCP client's unanswered bytes: one whole length-prefixed message at most (more: reset)."""
START_ASK_TIMEOUT = 2.0


@dataclass
class _TcpClient:
    conn: TcpConnection
    buf: bytearray = field(default_factory=bytearray)
    waiting: int = 0
    """Forwards in flight for it: it is closed at EOF only once they are answered."""


_Origin = tuple[str, Any]
"""Where a forwarded query's answer goes: ("udp", endpoint), ("tcp", client) or ("ask", reply slot)."""


class DnsActor(Actor):
    def __init__(self, spawn: DnsSpawn, forward: Forwarder | None = None) -> None:
        self.spawn = spawn
        self.forward = forward
        self.resolver: Resolver
        self.stack: Stack
        self.udp: UdpEndpoint
        self.tcp: TcpListener
        self.clients: list[_TcpClient] = []
        self.origins: dict[int, _Origin] = {}
        self.self_node: PeerInfo | None = None
        self.settings: DnsSettings | None = None
        self.peers: list[PeerInfo] = []
        self.exit_node = DnsExitNode()
        self.counters: collections.Counter[str] = collections.Counter()
        self._timer_at: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    def on_start(self) -> None:
        self.resolver = Resolver(max_pending=self.spawn.max_forwards)
        self.stack = Stack(StackConfig(addresses=(SERVICE_V4, SERVICE_V6), enable_ipv6=True, icmp_echo=True,
                                       max_tcp_connections=self.spawn.max_tcp, max_udp_endpoints=4))
        self.udp = self.stack.udp_bind(53)
        self.tcp = self.stack.tcp_listen(53)
        info = self._ask(self.spawn.dataplane, GetDataplaneInfo())
        if isinstance(info, DataplaneInfo):
            self.exit_node = info.exit_dns
            if info.netmap is not None:
                self.self_node, self.settings = info.netmap.self_node, info.netmap.dns
        table = self._ask(self.spawn.peers, GetPeers())
        if isinstance(table, PeerTable):
            self.peers = list(table.peers)
        self._reconfigure()

    def on_stop(self, reason: StopReason) -> None:
        if not hasattr(self, "resolver"):
            return  # on_start never ran
        for token in list(self.origins):  # asks waiting on a forward: SERVFAIL now, not a hung caller
            kind, target = self.origins.pop(token)
            done = self.resolver.complete(token, None)
            if kind == "ask" and done is not None:
                target.set(DnsAnswer(response=done.response))

    def _ask(self, name: str, msg: Request[_R]) -> _R | None:
        """A neighbour's answer at start, or None (not there yet, or busy: the next message catches up)."""
        ref = self.lookup(name)
        if ref is None:
            return None
        try:
            return ref.ask(msg, timeout=START_ASK_TIMEOUT)
        except (AskTimeout, ActorStopped):
            return None

    # -- configuration ----------------------------------------------------------------------------------
    @handles(DnsNetmap)
    def on_netmap(self, msg: DnsNetmap) -> None:
        self.self_node, self.settings = msg.self_node, msg.settings
        self._reconfigure()

    @handles(PeersChanged)
    def on_peers(self, msg: PeersChanged) -> None:
        self.peers = list(msg.peers)
        self._reconfigure()

    @handles(DnsExitNode)
    def on_exit_node(self, msg: DnsExitNode) -> None:
        self.exit_node = msg
        self._reconfigure()

    def _reconfigure(self) -> None:
        self.resolver.reconfigure(resolver_config(self.self_node, self.peers, self.settings,
                                                  self.spawn.fallback_resolvers, self.exit_node))

    # -- the front ends -------------------------------------------------------------------------------
    @handles(DnsQuery)
    def on_query(self, msg: DnsQuery) -> DnsAnswer | None:
        """An app (``lookup``) or the peerAPI's DoH: answered now, or once the forward is done.
        An unreadable query gets an empty ``response`` (nothing to answer, as a UDP drop)."""
        self.counters[f"{msg.transport}_queries"] += 1
        out = self.resolver.handle(msg.query, udp=False)
        if isinstance(out, Forward):
            slot = self.defer_reply()
            if slot is None:  # told, not asked: nobody to answer
                self.resolver.complete(out.token, None)
                return None
            self._start_forward(out, ("ask", slot))
            return None
        return DnsAnswer(response=out.response if out is not None else b"")

    @handles(IpPacketIn)
    def on_packet(self, msg: IpPacketIn) -> None:
        now = self.clock.monotonic()
        self.stack.receive(msg.data, now)
        self._after(now)

    @handles(IpPacketsIn)
    def on_packets(self, msg: IpPacketsIn) -> None:
        now = self.clock.monotonic()
        for data in msg.packets:
            self.stack.receive(data, now)
        self._after(now)

    @handles(DnsTick)
    def on_tick(self, msg: DnsTick) -> None:
        self._timer_at = None
        self._after(self.clock.monotonic())

    @handles(DnsForwardDone)
    def on_forward_done(self, msg: DnsForwardDone) -> None:
        if msg.incarnation != self.incarnation:
            return  # started by an earlier incarnation: its asker was answered in on_stop
        origin = self.origins.pop(msg.token, None)
        done = self.resolver.complete(msg.token, msg.response)
        if origin is None or done is None:
            return
        if origin[0] == "tcp":
            origin[1].waiting -= 1
        self._deliver(origin, done)
        self._after(self.clock.monotonic())

    @handles(DnsStatusRequest)
    def on_status(self, msg: DnsStatusRequest) -> DnsStatus:
        counters = dict(self.resolver.counters) | dict(self.counters)
        counters |= {f"stack_{k}": v for k, v in self.stack.drops.items()}
        return DnsStatus(counters=counters)

    # -- quad-100's stack -------------------------------------------------------------------------------
    def _after(self, now: float) -> None:
        while (got := self.udp.recvfrom()) is not None:
            self.counters["udp_queries"] += 1
            self._answer(self.resolver.handle(got[0], udp=True), ("udp", got[1]))
        while (conn := self.tcp.accept()) is not None:
            self.counters["tcp_connections"] += 1
            self.clients.append(_TcpClient(conn))
        for c in list(self.clients):
            self._serve_tcp(c)
        self.clients = [c for c in self.clients if not c.conn.is_closed]
        out = self.stack.poll(now)
        if out:
            ns = self.lookup(self.spawn.netstack)
            try:
                if ns is None:
                    raise ActorStopped(self.spawn.netstack)
                ns.tell(IpPacketsIn(packets=tuple(out)))
            except (ActorStopped, MailboxFull):
                self.counters["dropped_no_netstack"] += len(out)
        d = self.stack.next_deadline()
        if d is not None and (self._timer_at is None or d < self._timer_at):
            self._timer_at = d
            self.send_after(max(0.0, d - now), DnsTick())

    def _serve_tcp(self, c: _TcpClient) -> None:
        """Read whole length-prefixed queries (RFC 7766) and answer each; EOF closes once answered."""
        conn = c.conn
        while conn.readable:
            data = conn.recv(65536)
            if not data:
                break
            c.buf += data
            if len(c.buf) > MAX_TCP_BUFFER:
                self.counters["tcp_oversized"] += 1
                conn.abort()
                return
        while len(c.buf) >= 2 and len(c.buf) >= 2 + int.from_bytes(c.buf[:2], "big"):
            n = int.from_bytes(c.buf[:2], "big")
            query, c.buf = bytes(c.buf[2:2 + n]), c.buf[2 + n:]
            self.counters["tcp_queries"] += 1
            self._answer(self.resolver.handle(query, udp=False), ("tcp", c))
        if conn.at_eof and c.waiting == 0 and not conn.is_closed:
            conn.close()

    def _answer(self, out: DnsReply | Forward | None, origin: _Origin) -> None:
        if out is None:
            return  # unreadable: dropped and counted by the resolver
        if isinstance(out, Forward):
            self._start_forward(out, origin)
        else:
            self._deliver(origin, out)

    def _deliver(self, origin: _Origin, reply: DnsReply) -> None:
        kind, target = origin
        try:
            if kind == "udp":
                self.udp.sendto(reply.response, target)
            elif kind == "tcp":
                if not target.conn.is_closed:
                    target.conn.send(len(reply.response).to_bytes(2, "big") + reply.response)
            else:
                target.set(DnsAnswer(response=reply.response))
        except NetstackError as e:
            self.counters["answer_failed"] += 1
            log.debug("dns: answer not sent: %s", e)

    # -- forwarding -----------------------------------------------------------------------------------
    def _start_forward(self, fwd: Forward, origin: _Origin) -> None:
        if origin[0] == "tcp":
            origin[1].waiting += 1
        self.origins[fwd.token] = origin
        forward, incarnation, ref = self.forward, self.incarnation, self.ref
        timeout = self.spawn.forward_timeout

        def run() -> None:
            got: bytes | None = None
            for up in fwd.upstreams:
                if forward is None:
                    break
                try:
                    got = forward(fwd.query, up, timeout)
                except Exception as e:  # the forwarder's failure is this upstream's: try the next
                    log.debug("dns: forward to %s failed: %s", up, e)
                    got = None
                if got is not None:
                    break
            with contextlib.suppress(ActorStopped, MailboxFull):
                ref.tell(DnsForwardDone(token=fwd.token, incarnation=incarnation, response=got))

        threading.Thread(target=run, name=f"dns-forward-{fwd.token}", daemon=True).start()

