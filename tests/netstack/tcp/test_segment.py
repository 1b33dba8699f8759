import contextlib
import ipaddress
import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pytsnet.netstack.tcp.errors import TcpParseError
from pytsnet.netstack.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    TcpSegment,
    emit_segment,
    parse_segment,
)

V4A = ipaddress.IPv4Address("192.0.2.1")
V4B = ipaddress.IPv4Address("198.51.100.2")
V6A = ipaddress.IPv6Address("fd7a:115c:a1e0::1")
V6B = ipaddress.IPv6Address("fd7a:115c:a1e0::2")


def ref_checksum(data: bytes) -> int:
    """Word-by-word RFC 1071 reference, independent of pytsnet.netstack.checksum."""
    if len(data) % 2:
        data += b"\x00"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pseudo4(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, n: int) -> bytes:
    return src.packed + dst.packed + bytes((0, 6)) + n.to_bytes(2, "big")


def handmade_syn() -> bytes:
    """A Linux-style SYN laid out by hand from RFC 9293 §3.1 / RFC 7323 / RFC 2018 figures."""
    opts = (bytes((2, 4)) + (1460).to_bytes(2, "big")  # MSS
            + bytes((4, 2))  # SACK permitted
            + bytes((8, 10)) + (0x01020304).to_bytes(4, "big") + (0).to_bytes(4, "big")  # TS
            + bytes((1, 3, 3, 7)))  # NOP, WS=7
    hdr = struct.pack("!HHIIBBHHH", 51000, 443, 0xDEADBEEF, 0, (5 + len(opts) // 4) << 4, SYN, 64240, 0, 0)
    seg = hdr + opts
    c = ref_checksum(pseudo4(V4A, V4B, len(seg)) + seg)
    return seg[:16] + c.to_bytes(2, "big") + seg[18:]


def test_parse_handmade_linux_style_syn() -> None:
    seg = parse_segment(handmade_syn(), V4A, V4B)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags) == (51000, 443, 0xDEADBEEF, 0, SYN)
    assert seg.window == 64240 and seg.mss == 1460 and seg.wscale == 7 and seg.sack_permitted
    assert seg.timestamp == (0x01020304, 0) and seg.payload == b"" and seg.seg_len == 1


def test_emit_checksum_matches_reference_and_layout() -> None:
    seg = TcpSegment(1234, 80, 1, 2, ACK | PSH, 512, timestamp=(7, 9), payload=b"hello")
    raw = emit_segment(seg, V4A, V4B)
    assert len(raw) == 20 + 12 + 5
    assert raw[12] >> 4 == 8  # data offset in words
    assert raw[20:24] == b"\x01\x01\x08\x0a"  # NOP NOP TS (RFC 7323 Appendix A layout)
    assert ref_checksum(pseudo4(V4A, V4B, len(raw)) + raw) == 0


def test_bad_checksum_rejected() -> None:
    raw = bytearray(handmade_syn())
    raw[4] ^= 1
    with pytest.raises(TcpParseError):
        parse_segment(bytes(raw), V4A, V4B)
    with pytest.raises(TcpParseError):  # right bytes, wrong pseudo-header
        parse_segment(handmade_syn(), V4A, ipaddress.IPv4Address("198.51.100.3"))


@pytest.mark.parametrize("opts", [
    bytes((2, 3, 0, 0)),  # MSS with wrong length
    bytes((3, 4, 7, 0)),  # WS with wrong length
    bytes((5, 10)) + bytes(8),  # SACK with 8n+2 != len
    bytes((8, 9)) + bytes(7) + b"\x00\x00",  # TS wrong length
    bytes((1, 1, 1, 99)),  # truncated unknown option
    bytes((30, 1, 0, 0)),  # option length < 2
])
def test_malformed_options_rejected(opts: bytes) -> None:
    hdr = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, (5 + len(opts) // 4) << 4, ACK, 100, 0, 0) + opts
    c = ref_checksum(pseudo4(V4A, V4B, len(hdr)) + hdr)
    raw = hdr[:16] + c.to_bytes(2, "big") + hdr[18:]
    with pytest.raises(TcpParseError):
        parse_segment(raw, V4A, V4B)


def test_unknown_option_skipped_and_end_of_list() -> None:
    opts = bytes((30, 4, 0xAA, 0xBB)) + bytes((0, 0, 0, 0))
    hdr = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, (5 + 2) << 4, ACK, 100, 0, 0) + opts
    c = ref_checksum(pseudo4(V4A, V4B, len(hdr)) + hdr)
    seg = parse_segment(hdr[:16] + c.to_bytes(2, "big") + hdr[18:], V4A, V4B)
    assert seg.mss is None and seg.timestamp is None


def test_wscale_clamped_to_14() -> None:
    seg = TcpSegment(1, 2, 3, 0, SYN, 100, wscale=14)
    raw = bytearray(emit_segment(seg, V4A, V4B))
    assert parse_segment(bytes(raw), V4A, V4B).wscale == 14
    i = raw.index(bytes((3, 3, 14)))
    raw[i + 2] = 20
    raw[16:18] = b"\x00\x00"
    raw[16:18] = ref_checksum(pseudo4(V4A, V4B, len(raw)) + bytes(raw)).to_bytes(2, "big")
    assert parse_segment(bytes(raw), V4A, V4B).wscale == 14  # RFC 7323 §2.3


def test_sack_blocks_limited_to_option_space() -> None:
    blocks = tuple((i, i + 10) for i in range(0, 50, 10))
    seg = TcpSegment(1, 2, 3, 4, ACK, 100, timestamp=(1, 2), sack_blocks=blocks)
    parsed = parse_segment(emit_segment(seg, V4A, V4B), V4A, V4B)
    assert parsed.sack_blocks == blocks[:3]  # 12 (TS) + 4 + 3*8 = 40 bytes
    seg = TcpSegment(1, 2, 3, 4, ACK, 100, sack_blocks=blocks)
    assert parse_segment(emit_segment(seg, V4A, V4B), V4A, V4B).sack_blocks == blocks[:4]


segments = st.builds(
    TcpSegment,
    src_port=st.integers(0, 0xFFFF), dst_port=st.integers(0, 0xFFFF),
    seq=st.integers(0, 0xFFFFFFFF), ack=st.integers(0, 0xFFFFFFFF),
    flags=st.integers(0, 0xFF), window=st.integers(0, 0xFFFF),
    mss=st.none() | st.integers(0, 0xFFFF), wscale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
                         max_size=2).map(tuple),
    timestamp=st.none() | st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
    payload=st.binary(max_size=300), urgent=st.integers(0, 0xFFFF),
)


