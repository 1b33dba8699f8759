"""``TcpFlowActor``: one supervised actor per TCP connection, owning its ``TcpConnection`` and timers.

The WireGuard engine hands it the IP packets of its 4-tuple (``FlowPacketsIn``, the fast path
routed by the netstack's ``FlowRoutes``); the netstack actor hands it raw segments
(``FlowSegmentIn``) of packets that came another way (a TUN link, or before the engine heard of
the flow); the flow parses them, drives the
sans-IO connection and writes its output straight to the link sink. The connection's buffers are
the app's ``FlowChannel`` buffers (``use_buffers``): received bytes go from the segment to where the
app reads them, and the app's writes to where segments are cut from; the flow only relays the app's
wake-ups (a write, a read that opened the window by enough, a close) to the connection. Timers are
lazy: one pending ``FlowTick`` at the earliest deadline (an early tick just re-arms).

If this actor dies abnormally (a bug, or a chaos kill) ``on_stop`` resets the connection: an RST
goes to the peer and the app's next call raises ``FlowCrashed``. The 4-tuple is released either way.
A flow is never restarted (``Restart.NEVER``; an incarnation that finds its channel finished ends at
once): it would resume from connection state the crash may have corrupted.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from pytsnet.actors.netstack.channel import FlowAborted, FlowChannel, FlowCrashed
from pytsnet.actors.netstack.queue_signal import QueueSignal
from pytsnet.actors.runtime import Actor, StopReason, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.netstack import (
    FlowAbort,
    FlowAppWake,
    FlowClosed,
    FlowPacketsIn,
    FlowSegmentIn,
    FlowSegmentsIn,
    FlowTick,
    LinkPacketOut,
)
from pytsnet.netstack.gro import coalesce
from pytsnet.netstack.interface import TcpPacketEmitter
from pytsnet.netstack.tcp import segment as tcpseg
from pytsnet.netstack.tcp.connection import TcpConnection, TcpState
from pytsnet.netstack.tcp.errors import TcpParseError

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorRef, TimerHandle
    from pytsnet.messages.base import Message

log = subsystem_logger("netstack")

__all__ = ["TcpFlowActor", "emit_packets"]

_PACKET_BYTES = 1500
"""What one queued packet weighs in the local congestion signal's byte bound (an Ethernet MTU)."""

_LATE_TICK = 0.2
"""A timer tick this late (s) means the pool, so the CPU, is the queue below the flows: a congestion
episode, as a long link queue is (issue 14: with the link queue short, flows that grew their window in
slow start kept it, 3-4x their neighbours'). Ticks of a lone flow are late by the GIL's 5 ms."""
_HANDSHAKE = frozenset({TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.CLOSED})


def emit_packets(sink: ActorRef, one: type[Message], batch: type[Message] | None,
                 packets: list[bytes]) -> None:
    """Tell ``packets`` to the link sink: one ``batch(packets=...)`` message when the sink takes
    bursts (a burst then costs one mailbox hop and one wakeup), else ``one(data=...)`` each.

    Built with ``model_construct``: the packets are bytes we just made, validation would add nothing.
    """
    if not packets:
        return
    if batch is not None and len(packets) > 1:
        sink.tell(batch.model_construct(packets=tuple(packets)))  # type: ignore[call-arg]  # a packets model
        return
    for pkt in packets:
        sink.tell(one.model_construct(data=pkt))  # type: ignore[call-arg]  # a data model


