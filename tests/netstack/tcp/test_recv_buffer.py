"""The connection's buffers are the app's (issue 14: one buffer per direction per flow).

In-order payload goes from the segment into the ``RecvBuffer`` the app reads, and nowhere else; a
driver's own buffers are adopted with what they held; a read makes a window update due exactly at
``read_wake_level`` (the level a reader on another thread checks to wake its driver), and only while
the peer has less than half the buffer left (else its next data's ACK carries the window); a peer's
RST leaves what arrived in order readable before the error.
"""

from __future__ import annotations

import pytest
from tcp_sim import Sim

from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection
from pytsnet.netstack.tcp.errors import ConnectionReset
from pytsnet.netstack.tcp.recvbuf import RecvBuffer
from pytsnet.netstack.tcp.segment import ACK, RST, TcpSegment
from pytsnet.netstack.tcp.sendbuf import SendBuffer

KiB = 1 << 10
SEQ = 1 << 32


def _pair(cfg: TcpConfig | None = None) -> tuple[TcpConnection, TcpConnection, float]:
    sim = Sim(cfg_a=TcpConfig(pacing=False), cfg_b=cfg or TcpConfig())
    sim.run(Sim.established)
    assert sim.b is not None and sim.a is not None
    return sim.a, sim.b, sim.now


