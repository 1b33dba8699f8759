"""UDP and ICMP parsers/emitters: checksum rules, round trips, strictness."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytsnet.netstack import icmp
from pytsnet.netstack.errors import IcmpParseError, ParseError, UdpParseError
from pytsnet.netstack.udp import UdpDatagram, emit_udp, parse_udp

A4, B4 = ipaddress.IPv4Address("10.77.0.1"), ipaddress.IPv4Address("10.77.0.2")
A6, B6 = ipaddress.IPv6Address("fd00::1"), ipaddress.IPv6Address("fd00::2")

# RFC 792 echo: type 8 code 0, id 0x1234 seq 1, "abcd" -> checksum computed by hand:
# 0x0800 + 0x1234 + 0x0001 + 0x6162 + 0x6364 = 0xdefb -> ~ = 0x2104
ECHO_V4 = bytes.fromhex("08002104123400016162" "6364")


@given(st.binary(max_size=300), st.integers(1, 0xFFFF), st.integers(1, 0xFFFF),
       st.sampled_from([(A4, B4), (A6, B6)]))
def test_udp_round_trip(payload: bytes, sport: int, dport: int, addrs) -> None:  # type: ignore[no-untyped-def]
    d = UdpDatagram(sport, dport, payload)
    raw = emit_udp(d, *addrs)
    assert raw[6:8] != b"\x00\x00"
    assert parse_udp(raw, *addrs) == d


def test_udp_checksum_covers_pseudo_header() -> None:
    raw = emit_udp(UdpDatagram(1000, 2000, b"hello"), A4, B4)
    with pytest.raises(UdpParseError, match="udp_checksum"):
        parse_udp(raw, A4, ipaddress.IPv4Address("10.77.0.3"))


def test_udp_zero_checksum_allowed_on_v4_only() -> None:
    raw = bytearray(emit_udp(UdpDatagram(1000, 2000, b"hello"), A4, B4))
    raw[6:8] = b"\x00\x00"
    assert parse_udp(bytes(raw), A4, B4).payload == b"hello"
    raw6 = bytearray(emit_udp(UdpDatagram(1000, 2000, b"hello"), A6, B6))
    raw6[6:8] = b"\x00\x00"
    with pytest.raises(UdpParseError):
        parse_udp(bytes(raw6), A6, B6)


def test_udp_length_field_is_enforced() -> None:
    raw = emit_udp(UdpDatagram(1000, 2000, b"hello"), A4, B4)
    with pytest.raises(UdpParseError, match="udp_length"):
        parse_udp(raw[:-1], A4, B4)
    with pytest.raises(UdpParseError, match="udp_truncated"):
        parse_udp(raw[:7], A4, B4)


def test_icmpv4_echo_vector() -> None:
    assert icmp.emit_icmpv4(icmp.echo(icmp.ICMP_ECHO_REQUEST, 0x1234, 1, b"abcd")) == ECHO_V4
    m = icmp.parse_icmpv4(ECHO_V4)
    assert (m.type, m.code, m.echo_ident, m.echo_seq, m.body) == (8, 0, 0x1234, 1, b"abcd")
    with pytest.raises(IcmpParseError, match="icmp_checksum"):
        icmp.parse_icmpv4(ECHO_V4[:-1] + b"\x00")


@given(st.binary(max_size=200), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_icmpv6_round_trip_and_pseudo_header(body: bytes, ident: int, seq: int) -> None:
    m = icmp.echo(icmp.ICMPV6_ECHO_REQUEST, ident, seq, body)
    raw = icmp.emit_icmpv6(m, A6, B6)
    assert icmp.parse_icmpv6(raw, A6, B6) == m
    with pytest.raises(IcmpParseError):
        icmp.parse_icmpv6(raw, A6, ipaddress.IPv6Address("fd00::3"))


def test_port_unreachable_quotes_are_bounded() -> None:
    m = icmp.port_unreachable_v4(b"x" * 5000)
    assert len(m.body) == icmp.ICMPV4_QUOTE_MAX
    assert len(icmp.port_unreachable_v6(b"x" * 5000).body) == icmp.ICMPV6_QUOTE_MAX


@given(st.binary(max_size=100))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    for fn in (lambda: parse_udp(data, A4, B4), lambda: parse_udp(data, A6, B6),
               lambda: icmp.parse_icmpv4(data), lambda: icmp.parse_icmpv6(data, A6, B6)):
        with contextlib.suppress(ParseError):
            fn()
