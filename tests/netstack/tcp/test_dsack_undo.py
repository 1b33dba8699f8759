"""D-SACK undo (RFC 2883 §4, RFC 3708; Linux's tcp_try_undo_dsack): when every retransmission of a
recovery comes back as a duplicate, nothing was lost and the window reduction is undone.

The peer is driven by hand (our own receiver sends no D-SACKs) and timestamps are off, so the
Eifel check cannot be what undoes the recovery here.
"""

from tcp_sim import A, B

from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection
from pytsnet.netstack.tcp.segment import ACK, SYN, TcpSegment

NOW = 1.0


def _established() -> TcpConnection:
    cfg = TcpConfig(timestamps=False, pacing=False)  # one poll sends the whole window
    a = TcpConnection.connect(A, B, 1000, NOW, cfg)
    (syn,) = a.poll(NOW)
    a.on_segment(TcpSegment(B[1], A[1], 5000, (syn.seq + 1) & 0xFFFFFFFF, SYN | ACK, 65535, 1240, 7, True),
                 NOW + 0.02)
    a.poll(NOW + 0.02)
    return a


def _ack(a: TcpConnection, ack_off: int, blocks: tuple[tuple[int, int], ...] = ()) -> TcpSegment:
    base = a._snd_base
    return TcpSegment(B[1], A[1], 5001, (base + ack_off) & 0xFFFFFFFF, ACK, 4000, None, None, False,
                      tuple(((base + s) & 0xFFFFFFFF, (base + e) & 0xFFFFFFFF) for s, e in blocks))


def _recovery_then_dsack(dsack_all: bool) -> TcpConnection:
    a = _established()
    t = NOW + 0.03
    a.send(bytes(100_000))
    segs = a.poll(t)
    mss = len(segs[0].payload)
    assert len(segs) >= 8
    cwnd0, ssthresh0 = a._cc.cwnd, a._cc.ssthresh
    # Segment 0 is delayed (reordered), 1..4 arrive: SACKs, then fast retransmit of segment 0.
    for k in range(2, 6):
        a.on_segment(_ack(a, 0, ((mss, k * mss),)), t + 0.02)
    assert a._cc.in_recovery and a._cc.ssthresh < ssthresh0
    rexmit = [s for s in a.poll(t + 0.02) if s.payload and s.seq == a._snd_base]
    assert len(rexmit) == 1 and a.retransmitted_segments == 1
    # The original segment 0 arrives: everything sent is acknowledged, recovery ends reduced.
    a.on_segment(_ack(a, a._snd_max), t + 0.025)
    assert not a._cc.in_recovery and a._cc.ssthresh < ssthresh0
    # A round trip later the retransmission shows up at the receiver as a duplicate: D-SACK.
    if dsack_all:
        a.on_segment(_ack(a, a._snd_max, ((0, mss),)), t + 0.045)
    assert (a._cc.cwnd >= cwnd0 and a._cc.ssthresh == ssthresh0) is dsack_all
    return a


def test_recovery_whose_every_retransmission_was_dsacked_is_undone() -> None:
    a = _recovery_then_dsack(dsack_all=True)
    assert a.spurious_recoveries == 1


def test_without_the_dsack_the_reduction_stands() -> None:
    a = _recovery_then_dsack(dsack_all=False)
    assert a.spurious_recoveries == 0


def test_a_dsack_for_one_of_two_retransmissions_does_not_undo() -> None:
    a = _established()
    t = NOW + 0.03
    a.send(bytes(100_000))
    segs = a.poll(t)
    mss = len(segs[0].payload)
    ssthresh0 = a._cc.ssthresh
    for k in range(3, 7):  # segments 0 and 1 missing
        a.on_segment(_ack(a, 0, ((2 * mss, k * mss),)), t + 0.02)
    a.poll(t + 0.02)
    a.on_segment(_ack(a, mss, ((2 * mss, 6 * mss),)), t + 0.03)
    a.poll(t + 0.03)
    assert a.retransmitted_segments == 2
    a.on_segment(_ack(a, a._snd_max, ((0, mss),)), t + 0.05)  # only segment 0 was a duplicate
    assert a._cc.ssthresh < ssthresh0 and a.spurious_recoveries == 0


