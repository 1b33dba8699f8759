"""PROXY protocol headers (``pytsnet.wire.proxy_protocol``) against the vectors of haproxy's
proxy-protocol.txt and a v2 header haproxy wrote on the wire; the reader on hostile bytes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.proxy_protocol import (
    V1_MAX,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    encode,
    encode_v1,
    encode_v2,
    parse,
)

# the spec's v1 lines (section 2.1: the example and the two worst cases, 56 and 104 bytes)
SPEC_V1_EXAMPLE = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
SPEC_V1_TCP4_WORST = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
FFFF = ":".join(["ffff"] * 8)
SPEC_V1_TCP6_WORST = f"PROXY TCP6 {FFFF} {FFFF} 65535 65535\r\n".encode()
# a v2 header haproxy sent for 172.19.0.1:42578 → 172.19.0.3:80 (hexdump in seriousben/
# experiment-proxy-protocol's README): signature, \x21 (v2 PROXY), \x11 (TCP/IPv4), length 12
HAPROXY_V2 = bytes.fromhex("0d0a0d0a000d0a515549540a" "2111000c" "ac130001" "ac130003" "a652" "0050")


def test_signature_is_the_specs() -> None:
    assert bytes.fromhex("0D0A0D0A000D0A515549540A") == V2_SIGNATURE


def test_v1_spec_vectors() -> None:
    assert encode_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)) == SPEC_V1_EXAMPLE
    assert encode_v1(("255.255.255.255", 65535), ("255.255.255.255", 65535)) == SPEC_V1_TCP4_WORST
    assert len(SPEC_V1_TCP4_WORST) == 56 and len(SPEC_V1_TCP6_WORST) == 104
    assert encode(1, (FFFF, 65535), (FFFF, 65535)) == SPEC_V1_TCP6_WORST
    assert parse(SPEC_V1_EXAMPLE + b"GET /") == (
        ProxyHeader(1, ("192.168.0.1", 56324), ("192.168.0.11", 443)), len(SPEC_V1_EXAMPLE))
    assert parse(b"PROXY UNKNOWN\r\n") == (ProxyHeader(1, None, None), 15)
    # "PROXY UNKNOWN" may carry anything up to the 107-byte limit; the receiver ignores it
    assert parse(b"PROXY UNKNOWN " + SPEC_V1_TCP6_WORST[11:]) is not None


def test_v2_matches_haproxy_on_the_wire() -> None:
    assert encode_v2(("172.19.0.1", 42578), ("172.19.0.3", 80)) == HAPROXY_V2
    assert encode(2, ("172.19.0.1", 42578), ("172.19.0.3", 80)) == HAPROXY_V2
    assert parse(HAPROXY_V2 + b"GET") == (ProxyHeader(2, ("172.19.0.1", 42578), ("172.19.0.3", 80)), 28)


def test_v2_ipv6_layout() -> None:
    src, dst = ("fd7a:115c:a1e0::1", 40000), ("fd7a:115c:a1e0::2", 8080)
    raw = encode_v2(src, dst)
    # \x21 = TCP over IPv6; the address block is 36 bytes (section 2.2: two 16-byte addresses, two ports)
    assert raw[12:16] == b"\x21\x21\x00\x24" and len(raw) == 16 + 36
    assert raw[16:32] == bytes.fromhex("fd7a115ca1e000000000000000000001")
    assert raw[-4:] == bytes.fromhex("9c40" "1f90")
    assert parse(raw) == (ProxyHeader(2, src, dst), 52)
    assert encode_v1(src, dst) == b"PROXY TCP6 fd7a:115c:a1e0::1 fd7a:115c:a1e0::2 40000 8080\r\n"


def test_mapped_source_is_unmapped_as_go() -> None:
    """Go's serve unmaps a 4-in-6 caller before choosing TCP4/TCP6."""
    assert encode_v1(("::ffff:100.64.0.7", 1234), ("100.64.0.1", 80)) == \
        b"PROXY TCP4 100.64.0.7 100.64.0.1 1234 80\r\n"


def test_v2_local_tlvs_and_unspec() -> None:
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert parse(local) == (ProxyHeader(2, None, None, local=True), 16)
    with_tlv = HAPROXY_V2[:14] + b"\x00\x11" + HAPROXY_V2[16:] + b"\x04\x00\x02ok"  # PP2_TYPE_NOOP
    assert parse(with_tlv) == (ProxyHeader(2, ("172.19.0.1", 42578), ("172.19.0.3", 80)), 33)
    assert parse(V2_SIGNATURE + b"\x21\x00\x00\x00") == (ProxyHeader(2, None, None), 16)


def test_incomplete_headers_need_more() -> None:
    for raw in (SPEC_V1_EXAMPLE, HAPROXY_V2):
        for cut in range(len(raw)):
            assert parse(raw[:cut]) is None, cut


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\n", b"PROXY TCP5 192.0.2.4 192.0.2.5 1 2\r\n", b"PROXY TCP4 192.0.2.4 192.0.2.5 1\r\n",
    b"PROXY TCP4 ::1 ::2 1 2\r\n", b"PROXY TCP4 192.0.2.4 192.0.2.5 01 2\r\n",
    b"PROXY TCP4 192.0.2.4 192.0.2.5 1 65536\r\n", b"PROXY TCP4 192.0.2.4 192.0.2.5 +1 2\r\n",
    b"PROXY TCP4 192.0.2.4  192.0.2.5 1 2\r\n", b"PROXY \xff\r\n", b"PROXY " + b"x" * 200,
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
    V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # IPv4 block too short
    V2_SIGNATURE + b"\x21\x41\x00\x00",  # family 4
    b"\r\n\r\nX",
])
def test_hostile_headers_are_typed_errors(raw: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(raw)


def test_writer_refusals() -> None:
    with pytest.raises(ProxyProtocolError, match="must be 1 or 2"):
        encode(3, ("192.0.2.4", 1), ("192.0.2.5", 2))
    with pytest.raises(ProxyProtocolError, match="same family"):
        encode_v1(("192.0.2.4", 1), ("::1", 2))
    with pytest.raises(ProxyProtocolError):
        encode_v2(("192.0.2.4", 70000), ("192.0.2.5", 2))


@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_parse_never_crashes(raw: bytes) -> None:
    try:
        got = parse(raw)
    except ProxyProtocolError:
        return
    if got is not None:
        assert 0 < got[1] <= len(raw) and (got[0].version == 2 or got[1] <= V1_MAX)


@given(st.ip_addresses(), st.integers(0, 65535), st.integers(0, 65535), st.sampled_from([1, 2]))
def test_roundtrip(ip: IPv4Address | IPv6Address, sport: int, dport: int, version: int) -> None:
    mapped = ip.ipv4_mapped if isinstance(ip, IPv6Address) else None
    src_ip = mapped or ip  # a 4-in-6 caller goes out as IPv4 (Go's Unmap)
    dst = ("100.64.0.1" if src_ip.version == 4 else "fd7a:115c:a1e0::1", dport)
    raw = encode(version, (str(ip), sport), dst)
    got = parse(raw + b"tail")
    assert got is not None and got[1] == len(raw)
    assert got[0].src == (str(src_ip), sport) and got[0].dst == dst


def test_roundtrip_mapped_example() -> None:
    test_roundtrip.hypothesis.inner_test(IPv6Address("::ffff:192.0.2.4"), 1, 2, 2)  # type: ignore[attr-defined]
