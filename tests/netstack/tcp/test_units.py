"""Unit tests for the per-concept modules: seq, rto, reassembly, send buffer/scoreboard, TIME_WAIT."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytsnet.netstack.tcp.reassembly import Reassembler
from pytsnet.netstack.tcp.rto import RttEstimator
from pytsnet.netstack.tcp.segment import ACK, FIN, RST, TcpSegment
from pytsnet.netstack.tcp.sendbuf import SackScoreboard, SendBuffer
from pytsnet.netstack.tcp.seq import seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from pytsnet.netstack.tcp.timewait import TimeWaitTable


def test_seq_comparisons_wrap() -> None:
    assert seq_lt(0xFFFFFFF0, 0x10) and seq_gt(0x10, 0xFFFFFFF0)
    assert seq_diff(0x10, 0xFFFFFFF0) == 0x20 and seq_diff(0xFFFFFFF0, 0x10) == -0x20
    assert seq_le(5, 5) and seq_ge(5, 5) and not seq_lt(5, 5)


def test_rto_rfc6298_first_and_second_sample() -> None:
    r = RttEstimator(1.0, rto_min=0.2, rto_max=60.0)
    assert r.rto == 1.0
    r.sample(0.5)  # §2.2: SRTT=R, RTTVAR=R/2, RTO=SRTT+4*RTTVAR
    assert r.srtt == 0.5 and r.rttvar == 0.25 and r.rto == pytest.approx(1.5)
    r.sample(0.1)  # §2.3: RTTVAR=3/4*0.25+1/4*|0.5-0.1|, SRTT=7/8*0.5+1/8*0.1
    assert r.rttvar == pytest.approx(0.2875) and r.srtt == pytest.approx(0.45)
    assert r.rto == pytest.approx(0.45 + 4 * 0.2875)
    r.back_off()
    r.back_off()
    assert r.rto == pytest.approx(4 * (0.45 + 4 * 0.2875))
    for _ in range(20):
        r.back_off()
    assert r.rto == 60.0
    r.sample(0.001)
    assert r.rto >= 0.2  # RTO.min


def test_reassembly_fills_holes_and_respects_limit() -> None:
    r = Reassembler(limit=100)
    r.insert(10, b"k" * 10)
    r.insert(30, b"m" * 10)
    r.insert(15, b"x" * 20)  # overlaps both blocks: only the gap 20..30 is new
    assert r.buffered == 30
    assert r.sack_blocks() == [(10, 40)]
    chunks, nxt = r.pop_ready(0)
    assert chunks == [] and nxt == 0
    chunks, nxt = r.pop_ready(12)
    assert b"".join(chunks) == b"k" * 8 + b"x" * 10 + b"m" * 10 and nxt == 40
    assert r.buffered == 0 and not r
    r.insert(0, b"z" * 500)
    assert r.buffered == 100  # bounded


def test_sack_blocks_most_recent_first() -> None:
    r = Reassembler(limit=10_000)
    for start in (100, 300, 500, 700, 900):
        r.insert(start, b"a" * 50)
    assert r.sack_blocks(3)[0] == (900, 950)
    r.insert(300, b"b" * 60)  # extends the 300 block: it must be reported first (RFC 2018 §4)
    assert r.sack_blocks(3)[0] == (300, 360)
    assert len(r.sack_blocks(4)) == 4


@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 300)), max_size=60))
def test_reassembly_matches_reference(pieces: list[tuple[int, int]]) -> None:
    stream = random.Random(len(pieces)).randbytes(2400)
    r = Reassembler(limit=1 << 20)
    have = set()
    for start, n in pieces:
        r.insert(start + 1, stream[start + 1:start + 1 + n])
        have.update(range(start + 1, min(start + 1 + n, 2400)))
    chunks, nxt = r.pop_ready(1)
    expect = 1
    while expect in have:
        expect += 1
    assert nxt == max(expect, 1)
    assert b"".join(chunks) == stream[1:nxt]


def test_send_buffer_bounded_and_acks() -> None:
    b = SendBuffer(10)
    assert b.write(b"0123456789abc") == 10 and b.free == 0
    assert b.read(3, 4) == b"3456"
    assert b.ack_to(4) == 4 and b.start == 4 and b.read(4, 100) == b"456789"
    assert b.write(b"XYZ") == 3 and b.end == 13


def test_scoreboard() -> None:
    sb = SackScoreboard()
    assert sb.add(10, 20) and sb.add(30, 40) and not sb.add(12, 18)
    assert sb.add(15, 35) and sb.sacked_bytes == 30 and sb.highest == 40
    assert sb.next_unsacked(0) == (0, 10) and sb.next_unsacked(12) == (40, None)
    assert sb.sacked_below(20) == 10
    sb.advance(25)
    assert sb.sacked_bytes == 15 and sb.next_unsacked(25) == (40, None)


def test_time_wait_table_bounded_and_answers() -> None:
    t = TimeWaitTable(capacity=3, duration=60.0)
    for i in range(5):
        t.add(("k", i), 80, 1000 + i, 100, 200, now=float(i))
    assert len(t) == 3 and ("k", 0) not in t and ("k", 4) in t
    ack = t.on_segment(("k", 4), TcpSegment(1004, 80, 199, 100, FIN | ACK, 100), 10.0)
    assert ack is not None and ack.flags == ACK and (ack.seq, ack.ack) == (100, 200)
    assert t.on_segment(("k", 4), TcpSegment(1004, 80, 200, 0, RST, 0), 11.0) is None
    assert ("k", 4) not in t
    t.expire(1000.0)
    assert len(t) == 0


def test_time_wait_forget_and_stale_slots_do_not_evict_new_incarnations() -> None:
    t = TimeWaitTable(capacity=2, duration=60.0)
    t.add("a", 80, 1, 10, 20, now=0.0)
    t.add("b", 80, 2, 10, 20, now=1.0)
    assert t.forget("a") and "a" not in t and not t.forget("a")
    t.add("a", 80, 1, 30, 40, now=5.0)  # new incarnation: a stale slot for "a" at 60.0 stays in the heap
    t.add("c", 80, 3, 10, 20, now=6.0)  # full: must evict "b" (oldest live), not the new "a"
    assert "a" in t and "c" in t and "b" not in t
    t.expire(61.0)  # the stale 60.0 slot for "a" must not expire the new entry (due at 65.0)
    assert "a" in t
    for i in range(100):  # churn: forget() keeps the heap bounded
        t.add(("x", i), 80, 4, 1, 2, now=7.0)
        t.forget(("x", i))
    assert len(t._heap) <= 2 * 2 + 16 + 2
    t.expire(1000.0)
    assert len(t) == 0


def test_scoreboard_lost_edge_is_rfc6675_islost() -> None:
    sb = SackScoreboard()
    assert sb.lost_edge(1) is None
    sb.add(1000, 2000)
    sb.add(3000, 3500)
    sb.add(5000, 6000)
    assert sb.lost_edge(1000) == 5000  # the top range alone has 1000 SACKed bytes
    assert sb.lost_edge(1001) == 3000  # 1500 above 3000: holes below 3000 are lost
    assert sb.lost_edge(2500) == 1000
    assert sb.lost_edge(2501) is None  # only 2500 bytes SACKed in all
