"""Flow control: the advertised window follows the reader; zero window, persist probes, resume."""

import itertools

from tcp_sim import LinkParams, Sim, Transfer

from pytsnet.netstack.tcp.connection import TcpConfig
from pytsnet.netstack.tcp.segment import ACK

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
