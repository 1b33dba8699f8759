"""Disco messages against Go's byte-exact ``disco/disco_test.go`` TestMarshalAndParse, the NaCl box
with disco keys, and random/mutated bytes into every parser."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire import disco as d
from pytsnet.wire.errors import CryptoError, ParseError
from pytsnet.wire.keys import DiscoPrivate, DiscoPublic, NodePublic


def _raw(**idx: int) -> bytes:
    b = bytearray(32)
    for k, v in idx.items():
        b[int(k[1:])] = v
    return bytes(b)


KEY_1_2_30_31 = _raw(i1=1, i2=2, i30=30, i31=31)
TX = bytes(range(1, 13))
CHALLENGE = bytes(range(32))
COMMON = dict(vni=1, generation=2, remote_key=DiscoPublic.from_raw(KEY_1_2_30_31), challenge=CHALLENGE)
A1 = (ipaddress.ip_address("1.2.3.4"), 567)
A2 = (ipaddress.ip_address("2001::3456"), 789)
ENDPOINT = d.UDPRelayEndpoint(
    server_disco=DiscoPublic.from_raw(KEY_1_2_30_31),
    client_disco=(
        DiscoPublic.from_raw(_raw(i1=1, i2=2, i3=3, i30=30, i31=31)),
        DiscoPublic.from_raw(_raw(i1=1, i2=2, i4=4, i30=30, i31=31)),
    ),
    lamport_id=123,
    vni=456,
    bind_lifetime_ns=1_000_000_000,
    steady_state_lifetime_ns=60_000_000_000,
    addr_ports=(A1, A2),
)
# Byte strings copied from tailscale/tailscale de9ec7ee disco/disco_test.go TestMarshalAndParse.
GO_WANT = {
    "ping": (
        "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c"
    ),
    "ping_with_nodekey_src": (
        "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "00 00 00 00 00 00 00 00 00 00 00 00 1e 1f"
    ),
    "ping_with_padding": (
        "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 00 00"
    ),
    "ping_with_padding_and_nodekey_src": (
        "01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 00 00"
    ),
    "pong": (
        "02 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 00 00 00 00 00 00 00 00 00 ff ff 02 03 04 05 04 d2"
    ),
    "pongv6": (
        "02 00 01 02 03 04 05 06 07 08 09 0a 0b 0c fe d0 00 00 00 00 00 00 00 00 00 00 00 00 00 12 1a 0a"
    ),
    "call_me_maybe": (
        "03 00"
    ),
    "call_me_maybe_endpoints": (
        "03 00 00 00 00 00 00 00 00 00 00 00 ff ff 01 02 03 04 02 37 20 01 00 00 00 00 00 00 00 00 00 00 "
        "00 00 34 56 03 15"
    ),
    "bind_udp_relay_endpoint": (
        "04 00 00 00 00 01 00 00 00 02 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "00 00 00 00 00 00 00 00 1e 1f 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 "
        "16 17 18 19 1a 1b 1c 1d 1e 1f"
    ),
    "bind_udp_relay_endpoint_challenge": (
        "05 00 00 00 00 01 00 00 00 02 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "00 00 00 00 00 00 00 00 1e 1f 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 "
        "16 17 18 19 1a 1b 1c 1d 1e 1f"
    ),
    "bind_udp_relay_endpoint_answer": (
        "06 00 00 00 00 01 00 00 00 02 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "00 00 00 00 00 00 00 00 1e 1f 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 "
        "16 17 18 19 1a 1b 1c 1d 1e 1f"
    ),
    "call_me_maybe_via": (
        "07 00 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "1e 1f 00 01 02 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "1e 1f 00 01 02 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "1e 1f 00 00 00 00 00 00 00 7b 00 00 01 c8 00 00 00 00 3b 9a ca 00 00 00 00 0d f8 47 58 00 00 00 "
        "00 00 00 00 00 00 00 00 ff ff 01 02 03 04 02 37 20 01 00 00 00 00 00 00 00 00 00 00 00 00 34 56 "
        "03 15"
    ),
    "allocate_udp_relay_endpoint_request": (
        "08 00 00 01 02 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "1e 1f 00 01 02 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "1e 1f 00 00 00 01"
    ),
    "allocate_udp_relay_endpoint_response": (
        "09 00 00 00 00 01 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "00 00 00 00 1e 1f 00 01 02 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "00 00 00 00 1e 1f 00 01 02 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
        "00 00 00 00 1e 1f 00 00 00 00 00 00 00 7b 00 00 01 c8 00 00 00 00 3b 9a ca 00 00 00 00 0d f8 47 "
        "58 00 00 00 00 00 00 00 00 00 00 00 ff ff 01 02 03 04 02 37 20 01 00 00 00 00 00 00 00 00 00 00 "
        "00 00 34 56 03 15"
    ),
}

MESSAGES = [
    ("ping", d.Ping(TX)),
    ("ping_with_nodekey_src", d.Ping(TX, NodePublic.from_raw(KEY_1_2_30_31))),
    ("ping_with_padding", d.Ping(TX, padding=3)),
    ("ping_with_padding_and_nodekey_src", d.Ping(TX, NodePublic.from_raw(KEY_1_2_30_31), 3)),
    ("pong", d.Pong(TX, (ipaddress.ip_address("2.3.4.5"), 1234))),
    ("pongv6", d.Pong(TX, (ipaddress.ip_address("fed0::12"), 6666))),
    ("call_me_maybe", d.CallMeMaybe()),
    ("call_me_maybe_endpoints", d.CallMeMaybe((A1, A2))),
    ("bind_udp_relay_endpoint", d.BindUDPRelayEndpoint(**COMMON)),
    ("bind_udp_relay_endpoint_challenge", d.BindUDPRelayEndpointChallenge(**COMMON)),
    ("bind_udp_relay_endpoint_answer", d.BindUDPRelayEndpointAnswer(**COMMON)),
    ("call_me_maybe_via", d.CallMeMaybeVia(ENDPOINT)),
    ("allocate_udp_relay_endpoint_request", d.AllocateUDPRelayEndpointRequest(ENDPOINT.client_disco, 1)),
    ("allocate_udp_relay_endpoint_response", d.AllocateUDPRelayEndpointResponse(1, ENDPOINT)),
]
VECTORS = [(name, msg, GO_WANT[name]) for name, msg in MESSAGES]


def test_all_go_vectors_used() -> None:
    assert {n for n, _ in MESSAGES} == set(GO_WANT)


@pytest.mark.parametrize("name,msg,want", VECTORS, ids=[v[0] for v in VECTORS])
def test_marshal_and_parse_go_vectors(name: str, msg: d.Message, want: str) -> None:
    got = d.marshal(msg)
    assert got.hex(" ") == want
    assert d.parse(got) == msg


def test_lax_parsing_like_go() -> None:
    assert d.parse(d.marshal(d.Ping(TX)) + b"\x00\x00") == d.Ping(TX, padding=2)
    assert d.parse(b"\x03\x00" + bytes(17)) == d.CallMeMaybe()  # not a multiple of 18
    assert d.parse(b"\x03\x01" + bytes(18)) == d.CallMeMaybe()  # version != 0
    assert d.parse(b"\x02\x00" + d.marshal(d.Pong(TX, A1))[2:] + b"trailing") == d.Pong(TX, A1)
    assert d.parse(b"\x7f\x00abc") == d.UnknownMessage(0x7F, 0, b"abc")
    for short in (b"", b"\x01", b"\x01\x00" + bytes(11), b"\x02\x00" + bytes(29), b"\x04\x00" + bytes(71)):
        with pytest.raises(d.DiscoParseError):
            d.parse(short)


def test_seal_and_open_with_disco_keys() -> None:
    a, b, c = DiscoPrivate.generate(), DiscoPrivate.generate(), DiscoPrivate.generate()
    msg = d.Ping(TX, NodePublic.from_raw(KEY_1_2_30_31))
    pkt = d.seal_packet(a, b.public(), msg)
    assert pkt[:6] == bytes.fromhex("5453f09f92ac")
    assert d.looks_like_disco_wrapper(pkt) and d.source(pkt) == a.public()
    assert len(pkt) == d.HEADER_LEN + len(d.marshal(msg)) + 16
    assert d.open_packet(b, pkt) == (a.public(), msg)
    shared = d.DiscoShared(b, a.public())
    assert d.open_packet(b, pkt, shared) == (a.public(), msg)
    with pytest.raises(CryptoError):
        d.open_packet(c, pkt)  # not for us
    forged = pkt[:6] + c.public().raw + pkt[38:]  # claims another sender
    with pytest.raises(d.DiscoCryptoError):
        d.open_packet(b, forged)
    with pytest.raises(d.DiscoParseError):
        d.open_packet(b, pkt[:61])


def test_shared_key_is_symmetric() -> None:
    a, b = DiscoPrivate.generate(), DiscoPrivate.generate()
    nonce = bytes(24)
    assert d.DiscoShared(a, b.public()).seal(b"x", nonce) == d.DiscoShared(b, a.public()).seal(b"x", nonce)


_MSG_BYTES = [bytes.fromhex(v[2].replace(" ", "")) for v in VECTORS]


@settings(max_examples=400, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=250),
        st.tuples(
            st.sampled_from(_MSG_BYTES), st.integers(0, 300), st.integers(0, 255), st.integers(0, 300)
        ).map(lambda t: t[0][: t[1] % (len(t[0]) + 1)] + bytes([t[2]]) + t[0][t[3] % (len(t[0]) + 1) :]),
    )
)
def test_parse_random_and_mutated_only_raises_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        d.parse(data)


_ME = DiscoPrivate.from_raw(bytes([5] * 32))
_PEER = DiscoPrivate.from_raw(bytes([6] * 32))
_PKT = d.seal_packet(_PEER, _ME.public(), d.CallMeMaybe((A1, A2)))


@settings(max_examples=200, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.tuples(st.integers(0, len(_PKT) - 1), st.integers(0, 255)).map(
            lambda m: _PKT[: m[0]] + bytes([m[1]]) + _PKT[m[0] + 1 :]
        ),
    )
)
def test_open_random_and_mutated_packets_only_raises_typed_errors(data: bytes) -> None:
    with contextlib.suppress(ParseError, CryptoError):
        d.open_packet(_ME, data)
