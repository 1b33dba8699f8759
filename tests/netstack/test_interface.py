"""The sans-IO Stack: demultiplexing, replies, drop counters, and bounds (no I/O, time passed in)."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytsnet.netstack import icmp
from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.errors import AddressInUse, SocketError
from pytsnet.netstack.interface import Stack
from pytsnet.netstack.ipv4 import Ipv4Packet, emit_ipv4, parse_ipv4
from pytsnet.netstack.ipv6 import Ipv6Packet, emit_ipv6, parse_ipv6
from pytsnet.netstack.tcp import segment as tcpseg
from pytsnet.netstack.udp import UdpDatagram, emit_udp, parse_udp

PEER = ipaddress.IPv4Address("10.77.0.1")
ME = ipaddress.IPv4Address("10.77.0.2")
PEER6 = ipaddress.IPv6Address("fd00::1")
ME6 = ipaddress.IPv6Address("fd00::2")


def make_stack(**kw: object) -> Stack:
    return Stack(StackConfig(addresses=(ME, ME6), **kw), rng=random.Random(1))  # type: ignore[arg-type]


def ip4(proto: int, payload: bytes, src: ipaddress.IPv4Address = PEER,
        dst: ipaddress.IPv4Address = ME) -> bytes:
    return emit_ipv4(Ipv4Packet(src, dst, proto, payload))


def ping4(seq: int = 1, data: bytes = b"hello", dst: ipaddress.IPv4Address = ME) -> bytes:
    return ip4(1, icmp.emit_icmpv4(icmp.echo(icmp.ICMP_ECHO_REQUEST, 77, seq, data)), dst=dst)


def udp4(dport: int, data: bytes, sport: int = 4000) -> bytes:
    return ip4(17, emit_udp(UdpDatagram(sport, dport, data), PEER, ME))


def tcp4(seg: tcpseg.TcpSegment) -> bytes:
    return ip4(6, tcpseg.emit_segment(seg, PEER, ME))


def test_echo_request_is_answered_with_same_id_seq_and_data() -> None:
    s = make_stack()
    s.receive(ping4(9, b"x" * 1000), 0.0)
    [out] = s.poll(0.0)
    p = parse_ipv4(out)
    assert (p.src, p.dst, p.protocol) == (ME, PEER, 1)
    m = icmp.parse_icmpv4(p.payload)
    assert (m.type, m.echo_ident, m.echo_seq, m.body) == (icmp.ICMP_ECHO_REPLY, 77, 9, b"x" * 1000)
    assert s.poll(0.0) == []


def test_packets_for_other_addresses_are_dropped_and_counted() -> None:
    s = make_stack()
    s.receive(ping4(dst=ipaddress.IPv4Address("10.77.0.3")), 0.0)
    assert s.poll(0.0) == [] and s.drops["not_our_address"] == 1


def test_ipv6_is_off_by_default_and_answers_when_enabled() -> None:
    req = icmp.echo(icmp.ICMPV6_ECHO_REQUEST, 1, 2, b"v6")
    raw = emit_ipv6(Ipv6Packet(PEER6, ME6, 58, icmp.emit_icmpv6(req, PEER6, ME6)))
    off = make_stack()
    off.receive(raw, 0.0)
    assert off.poll(0.0) == [] and off.drops["ip_version"] == 1
    on = make_stack(enable_ipv6=True)
    on.receive(raw, 0.0)
    [out] = on.poll(0.0)
    p = parse_ipv6(out)
    m = icmp.parse_icmpv6(p.payload, p.src, p.dst)
    assert (p.src, p.dst, m.type, m.body) == (ME6, PEER6, icmp.ICMPV6_ECHO_REPLY, b"v6")


def test_udp_bind_deliver_and_reply() -> None:
    s = make_stack()
    ep = s.udp_bind(53)
    s.receive(udp4(53, b"query"), 0.0)
    assert ep.recvfrom() == (b"query", (PEER, 4000))
    assert ep.recvfrom() is None
    ep.sendto(b"answer", (PEER, 4000))
    [out] = s.poll(0.0)
    p = parse_ipv4(out)
    assert parse_udp(p.payload, p.src, p.dst) == UdpDatagram(53, 4000, b"answer")


def test_udp_bind_conflicts_and_ephemeral_ports() -> None:
    s = make_stack()
    s.udp_bind(53)
    with pytest.raises(AddressInUse):
        s.udp_bind(53)
    with pytest.raises(AddressInUse):
        s.udp_bind(53, str(ME))
    a, b = s.udp_bind(), s.udp_bind()
    assert a.port != b.port and all(49152 <= p <= 65535 for p in (a.port, b.port))
    with pytest.raises(SocketError):
        s.udp_bind(1, "10.9.9.9")


def test_udp_connected_endpoint_drops_other_peers() -> None:
    s = make_stack()
    ep = s.udp_bind(53)
    ep.connect((PEER, 5000))
    s.receive(udp4(53, b"from 4000"), 0.0)
    s.receive(udp4(53, b"from 5000", sport=5000), 0.0)
    assert ep.recv() == b"from 5000" and ep.recv() is None
    assert s.drops["udp_not_connected_peer"] == 1


def test_udp_receive_queue_is_bounded() -> None:
    s = make_stack(udp_queue_datagrams=10, udp_queue_bytes=1_000_000)
    ep = s.udp_bind(53)
    for i in range(15):
        s.receive(udp4(53, bytes([i])), 0.0)
    assert s.drops["udp_queue_full"] == 5
    assert [ep.recv() for _ in range(10)] == [bytes([i]) for i in range(10)]
    s2 = make_stack(udp_queue_bytes=250)
    ep2 = s2.udp_bind(53)
    for _ in range(5):
        s2.receive(udp4(53, b"x" * 100), 0.0)
    assert s2.drops["udp_queue_full"] == 3 and ep2._queued_bytes == 200


def test_udp_to_closed_port_gets_icmp_port_unreachable() -> None:
    s = make_stack()
    raw = udp4(9, b"discard?")
    s.receive(raw, 0.0)
    [out] = s.poll(0.0)
    m = icmp.parse_icmpv4(parse_ipv4(out).payload)
    assert (m.type, m.code) == (icmp.ICMP_DEST_UNREACHABLE, icmp.ICMP_CODE_PORT_UNREACHABLE)
    assert m.body == raw


def test_udp_payload_over_mtu_is_refused() -> None:
    s = make_stack()
    ep = s.udp_bind(53)
    ep.sendto(b"x" * (1280 - 28), (PEER, 1))
    with pytest.raises(SocketError):
        ep.sendto(b"x" * (1280 - 27), (PEER, 1))


def test_syn_to_closed_port_gets_rst_ack() -> None:
    s = make_stack()
    s.receive(tcp4(tcpseg.TcpSegment(40000, 80, 1000, 0, tcpseg.SYN, 65535, mss=1460)), 0.0)
    [out] = s.poll(0.0)
    p = parse_ipv4(out)
    seg = tcpseg.parse_segment(p.payload, p.src, p.dst)
    assert (seg.src_port, seg.dst_port, seg.flags, seg.seq, seg.ack) == (
        80, 40000, tcpseg.RST | tcpseg.ACK, 0, 1001)


def test_ack_to_closed_port_gets_rst_with_its_ack_as_seq_and_rst_gets_nothing() -> None:
    s = make_stack()
    s.receive(tcp4(tcpseg.TcpSegment(40000, 80, 5, 123456, tcpseg.ACK, 100, payload=b"data")), 0.0)
    [out] = s.poll(0.0)
    p = parse_ipv4(out)
    seg = tcpseg.parse_segment(p.payload, p.src, p.dst)
    assert (seg.flags, seg.seq) == (tcpseg.RST, 123456)
    s.receive(tcp4(tcpseg.TcpSegment(40000, 80, 5, 0, tcpseg.RST, 0)), 0.0)
    assert s.poll(0.0) == []


def test_outbound_queue_is_bounded() -> None:
    s = make_stack(max_outbound_packets=3)
    for i in range(10):
        s.receive(ping4(i), 0.0)
    assert len(s.poll(0.0)) == 3 and s.drops["outbound_queue_full"] == 7


def test_corrupted_packets_are_counted_by_reason() -> None:
    s = make_stack()
    good = bytearray(udp4(53, b"abc"))
    good[-1] ^= 0xFF  # UDP checksum now wrong
    s.receive(bytes(good), 0.0)
    s.receive(b"", 0.0)
    s.receive(b"\x45" + b"\x00" * 5, 0.0)
    t = bytearray(tcp4(tcpseg.TcpSegment(1, 2, 3, 4, tcpseg.SYN, 5)))
    t[-1] ^= 1
    s.receive(bytes(t), 0.0)
    assert s.drops == {"udp_checksum": 1, "empty": 1, "ipv4_truncated": 1, "tcp_parse": 1}


# -- property tests: nothing escapes, nothing grows without bound --------------------------------

def _valid_packets() -> list[bytes]:
    return [ping4(), udp4(53, b"q" * 40), udp4(9, b"z"),
            tcp4(tcpseg.TcpSegment(40000, 80, 1, 0, tcpseg.SYN, 1000, mss=1200, wscale=7,
                                   sack_permitted=True, timestamp=(1, 0))),
            emit_ipv6(Ipv6Packet(PEER6, ME6, 17, emit_udp(UdpDatagram(1, 53, b"six"), PEER6, ME6)))]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from(_valid_packets())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 2))
        if op == 0 and base:
            i = draw(st.integers(0, len(base) - 1))
            base[i] = draw(st.integers(0, 255))
        elif op == 1:
            base = base[:draw(st.integers(0, len(base)))]
        else:
            base += draw(st.binary(max_size=20))
    return bytes(base)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=120), mutated()), max_size=30), st.booleans())
def test_random_and_mutated_packets_never_raise_and_memory_stays_bounded(
        packets: list[bytes], v6: bool) -> None:
    s = make_stack(enable_ipv6=v6, max_outbound_packets=8, udp_queue_datagrams=4)
    ep = s.udp_bind(53)
    for pkt in packets:
        s.receive(pkt, 1.0)
    assert len(s._out) <= 8 and len(ep._queue) <= 4
    assert s.received == len(packets)
    for out in s.poll(1.0):
        # Everything we emit parses back with valid checksums.
        if out[0] >> 4 == 4:
            parse_ipv4(out)
        else:
            parse_ipv6(out)
