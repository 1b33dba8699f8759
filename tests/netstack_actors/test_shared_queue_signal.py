"""The local congestion signal is shared by the flows of one sink (issue 14: 1,000 flows' fairness).

A flow that finds the sink's queue over the bound, or whose timer tick comes more than 0.2 s late (the
pool, so the CPU, is the queue), opens an episode; a flow that was not emitting at that moment reduces
its window too when it next runs. Before, only the flows that happened to emit while the link queue
was long were cut, and a few flows kept windows 3-10x their neighbours'.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, cast

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.netstack.flow import TcpFlowActor
from pytsnet.actors.netstack.queue_signal import QueueSignal
from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, handles
from pytsnet.actors.runtime.mailbox import Backlog, payload_size
from pytsnet.messages.netstack import FlowAppWake
from pytsnet.messages.runtime import Work
from pytsnet.messages.wgengine import IpPacketOut, IpPacketsOut
from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection, TcpState

A = (ipaddress.IPv4Address("100.64.0.1"), 40000)
B = (ipaddress.IPv4Address("100.64.0.2"), 80)


class StuckSink:
    """A link that takes packets and never sends them: its queue only grows."""

    def __init__(self) -> None:
        self.queue: list[Any] = []

    def tell(self, msg: Any) -> None:
        self.queue.append(msg)

    def backlog(self) -> Backlog:
        return Backlog(len(self.queue), sum(payload_size(m) for m in self.queue))


def _sending_connection(limit: int, handshake: float = 30.0) -> TcpConnection:
    """An established connection with more data than its initial window (pacing off: it sends
    the whole window in its first poll). Its handshake took ``handshake`` s on the flows' clock: at 30 s
    no retransmission timer fires while a test runs."""
    t0 = time.monotonic() - handshake
    a = TcpConnection.connect(A, B, 1000, t0, TcpConfig(local_queue_limit=limit, pacing=False))
    (syn,) = a.poll(t0)
    b = TcpConnection.accept(syn, B, A, 5000, t0)
    for seg in b.poll(t0):
        a.on_segment(seg, time.monotonic())
    assert a.state is TcpState.ESTABLISHED
    a.send(bytes(200_000))
    return a


def _until(cond: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _flow(system: ActorSystem, conn: TcpConnection, sink: StuckSink, signal: QueueSignal,
          name: str) -> ActorRef:
    ch = FlowChannel(name, ("100.64.0.1", 40000), ("100.64.0.2", 80), 1 << 16)
    ref = cast(ActorRef, sink)
    return system.spawn(TcpFlowActor, conn, ch, ref, ref, IpPacketOut, 64, IpPacketsOut, None, signal,
                        name=name)


def test_a_flow_that_was_not_emitting_answers_the_episode_too() -> None:
    sink, signal = StuckSink(), QueueSignal()
    # One initial window (10 segments, ~13 KB) fits under a bound of 12 packets (18 KB); two do not.
    quiet, loud = _sending_connection(12), _sending_connection(12)
    with ActorSystem("queue-signal", dispatcher="pool") as system:
        quiet_ref = _flow(system, quiet, sink, signal, "quiet")
        _until(lambda: len(sink.queue) == 1, "the quiet flow sent its window")
        assert signal.episode == 0 and quiet.local_congestion_signals == 0
        _flow(system, loud, sink, signal, "loud")
        _until(lambda: len(sink.queue) == 2, "the loud flow sent its window")
        _until(lambda: loud.local_congestion_signals == 1, "the loud flow saw the queue over the bound")
        assert signal.episode >= 1
        assert quiet.local_congestion_signals == 0  # it has not run since
        cwnd = quiet._cc.cwnd
        quiet_ref.tell(FlowAppWake())  # it runs again: nothing to emit (its window is full), yet cut
        _until(lambda: quiet.local_congestion_signals == 1, "the quiet flow answered the episode")
        assert quiet._cc.cwnd < cwnd and quiet.retransmitted_segments == 0
        assert len(sink.queue) == 2  # the cut sent nothing


class Blocker(Actor):
    """Holds a pool worker, as 1,000 busy flows do."""

    @handles(Work)
    def work(self, msg: Work) -> None:
        time.sleep(msg.seq / 1000)


def test_a_late_timer_tick_opens_an_episode() -> None:
    """A flow's tick that comes more than 0.2 s late (the pool is the queue: the CPU) cuts every flow,
    as a long link queue does; the link queue here stays short."""
    sink, signal = StuckSink(), QueueSignal()
    conn = _sending_connection(10_000, handshake=0.05)  # RTO and loss probe due within ~0.3 s
    with ActorSystem("queue-signal-late", dispatcher="pool", pool_workers=1) as system:
        blocker = system.spawn(Blocker, dispatcher="pool")
        _flow(system, conn, sink, signal, "paced")
        _until(lambda: len(sink.queue) == 1, "the flow sent its window")
        assert signal.episode == 0
        blocker.tell(Work(seq=1500))  # the only worker is busy for 1.5 s: the flow's tick waits
        _until(lambda: conn.local_congestion_signals == 1, "the late tick opened an episode")
        assert signal.episode >= 1


def test_one_cut_per_episode() -> None:
    sink, signal = StuckSink(), QueueSignal()
    conn = _sending_connection(1)
    with ActorSystem("queue-signal-once", dispatcher="pool") as system:
        ref = _flow(system, conn, sink, signal, "only")
        _until(lambda: conn.local_congestion_signals == 1, "the flow saw its own queue")
        for _ in range(5):
            ref.tell(FlowAppWake())
        time.sleep(0.2)
        assert conn.local_congestion_signals == 1  # same episode, same window