def _deliver(a: TcpConnection, b: TcpConnection, nbytes: int, now: float) -> None:
    """``nbytes`` from a to b in one batch, then b's poll (its ACKs are dropped: only b is observed)."""
    a._cc.cwnd = 1 << 30
    assert a.send(bytes(range(256)) * (nbytes // 256) + bytes(nbytes % 256)) == nbytes
    for seg in a.poll(now):
        if seg.payload:
            b.on_segment(seg, now)
    b.poll(now)


def _exchange(a: TcpConnection, b: TcpConnection, now: float) -> list[TcpSegment]:
    """Run a -> b -> a until neither sends anything; return b's last segments."""
    last: list[TcpSegment] = []
    for _ in range(100):
        out_a = a.poll(now)
        for seg in out_a:
            b.on_segment(seg, now)
        out_b = b.poll(now)
        for seg in out_b:
            a.on_segment(seg, now)
        last = out_b or last
        if not out_a and not out_b:
            return last
    raise AssertionError("no quiescence")


def _acks(segs: list[TcpSegment]) -> list[TcpSegment]:
    return [s for s in segs if s.flags & ACK and not s.payload]


def test_in_order_payload_lands_only_in_the_adopted_buffer() -> None:
    a, b, now = _pair()
    _deliver(a, b, 3000, now)  # held before a driver adopts the connection
    recv, send = RecvBuffer(), SendBuffer(0)
    b.use_buffers(recv, send)
    assert b.recv_buffer is recv and b.send_buffer is send and send.capacity == b.config.send_buffer
    assert len(recv) == 3000  # moved, not copied: the connection's old buffer is gone
    _deliver(a, b, 5000, now)
    assert len(recv) == b.recv_buffered == b.memory_bytes == 8000  # nothing held anywhere else
    assert recv.take(1 << 20) == (bytes(range(256)) * 11 + bytes(3000 % 256)
                                  + bytes(range(256)) * 19 + bytes(5000 % 256))
    assert b.send(b"reply") == 5 and send.peek() == b"reply"  # what segments are cut from
    out = b.poll(now)
    assert [s.payload for s in out if s.payload] == [b"reply"]


def test_window_closes_after_exactly_the_buffer_and_one_read_reopens_it() -> None:
    cap = 32 * KiB
    a, b, now = _pair(TcpConfig(recv_buffer=cap))
    a._cc.cwnd = 1 << 30
    assert a.send(bytes(64 * KiB)) == 64 * KiB  # more than the window
    _exchange(a, b, now)
    assert b.recv_buffered == cap and b.read_wake_level >= 0  # exactly the buffer, no more
    (delayed,) = _acks(b.poll(now + 1.0))  # the last segment's delayed ACK closes the window
    assert delayed.window == 0
    b.recv(b._our_mss - 1)
    assert _acks(b.poll(now)) == []  # less than an MSS freed: no update (receiver SWS avoidance)
    b.recv(1)
    (update,) = _acks(b.poll(now))
    assert update.window << b._rcv_wscale >= b._our_mss - (1 << b._rcv_wscale)


def test_a_read_while_the_peer_has_half_the_buffer_left_sends_no_update() -> None:
    cap = 64 * KiB
    a, b, now = _pair(TcpConfig(recv_buffer=cap))
    _deliver(a, b, 24 * KiB, now)  # the peer still has 40 KiB of window
    assert b._rcv_adv - b._rcv_nxt >= cap // 2 and b.read_wake_level == -1
    b.recv(1 << 20)  # frees far more than an MSS
    assert _acks(b.poll(now)) == []  # its next data's ACK carries the new window


@pytest.mark.parametrize("unread", [30 * KiB, 20 * KiB, 40 * KiB + 100, 60 * KiB, 64 * KiB])
def test_read_wake_level_is_exactly_where_a_read_makes_the_update_due(unread: int) -> None:
    cap = 64 * KiB
    a, b, now = _pair(TcpConfig(recv_buffer=cap))
    _deliver(a, b, unread, now)
    level = b.read_wake_level
    for size in range(0, unread + 1, 257):
        # The same state each time: read ``size`` from a copy of b's buffer contents and decide.
        left = unread - size
        due = left <= level
        growth = b._rcv_nxt + cap - left - b._rcv_adv
        expect = b._rcv_adv - b._rcv_nxt < cap // 2 and growth >= min(cap // 2, b._our_mss)
        assert due == expect, (size, level)
    b.recv(unread - max(level, 0))
    assert bool(_acks(b.poll(now))) == (level >= 0)


def test_a_window_the_field_cannot_widen_never_makes_a_read_due() -> None:
    """Without window scaling a 512 KiB buffer is offered as at most 65,535 bytes: once that is
    offered, no read can move the edge, so none may wake the driver (a pump per read, and a flow
    that saw itself at the level after every pump would wake itself for ever)."""
    cap = 512 * KiB
    sim = Sim(cfg_a=TcpConfig(pacing=False, window_scaling=False), cfg_b=TcpConfig(recv_buffer=cap))
    sim.run(Sim.established)
    a, b, now = sim.a, sim.b, sim.now
    assert a is not None and b is not None and b._rcv_wscale == 0
    _deliver(a, b, 40 * KiB, now)  # b's ACKs offered the whole 64 KiB again
    assert b._rcv_adv - b._rcv_nxt == 0xFFFF and b.recv_buffered == 40 * KiB
    assert b.read_wake_level == -1  # nothing a read could add
    for _ in range(3):  # what a flow's pumps do after the app's reads: nothing to send
        b.recv(4 * KiB)
        b.on_read()
        assert _acks(b.poll(now)) == []


def test_a_peer_reset_leaves_in_order_bytes_readable_then_raises() -> None:
    a, b, now = _pair()
    _deliver(a, b, 1000, now)
    rst = TcpSegment(a.local[1], a.remote[1], (a._snd_base + a._snd_max) % SEQ, 0, RST, 0)
    b.on_segment(rst, now)
    assert b.is_closed and isinstance(b.error, ConnectionReset)
    assert len(b.recv(1 << 20)) == 1000
    with pytest.raises(ConnectionReset):
        b.recv(1)


def test_a_local_abort_discards_unread_bytes() -> None:
    a, b, now = _pair()
    _deliver(a, b, 1000, now)
    b.close()  # unread data: an abort (RFC 2525 §2.17)
    assert b.recv_buffered == 0 and b.send_buffer.capacity == 0
