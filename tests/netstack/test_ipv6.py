"""IPv6 parser/emitter (behind enable_ipv6): round trips and strictness."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytsnet.netstack.errors import Ipv6ParseError, ParseError
from pytsnet.netstack.ipv6 import NEXT_TCP, NEXT_UDP, Ipv6Packet, emit_ipv6, parse_ipv6

A = ipaddress.IPv6Address("fd7a:115c:a1e0::1")
B = ipaddress.IPv6Address("fd7a:115c:a1e0::2")


@given(st.binary(max_size=300), st.sampled_from([6, 17, 58]), st.integers(0, 255), st.integers(0, 0xFFFFF))
def test_round_trip(payload: bytes, nxt: int, hlim: int, flow: int) -> None:
    p = Ipv6Packet(A, B, nxt, payload, hop_limit=hlim, flow_label=flow)
    assert parse_ipv6(emit_ipv6(p)) == p


def test_header_layout() -> None:
    raw = emit_ipv6(Ipv6Packet(A, B, NEXT_UDP, b"xy", hop_limit=7))
    assert raw[:8] == bytes.fromhex("60000000 0002 11 07".replace(" ", ""))
    assert raw[8:24] == A.packed and raw[24:40] == B.packed


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\x60" + b"\x00" * 10, "ipv6_truncated"),
    (b"\x40" + b"\x00" * 39, "ipv6_version"),
])
def test_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(Ipv6ParseError) as e:
        parse_ipv6(raw)
    assert e.value.reason == reason


def test_extension_headers_and_short_payload_are_refused() -> None:
    raw = bytearray(emit_ipv6(Ipv6Packet(A, B, NEXT_TCP, b"x" * 20)))
    raw[6] = 0  # hop-by-hop options
    with pytest.raises(Ipv6ParseError, match="ipv6_next_header"):
        parse_ipv6(bytes(raw))
    with pytest.raises(Ipv6ParseError, match="ipv6_payload_len"):
        parse_ipv6(emit_ipv6(Ipv6Packet(A, B, NEXT_TCP, b"x" * 20))[:50])


@given(st.binary(max_size=100))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_ipv6(b"\x60" + data)
