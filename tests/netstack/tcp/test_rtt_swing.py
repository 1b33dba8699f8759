"""RTO under a sudden RTT swing: a queue of seconds forms below the sender (bench/flows.py's
1,000 flows through one TUN writer), so RTOs fire for data that is only waiting, not lost.

RFC 4015 (Eifel response for timeouts) and Karn's algorithm: the first ACK after the RTO echoes a
TSval older than the retransmission, so the timeout was spurious; cwnd/ssthresh are restored, the
sender resumes with new data instead of resending a window the receiver has, and the backed-off
RTO stays until a valid RTT sample, so it outgrows the queue instead of firing again at once.
"""

from collections.abc import Callable

from tcp_sim import LinkParams, Sim, Transfer

from pytsnet.netstack.tcp.connection import TcpConfig
from pytsnet.netstack.tcp.segment import TcpSegment


def _run(extra_delay: Callable[[Sim, int, TcpSegment], float], size: int) -> tuple[Sim, Transfer]:
    box: dict[str, Sim] = {}
    link = LinkParams(delay=0.01, delay_fn=lambda d, seg: extra_delay(box["sim"], d, seg))
    sim = Sim(cfg_a=TcpConfig(send_buffer=64 * 1024), link=link)
    box["sim"] = sim
    sim.run(Sim.established)
    xfer = Transfer(bytes(range(256)) * (size // 256), b"")
    sim.run(lambda s: len(xfer.got[1]) == size, xfer)
    assert bytes(xfer.got[1]) == xfer.data[0]
    return sim, xfer


def test_queue_spike_rto_is_undone_and_nothing_is_resent_go_back_n() -> None:
    """Data sent during a 1.5 s stall arrives late, not lost: the RTO that fires is undone."""
    t0, t1 = 0.3, 1.8

    def stall(sim: Sim, d: int, seg: TcpSegment) -> float:
        return t1 - sim.now if d == 0 and seg.payload and t0 <= sim.now < t1 else 0.0

    sim, _ = _run(stall, 1 << 20)
    a = sim.a
    assert a is not None
    assert a.rto_expiries >= 1  # the stall outlasted the RTO
    assert a.spurious_rtos == 1
    assert a._cc.ssthresh == 1 << 30  # undone: no loss ever happened, still in slow start
    # Only the timeouts' own retransmissions (one segment each), not the stalled window again.
    assert a.retransmitted_segments <= a.rto_expiries + a.tail_loss_probes


def test_rtt_growing_past_the_rto_does_not_time_out_for_ever() -> None:
    """The path RTT jumps from 20 ms to 2 s and stays: a few RTOs, then the RTO has learned it."""
    t0 = 0.1

    def slow(sim: Sim, d: int, seg: TcpSegment) -> float:
        return 1.0 if sim.now >= t0 else 0.0

    sim, _ = _run(slow, 1 << 20)
    a = sim.a
    assert a is not None
    assert a._rtt.srtt is not None and a._rtt.srtt > 1.5
    assert a.rto_expiries <= 4, (a.rto_expiries, a.retransmitted_segments)
    assert a.retransmitted_segments <= 2 * a.rto_expiries + a.tail_loss_probes
    # 1 MiB over a 2 s RTT with a 64 KiB send buffer is ~32 s; before the fix, 536 RTOs and 372 s.
    assert sim.now < 60
