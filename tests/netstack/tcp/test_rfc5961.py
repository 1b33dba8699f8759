"""RST, SYN and ACK validation against blind in-window attacks (RFC 5961), plus PAWS (RFC 7323)."""

import pytest
from tcp_sim import Sim

from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection, TcpState
from pytsnet.netstack.tcp.errors import ConnectionReset
from pytsnet.netstack.tcp.segment import ACK, PSH, RST, SYN, TcpSegment


@pytest.fixture
def conn() -> tuple[TcpConnection, float]:
    """The passive side of an established, idle connection (peer is port 40000 -> 80)."""
    sim = Sim(cfg_b=TcpConfig(timestamps=False, challenge_ack_limit=3))
    sim.run(Sim.established)
    b = sim.b
    sim.run(lambda s: not s._q)  # let the last ACK land
    b.poll(sim.now)
    return b, sim.now


def seqs(c: TcpConnection) -> tuple[int, int]:
    snd_nxt, rcv_nxt = c.time_wait_state()
    return snd_nxt, rcv_nxt


def seg(c: TcpConnection, seq: int, ack: int, flags: int, payload: bytes = b"") -> TcpSegment:
    return TcpSegment(40000, 80, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 1000, payload=payload)


def is_challenge_ack(out: list[TcpSegment], c: TcpConnection) -> bool:
    snd_nxt, rcv_nxt = seqs(c)
    return len(out) == 1 and out[0].flags == ACK and out[0].ack == rcv_nxt and out[0].seq == snd_nxt


def test_rst_with_exact_sequence_resets(conn: tuple[TcpConnection, float]) -> None:
    c, now = conn
    _snd, rcv = seqs(c)
    c.on_segment(seg(c, rcv, 0, RST), now)
    assert c.is_closed and isinstance(c.error, ConnectionReset)
    assert c.poll(now) == []
    with pytest.raises(ConnectionReset):
        c.recv(1)


def test_in_window_rst_gets_challenge_ack(conn: tuple[TcpConnection, float]) -> None:
    c, now = conn
    _snd, rcv = seqs(c)
    c.on_segment(seg(c, rcv + 1000, 0, RST), now)
    assert c.state is TcpState.ESTABLISHED
    assert is_challenge_ack(c.poll(now), c)


def test_out_of_window_rst_is_silently_dropped(conn: tuple[TcpConnection, float]) -> None:
    c, now = conn
    _snd, rcv = seqs(c)
    for s in (rcv - 1, rcv + 10_000_000, rcv + (1 << 31)):
        c.on_segment(seg(c, s, 0, RST), now)
        assert c.state is TcpState.ESTABLISHED
        assert c.poll(now) == []


def test_syn_in_established_gets_challenge_ack(conn: tuple[TcpConnection, float]) -> None:
    c, now = conn
    _snd, rcv = seqs(c)
    for s in (rcv, rcv + 5, rcv - 100_000):  # any sequence number (RFC 5961 §4.2)
        c.on_segment(seg(c, s, 0, SYN), now)
        assert c.state is TcpState.ESTABLISHED
        out = c.poll(now)
        assert is_challenge_ack(out, c), (s, out)


def test_challenge_acks_are_rate_limited(conn: tuple[TcpConnection, float]) -> None:
    c, now = conn
    _snd, rcv = seqs(c)
    sent = 0
    for _ in range(10):
        c.on_segment(seg(c, rcv + 1, 0, RST), now)
        sent += len(c.poll(now))
    assert sent == 3  # challenge_ack_limit per second (RFC 5961 §7)
    later = float(int(now) + 1)
    c.on_segment(seg(c, rcv + 1, 0, RST), later)
    assert len(c.poll(later)) == 1


def test_ack_of_unsent_data_is_answered_and_dropped(conn: tuple[TcpConnection, float]) -> None:
    c, now = conn
    snd, rcv = seqs(c)
    c.on_segment(seg(c, rcv, snd + 5000, ACK | PSH, b"evil"), now)
    assert c.recv_buffered == 0  # RFC 9293: ACK > SND.NXT -> send ACK, drop the segment
    out = c.poll(now)
    assert len(out) == 1 and out[0].ack == rcv


def test_too_old_ack_gets_challenge_ack(conn: tuple[TcpConnection, float]) -> None:
    c, now = conn
    snd, rcv = seqs(c)
    c.on_segment(seg(c, rcv, snd - 2_000_000, ACK | PSH, b"evil"), now)
    assert c.recv_buffered == 0  # RFC 5961 §5.2: SEG.ACK < SND.UNA - MAX.SND.WND
    assert is_challenge_ack(c.poll(now), c)


def test_data_outside_window_is_acked_not_buffered(conn: tuple[TcpConnection, float]) -> None:
    c, now = conn
    snd, rcv = seqs(c)
    c.on_segment(seg(c, rcv + 10_000_000, snd, ACK, b"far"), now)
    assert c.memory_bytes == 0
    out = c.poll(now)
    assert len(out) == 1 and out[0].flags == ACK and out[0].ack == rcv


def test_paws_drops_old_timestamps() -> None:
    sim = Sim()
    sim.run(Sim.established)
    sim.run(lambda s: not s._q)
    b, now = sim.b, sim.now
    b.poll(now)
    snd, rcv = b.time_wait_state()
    ts_recent = b._ts_recent
    old = TcpSegment(40000, 80, rcv, snd, ACK | PSH, 1000, timestamp=((ts_recent - 10) & 0xFFFFFFFF, 0),
                     payload=b"stale")
    b.on_segment(old, now)
    assert b.recv_buffered == 0
    assert len(b.poll(now)) == 1  # an ACK (RFC 7323 §5.3 R1)
    fresh = TcpSegment(40000, 80, rcv, snd, ACK | PSH, 1000, timestamp=((ts_recent + 10) & 0xFFFFFFFF, 0),
                       payload=b"fresh")
    b.on_segment(fresh, now)
    assert b.recv(10) == b"fresh"
