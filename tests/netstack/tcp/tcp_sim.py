"""Deterministic simulated link between two sans-IO ``TcpConnection``s, driven by a virtual clock.

Segments go through the real codec (emit, then parse with checksum) unless ``codec=False``.
Loss, reordering (extra delay so later segments overtake), duplication and delay come from a
seeded ``random.Random``, so every run of a test sees the same packets.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection
from pytsnet.netstack.tcp.segment import ACK, RST, SYN, TcpSegment, emit_segment, parse_segment

A_IP = ipaddress.IPv4Address("100.64.0.1")
B_IP = ipaddress.IPv4Address("100.64.0.2")
A = (A_IP, 40000)
B = (B_IP, 80)


@dataclass
class LinkParams:
    delay: float = 0.010
    loss: float = 0.0
    reorder: float = 0.0
    dup: float = 0.0
    drop_fn: Callable[[int, TcpSegment], bool] | None = None  # (direction 0=a->b 1=b->a, seg) -> drop?
    delay_fn: Callable[[int, TcpSegment], float] | None = None  # extra delay for one segment


@dataclass
class Trace:
    t: float
    direction: int  # 0: a->b, 1: b->a
    seg: TcpSegment
    dropped: bool = False


@dataclass
class Sim:
    cfg_a: TcpConfig = field(default_factory=TcpConfig)
    cfg_b: TcpConfig = field(default_factory=TcpConfig)
    link: LinkParams = field(default_factory=LinkParams)
    seed: int = 1
    codec: bool = True
    iss_a: int = 0x1000
    iss_b: int = 0xFFFFF000  # wraps the 32-bit space quickly
    listen: bool = True
    simultaneous: bool = False  # b also connect()s: RFC 9293 simultaneous open

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.now = 0.0
        self.a: TcpConnection | None = TcpConnection.connect(A, B, self.iss_a, self.now, self.cfg_a)
        self.b: TcpConnection | None = None
        if self.simultaneous:
            self.b = TcpConnection.connect(B, A, self.iss_b, self.now, self.cfg_b)
        self._q: list[tuple[float, int, int, object]] = []
        self._n = 0
        self.trace: list[Trace] = []
        self.b_rsts_for_closed = 0

    # --------------------------------------------------------------- link
    def _send(self, direction: int, seg: TcpSegment) -> None:
        p = self.link
        dropped = (p.drop_fn is not None and p.drop_fn(direction, seg)) or \
            (p.loss > 0 and self.rng.random() < p.loss)
        self.trace.append(Trace(self.now, direction, seg, dropped))
        if dropped:
            return
        src, dst = (A_IP, B_IP) if direction == 0 else (B_IP, A_IP)
        item: object = emit_segment(seg, src, dst) if self.codec else seg
        copies = 2 if p.dup > 0 and self.rng.random() < p.dup else 1
        for _ in range(copies):
            d = p.delay + (p.delay_fn(direction, seg) if p.delay_fn is not None else 0.0)
            if p.reorder > 0 and self.rng.random() < p.reorder:
                d += p.delay * (0.5 + self.rng.random())
            self._n += 1
            heapq.heappush(self._q, (self.now + d, self._n, direction, item))

    def _deliver(self, direction: int, item: object) -> None:
        if isinstance(item, bytes):
            src, dst = (A_IP, B_IP) if direction == 0 else (B_IP, A_IP)
            seg = parse_segment(item, src, dst)
        else:
            assert isinstance(item, TcpSegment)
            seg = item
        if direction == 1:
            if self.a is not None and not self.a.is_closed:
                self.a.on_segment(seg, self.now)
            else:
                self._reset_for_closed(1, seg)
            return
        if self.b is None or (self.b.is_closed and seg.flags & SYN and not seg.flags & ACK):
            if self.listen and seg.flags & SYN and not seg.flags & (ACK | RST):
                self.b = TcpConnection.accept(seg, B, A, self.iss_b, self.now, self.cfg_b)
            else:
                self._reset_for_closed(0, seg)
            return
        if self.b.is_closed:
            self._reset_for_closed(0, seg)
            return
        self.b.on_segment(seg, self.now)

    def _reset_for_closed(self, direction: int, seg: TcpSegment) -> None:
        """What a stack does for a segment with no connection (RFC 9293 §3.10.7.1): RST it."""
        if seg.flags & RST:
            return
        if direction == 0:
            self.b_rsts_for_closed += 1
        if seg.flags & ACK:
            rst = TcpSegment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
        else:
            ack = (seg.seq + seg.seg_len) & 0xFFFFFFFF
            rst = TcpSegment(seg.dst_port, seg.src_port, 0, ack, RST | ACK, 0)
        self._send(1 - direction, rst)

    # --------------------------------------------------------------- clock
    def poll(self) -> None:
        for direction, conn in ((0, self.a), (1, self.b)):
            if conn is not None:
                for seg in conn.poll(self.now):
                    self._send(direction, seg)

    def next_time(self) -> float | None:
        ts = [c.next_deadline() for c in (self.a, self.b) if c is not None]
        if self._q:
            ts.append(self._q[0][0])
        ts = [t for t in ts if t is not None]
        return min(ts) if ts else None

    def run(self, until: Callable[[Sim], bool], app: Callable[[Sim], None] | None = None,
            max_time: float = 600.0, max_steps: int = 5_000_000, tick: float | None = None) -> None:
        """Advance until ``until(sim)`` holds; ``app`` runs at every step and every ``tick`` seconds."""
        steps = 0
        while True:
            if app is not None:
                app(self)
            self.poll()
            if until(self):
                return
            t = self.next_time()
            if tick is not None:
                t = self.now + tick if t is None else min(t, self.now + tick)
            if t is None:
                raise AssertionError(f"simulation stalled at t={self.now:.3f}")
            if t > max_time:
                raise AssertionError(f"simulation exceeded max_time at t={self.now:.3f}")
            self.now = max(self.now, t)
            while self._q and self._q[0][0] <= self.now:
                _, _, direction, item = heapq.heappop(self._q)
                self._deliver(direction, item)
            steps += 1
            if steps > max_steps:
                raise AssertionError("too many simulation steps")

    def established(self) -> bool:
        from pytsnet.netstack.tcp.connection import TcpState
        return (self.a is not None and self.b is not None and self.a.state is TcpState.ESTABLISHED
                and self.b.state is TcpState.ESTABLISHED)


class Transfer:
    """App behaviour: stream ``data_a`` a->b and ``data_b`` b->a, read everything, then close."""

    def __init__(self, data_a: bytes, data_b: bytes, read_chunk: int = 1 << 20,
                 read_rate: float | None = None, close: bool = True) -> None:
        self.data = (data_a, data_b)
        self.sent = [0, 0]
        self.got = [bytearray(), bytearray()]  # got[0]: what a received
        self.read_chunk = read_chunk
        self.read_rate = read_rate  # bytes per second the reader drains, None: unlimited
        self._last_read = [0.0, 0.0]
        self.close = close
        self.shut = [False, False]
        self._conns: list[TcpConnection | None] = [None, None]

    def __call__(self, sim: Sim) -> None:
        for i, conn in enumerate((sim.a, sim.b)):
            if conn is None or conn.is_closed:
                continue
            if conn is not self._conns[i]:
                if self._conns[i] is not None and not self.got[i]:
                    # The listener's half-open entry died and a retransmitted SYN made a new one: an app
                    # accepts only established connections, so it never wrote into the dead one.
                    self.sent[i], self.shut[i] = 0, False
                self._conns[i] = conn
            data = self.data[i]
            if self.sent[i] < len(data) and conn.writable:
                self.sent[i] += conn.send(memoryview(data)[self.sent[i]:self.sent[i] + (1 << 18)])
            if self.close and self.sent[i] == len(data) and not self.shut[i]:
                conn.shutdown_write()
                self.shut[i] = True
            budget = self.read_chunk
            if self.read_rate is not None:
                budget = int((sim.now - self._last_read[i]) * self.read_rate)
                if budget <= 0:
                    continue
            if conn.readable:
                got = conn.recv(budget)
                if got:
                    self._last_read[i] = sim.now
                self.got[i] += got

    def done(self, sim: Sim) -> bool:
        return (sim.a is not None and sim.b is not None and len(self.got[1]) == len(self.data[0])
                and len(self.got[0]) == len(self.data[1]) and sim.a.at_eof and sim.b.at_eof)
