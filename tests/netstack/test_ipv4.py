"""IPv4 parser/emitter: a published header vector, strictness, and round trips."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytsnet.netstack.errors import Ipv4ParseError, ParseError
from pytsnet.netstack.ipv4 import Ipv4Packet, emit_ipv4, parse_ipv4

# The worked example on Wikipedia's "IPv4 header checksum" page: checksum 0xB861.
WIKI_HEADER = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
WIKI_CHECKSUM = 0xB861


def _wiki_packet() -> bytes:
    hdr = bytearray(WIKI_HEADER)
    hdr[10:12] = WIKI_CHECKSUM.to_bytes(2, "big")
    return bytes(hdr) + b"\x00" * (0x73 - 20)


def test_published_header_checksum_parses_and_reemits_identically() -> None:
    raw = _wiki_packet()
    p = parse_ipv4(raw)
    assert (str(p.src), str(p.dst), p.protocol, p.ttl, p.dont_fragment) == (
        "192.168.0.1", "192.168.0.199", 17, 64, True)
    assert len(p.payload) == 0x73 - 20
    assert emit_ipv4(p) == raw


def test_bad_checksum_is_rejected() -> None:
    raw = bytearray(_wiki_packet())
    raw[11] ^= 1
    with pytest.raises(Ipv4ParseError) as e:
        parse_ipv4(bytes(raw))
    assert e.value.reason == "ipv4_checksum"


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda b: b[:19], "ipv4_truncated"),
    (lambda b: b"\x65" + b[1:], "ipv4_version"),
    (lambda b: b"\x44" + b[1:], "ipv4_header_len"),
    (lambda b: b[:40], "ipv4_total_len"),
])
def test_malformed_headers_have_stable_reasons(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Ipv4ParseError) as e:
        parse_ipv4(mutate(_wiki_packet()))
    assert e.value.reason == reason


def test_fragments_are_refused() -> None:
    p = Ipv4Packet(ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.2"), 17, b"abcd")
    raw = bytearray(emit_ipv4(p))
    raw[6] |= 0x20  # MF
    raw[10:12] = b"\x00\x00"
    from pytsnet.netstack.checksum import checksum
    raw[10:12] = checksum(raw[:20]).to_bytes(2, "big")
    with pytest.raises(Ipv4ParseError) as e:
        parse_ipv4(bytes(raw))
    assert e.value.reason == "ipv4_fragment"


def test_trailing_link_padding_is_ignored() -> None:
    raw = _wiki_packet() + b"\xff" * 7
    assert len(parse_ipv4(raw).payload) == 0x73 - 20


@given(st.binary(max_size=200), st.integers(0, 255), st.integers(1, 255), st.integers(0, 0xFFFF))
def test_round_trip(payload: bytes, proto: int, ttl: int, ident: int) -> None:
    p = Ipv4Packet(ipaddress.IPv4Address("100.64.0.1"), ipaddress.IPv4Address("100.64.0.2"), proto,
                   payload, ttl=ttl, ident=ident)
    assert parse_ipv4(emit_ipv4(p)) == p


@given(st.binary(max_size=100))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_ipv4(data)
