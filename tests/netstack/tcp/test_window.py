"""Flow control: the advertised window follows the reader; zero window, persist probes, resume."""

import itertools

from tcp_sim import LinkParams, Sim, Transfer

from pytsnet.netstack.tcp.connection import TcpConfig
from pytsnet.netstack.tcp.segment import ACK, TcpSegment

KiB = 1 << 10


def test_zero_window_slow_reader_then_resume() -> None:
    cfg_b = TcpConfig(recv_buffer=64 * KiB)
    sim = Sim(cfg_b=cfg_b)
    data = bytes(range(251)) * 4000  # ~1 MB
    tr = Transfer(data, b"", close=False)
    reading = {"on": False}
    peak = [0]

    def app(s: Sim) -> None:
        tr.read_chunk = 1 << 20 if reading["on"] else 0
        tr(s)
        if s.b is not None:
            peak[0] = max(peak[0], s.b.memory_bytes)

    sim.run(lambda s: s.now > 10.0, app)
    assert len(tr.got[1]) == 0
    assert peak[0] <= 64 * KiB
    b_acks = [t.seg for t in sim.trace if t.direction == 1 and t.seg.flags == ACK]
    assert b_acks[-1].window == 0  # the receiver closed its window
    # Persist timer: the sender probes the zero window with exponentially spaced probes.
    una = sim.a._snd_una
    probes = [t for t in sim.trace if t.direction == 0 and not t.seg.payload
              and t.seg.seq == ((0x1000 + una) & 0xFFFFFFFF)]
    assert len(probes) >= 3
    gaps = [b.t - a.t for a, b in itertools.pairwise(probes)]
    assert all(g2 > g1 for g1, g2 in itertools.pairwise(gaps))
    reading["on"] = True
    sim.run(lambda s: len(tr.got[1]) == len(data), app, max_time=60.0)
    assert bytes(tr.got[1]) == data
    assert peak[0] <= 64 * KiB


def test_window_tracks_read_rate() -> None:
    """A reader draining 256 KB/s limits a 1 MB transfer to about 4 s: the window is the brake."""
    cfg_b = TcpConfig(recv_buffer=32 * KiB)
    sim = Sim(cfg_b=cfg_b, link=LinkParams(delay=0.005))
    data = bytes(1_000_000)
    tr = Transfer(data, b"", read_rate=256_000)
    peak = [0]

    def app(s: Sim) -> None:
        tr(s)
        if s.b is not None:
            peak[0] = max(peak[0], s.b.recv_buffered)
    sim.run(lambda s: len(tr.got[1]) == len(data), app, tick=0.01)
    assert 3.5 < sim.now < 4.6
    assert peak[0] <= 32 * KiB
    assert sim.a.retransmitted_segments == 0  # nothing was sent the receiver could not hold


def test_window_update_sent_when_reader_frees_space() -> None:
    cfg_b = TcpConfig(recv_buffer=16 * KiB, delayed_ack=0.2)
    sim = Sim(cfg_b=cfg_b)
    sim.run(Sim.established)
    sim.a.send(bytes(16 * KiB))
    sim.run(lambda s: s.b.recv_buffered == 16 * KiB)
    sim.run(lambda s: not s._q)
    n = len(sim.trace)
    sim.b.recv(16 * KiB)
    sim.poll()
    update = [t.seg for t in sim.trace[n:] if t.direction == 1]
    assert len(update) == 1 and update[0].window << 2 >= 16 * KiB - 1240  # sent at once, not delayed


def _from_b(sim: Sim, seq_off: int, ack_off: int, edge_off: int, payload: bytes = b"") -> TcpSegment:
    """A segment from B to A at B's stream offset ``seq_off``, acknowledging A's offset ``ack_off``
    and offering A's stream up to offset ``edge_off`` (in B's window unit), crafted as B would."""
    a = sim.a
    assert a is not None
    mask = 0xFFFFFFFF
    unit = 1 << a._snd_wscale
    assert (edge_off - ack_off) % unit == 0
    return TcpSegment(80, 40000, (a._rcv_base + seq_off) & mask, (a._snd_base + ack_off) & mask, ACK,
                      (edge_off - ack_off) // unit, timestamp=(a._ts_recent + 1, 0), payload=payload)


def _in_flight_pair() -> Sim:
    """A and B after 100 KiB went across, then A with 200 KiB more queued and as much of it sent as
    its congestion window let go in 0.1 s, none of that delivered yet (B's answers are crafted)."""
    sim = Sim()
    sim.run(Sim.established)
    a, b = sim.a, sim.b
    assert a is not None and b is not None
    a.send(bytes(100 * KiB))
    sim.run(lambda s: b.recv_buffered == 100 * KiB and not s._q)
    b.recv(100 * KiB)
    a.send(bytes(200 * KiB))
    for _ in range(100):
        sim.now += 0.001
        a.poll(sim.now)  # lost in flight
    assert a._snd_max - a._snd_una > 16 * KiB
    return sim


def test_an_ack_that_moves_una_updates_the_window_whatever_its_seq() -> None:
    """B's pure ACKs carry SND.MAX; its retransmissions the lower sequence numbers of data A lost.
    A retransmission that acknowledges more of A's data (its ACK field newer) but starts below the
    ACKs' sequence number (RFC 9293's SND.WL1 test fails) must still be taken as the window it
    offers, relative to its own ACK: keeping the older window relative to the new SND.UNA moved the
    edge right by the bytes acknowledged, A sent past B's edge, and B — window closed — dropped
    every later ACK of A's as out of window (the NAT-lab rebinding stall). Linux updates the window
    on any ACK that advances SND.UNA (``tcp_may_update_window``)."""
    sim = _in_flight_pair()
    a = sim.a
    assert a is not None
    unit = 1 << a._snd_wscale
    una, sent_to = a._snd_una, a._snd_max
    edge = -(-sent_to // unit) * unit  # B offers exactly what A already sent
    a.on_segment(_from_b(sim, 5000, una + 4 * KiB, edge), sim.now)  # B's pure ACK at its SND.MAX
    a.on_segment(_from_b(sim, 0, una + 8 * KiB, edge, payload=bytes(1000)), sim.now)  # a retransmission
    assert a._snd_una == una + 8 * KiB
    assert a._snd_una + a._snd_wnd == edge
    sim.now += 0.001
    ends = [((s.seq - a._snd_base) & 0xFFFFFFFF) + len(s.payload) for s in a.poll(sim.now) if s.payload]
    assert not ends or max(ends) <= edge, (max(ends), edge)


def test_an_ack_sits_inside_a_window_that_shrank() -> None:
    """When the peer's window edge is left of what we already sent (it shrank the window, which RFC
    9293 §3.8.6.2.1 tells senders to cope with), a segment without data carries the edge as its
    sequence number, not SND.MAX: the peer then still takes its ACK field (Linux
    ``tcp_acceptable_seq``); at SND.MAX it is out of window and dropped."""
    sim = _in_flight_pair()
    a = sim.a
    assert a is not None
    edge = a._snd_una + 8 * KiB  # B acknowledges 8 KiB more with a zero window: left of A's SND.MAX
    assert a._snd_max > edge
    a.on_segment(_from_b(sim, 0, edge, edge, payload=bytes(1000)), sim.now)
    acks = [s for s in a.poll(sim.now + 0.05) if not s.payload and s.flags == ACK]  # past the delayed ACK
    assert acks, "B's data must be acknowledged"
    assert all(((s.seq - a._snd_base) & 0xFFFFFFFF) == edge for s in acks)
