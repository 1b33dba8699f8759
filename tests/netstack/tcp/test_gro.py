"""Receive coalescing (``netstack/gro.py``): a burst's in-order data segments reach TCP as one
segment, every packet still checked, and the receiver ends in the same state as without it."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_sim import A_IP, B_IP, Sim

from pytsnet.netstack.gro import coalesce
from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection
from pytsnet.netstack.tcp.segment import ACK, FIN, PSH, TcpSegment, emit_ipv4_segment


def _pair() -> tuple[TcpConnection, TcpConnection, float]:
    sim = Sim(cfg_a=TcpConfig(pacing=False), cfg_b=TcpConfig())  # a sends whole batches
    sim.run(Sim.established)
    assert sim.a is not None and sim.b is not None
    return sim.a, sim.b, sim.now


def _burst(sender: TcpConnection, n: int, now: float) -> list[TcpSegment]:
    sender._cc.cwnd = 1 << 30
    sender.send(bytes(random.Random(n).randbytes(n * sender._payload_max)))
    segs = [s for s in sender.poll(now) if s.payload]
    assert len(segs) == n
    return segs


def _packets(segs: list[TcpSegment]) -> list[bytes]:
    return [emit_ipv4_segment(s, A_IP, B_IP, 64, i) for i, s in enumerate(segs)]


def _feed(conn: TcpConnection, segs: list[TcpSegment], now: float) -> list[TcpSegment]:
    for s in segs:
        conn.on_segment(s, now)
    return conn.poll(now)


def test_an_in_order_burst_becomes_one_segment_per_ack_step() -> None:
    a, b, now = _pair()
    segs = _burst(a, 40, now)
    expected, limit = b.coalesce_hint
    assert expected == segs[0].seq
    out, bad = coalesce(_packets(segs), A_IP, B_IP, expected, limit)
    assert bad == 0
    per = limit // a._payload_max  # ack_every full segments per merged one
    assert [len(s.payload) for s in out] == [per * a._payload_max] * (40 // per) + \
        [(40 % per) * a._payload_max]
    assert b"".join(s.payload for s in out) == b"".join(s.payload for s in segs)
    assert out[0].seq == segs[0].seq and out[1].seq == segs[per].seq
    assert out[0].timestamp == segs[0].timestamp and out[0].ack == segs[0].ack


def test_the_receiver_ends_as_without_coalescing_with_the_same_acks() -> None:
    a1, b1, now = _pair()
    a2, b2, _ = _pair()
    segs1, segs2 = _burst(a1, 37, now), _burst(a2, 37, now)
    assert segs1 == segs2
    plain = _feed(b1, segs1, now)
    expected, limit = b2.coalesce_hint
    merged_segs, _ = coalesce(_packets(segs2), A_IP, B_IP, expected, limit)
    merged = _feed(b2, merged_segs, now)
    assert b2.recv(1 << 20) == b1.recv(1 << 20)
    assert [(s.ack, s.window, s.flags) for s in merged] == [(s.ack, s.window, s.flags) for s in plain]


def test_a_corrupt_packet_is_dropped_and_counted_and_splits_the_run() -> None:
    a, b, now = _pair()
    segs = _burst(a, 6, now)
    pkts = _packets(segs)
    pkts[2] = pkts[2][:-1] + bytes([pkts[2][-1] ^ 1])  # payload bit flip: TCP checksum fails
    expected, limit = b.coalesce_hint
    out, bad = coalesce(pkts, A_IP, B_IP, expected, limit)
    assert bad == 1
    # Segments 0-1 merge; 3, 4, 5 now lie beyond a hole: each reaches TCP alone (one dup ACK each).
    assert [s.seq for s in out] == [segs[0].seq, segs[3].seq, segs[4].seq, segs[5].seq]
    assert out[0].payload == segs[0].payload + segs[1].payload


@pytest.mark.parametrize("region", ["ip header", "tcp header or payload"])
@settings(max_examples=40, deadline=None)
@given(corrupt=st.sets(st.integers(0, 29), max_size=6), draw=st.data())
def test_corrupt_packets_anywhere_in_a_burst_are_each_dropped(region: str, corrupt: set[int],
                                                              draw: st.DataObject) -> None:
    # Each packet gets its own verdict, wherever it sits in the burst: a changed byte of its IP
    # header (checked from one unpack of both headers on the common path: checksum, length,
    # fragment bits, protocol) or of its TCP header or payload (its checksum).
    a, b, now = _pair()
    segs = _burst(a, 30, now)
    pkts = [bytearray(p) for p in _packets(segs)]
    for i in corrupt:
        lo, hi = (0, 19) if region == "ip header" else (20, len(pkts[i]) - 1)
        at = draw.draw(st.integers(lo, hi))
        pkts[i][at] ^= draw.draw(st.integers(1, 255))  # one byte moves the sum by 1..0xFF00: never ≡ 0
    expected, limit = b.coalesce_hint
    out, bad = coalesce(pkts, A_IP, B_IP, expected, limit)
    assert bad == len(corrupt)
    kept = [s.payload for i, s in enumerate(segs) if i not in corrupt]
    assert b"".join(s.payload for s in out) == b"".join(kept)


def _reseal_ip_header(pkt: bytearray) -> None:
    """Recompute the IPv4 header checksum after a test changed a field: a well-formed header that
    says something the flow must refuse."""
    pkt[10:12] = b"\0\0"
    s = sum(int.from_bytes(pkt[i:i + 2], "big") for i in range(0, 20, 2))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    pkt[10:12] = (0xFFFF - s).to_bytes(2, "big")


@pytest.mark.parametrize("what", ["more fragments", "fragment offset", "udp", "longer than the buffer"])
def test_a_packet_whose_ip_header_is_sound_but_refused_is_dropped_alone(what: str) -> None:
    a, b, now = _pair()
    segs = _burst(a, 6, now)
    pkts = [bytearray(p) for p in _packets(segs)]
    bad_pkt = pkts[3]
    if what == "more fragments":
        bad_pkt[6] |= 0x20
    elif what == "fragment offset":
        bad_pkt[7] = 1
    elif what == "udp":
        bad_pkt[9] = 17
    else:
        bad_pkt[2:4] = (len(bad_pkt) + 1).to_bytes(2, "big")
    _reseal_ip_header(bad_pkt)
    expected, limit = b.coalesce_hint
    out, bad = coalesce(pkts, A_IP, B_IP, expected, limit)
    assert bad == 1
    assert b"".join(s.payload for s in out) == b"".join(s.payload for i, s in enumerate(segs) if i != 3)


def test_out_of_order_psh_fin_and_changed_headers_are_not_merged() -> None:
    a, b, now = _pair()
    segs = _burst(a, 8, now)
    expected, limit = b.coalesce_hint
    # Swapped pair: the run stops at the gap, and the late segment comes through on its own.
    order = [segs[0], segs[1], segs[3], segs[2], segs[4]]
    out, _ = coalesce(_packets(order), A_IP, B_IP, expected, limit)
    assert [s.seq for s in out] == [segs[0].seq, segs[3].seq, segs[2].seq, segs[4].seq]
    # PSH ends a run (merged into it); a FIN segment and a new timestamp start afresh.
    s5 = segs[5]._replace(flags=ACK | PSH)
    s6 = segs[6]._replace(timestamp=(segs[6].timestamp[0] + 1, segs[6].timestamp[1]))  # type: ignore[index]
    s7 = segs[7]._replace(flags=ACK | FIN)
    out, _ = coalesce(_packets([segs[4], s5, s6, s7]), A_IP, B_IP, segs[4].seq, limit)
    assert [(s.seq, s.flags) for s in out] == [(segs[4].seq, ACK | PSH), (s6.seq, ACK),
                                                (s7.seq, ACK | FIN)]
    assert len(out[0].payload) == 2 * a._payload_max


def test_random_bursts_reach_the_same_bytes_and_state() -> None:
    """Shuffled, duplicated and dropped packets: coalescing changes nothing TCP delivers."""
    rng = random.Random(7)
    for trial in range(20):
        a1, b1, now = _pair()
        a2, b2, _ = _pair()
        segs = _burst(a1, 30, now)
        assert _burst(a2, 30, now) == segs
        burst = [s for s in segs if rng.random() > 0.1]
        burst += rng.sample(burst, 3)
        if trial % 2:
            rng.shuffle(burst)
        plain = _feed(b1, burst, now)
        expected, limit = b2.coalesce_hint
        merged_segs, bad = coalesce(_packets(burst), A_IP, B_IP, expected, limit)
        assert bad == 0
        merged = _feed(b2, merged_segs, now)
        assert b2.recv(1 << 20) == b1.recv(1 << 20)
        assert b2.coalesce_hint == b1.coalesce_hint
        assert max(s.ack for s in merged if s.flags & ACK) == max(s.ack for s in plain if s.flags & ACK)
