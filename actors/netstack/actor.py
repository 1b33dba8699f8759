"""``NetstackActor``: owns the sans-IO ``Stack`` and routes packets to flows, UDP ports and ICMP.

Inbound IP packets (``LinkPacketIn``, or the WireGuard engine's ``IpPacketIn``) go into
``Stack.receive``; segments of established TCP flows come back out of ``take_flow_segments`` and are
told to that flow's ``TcpFlowActor``. With the engine as sink that is the slow path: this actor
publishes its flow table to the engine (``FlowRoutes``: changes as flows are spawned and closed, the
whole table on start and on request), and the engine hands a known flow's packets to its actor
itself, so bulk data skips this actor's mailbox, thread and IP parse. Handshakes, listeners'
backlogs, UDP, ICMP, RSTs for closed ports and TIME_WAIT stay in the Stack. The link sink is any
actor accepting ``out_message(data=...)``: the TUN link in tests, the WireGuard engine in the device.

Supervision (``netstack_spec`` in ``actors/netstack/subtree.py``): this actor and its flows
supervisor are siblings under the netstack's own supervisor, so a crash here restarts only this
actor. Per-connection state lives in the flow actors, and the hand-over table (``FlowRegistry``,
a spawn argument, so the same object for every incarnation) holds each flow's immutable
``FlowRecord`` and the app's listener and UDP channels. A new incarnation builds a fresh Stack and
re-adopts from it: every live flow's 4-tuple (``Stack.adopt``), every listener (same port, backlog
and app channel) and UDP socket. A flow sees a pause; the packets that arrived meanwhile waited in
this actor's mailbox, which outlives the incarnation.

What a restart loses: whatever only the old Stack held. Half-open handshakes and connections
established but not yet handed to a flow actor (the listener's backlog inside the Stack) are
forgotten: the peer's next segment on them gets an RST, so its connect fails or resets and it may
retry. The SYN-cookie secret is per Stack, so an outstanding cookie's ACK is answered with an RST
too. TIME_WAIT entries are forgotten (a new connection on such a 4-tuple is accepted as new).
Datagrams queued in the old Stack's UDP endpoints (not yet moved to the app's channel) are dropped,
as UDP may.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
from typing import TYPE_CHECKING, Any

from pytsnet.actors.netstack.channel import (
    DatagramChannel,
    FlowChannel,
    FlowRecord,
    FlowRegistry,
    ListenerChannel,
)
from pytsnet.actors.netstack.fallback import FallbackChannel, FallbackSyn
from pytsnet.actors.netstack.flow import TcpFlowActor, emit_packets
from pytsnet.actors.netstack.queue_signal import QueueSignal
from pytsnet.actors.runtime import (
    Actor,
    ActorStopped,
    MailboxConfig,
    MailboxFull,
    MailboxPolicy,
    Restart,
    UnhandledMessage,
    handles,
)
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.forwarder import (
    ForwardEchoIn,
    ForwardEchoOut,
    ForwardTcpAccept,
    ForwardTcpAccepted,
    ForwardTcpOpen,
    ForwardTcpRefuse,
    ForwardUdpIn,
    ForwardUdpOut,
)
from pytsnet.messages.netstack import (
    AbortAllFlows,
    FlowAbort,
    FlowClosed,
    FlowRoutes,
    FlowRoutesRequest,
    FlowsAborted,
    FlowSegmentIn,
    FlowSegmentsIn,
    IcmpEchoCancel,
    IcmpEchoPoll,
    IcmpEchoResult,
    IcmpEchoStart,
    LinkPacketIn,
    LinkPacketOut,
    ListenerWake,
    NetstackReply,
    NetstackStatus,
    NetstackStatusRequest,
    RouteKey,
    StackTick,
    TcpConnect,
    TcpListen,
    TcpUnlisten,
    TsmpPingCancel,
    TsmpPingPoll,
    TsmpPingResult,
    TsmpPingStart,
    UdpBind,
    UdpClose,
    UdpSendTo,
)
from pytsnet.messages.services import TcpFallbackSet, TcpServiceAddresses
from pytsnet.netstack.config import IPAddress, StackConfig
from pytsnet.netstack.errors import NetstackError
from pytsnet.netstack.forward import Forwarded, ForwardedDatagram, ForwardedEcho, ForwardedTcp
from pytsnet.netstack.interface import FlowKey, Stack, TcpListener, TcpPacketEmitter, UdpEndpoint
from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorRef, ActorSystem, TimerHandle
    from pytsnet.messages.base import Message

log = subsystem_logger("netstack")

__all__ = ["NetstackActor"]

try:  # the WireGuard engine's inbound packet message, once it exists (data-plane contract)
    from pytsnet.messages.wgengine import (
        IpPacketIn,
        IpPacketOut,
        IpPacketsIn,
        IpPacketsOut,
    )

    _INBOUND: tuple[type[Message], ...] = (LinkPacketIn, IpPacketIn)
    _INBOUND_BATCH: tuple[type[Message], ...] = (IpPacketsIn,)
    _BATCH_OF: dict[type[Message], type[Message]] = {IpPacketOut: IpPacketsOut}
except ImportError:
    _INBOUND = (LinkPacketIn,)
    _INBOUND_BATCH = ()
    _BATCH_OF = {}

_flow_ids = itertools.count(1)
_MAX_EMITTERS = 4096
_FLOW_MAILBOX = MailboxConfig(8192, MailboxPolicy.FAIL, max_bytes=2 << 20)
"""The engine and this actor deliver a flow's packets here: 4x the default receive window in bytes (a
peer sending within the window never reaches it; a flood of one 4-tuple is refused and counted)."""


class NetstackActor(Actor):
    def __init__(self, system: ActorSystem, config: StackConfig, sink: ActorRef | str, registry: FlowRegistry,
                 *, flows: str, out_message: type[Message] = LinkPacketOut,
                 tcp_config: TcpConfig | None = None,
                 forwarder: str | None = None) -> None:
        self.system = system
        self.forwarder = forwarder
        """The forwarder actor (subnet router / exit node) new forwarded flows are handed to, by name."""
        self.config = config
        self._sink = sink
        """The link sink, or its name (looked up at start: the engine starts before us in one spec)."""
        self.sink: ActorRef
        self.registry = registry
        self.flows_name = flows
        """The flows supervisor (a sibling under the netstack's supervisor): flow actors live there."""
        self.out_message = out_message
        self.out_batch = _BATCH_OF.get(out_message)  # the sink takes a burst in one message
        self._queue_signal = QueueSignal()  # the flows' shared local congestion signal (issue 14)
        self.tcp_config = tcp_config
        self.stack: Stack
        self.flows: dict[str, tuple[FlowKey, ActorRef]] = {}
        self.listeners: dict[int, tuple[TcpListener, ListenerChannel]] = {}
        self.udp: dict[int, tuple[UdpEndpoint, DatagramChannel]] = {}
        self._by_key: dict[FlowKey, ActorRef] = {}
        self._sup: ActorRef | None = None
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        self.adopted = 0
        """Flows this incarnation took over from an earlier one (0 on a first start)."""
        self._routes_on = True  # until the sink refuses FlowRoutes (a TUN link has no fast path)
        self._routes_reset = True  # the next FlowRoutes carries the whole table
        self._routes_add: list[tuple[RouteKey, str]] = []
        self._routes_remove: list[RouteKey] = []
        self._emitters: dict[tuple[IPAddress, IPAddress], TcpPacketEmitter] = {}
        self._vip_service: dict[IPAddress, str] = {}  # 20d: VIP -> the service we host on it

    def on_start(self) -> None:
        self.stack = Stack(self.config, tcp_config=self.tcp_config)
        sink = self.ctx.lookup(self._sink) if isinstance(self._sink, str) else self._sink
        if sink is None:
            raise RuntimeError(f"{self.name}: no link sink {self._sink!r}")
        self.sink = sink
        self._sup = self.ctx.lookup(self.flows_name)
        if self._sup is None:
            raise RuntimeError(f"{self.name}: no flows supervisor {self.flows_name!r}")
        self._adopt()
        self._publish_routes()

    def _adopt(self) -> None:
        """Rebuild the demux tables from what outlived the last incarnation (nothing on a first start):
        the live flows' records, then the app's listeners and UDP sockets on the same ports."""
        registry = self.registry
        for rec in registry.flows():
            if not rec.ref.is_alive:  # ended meanwhile: its FlowClosed may be lost with that incarnation
                registry.pop_flow(rec.name)
                continue
            try:
                self.stack.adopt(rec.key)
            except NetstackError as e:
                log.warning("%s: cannot adopt flow %s: %s", self.name, rec.name, e)
                continue
            self.flows[rec.name] = (rec.key, rec.ref)
            self._by_key[rec.key] = rec.ref
            self.adopted += 1
        for lch in registry.listeners():
            try:
                lst = self.stack.tcp_listen(lch.port, backlog=lch.backlog)
            except (NetstackError, ValueError) as e:
                log.warning("%s: cannot listen on %d again: %s", self.name, lch.port, e)
                continue
            self.listeners[lch.port] = (lst, lch)
        for dch in registry.udp_sockets():
            try:
                ep = self.stack.udp_bind(dch.port)
            except (NetstackError, ValueError) as e:
                log.warning("%s: cannot bind UDP %d again: %s", self.name, dch.port, e)
                continue
            self.udp[dch.port] = (ep, dch)
        if registry.fallback is None:  # 20d: SYNs for the app's fallback handlers and service listeners
            registry.fallback = FallbackChannel(self.config.max_forward_pending)
        self.stack.fallback_tcp = registry.fallback_on
        self._set_services(registry.service_ips)
        if self.incarnation > 1:
            log.info("%s restarted: %d flows, %d listeners, %d UDP sockets carried over", self.name,
                     self.adopted, len(self.listeners), len(self.udp))
            self._after(self.clock.monotonic())

    # -- packets -------------------------------------------------------------------------------------
    @handles(*_INBOUND)
    def on_packet(self, msg: Any) -> None:
        now = self.clock.monotonic()
        self.stack.receive(msg.data, now)
        self._after(now)

    @handles(*_INBOUND_BATCH)
    def on_packets(self, msg: Any) -> None:
        now = self.clock.monotonic()
        receive = self.stack.receive
        for data in msg.packets:
            receive(data, now)
        self._after(now)

    @handles(NetstackStatusRequest)
    def status(self, msg: NetstackStatusRequest) -> NetstackStatus:
        return NetstackStatus(drops=dict(self.stack.drops), counters=dict(self.stack.stats),
                              flows=len(self.flows), adopted=self.adopted)

    # -- our own echo requests (the LocalAPI's ICMP ping) -------------------------------------------
    @handles(IcmpEchoStart)
    def on_echo_start(self, msg: IcmpEchoStart) -> IcmpEchoResult:
        now = self.clock.monotonic()
        try:
            self.stack.send_echo_request(ipaddress.ip_address(msg.dst), msg.ident, msg.seq, msg.data, now)
        except (NetstackError, ValueError) as e:
            return IcmpEchoResult(done=True, error=str(e))
        self._after(now)
        return IcmpEchoResult()

    @handles(IcmpEchoPoll)
    def on_echo_poll(self, msg: IcmpEchoPoll) -> IcmpEchoResult:
        try:
            rtt = self.stack.echo_rtt(ipaddress.ip_address(msg.dst), msg.ident, msg.seq)
        except ValueError as e:
            return IcmpEchoResult(done=True, error=str(e))
        return IcmpEchoResult() if rtt is None else IcmpEchoResult(done=True, latency=rtt)

    @handles(IcmpEchoCancel)
    def on_echo_cancel(self, msg: IcmpEchoCancel) -> None:
        with contextlib.suppress(ValueError):
            self.stack.forget_echo(ipaddress.ip_address(msg.dst), msg.ident, msg.seq)

    @handles(TsmpPingStart)
    def on_tsmp_start(self, msg: TsmpPingStart) -> TsmpPingResult:
        now = self.clock.monotonic()
        try:
            self.stack.send_tsmp_ping(ipaddress.ip_address(msg.dst), msg.data, now)
        except (NetstackError, ValueError) as e:
            return TsmpPingResult(done=True, error=str(e))
        self._after(now)
        return TsmpPingResult()

    @handles(TsmpPingPoll)
    def on_tsmp_poll(self, msg: TsmpPingPoll) -> TsmpPingResult:
        try:
            got = self.stack.tsmp_pong(ipaddress.ip_address(msg.dst), msg.data)
        except ValueError as e:
            return TsmpPingResult(done=True, error=str(e))
        if got is None:
            return TsmpPingResult()
        return TsmpPingResult(done=True, latency=got[0], peerapi_port=got[1])

    @handles(TsmpPingCancel)
    def on_tsmp_cancel(self, msg: TsmpPingCancel) -> None:
        with contextlib.suppress(ValueError):
            self.stack.forget_tsmp(ipaddress.ip_address(msg.dst), msg.data)

    @handles(StackTick)
    def on_tick(self, msg: StackTick) -> None:
        self._timer = self._timer_at = None
        self._after(self.clock.monotonic())

    def _after(self, now: float) -> None:
        stack = self.stack
        by_flow: dict[FlowKey, list[bytes]] = {}
        for key, data in stack.take_flow_segments():
            segs = by_flow.get(key)
            if segs is None:
                by_flow[key] = [data]
            else:
                segs.append(data)
        for key, segs in by_flow.items():  # one message per flow per burst, segments in order
            entry = self._by_key.get(key)
            if entry is not None:
                try:
                    entry.tell(FlowSegmentIn.model_construct(data=segs[0]) if len(segs) == 1
                               else FlowSegmentsIn.model_construct(segments=tuple(segs)))
                except (ActorStopped, MailboxFull):
                    stack.drops["flow_mailbox_full"] += len(segs)  # as a full NIC ring: TCP retransmits
        if stack.config.forward is not None or stack.fallback_tcp or stack.service_addresses:
            for fwd in stack.take_forwards():
                self._hand_forward(fwd)
        for lst, lch in self.listeners.values():
            self._drain_listener(lst, lch, now)
        for ep, dch in self.udp.values():
            while (got := ep.recvfrom()) is not None:
                dch.push(got[0], (str(got[1][0]), got[1][1]))
        emit_packets(self.sink, self.out_message, self.out_batch, stack.poll(now))
        self._publish_routes()
        d = stack.next_deadline()
        if d is not None and (self._timer_at is None or d < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = d
            self._timer = self.send_after(max(0.0, d - now), StackTick())

    def _hand_forward(self, fwd: Forwarded) -> None:
        """A new forwarded SYN, datagram or echo request to the forwarder; without one (or with its
        mailbox full) the SYN is reset and a datagram dropped, counted."""
        msg: ForwardTcpOpen | ForwardUdpIn | ForwardEchoIn
        if isinstance(fwd, ForwardedTcp) and (self.stack.config.owns(fwd.key[1])
                                              or fwd.key[1] in self.stack.service_addresses):
            self._hand_fallback(fwd)  # our own address or VIP: the app's handlers decide (20d)
            return
        if isinstance(fwd, ForwardedDatagram):
            msg = ForwardUdpIn(client=str(fwd.src), client_port=fwd.sport, dst=str(fwd.dst),
                               dst_port=fwd.dport, data=fwd.data)
        elif isinstance(fwd, ForwardedEcho):
            msg = ForwardEchoIn(client=str(fwd.src), dst=str(fwd.dst), rest=fwd.rest, data=fwd.data)
        else:
            _, dst, dport, client, cport = fwd.key
            msg = ForwardTcpOpen(client=str(client), client_port=cport, dst=str(dst), dst_port=dport)
        ref = self.ctx.lookup(self.forwarder) if self.forwarder is not None else None
        try:
            if ref is not None and ref.tell(msg):
                return
        except (ActorStopped, MailboxFull):
            pass
        self.stack.drops["forward_unavailable"] += 1
        if isinstance(msg, ForwardTcpOpen):
            self.stack.refuse_forward(fwd.key)  # type: ignore[union-attr]

    @handles(ForwardTcpAccept)
    def on_forward_accept(self, msg: ForwardTcpAccept) -> ForwardTcpAccepted:
        """The forwarder reached the destination: complete the peer's handshake in a flow actor."""
        now = self.clock.monotonic()
        key = _forward_key(msg.dst, msg.dst_port, msg.client, msg.client_port)
        conn = self.stack.accept_forward(key, now)
        if conn is None:
            return ForwardTcpAccepted()
        ch = self._spawn_flow(conn, dialed=True)
        self._after(now)
        return ForwardTcpAccepted(flow=ch.name)

    @handles(ForwardTcpRefuse)
    def on_forward_refuse(self, msg: ForwardTcpRefuse) -> None:
        self.stack.refuse_forward(_forward_key(msg.dst, msg.dst_port, msg.client, msg.client_port))
        self._after(self.clock.monotonic())

    @handles(ForwardUdpOut)
    def on_forward_udp(self, msg: ForwardUdpOut) -> None:
        try:
            self.stack.send_forwarded_udp(ipaddress.ip_address(msg.dst), msg.dst_port,
                                          ipaddress.ip_address(msg.client), msg.client_port, msg.data)
        except (NetstackError, ValueError):
            self.stack.drops["forward_reply_unsendable"] += 1  # too big for the tunnel MTU, or queue full
        self._after(self.clock.monotonic())

    @handles(ForwardEchoOut)
    def on_forward_echo(self, msg: ForwardEchoOut) -> None:
        try:
            self.stack.send_forwarded_echo_reply(ipaddress.ip_address(msg.dst),
                                                 ipaddress.ip_address(msg.client), msg.rest, msg.data)
        except (NetstackError, ValueError):
            self.stack.drops["forward_reply_unsendable"] += 1
        self._after(self.clock.monotonic())

    def _drain_listener(self, lst: TcpListener, lch: ListenerChannel, now: float) -> None:
        added = False
        while lch.has_room():
            conn = lst.accept()
            if conn is None:
                break
            ch = self._spawn_flow(conn)
            with lch.lock:
                lch.ready.append(ch)
            added = True
        if added:
            lch.notify()

    def _spawn_flow(self, conn: TcpConnection, *, dialed: bool = False) -> FlowChannel:
        key = self.stack.detach(conn)
        name = f"{self.name}-tcp-{next(_flow_ids)}"
        ch = FlowChannel(name, (str(conn.local[0]), conn.local[1]), (str(conn.remote[0]), conn.remote[1]),
                         conn.config.send_buffer)
        assert self._sup is not None
        ref = self.system.spawn(TcpFlowActor, conn, ch, self.sink, self.ref, self.out_message,
                                self.config.ip_ttl, self.out_batch, self._emitter(conn), self._queue_signal,
                                name=name,
                                parent=self._sup, dispatcher="pool", restart=Restart.NEVER,
                                mailbox=_FLOW_MAILBOX)
        self.registry.add_flow(FlowRecord(name, key, ref, ch), dialed=dialed)
        self.flows[name] = (key, ref)
        self._by_key[key] = ref
        if self._routes_on and not self._routes_reset:
            self._routes_add.append((_route_key(key), name))
        return ch

    def _emitter(self, conn: TcpConnection) -> TcpPacketEmitter:
        """One header template per address pair, shared by its flows (it holds no per-flow state):
        10,000 flows to one peer cost one template. Bounded: a full cache starts over (the flows
        keep theirs)."""
        pair = (conn.local[0], conn.remote[0])
        emitter = self._emitters.get(pair)
        if emitter is None:
            if len(self._emitters) >= _MAX_EMITTERS:
                self._emitters.clear()
            emitter = self._emitters[pair] = TcpPacketEmitter(pair[0], pair[1], self.config.ip_ttl)
        return emitter

    # -- the engine's fast path ----------------------------------------------------------------------
    @handles(FlowRoutesRequest)
    def on_routes_request(self, msg: FlowRoutesRequest) -> None:
        """A (re)started engine has no routes: send it the whole table."""
        self._routes_on = True
        self._routes_reset = True
        self._publish_routes()

    def _publish_routes(self) -> None:
        """Tell the sink (the engine) which flows it may deliver to directly: the changes since the
        last message, or the whole table after a start, a request or a message that did not get
        through (a full engine mailbox drops it; a lost route only costs the fast path, see
        ``FlowRoutes``)."""
        if not self._routes_on:
            return
        if self._routes_reset:
            table = tuple((_route_key(k), name) for name, (k, _) in self.flows.items())
            msg = FlowRoutes(reset=True, add=table)
        elif self._routes_add or self._routes_remove:
            msg = FlowRoutes(add=tuple(self._routes_add), remove=tuple(self._routes_remove))
        else:
            return
        self._routes_add.clear()
        self._routes_remove.clear()
        try:
            self._routes_reset = not self.sink.tell(msg)
        except UnhandledMessage:  # a link without a fast path (the TUN link, test rigs)
            self._routes_on = False
        except (ActorStopped, MailboxFull):
            self._routes_reset = True  # the next incarnation asks; else the next publish resends all

    @handles(FlowClosed)
    def on_flow_closed(self, msg: FlowClosed) -> None:
        entry = self.flows.pop(msg.flow, None)
        self.registry.pop_flow(msg.flow)
        if entry is None:
            return
        key, _ = entry
        self._by_key.pop(key, None)
        if self._routes_on and not self._routes_reset:
            self._routes_remove.append(_route_key(key))
        now = self.clock.monotonic()
        self.stack.release(key, msg.time_wait, now)
        self._after(now)

    @handles(AbortAllFlows)
    def on_abort_all(self, msg: AbortAllFlows) -> FlowsAborted:
        """Device close: every listener closes (pending handshakes are reset) and every flow is told
        to reset; UDP sockets close. The flows' RSTs go out from their own actors."""
        for port in list(self.listeners):
            self.on_unlisten(TcpUnlisten(port=port))
        for port in list(self.udp):
            self.on_udp_close(UdpClose(port=port))
        told = 0
        for _, ref in list(self.flows.values()):
            try:
                ref.tell(FlowAbort())
                told += 1
            except (ActorStopped, MailboxFull):
                pass  # a dying flow resets itself in on_stop
        log.debug("device close: resetting %d flows", told)
        return FlowsAborted(flows=told)

    # -- app requests ----------------------------------------------------------------------------------
    @handles(TcpListen)
    def on_listen(self, msg: TcpListen) -> NetstackReply:
        try:
            lst = self.stack.tcp_listen(msg.port, backlog=msg.backlog)
        except (NetstackError, ValueError) as e:
            return _failure(e)
        lch = ListenerChannel(msg.port, lst.backlog, self.ref)
        self.listeners[msg.port] = (lst, lch)
        self.registry.set_listener(msg.port, lch)
        return NetstackReply(ok=True, port=msg.port)

    @handles(TcpUnlisten)
    def on_unlisten(self, msg: TcpUnlisten) -> None:
        entry = self.listeners.pop(msg.port, None)
        if entry is None:
            return
        lst, lch = entry
        lst.close()
        self.registry.set_listener(msg.port, None)
        with lch.lock:
            lch.closed = True
            pending = list(lch.ready)
            lch.ready.clear()
        for ch in pending:
            ch.close()
        lch.notify()
        self._after(self.clock.monotonic())

    @handles(ListenerWake)
    def on_listener_wake(self, msg: ListenerWake) -> None:
        entry = self.listeners.get(msg.port)
        if entry is not None:
            self._drain_listener(entry[0], entry[1], self.clock.monotonic())
            self._publish_routes()

    @handles(TcpConnect)
    def on_connect(self, msg: TcpConnect) -> NetstackReply:
        now = self.clock.monotonic()
        try:
            conn = self.stack.tcp_connect((ipaddress.ip_address(msg.host), msg.port), now)
        except (NetstackError, ValueError) as e:
            return _failure(e)
        ch = self._spawn_flow(conn, dialed=True)
        self._publish_routes()  # the engine hears of the route an RTT before the SYN-ACK comes
        return NetstackReply(ok=True, flow=ch.name, port=conn.local[1])

    @handles(UdpBind)
    def on_udp_bind(self, msg: UdpBind) -> NetstackReply:
        try:
            ep = self.stack.udp_bind(msg.port)
        except (NetstackError, ValueError) as e:
            return _failure(e)
        dch = DatagramChannel(ep.port, self.config.udp_queue_datagrams)
        self.udp[ep.port] = (ep, dch)
        self.registry.set_udp(ep.port, dch)
        return NetstackReply(ok=True, port=ep.port)

    @handles(UdpSendTo)
    def on_udp_sendto(self, msg: UdpSendTo) -> NetstackReply:
        entry = self.udp.get(msg.port)
        if entry is None:
            return NetstackReply(ok=False, error="SocketError", detail="UDP socket closed")
        try:
            entry[0].sendto(msg.data, (msg.host, msg.remote_port))
        except (NetstackError, ValueError) as e:
            return _failure(e)
        self._after(self.clock.monotonic())
        return NetstackReply(ok=True, port=msg.port)

    @handles(UdpClose)
    def on_udp_close(self, msg: UdpClose) -> None:
        entry = self.udp.pop(msg.port, None)
        if entry is not None:
            entry[0].close()
            self.registry.set_udp(msg.port, None)
            with entry[1].lock:
                entry[1].closed = True
            entry[1].notify()

    @property
    def flow_count(self) -> int:
        return len(self.flows)

    # -- fallback TCP handlers and VIP services ----------------------------------------------------
    @handles(TcpFallbackSet)
    def on_fallback_set(self, msg: TcpFallbackSet) -> NetstackReply:
        """Hold SYNs for unlistened ports for the app's fallback handlers, or stop (SYNs still
        waiting for a decision are reset: no handler will ever answer them)."""
        self.stack.fallback_tcp = self.registry.fallback_on = msg.enabled
        if not msg.enabled:
            for key in self.stack.pending_forward_syns():
                if self.config.owns(key[1]):
                    self.stack.refuse_forward(key)
            self._after(self.clock.monotonic())
        return NetstackReply(ok=True)

    @handles(TcpServiceAddresses)
    def on_service_addresses(self, msg: TcpServiceAddresses) -> None:
        """The VIPs we host now (each netmap); SYNs held for a VIP no longer ours are reset."""
        old = self.stack.service_addresses
        self.registry.service_ips = {k: tuple(v) for k, v in msg.services.items()}
        self._set_services(self.registry.service_ips)
        gone = old - self.stack.service_addresses
        if gone:
            for key in self.stack.pending_forward_syns():
                if key[1] in gone:
                    self.stack.refuse_forward(key)
            self._after(self.clock.monotonic())

    def _set_services(self, services: dict[str, tuple[str, ...]]) -> None:
        vip: dict[IPAddress, str] = {}
        for name, ips in services.items():
            for ip in ips:
                with contextlib.suppress(ValueError):
                    vip[ipaddress.ip_address(ip)] = name
        self._vip_service = vip
        self.stack.service_addresses = frozenset(vip)

    def _hand_fallback(self, fwd: ForwardedTcp) -> None:
        _, dst, dport, client, cport = fwd.key
        ch = self.registry.fallback
        syn = FallbackSyn(str(client), cport, str(dst), dport, self._vip_service.get(dst, ""))
        if ch is not None and ch.push(syn):
            return
        self.stack.drops["fallback_unavailable"] += 1  # channel full (the app is not deciding) or off
        self.stack.refuse_forward(fwd.key)


def _route_key(key: FlowKey) -> RouteKey:
    """A flow's key as the engine's filter summary reads an inbound packet of it (addresses as ints)."""
    _, local, lport, remote, rport = key
    return (local.version, int(remote), rport, int(local), lport)


def _forward_key(dst: str, dport: int, client: str, cport: int) -> FlowKey:
    return (6, ipaddress.ip_address(dst), dport, ipaddress.ip_address(client), cport)


def _failure(e: Exception) -> NetstackReply:
    return NetstackReply(ok=False, error=type(e).__name__, detail=str(e))