@given(segments, st.booleans())
def test_roundtrip(seg: TcpSegment, v6: bool) -> None:
    assume(not (seg.sack_blocks and seg.mss is not None))  # SYN options + SACK blocks exceed 40 bytes
    src, dst = (V6A, V6B) if v6 else (V4A, V4B)
    raw = emit_segment(seg, src, dst)
    assert parse_segment(raw, src, dst) == seg
    assert ref_checksum((src.packed + dst.packed + len(raw).to_bytes(4, "big") + b"\x00\x00\x00\x06"
                         if v6 else pseudo4(src, dst, len(raw))) + raw) == 0


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_random_bytes_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(TcpParseError):
        parse_segment(data, V4A, V4B)


@settings(max_examples=300)
@given(segments, st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
       st.booleans())
def test_mutated_segments_only_parse_error(seg: TcpSegment, muts: list[tuple[int, int]], fix: bool) -> None:
    raw = bytearray(emit_segment(seg, V4A, V4B))
    for pos, val in muts:
        raw[pos % len(raw)] = val
    if fix:  # recompute the checksum so the mutation reaches the option parser
        raw[16:18] = b"\x00\x00"
        raw[16:18] = ref_checksum(pseudo4(V4A, V4B, len(raw)) + bytes(raw)).to_bytes(2, "big")
    try:
        out = parse_segment(bytes(raw), V4A, V4B)
    except TcpParseError:
        return
    assert isinstance(out, TcpSegment)


def test_seg_len_counts_syn_and_fin() -> None:
    assert TcpSegment(1, 2, 0, 0, SYN | FIN, 0, payload=b"abc").seg_len == 5
    assert TcpSegment(1, 2, 0, 0, RST, 0).seg_len == 0
