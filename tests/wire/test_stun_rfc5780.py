"""wire.stun's RFC 5780 server side (what the lab's reflectors answer miniupnpd's STUN test with):
CHANGE-REQUEST requests, responses with XOR-MAPPED-ADDRESS / MAPPED-ADDRESS / RESPONSE-ORIGIN /
OTHER-ADDRESS, checked against the RFC 5769 sample messages where they apply."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rfc5769_vectors import RFC5769_IPV4, RFC5769_IPV6, RFC5769_REQUEST, RFC_TX

from pytsnet.wire import stun

ip = ipaddress.ip_address



def _attr(msg: bytes, t: int) -> bytes:
    return next(v for at, v in stun.parse_message(msg).attributes if at == t)


@pytest.mark.parametrize(("sample", "addr"), [(RFC5769_IPV4, "192.0.2.1"),
                                              (RFC5769_IPV6, "2001:db8:1234:5678:11:2233:4455:6677")])
def test_xor_mapped_address_as_rfc5769(sample: bytes, addr: str) -> None:
    """Our XOR-MAPPED-ADDRESS for the samples' transaction and address is the samples' attribute."""
    ours = stun.server_response(RFC_TX, (ip(addr), 32853))
    assert _attr(ours, stun.ATTR_XOR_MAPPED_ADDRESS) == _attr(sample, stun.ATTR_XOR_MAPPED_ADDRESS)
    assert stun.parse_response(ours) == stun.parse_response(sample)


def test_rfc5769_request_is_a_plain_binding_request() -> None:
    req = stun.parse_server_request(RFC5769_REQUEST)  # its FINGERPRINT is checked, USERNAME etc. ignored
    assert req == stun.ServerRequest(RFC_TX, change_ip=False, change_port=False)
    bad = bytearray(RFC5769_REQUEST)
    bad[30] ^= 1
    with pytest.raises(stun.StunParseError, match="FINGERPRINT"):
        stun.parse_server_request(bytes(bad))
    with pytest.raises(stun.StunParseError, match="not a binding request"):
        stun.parse_server_request(RFC5769_IPV4)


@pytest.mark.parametrize(("change_ip", "change_port", "flags"),
                         [(False, False, 0), (False, True, 2), (True, False, 4), (True, True, 6)])
def test_change_request_as_miniupnpd_sends_it(change_ip: bool, change_port: bool, flags: int) -> None:
    """miniupnpd's ``fill_request``: a 28-byte Binding request whose only attribute is CHANGE-REQUEST."""
    tx = bytes(range(12))
    req = stun.change_request(tx, change_ip=change_ip, change_port=change_port)
    assert req == bytes.fromhex("000100082112a442") + tx + bytes.fromhex("00030004000000") + bytes([flags])
    assert stun.parse_server_request(req) == stun.ServerRequest(tx, change_ip, change_port)
    assert stun.parse_server_request(stun.request(tx)) == stun.ServerRequest(tx, False, False)  # Tailscale's


def test_server_response_attributes() -> None:
    tx = bytes(range(12))
    mapped, origin, other = (ip("203.0.113.10"), 42961), (ip("203.0.113.1"), 3479), (ip("203.0.113.2"), 3479)
    resp = stun.server_response(tx, mapped, response_origin=origin, other_address=other)
    assert stun.parse_response(resp) == (tx, mapped)
    assert stun.address_attributes(resp) == {
        stun.ATTR_XOR_MAPPED_ADDRESS: mapped, stun.ATTR_MAPPED_ADDRESS: mapped,
        stun.ATTR_RESPONSE_ORIGIN: origin, stun.ATTR_OTHER_ADDRESS: other}
    assert _attr(resp, stun.ATTR_MAPPED_ADDRESS) == bytes.fromhex("0001a7d1cb00710a")  # plain, RFC 3489
    # XOR-MAPPED-ADDRESS first: clients that take the first address they find get the XOR-ed one
    assert stun.parse_message(resp).attributes[0][0] == stun.ATTR_XOR_MAPPED_ADDRESS
    bare = stun.server_response(tx, mapped)
    assert set(stun.address_attributes(bare)) == {stun.ATTR_XOR_MAPPED_ADDRESS, stun.ATTR_MAPPED_ADDRESS}


def test_malformed_change_request_is_refused() -> None:
    tx = bytes(12)
    body = struct.pack(">HHH", stun.ATTR_CHANGE_REQUEST, 2, 6) + b"\0\0"
    msg = struct.pack(">HH", stun.BINDING_REQUEST, len(body)) + stun.MAGIC_COOKIE + tx + body
    with pytest.raises(stun.StunParseError, match="CHANGE-REQUEST"):
        stun.parse_server_request(msg)
    with pytest.raises(stun.StunParseError):
        stun.change_request(b"short", change_ip=True, change_port=False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_server_parsers_raise_only_typed_errors(data: bytes) -> None:
    framed = struct.pack(">HH", stun.BINDING_REQUEST, len(data)) + stun.MAGIC_COOKIE + bytes(12) + data
    for fn in (stun.parse_server_request, stun.address_attributes):
        for b in (data, framed):  # arbitrary bytes, and arbitrary attributes behind a valid header
            with contextlib.suppress(stun.StunParseError):
                fn(b)