class TcpFlowActor(Actor):
    def __init__(self, conn: TcpConnection, channel: FlowChannel, sink: ActorRef, netstack: ActorRef,
                 out_message: type[Message] = LinkPacketOut, ttl: int = 64,
                 out_batch: type[Message] | None = None, emitter: TcpPacketEmitter | None = None,
                 queue_signal: QueueSignal | None = None) -> None:
        self.conn = conn
        self.ch = channel
        conn.use_buffers(channel.rx, channel.tx)  # one buffer per direction: the app's
        self.sink = sink
        self.netstack = netstack
        self.out_message = out_message
        self.out_batch = out_batch
        self.ttl = ttl
        self.local = conn.local[0]
        self.remote = conn.remote[0]
        self._ident = conn.local[1] * 7919 & 0xFFFF
        self._emitter = emitter or TcpPacketEmitter(self.local, self.remote, ttl)
        self._queue_signal = queue_signal or QueueSignal()  # shared with the sink's other flows
        self._episode = self._queue_signal.episode
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        self._done = False
        self._eof_sent = False
        self._close_sent = False
        self.bad_segments = 0

    def on_start(self) -> None:
        if self.ch.finished:  # a flow is never restarted: its connection was reset when it died
            self._done = True
            self.stop()
            return
        self.ch.ref = self.ref
        self._pump()

    # -- inputs ------------------------------------------------------------------------------------
    @handles(FlowSegmentIn)
    def on_segment(self, msg: FlowSegmentIn) -> None:
        if self._done:
            return
        try:
            seg = tcpseg.parse_segment(msg.data, self.remote, self.local)
        except TcpParseError:
            self.bad_segments += 1
            return
        self.conn.on_segment(seg, self.clock.monotonic())
        self._pump()

    @handles(FlowSegmentsIn)
    def on_segments(self, msg: FlowSegmentsIn) -> None:
        """A burst for this flow: feed every segment, then pump once (one ACK decision, one emit)."""
        if self._done:
            return
        conn, now = self.conn, self.clock.monotonic()
        for data in msg.segments:
            try:
                seg = tcpseg.parse_segment(data, self.remote, self.local)
            except TcpParseError:
                self.bad_segments += 1
                continue
            conn.on_segment(seg, now)
        self._pump()

    @handles(FlowPacketsIn)
    def on_packets(self, msg: FlowPacketsIn) -> None:
        """A burst straight from the WireGuard engine (the fast path): whole IP packets the engine
        routed here by their 4-tuple. Each packet's IP header and TCP checksum are checked, runs of
        in-order data merged (``netstack/gro.py``: one ``on_segment`` per run, not per packet), then
        one pump as for ``FlowSegmentsIn``."""
        if self._done:
            return
        conn, now = self.conn, self.clock.monotonic()
        expected, limit = conn.coalesce_hint
        segs, bad = coalesce(msg.packets, self.remote, self.local, expected, limit)
        self.bad_segments += bad
        for seg in segs:
            conn.on_segment(seg, now)
        self._pump()

    @handles(FlowTick)
    def on_tick(self, msg: FlowTick) -> None:
        due = self._timer_at
        self._timer = self._timer_at = None
        if (due is not None and self.clock.monotonic() - due > _LATE_TICK
                and self.conn.config.local_queue_limit is not None):
            self._queue_signal.congested()  # answered by the pump below, and by every other flow
        if not self._done:
            self._pump()

    @handles(FlowAppWake)
    def on_wake(self, msg: FlowAppWake) -> None:
        if not self._done:
            self._pump()

    @handles(FlowAbort)
    def on_abort(self, msg: FlowAbort) -> None:
        """Device close: RST now (so the peer's reads and blocked writes fail at once, as when Go's
        netstack closes), then end; the app's next call raises ``FlowAborted``."""
        if self._done:
            return
        log.debug("%s: reset by device close", self.name)
        with self.ch.lock:
            if self.ch.error is None:
                self.ch.error = FlowAborted(f"connection reset: the device was closed ({self.name})")
        self.conn.abort()
        self._emit(self.conn.poll(self.clock.monotonic()))
        self._finish(None)

    # -- the pump ------------------------------------------------------------------------------------
    def _pump(self) -> None:
        conn, ch = self.conn, self.ch
        now = self.clock.monotonic()
        with ch.lock:
            ch.woken()
            close = ch.app_closed and not self._close_sent
            eof = ch.tx_eof and not self._eof_sent
        # The connection is driven outside the lock: its buffers take it themselves. The app's flags
        # only ever turn on, so what was read above still holds.
        if close:
            self._close_sent = True
            conn.close()  # unread data makes it an RST, as Linux does (RFC 2525 §2.17); else a FIN
        elif eof and conn.error is None:
            self._eof_sent = True
            conn.shutdown_write()  # a FIN after every byte written (the app writes no more)
        conn.on_read()  # a read since the last pump may have opened the window by enough
        out = conn.poll(now)
        limit = conn.config.local_queue_limit  # TCP's local congestion signal (issue 14, 14g)
        if out:
            self._emit(out)
            if limit is not None:
                # In packets: a sink fed bursts (``IpPacketsOut``) holds few messages and many
                # bytes, so its bytes count too, at one MTU-sized packet each.
                queued = self.sink.backlog()
                if queued.messages > limit or queued.bytes > limit * _PACKET_BYTES:
                    self._queue_signal.congested()
        if limit is not None and self._episode != self._queue_signal.episode:
            # An episode opened by any flow of this sink, this one included: every flow answers it.
            self._episode = self._queue_signal.episode
            conn.on_local_congestion()
        with ch.lock:
            again = self._sync_out(conn, ch)
        if again:
            ch.wake()  # the app read down to the new level before it was published: pump again
        ch.notify()
        st = conn.state
        if st is TcpState.CLOSED or st is TcpState.TIME_WAIT:
            # Every received byte is already where the app reads it (``rx`` outlives this actor).
            self._finish(conn.time_wait_state() if st is TcpState.TIME_WAIT else None)
            return
        d = conn.next_deadline()
        if d is not None and (self._timer_at is None or d < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = d
            self._timer = self.send_after(max(0.0, d - now), FlowTick())

    def _sync_out(self, conn: TcpConnection, ch: FlowChannel) -> bool:
        """Connection -> channel (under its lock): EOF, errors, state and the read wake level. True:
        the app already read down to the new level (before it was published), so the flow must pump
        again itself for the window update, or nobody would."""
        if conn.fin_received:
            ch.rx_eof = True  # every byte before the FIN is in rx
        if conn.error is not None and ch.error is None:
            ch.error = conn.error
        if conn.state not in _HANDSHAKE:
            ch.established = True
        level = ch.rx_wake_level = conn.read_wake_level
        return len(ch.rx) <= level and ch.claim_wake()

    def _emit(self, segs: list[tcpseg.TcpSegment]) -> None:
        ident = self._ident
        emitter = self._emitter
        if emitter.const:  # IPv4: header and segment in one struct call and one payload copy
            packets, ident = tcpseg.emit_ipv4_segments(segs, emitter.local, emitter.remote,  # type: ignore[arg-type]
                                                       emitter.ttl, ident)
        else:
            packets = []
            emit = emitter.emit
            for seg in segs:
                ident = (ident + 1) & 0xFFFF
                packets.append(emit(seg, ident))
        self._ident = ident
        emit_packets(self.sink, self.out_message, self.out_batch, packets)

    def _finish(self, time_wait: tuple[int, int] | None) -> None:
        self._done = True
        with self.ch.lock:
            self.ch.finished = True
        self.ch.notify()
        self.netstack.tell(FlowClosed(flow=self.name, time_wait=time_wait))
        self.stop()

    def on_stop(self, reason: StopReason) -> None:
        if self._done:
            return
        # Abnormal end (crash, kill, shutdown): reset the connection, tell the app and the stack.
        self._done = True
        try:
            self.conn.abort()
            self._emit(self.conn.poll(self.clock.monotonic()))
        except Exception:
            log.exception("%s: could not send the RST of a dying flow", self.name)
        with self.ch.lock:
            self.ch.finished = True
            if self.ch.error is None:
                self.ch.error = FlowCrashed(f"flow {self.name} crashed; connection reset")
        self.ch.notify()
        with contextlib.suppress(Exception):  # the netstack may be stopping too
            self.netstack.tell(FlowClosed(flow=self.name))
