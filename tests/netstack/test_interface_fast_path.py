"""The sans-IO halves of the engine -> flow fast path: ``tcp_payload`` (the IP checks a flow makes on
a packet routed to it by 4-tuple) and ``TcpPacketEmitter`` (a flow's outbound IP header, constant part
precomputed). Both must agree with what ``Stack.receive`` and ``emit_tcp_packet`` do."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.netstack import ipv4, ipv6
from pytsnet.netstack.checksum import checksum
from pytsnet.netstack.errors import Ipv4ParseError, Ipv6ParseError, ParseError
from pytsnet.netstack.interface import (
    PROTO_TCP,
    PROTO_UDP,
    TcpPacketEmitter,
    emit_tcp_packet,
    ip_packet,
    tcp_payload,
)
from pytsnet.netstack.tcp.segment import TcpSegment, emit_segment, parse_segment

A4, B4 = ipaddress.IPv4Address("100.64.0.1"), ipaddress.IPv4Address("100.64.0.2")
A6, B6 = ipaddress.IPv6Address("fd7a:115c:a1e0::1"), ipaddress.IPv6Address("fd7a:115c:a1e0::2")

segments = st.builds(
    TcpSegment, st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 65535),
    mss=st.none() | st.integers(0, 65535), wscale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=3)
    .map(tuple),
    timestamp=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    payload=st.binary(max_size=1400), urgent=st.integers(0, 65535),
)  # every field in range: TcpSegment is a NamedTuple, and hypothesis fills unnamed fields with any int


@settings(max_examples=300)
@given(seg=segments, ttl=st.integers(0, 255), ident=st.integers(0, 2**20),
       v4=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
       v6=st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1)))
def test_emitter_bytes_equal_emit_tcp_packet(seg: TcpSegment, ttl: int, ident: int,
                                              v4: tuple[int, int], v6: tuple[int, int]) -> None:
    for a, b in ((ipaddress.IPv4Address(v4[0]), ipaddress.IPv4Address(v4[1])),
                 (ipaddress.IPv6Address(v6[0]), ipaddress.IPv6Address(v6[1]))):
        got = TcpPacketEmitter(a, b, ttl).emit(seg, ident)
        assert got == emit_tcp_packet(seg, a, b, ttl, ident & 0xFFFF)
        if a.version == 4:
            assert ipv4.parse_ipv4(got).payload == emit_segment(seg, a, b)  # header checksum verifies


def test_emitter_refuses_mixed_families() -> None:
    with pytest.raises(ValueError):
        TcpPacketEmitter(A4, B6, 64)


@settings(max_examples=200)
@given(seg=segments, six=st.booleans())
def test_tcp_payload_is_the_segment_stack_receive_would_parse(seg: TcpSegment, six: bool) -> None:
    src, dst = (A6, B6) if six else (A4, B4)
    pkt = ip_packet(src, dst, PROTO_TCP, emit_segment(seg, src, dst), 64, 7) + b"trailer"
    inner = (ipv6.parse_ipv6(pkt) if six else ipv4.parse_ipv4(pkt)).payload
    view = tcp_payload(pkt)
    assert bytes(view) == inner
    assert parse_segment(view, src, dst) == parse_segment(inner, src, dst)


def _v4(seg: bytes = b"\x00" * 20) -> bytearray:
    return bytearray(ip_packet(A4, B4, PROTO_TCP, seg, 64, 1))


def _fix_checksum(pkt: bytearray) -> bytearray:
    pkt[10:12] = b"\x00\x00"
    pkt[10:12] = checksum(bytes(pkt[:20])).to_bytes(2, "big")
    return pkt


@pytest.mark.parametrize(("mangle", "error"), [
    (lambda p: p[:19], Ipv4ParseError),  # truncated header
    (lambda p: _fix_checksum(bytearray(b"\x44") + p[1:]), Ipv4ParseError),  # IHL 16
    (lambda p: p[:-1], Ipv4ParseError),  # total length beyond the buffer
    (lambda p: bytearray(p[:10]) + bytes([p[10] ^ 1]) + p[11:], Ipv4ParseError),  # header checksum
    (lambda p: _fix_checksum(bytearray(p[:6]) + b"\x20\x00" + p[8:]), Ipv4ParseError),  # MF
    (lambda p: _fix_checksum(bytearray(p[:6]) + b"\x40\x08" + p[8:]), Ipv4ParseError),  # offset
    (lambda p: _fix_checksum(bytearray(p[:9]) + bytes([PROTO_UDP]) + p[10:]), Ipv4ParseError),
    (lambda p: bytearray(b"\x50") + p[1:], ParseError),  # IP version 5
    (lambda p: b"", ParseError),
])
def test_tcp_payload_refuses_what_the_stack_drops(mangle: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        tcp_payload(bytes(mangle(_v4())))  # type: ignore[operator]


def test_tcp_payload_ipv6_bounds() -> None:
    pkt = bytearray(ip_packet(A6, B6, PROTO_TCP, b"\x00" * 20, 64, 1))
    assert len(tcp_payload(bytes(pkt))) == 20
    with pytest.raises(Ipv6ParseError):
        tcp_payload(bytes(pkt[:-1]))  # payload length beyond the buffer
    with pytest.raises(Ipv6ParseError):
        tcp_payload(bytes(pkt[:39]))
    pkt[6] = 0  # a hop-by-hop extension header: refused, as parse_ipv6 refuses it
    with pytest.raises(Ipv6ParseError):
        tcp_payload(bytes(pkt))
