"""Pacing (as Linux's internal pacing) and cwnd growth only while cwnd limits the sender (RFC 7661).

Many flows sharing a FIFO below them (bench/flows.py: 1,000 flows into one TUN writer) queue as
window-sized blocks when each sends its window at once, and the FIFO then serves one flow after
another; paced, each flow's segments are spread over its round trip and interleave.
"""

import collections

from tcp_sim import LinkParams, Sim, Transfer

from pytsnet.netstack.tcp.connection import TcpConfig


def _bulk(pacing: bool, size: int = 1 << 20) -> tuple[Sim, float]:
    # A 64 KiB window over 500 ms: at most 262 KB/s paced, so the 10 ms of credit is ~2 segments.
    cfg = TcpConfig(pacing=pacing, send_buffer=64 << 10)
    sim = Sim(cfg_a=cfg, link=LinkParams(delay=0.25))
    sim.run(Sim.established)
    t0 = sim.now
    xfer = Transfer(bytes(size), b"")
    sim.run(lambda s: len(xfer.got[1]) == size, xfer)
    return sim, sim.now - t0


def _largest_burst(sim: Sim, after: float) -> int:
    """Most data segments ``a`` sent at one instant after ``after`` (s)."""
    at = collections.Counter(t.t for t in sim.trace if t.direction == 0 and t.seg.payload and t.t > after)
    return max(at.values())


def test_paced_sender_spreads_its_window_and_loses_no_throughput() -> None:
    paced, t_paced = _bulk(True)
    bursty, t_bursty = _bulk(False)
    assert _largest_burst(bursty, 0.0) >= 10  # unpaced: the initial window, then slow start's bursts
    assert _largest_burst(paced, 0.0) <= 4  # ~2 segments of credit plus the one due
    assert t_paced <= 1.15 * t_bursty, (t_paced, t_bursty)


def test_cwnd_does_not_grow_while_the_app_limits_the_sender() -> None:
    sim = Sim(link=LinkParams(delay=0.02))
    sim.run(Sim.established)
    a = sim.a
    assert a is not None and sim.b is not None
    iw = a._cc.cwnd
    for _ in range(200):  # 2 KB every 50 ms: never more than two segments in flight
        a.send(b"x" * 2000)
        end = sim.now + 0.05
        sim.run(lambda s, end=end: s.now >= end, lambda s: s.b.recv(1 << 20) if s.b else None, tick=0.01)
    assert a._cc.cwnd == iw
