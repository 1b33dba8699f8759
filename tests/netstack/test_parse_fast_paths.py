"""The issue-14 fast parsers and emitters against the implementations they replaced.

The previous code (frozen dataclasses, ``ipaddress`` objects per packet, one checksum pass over a
copied header) is kept here as the reference; hypothesis drives both with valid and mangled
packets and they must agree: same fields, same bytes out, same error reason.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from checksum_reference import old_checksum, old_ones_sum
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.netstack import filter as pfilter
from pytsnet.netstack.errors import Ipv4ParseError, ParseError, UdpParseError
from pytsnet.netstack.ipv4 import Ipv4Packet, emit_ipv4, emit_ipv4_fields, parse_ipv4
from pytsnet.netstack.tcp.errors import TcpParseError
from pytsnet.netstack.tcp.segment import TcpSegment, emit_segment, parse_segment
from pytsnet.netstack.udp import UdpDatagram, emit_udp, parse_udp


def old_pseudo(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, proto: int, length: int) -> int:
    return old_ones_sum(src.packed + dst.packed + bytes((0, proto)) + length.to_bytes(2, "big"))


_IP = struct.Struct("!BBHHHBBH4s4s")


def old_parse_ipv4(data: bytes) -> tuple[object, ...]:
    if len(data) < 20:
        raise Ipv4ParseError("ipv4_truncated")
    vihl, tos, total_len, ident, frag, ttl, proto, _c, src, dst = _IP.unpack_from(data)
    if vihl >> 4 != 4:
        raise Ipv4ParseError("ipv4_version")
    ihl = (vihl & 0x0F) * 4
    if ihl < 20:
        raise Ipv4ParseError("ipv4_header_len")
    if total_len < ihl or total_len > len(data):
        raise Ipv4ParseError("ipv4_total_len")
    if old_checksum(data[:ihl]) != 0:
        raise Ipv4ParseError("ipv4_checksum")
    if frag & 0x2000 or frag & 0x1FFF:
        raise Ipv4ParseError("ipv4_fragment")
    return (ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst), proto, bytes(data[ihl:total_len]), ttl,
            ident, bool(frag & 0x4000), tos)


def old_emit_ipv4(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, proto: int, payload: bytes,
                  ttl: int, ident: int, df: bool, tos: int) -> bytes:
    head = bytearray(_IP.pack(0x45, tos, 20 + len(payload), ident & 0xFFFF, 0x4000 if df else 0, ttl, proto,
                              0, src.packed, dst.packed))
    struct.pack_into("!H", head, 10, old_checksum(bytes(head)))
    return bytes(head) + payload


addrs4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
payloads = st.binary(max_size=1400)


@given(addrs4, addrs4, st.integers(0, 255), payloads, st.integers(0, 255), st.integers(0, 2**20),
       st.booleans(), st.integers(0, 255))
def test_emit_ipv4_matches_reference(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, proto: int,
                                     payload: bytes, ttl: int, ident: int, df: bool, tos: int) -> None:
    want = old_emit_ipv4(src, dst, proto, payload, ttl, ident, df, tos)
    assert emit_ipv4(Ipv4Packet(src, dst, proto, payload, ttl, ident, df, tos)) == want
    assert emit_ipv4_fields(int(src), int(dst), proto, payload, ttl, ident, df, tos) == want


def _outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return tuple(fn(*args))
    except ParseError as e:
        return ("error", type(e).__name__, e.reason)


@st.composite
def mangled_ipv4(draw: st.DrawFn) -> bytes:
    src, dst = draw(addrs4), draw(addrs4)
    proto, body, ttl = draw(st.integers(0, 255)), draw(st.binary(max_size=64)), draw(st.integers(0, 255))
    raw = bytearray(old_emit_ipv4(src, dst, proto, body, ttl, draw(st.integers(0, 0xFFFF)),
                                  draw(st.booleans()), 0))
    if draw(st.booleans()):  # options: a longer header, checksum fixed up or not
        extra = draw(st.integers(1, 10)) * 4
        raw[0] = 0x40 | (5 + extra // 4)
        raw[20:20] = draw(st.binary(min_size=extra, max_size=extra))
        total = len(raw)
        raw[2:4] = total.to_bytes(2, "big")
        raw[10:12] = b"\x00\x00"
        raw[10:12] = old_checksum(bytes(raw[:20 + extra])).to_bytes(2, "big")
    for _ in range(draw(st.integers(0, 3))):  # flip bytes anywhere (header included)
        if raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[:draw(st.integers(0, len(raw)))]
    return bytes(raw)


@settings(max_examples=400)
@given(mangled_ipv4())
def test_parse_ipv4_matches_reference(raw: bytes) -> None:
    assert _outcome(parse_ipv4, raw) == _outcome(old_parse_ipv4, raw)
    assert _outcome(parse_ipv4, memoryview(raw)) == _outcome(old_parse_ipv4, raw)


def test_parse_ipv4_shares_cached_addresses() -> None:
    a, b = ipaddress.IPv4Address("100.64.0.1"), ipaddress.IPv4Address("100.64.0.2")
    raw = emit_ipv4(Ipv4Packet(a, b, 6, b"x"))
    p, q = parse_ipv4(raw), parse_ipv4(raw)
    assert p.src == a and p.dst == b and p.src is q.src


def test_address_cache_stays_bounded_under_a_scan() -> None:
    from pytsnet.netstack.address_cache import AddressCache

    cache: AddressCache[int, ipaddress.IPv4Address] = AddressCache(ipaddress.IPv4Address, max_size=8)
    for n in range(100):
        assert cache[n] == ipaddress.IPv4Address(n)
        assert len(cache) <= 8


# --- TCP --------------------------------------------------------------------------------------------

_TCP = struct.Struct("!HHIIBBHHH")


def old_emit_tcp(seg: TcpSegment, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address) -> bytes:
    opts = seg_options(seg)
    hlen = 20 + len(opts)
    head = _TCP.pack(seg.src_port, seg.dst_port, seg.seq, seg.ack, (hlen // 4) << 4, seg.flags & 0xFF,
                     seg.window, 0, seg.urgent) + opts
    total = hlen + len(seg.payload)
    csum = old_checksum(head + seg.payload, old_pseudo(src, dst, 6, total))
    return head[:16] + csum.to_bytes(2, "big") + head[18:] + seg.payload


def seg_options(seg: TcpSegment) -> bytes:
    from pytsnet.netstack.tcp.segment import _emit_options
    return _emit_options(seg)


segments = st.builds(
    TcpSegment, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 0xFF), st.integers(0, 0xFFFF),
    mss=st.none() | st.integers(0, 0xFFFF), wscale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                         max_size=4).map(tuple),
    timestamp=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    payload=st.binary(max_size=300), urgent=st.integers(0, 0xFFFF),
)
plain_segments = st.builds(
    TcpSegment, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 0xFF), st.integers(0, 0xFFFF),
    mss=st.none(), wscale=st.none(), sack_permitted=st.just(False), sack_blocks=st.just(()),
    timestamp=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    payload=st.binary(max_size=1400), urgent=st.integers(0, 0xFFFF),
)


@settings(max_examples=300)
@given(st.one_of(segments, plain_segments), addrs4, addrs4)
def test_emit_segment_matches_reference(seg: TcpSegment, src: ipaddress.IPv4Address,
                                        dst: ipaddress.IPv4Address) -> None:
    raw = emit_segment(seg, src, dst)
    assert raw == old_emit_tcp(seg, src, dst)
    back = parse_segment(raw, src, dst)
    assert back.payload == seg.payload and back.timestamp == seg.timestamp and back.seq == seg.seq


@settings(max_examples=300)
@given(st.one_of(segments, plain_segments), addrs4, addrs4, st.data())
def test_parse_segment_checksum_verdict_matches_reference(
        seg: TcpSegment, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, data: st.DataObject) -> None:
    raw = bytearray(old_emit_tcp(seg, src, dst))
    for _ in range(data.draw(st.integers(0, 2))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    intact = old_checksum(bytes(raw), old_pseudo(src, dst, 6, len(raw))) == 0
    try:
        got = parse_segment(bytes(raw), src, dst)
    except TcpParseError as e:
        # an intact checksum over a mangled header is refused for its offset or options only
        assert not intact or "offset" in str(e) or "option" in str(e) or "length" in str(e), str(e)
        return
    assert intact
    assert got.payload == bytes(raw)[(raw[12] >> 4) * 4:]
    assert (got.src_port, got.dst_port, got.seq, got.ack) == struct.unpack_from("!HHII", raw)


def test_parse_segment_refuses_mixed_or_bogus_addresses() -> None:
    a, b = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv6Address("fd00::1")
    raw = emit_segment(TcpSegment(1, 2, 3, 4, 0x10, 5), a, a)
    with pytest.raises(TcpParseError):
        parse_segment(raw, a, b)  # type: ignore[arg-type]
    with pytest.raises(TcpParseError):
        parse_segment(raw, 167772161, 167772161)  # type: ignore[arg-type]


# --- UDP --------------------------------------------------------------------------------------------


@given(st.integers(0, 0xFFFF), st.integers(1, 0xFFFF), payloads, addrs4, addrs4)
def test_emit_udp_matches_reference(sport: int, dport: int, payload: bytes, src: ipaddress.IPv4Address,
                                    dst: ipaddress.IPv4Address) -> None:
    length = 8 + len(payload)
    head = struct.pack("!HHHH", sport, dport, length, 0)
    csum = old_checksum(head + payload, old_pseudo(src, dst, 17, length)) or 0xFFFF
    want = head[:6] + csum.to_bytes(2, "big") + payload
    assert emit_udp(UdpDatagram(sport, dport, payload), src, dst) == want
    assert parse_udp(want, src, dst) == UdpDatagram(sport, dport, payload)
    bad = bytearray(want)
    bad[-1 if payload else 0] ^= 0x40
    with pytest.raises(UdpParseError):
        parse_udp(bytes(bad), src, dst)


# --- filter -----------------------------------------------------------------------------------------


def old_summarize(packet: bytes) -> tuple[int, ...]:
    n = len(packet)
    if n < 1:
        raise pfilter.FilterParseError("empty")
    version = packet[0] >> 4
    if version == 4:
        if n < 20:
            raise pfilter.FilterParseError("short ipv4 header")
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or ihl > n:
            raise pfilter.FilterParseError("bad ipv4 header length")
        if packet[6] & 0x3F or packet[7]:
            raise pfilter.FilterParseError("fragment")
        proto, off = packet[9], ihl
        src, dst = int.from_bytes(packet[12:16], "big"), int.from_bytes(packet[16:20], "big")
    elif version == 6:
        if n < 40:
            raise pfilter.FilterParseError("short ipv6 header")
        proto, off = packet[6], 40
        src, dst = int.from_bytes(packet[8:24], "big"), int.from_bytes(packet[24:40], "big")
    else:
        raise pfilter.FilterParseError(f"ip version {version}")
    if proto in (6, 17, 132):
        if n < off + (14 if proto == 6 else 4):
            raise pfilter.FilterParseError("short transport header")
        sport, dport = struct.unpack_from("!HH", packet, off)
        return (version, proto, src, dst, sport, dport, packet[off + 13] if proto == 6 else 0, -1)
    if proto in (1, 58):
        if n < off + 4:
            raise pfilter.FilterParseError("short icmp header")
        return (version, proto, src, dst, 0, 0, 0, packet[off])
    return (version, proto, src, dst, 0, 0, 0, -1)


def _summary(fn, packet: bytes):  # type: ignore[no-untyped-def]
    try:
        return tuple(fn(packet))
    except pfilter.FilterParseError as e:
        return ("error", e.detail)


ip_ish = st.one_of(
    st.binary(max_size=80),
    st.tuples(st.sampled_from([0x45, 0x46, 0x60, 0x44]), st.binary(min_size=5, max_size=5),
              st.sampled_from([0, 0x40, 0x20, 0x01]), st.binary(min_size=2, max_size=2),
              st.sampled_from([1, 6, 17, 58, 132, 99]), st.binary(min_size=0, max_size=70))
      .map(lambda t: bytes([t[0]]) + t[1] + bytes([t[2]]) + t[3] + bytes([t[4]]) + t[5]),
)


@settings(max_examples=500)
@given(ip_ish)
def test_summarize_matches_reference(packet: bytes) -> None:
    assert _summary(pfilter.summarize, packet) == _summary(old_summarize, packet)


@settings(max_examples=300)
@given(st.lists(ip_ish, max_size=20))
def test_run_out_records_exactly_the_udp_and_sctp_flows(stream: list[bytes]) -> None:
    f = pfilter.Filter(None, [])
    want: set[tuple[int, ...]] = set()
    for p in stream:
        f.run_out(p)
        s = _summary(old_summarize, p)
        if s[0] != "error" and s[1] in (17, 132):
            want.add((s[0], s[1], s[2], s[4], s[3], s[5]))
    assert set(f._flows) == want


@settings(max_examples=300)
@given(st.one_of(segments, plain_segments), addrs4, addrs4, st.integers(0, 255), st.integers(0, 2**20))
def test_emit_ipv4_segment_equals_the_two_step_emit(seg: TcpSegment, src: ipaddress.IPv4Address,
                                                    dst: ipaddress.IPv4Address, ttl: int, ident: int) -> None:
    from pytsnet.netstack.tcp.segment import emit_ipv4_segment
    want = old_emit_ipv4(src, dst, 6, old_emit_tcp(seg, src, dst), ttl, ident, True, 0)
    assert emit_ipv4_segment(seg, src, dst, ttl, ident) == want


@settings(max_examples=200)
@given(st.lists(st.one_of(segments, plain_segments), max_size=8), addrs4, addrs4, st.integers(0, 255),
       st.one_of(st.integers(0, 0xFFFF), st.integers(0xFFF8, 0xFFFF)))
def test_a_burst_emitted_at_once_equals_the_two_step_emit_of_each(segs: list[TcpSegment],
                                                                   src: ipaddress.IPv4Address,
                                                                   dst: ipaddress.IPv4Address, ttl: int,
                                                                   ident: int) -> None:
    """A flow's burst (``emit_ipv4_segments``: address sums once per burst) is byte for byte each
    segment emitted on its own, with IP IDs counting on from ``ident`` and wrapping at 2**16."""
    from pytsnet.netstack.tcp.segment import emit_ipv4_segments
    want, last = [], ident
    for seg in segs:
        last = (last + 1) & 0xFFFF
        want.append(old_emit_ipv4(src, dst, 6, old_emit_tcp(seg, src, dst), ttl, last, True, 0))
    assert emit_ipv4_segments(segs, src, dst, ttl, ident) == (want, last)


tcp_ish = st.tuples(
    st.sampled_from([0x45, 0x46, 0x55]), st.binary(min_size=5, max_size=5),
    st.sampled_from([0, 0x40, 0x20, 0x01]),
    st.binary(min_size=2, max_size=2), st.sampled_from([6, 17]), st.binary(min_size=6, max_size=6),
    st.sampled_from([b"\x64\x40\x00\x02", b"\x64\x40\x00\x03", b"\x0a\x09\x00\x05"]),
    st.binary(min_size=13, max_size=13),
    st.sampled_from([0x02, 0x12, 0x10, 0x18, 0x01, 0x04, 0x00]), st.binary(max_size=30),
).map(lambda t: bytes([t[0]]) + t[1] + bytes([t[2]]) + t[3] + bytes([t[4]]) + t[5] + t[6] + t[7]
      + bytes([t[8]]) + t[9])


@settings(max_examples=500)
@given(st.one_of(tcp_ish, ip_ish))
def test_run_in_fast_path_agrees_with_check(packet: bytes) -> None:
    local = (ipaddress.ip_network("100.64.0.2/32"), ipaddress.ip_network("10.9.0.0/16"))
    anywhere = ipaddress.ip_network("0.0.0.0/0")
    rules = [pfilter.Rule((anywhere,), (pfilter.NetPortRange(anywhere, pfilter.PortRange(0, 100)),))]
    f = pfilter.Filter(rules, local)
    try:
        want = f.check(pfilter.summarize(packet)) is None
    except pfilter.FilterParseError:
        want = False
    assert f.run_in(packet) is want
    assert f.accepted + sum(f.drops.values()) == 1
