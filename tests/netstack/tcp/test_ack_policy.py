"""The receiver's ACK policy: every second full segment even inside one batch, delayed ACK for a
lone segment, an immediate ACK out of order, window updates as the app reads."""

from tcp_sim import Sim

from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection
from pytsnet.netstack.tcp.segment import ACK, TcpSegment


def _pair(cfg: TcpConfig | None = None) -> tuple[TcpConnection, TcpConnection, float]:
    sim = Sim(cfg_a=TcpConfig(pacing=False), cfg_b=cfg or TcpConfig())  # a sends whole batches
    sim.run(Sim.established)
    assert sim.b is not None and sim.a is not None
    return sim.a, sim.b, sim.now


def _data_segments(sender: TcpConnection, n: int, now: float) -> list[TcpSegment]:
    """n full-sized segments from ``sender`` (its cwnd raised so one poll emits them all)."""
    sender._cc.cwnd = 1 << 30
    sender.send(b"d" * (n * sender._payload_max))
    segs = [s for s in sender.poll(now) if s.payload]
    assert len(segs) == n
    return segs


def _acks(segs: list[TcpSegment]) -> list[TcpSegment]:
    return [s for s in segs if s.flags & ACK and not s.payload]


def test_a_batch_of_40_segments_is_acked_every_second_segment() -> None:
    a, b, now = _pair(TcpConfig(ack_every=2))
    segs = _data_segments(a, 40, now)
    for s in segs:
        b.on_segment(s, now)  # one batch from the stack, then one poll (as the flow actor does)
    acks = _acks(b.poll(now))
    assert len(acks) == 20  # not one ACK for the whole batch (issue 14's ~1 per 38)
    mss = a._payload_max
    firsts = [(x.ack - segs[0].seq) % (1 << 32) for x in acks]
    assert firsts == [2 * mss * (i + 1) for i in range(20)]  # each opens the sender's window by 2 MSS


def test_ack_every_is_configurable_and_16_by_default() -> None:
    a, b, now = _pair(TcpConfig(ack_every=8))
    for s in _data_segments(a, 40, now):
        b.on_segment(s, now)
    assert len(_acks(b.poll(now))) == 5
    a, b, now = _pair()
    for s in _data_segments(a, 40, now):
        b.on_segment(s, now)
    acks = _acks(b.poll(now))
    assert len(acks) == 3  # after 16 and 32 segments, and the rest (8 > 2 segments) at the poll
    assert acks[-1].ack == (acks[0].ack + 24 * a._payload_max) % (1 << 32)


def test_segments_arriving_one_per_poll_are_acked_every_second_one() -> None:
    a, b, now = _pair()
    segs = _data_segments(a, 6, now)
    acks = []
    for s in segs:
        b.on_segment(s, now)
        acks += _acks(b.poll(now))
    assert len(acks) == 3


def test_a_lone_segment_waits_for_the_delayed_ack_timer() -> None:
    a, b, now = _pair()
    (seg,) = _data_segments(a, 1, now)
    b.on_segment(seg, now)
    assert _acks(b.poll(now)) == []
    deadline = b.next_deadline()
    assert deadline is not None and deadline - now <= 0.04 + 1e-9
    assert len(_acks(b.poll(deadline))) == 1


def test_out_of_order_is_acked_at_once_with_sack() -> None:
    a, b, now = _pair()
    segs = _data_segments(a, 3, now)
    b.on_segment(segs[2], now)
    acks = _acks(b.poll(now))
    assert len(acks) == 1 and acks[0].ack == segs[0].seq and acks[0].sack_blocks


def test_window_reopens_as_the_app_reads_by_at_least_one_mss() -> None:
    cfg = TcpConfig(recv_buffer=64 * 1024)
    a, b, now = _pair(cfg)
    mss = a._payload_max
    n = (64 * 1024) // mss // 2 * 2  # even: the last segment's ACK went out at once
    for s in _data_segments(a, n, now):
        b.on_segment(s, now)
    acks = _acks(b.poll(now))
    left = b._rcv_adv - b._rcv_nxt  # the advertised window, unrounded by the scale
    assert abs((acks[-1].window << b._rcv_wscale) - left) <= 1
    free = 64 * 1024 - n * mss  # what the unread buffer leaves
    rmss = b._our_mss  # the MSS b announced: the unit of its window updates
    lag = free - left  # the advertised edge moves in steps, so it may trail the free space
    assert 0 <= lag < rmss
    b.recv(rmss - lag - 1)
    assert _acks(b.poll(now)) == []  # less than one MSS more to offer: no update (receiver SWS avoidance)
    b.recv(1)
    update = _acks(b.poll(now))
    assert len(update) == 1 and abs((update[0].window << b._rcv_wscale) - (left + rmss)) <= 2
