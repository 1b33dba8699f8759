"""TCP segment representation and codec (RFC 9293 §3.1, options from RFC 7323 and RFC 2018).

``TcpSegment`` is a plain parsed value (smoltcp's ``TcpRepr``); ``parse_segment`` verifies the
checksum over the pseudo-header and returns one, or raises ``TcpParseError`` and nothing else.

Every segment of a transfer is parsed or emitted here, so the per-call cost is kept low:
``TcpSegment`` is a NamedTuple (built with ``tuple.__new__`` when parsing; a 13-field frozen
dataclass ``__init__`` cost ~2 µs), and the pseudo-header is summed from the addresses as
integers (2**16 ≡ 1 mod 0xFFFF) instead of from their packed bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from typing import NamedTuple

from pytsnet.netstack.checksum import checksum, verify
from pytsnet.netstack.ipv4 import emit_ipv4_fields
from pytsnet.netstack.tcp.errors import TcpParseError

IPPROTO_TCP = 6

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

# Option kinds (IANA "TCP Option Kind Numbers").
OPT_END = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8

HEADER_LEN = 20
MAX_OPTIONS_LEN = 40
MAX_WSCALE = 14  # RFC 7323 §2.3

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HDR = struct.Struct("!HHIIBBHHH")
_TS = struct.Struct("!BBII")
_HDR_TS_IN = struct.Struct("!HHIIBBHHHIII")  # header + the first option word + two timestamps
_HDR_TS_OUT = struct.Struct("!HHIIBBHHHIII")
_NOP_NOP_TS = 0x0101080A  # NOP, NOP, kind 8, length 10
IP4_TCP_TS = struct.Struct("!BBHHHBBHIIHHIIBBHHHIII")  # IPv4 header (no options) + TCP header + NOP NOP TS
_IP4_TCP = struct.Struct("!BBHHHBBHIIHHIIBBHHH")
_IP4_DF = 0x4000


_new = tuple.__new__


def _pseudo_sum(src: IPAddress, dst: IPAddress, length: int) -> int:
    """Unfolded pseudo-header sum (RFC 9293 §3.1, RFC 8200 §8.1), valid as ``checksum``'s ``initial``.

    Addresses, protocol and length can be summed as plain integers because 2**16 ≡ 1 (mod 0xFFFF).
    """
    if type(src) is not type(dst) or not isinstance(src, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        raise TcpParseError("address families differ")
    return int(src) + int(dst) + IPPROTO_TCP + length


class TcpSegment(NamedTuple):
    """One TCP segment: header fields, the options we understand, and the payload."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamp: tuple[int, int] | None = None
    payload: bytes = b""
    urgent: int = 0

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload length plus one for each of SYN and FIN."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN and 1)

    def options_len(self) -> int:
        """Bytes of (padded) options ``emit_segment`` will write for this segment."""
        return len(_emit_options(self))


def _parse_options(opts: bytes) -> tuple[int | None, int | None, bool, tuple[tuple[int, int], ...],
                                        tuple[int, int] | None]:
    mss = wscale = None
    sack_ok = False
    blocks: tuple[tuple[int, int], ...] = ()
    ts = None
    i = 0
    n = len(opts)
    while i < n:
        kind = opts[i]
        if kind == OPT_END:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise TcpParseError("truncated option")
        olen = opts[i + 1]
        if olen < 2 or i + olen > n:
            raise TcpParseError(f"bad length {olen} for option kind {kind}")
        if kind == OPT_MSS:
            if olen != 4:
                raise TcpParseError("MSS option length must be 4")
            mss = (opts[i + 2] << 8) | opts[i + 3]
        elif kind == OPT_WSCALE:
            if olen != 3:
                raise TcpParseError("window scale option length must be 3")
            wscale = min(opts[i + 2], MAX_WSCALE)  # RFC 7323 §2.3: clamp, log
        elif kind == OPT_SACK_PERMITTED:
            if olen != 2:
                raise TcpParseError("SACK-permitted option length must be 2")
            sack_ok = True
        elif kind == OPT_SACK:
            if (olen - 2) % 8 or olen == 2:
                raise TcpParseError("SACK option length must be 2 + 8n")
            vals = struct.unpack_from(f"!{(olen - 2) // 4}I", opts, i + 2)
            blocks = tuple(zip(vals[0::2], vals[1::2], strict=True))
        elif kind == OPT_TIMESTAMP:
            if olen != 10:
                raise TcpParseError("timestamp option length must be 10")
            ts = struct.unpack_from("!II", opts, i + 2)
        i += olen
    return mss, wscale, sack_ok, blocks, ts


def parse_segment(data: bytes | bytearray | memoryview, src_ip: IPAddress, dst_ip: IPAddress) -> TcpSegment:
    """Parse and checksum-verify a TCP segment carried between ``src_ip`` and ``dst_ip``."""
    n = len(data)
    if n < HEADER_LEN:
        raise TcpParseError(f"segment too short: {n} bytes")
    if n > 0xFFFF + 40:
        raise TcpParseError("segment longer than any IP payload")
    try:
        initial = _pseudo_sum(src_ip, dst_ip, n)
    except (AttributeError, TypeError, ValueError) as e:
        raise TcpParseError(f"bad addresses: {e}") from None
    if not verify(data, initial):
        raise TcpParseError("bad checksum")
    if n >= HEADER_LEN + 12:
        sport, dport, seq, ack, off, flags, window, _csum, urgent, opt4, tsval, tsecr = \
            _HDR_TS_IN.unpack_from(data)
        hlen = (off >> 4) * 4
        # Fast path: the NOP NOP TIMESTAMP layout every data segment from Linux (and us) carries.
        if hlen == HEADER_LEN + 12 and opt4 == _NOP_NOP_TS:
            return _new(TcpSegment, (sport, dport, seq, ack, flags, window, None, None, False, (),
                                     (tsval, tsecr), bytes(data[hlen:]), urgent))
    else:
        sport, dport, seq, ack, off, flags, window, _csum, urgent = _HDR.unpack_from(data)
        hlen = (off >> 4) * 4
    if hlen < HEADER_LEN or hlen > n:
        raise TcpParseError(f"bad data offset {hlen}")
    mss = wscale = None
    sack_ok = False
    blocks: tuple[tuple[int, int], ...] = ()
    ts = None
    if hlen > HEADER_LEN:
        mss, wscale, sack_ok, blocks, ts = _parse_options(bytes(data[HEADER_LEN:hlen]))
    return _new(TcpSegment, (sport, dport, seq, ack, flags, window, mss, wscale, sack_ok, blocks, ts,
                             bytes(data[hlen:]), urgent))


def _emit_options(seg: TcpSegment) -> bytes:
    out = bytearray()
    if seg.mss is not None:
        out += struct.pack("!BBH", OPT_MSS, 4, seg.mss)
    if seg.sack_permitted:
        out += b"\x01\x01\x04\x02"
    if seg.timestamp is not None:
        out += b"\x01\x01" + struct.pack("!BBII", OPT_TIMESTAMP, 10, seg.timestamp[0], seg.timestamp[1])
    if seg.wscale is not None:
        out += struct.pack("!BBBB", OPT_NOP, OPT_WSCALE, 3, seg.wscale)
    if seg.sack_blocks:
        room = (MAX_OPTIONS_LEN - len(out) - 4) // 8
        blocks = seg.sack_blocks[:max(room, 0)]
        if blocks:
            out += struct.pack("!BBBB", OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks))
            for left, right in blocks:
                out += struct.pack("!II", left, right)
    if len(out) % 4:
        out += b"\x00" * (4 - len(out) % 4)
    return bytes(out)


def emit_segment(seg: TcpSegment, src_ip: IPAddress, dst_ip: IPAddress) -> bytes:
    """Serialize ``seg`` with its checksum computed over the pseudo-header."""
    (sport, dport, seq, ack, flags, window, mss, wscale, sack_ok, blocks, ts, payload, urgent) = seg
    flags &= 0xFF
    if mss is None and wscale is None and not sack_ok and not blocks:
        # The two layouts of nearly every segment, packed in one call with the checksum summed
        # from the fields (a 32-bit field is ≡ the sum of its two 16-bit words mod 0xFFFF).
        if ts is not None:
            tsval, tsecr = ts
            total = HEADER_LEN + 12 + len(payload)
            initial = (sport + dport + seq + ack + (0x8000 | flags) + window + urgent + 0x0101 + 0x080A
                       + tsval + tsecr + _pseudo_sum(src_ip, dst_ip, total))
            return _HDR_TS_OUT.pack(sport, dport, seq, ack, 0x80, flags, window,
                                    checksum(payload, initial), urgent, 0x0101080A, tsval, tsecr) + payload
        total = HEADER_LEN + len(payload)
        initial = (sport + dport + seq + ack + (0x5000 | flags) + window + urgent
                   + _pseudo_sum(src_ip, dst_ip, total))
        return _HDR.pack(sport, dport, seq, ack, 0x50, flags, window, checksum(payload, initial),
                         urgent) + payload
    opts = _emit_options(seg)
    hlen = HEADER_LEN + len(opts)
    total = hlen + len(payload)
    head = _HDR.pack(sport, dport, seq, ack, (hlen // 4) << 4, flags, window, 0, urgent) + opts
    # The header has even length, so it can be summed as an integer and the payload without a copy.
    csum = checksum(payload, int.from_bytes(head, "big") + _pseudo_sum(src_ip, dst_ip, total))
    return b"".join((head[:16], csum.to_bytes(2, "big"), head[18:], payload))


def emit_ipv4_segment(seg: TcpSegment, src_ip: ipaddress.IPv4Address, dst_ip: ipaddress.IPv4Address,
                      ttl: int = 64, ident: int = 0) -> bytes:
    """The whole IPv4 packet carrying ``seg`` (20-byte header, DF set, TOS 0), byte for byte what
    ``ipv4.emit_ipv4`` of ``emit_segment``'s output gives: ``emit_ipv4_segments`` of one."""
    return emit_ipv4_segments((seg,), src_ip, dst_ip, ttl, ident - 1)[0][0]


def emit_ipv4_segments(segs: Sequence[TcpSegment], src_ip: ipaddress.IPv4Address,
                       dst_ip: ipaddress.IPv4Address, ttl: int, ident: int) -> tuple[list[bytes], int]:
    """The IPv4 packets (20-byte header, DF set, TOS 0) carrying ``segs``, with IP IDs ``ident + 1``,
    ``ident + 2``, … (mod 2**16), and the last ID used; byte for byte ``ipv4.emit_ipv4`` of
    ``emit_segment``'s output. The two layouts of nearly every segment take one ``struct`` call and
    one payload copy, and a flow's burst shares its addresses, TTL and protocol, so their part of
    both checksums is summed once per burst."""
    if type(src_ip) is not type(dst_ip) or not isinstance(src_ip, ipaddress.IPv4Address):
        packets = []
        for seg in segs:
            ident = (ident + 1) & 0xFFFF
            packets.append(emit_ipv4_fields(int(src_ip), int(dst_ip), IPPROTO_TCP,
                                            emit_segment(seg, src_ip, dst_ip), ttl, ident))
        return packets, ident
    src, dst = int(src_ip), int(dst_ip)
    ip_fixed = 0x4500 + _IP4_DF + (ttl << 8 | IPPROTO_TCP) + src + dst  # + total length + ID
    tcp_fixed = src + dst + IPPROTO_TCP  # the pseudo-header, but for the TCP length
    pack, pack_ts, csum = _IP4_TCP.pack, IP4_TCP_TS.pack, checksum
    packets = []
    append = packets.append
    for seg in segs:
        ident = (ident + 1) & 0xFFFF
        (sport, dport, seq, ack, flags, window, mss, wscale, sack_ok, blocks, ts, payload, urgent) = seg
        if mss is not None or wscale is not None or sack_ok or blocks:
            append(emit_ipv4_fields(src, dst, IPPROTO_TCP, emit_segment(seg, src_ip, dst_ip), ttl, ident))
            continue
        flags &= 0xFF
        if ts is not None:
            tcp_len = 32 + len(payload)
            total = 20 + tcp_len
            if total > 0xFFFF:
                raise ValueError(f"IPv4 datagram of {total} bytes")
            ip_sum = (ip_fixed + total + ident) % 0xFFFF
            tsval, tsecr = ts
            initial = (sport + dport + seq + ack + (0x8000 | flags) + window + urgent + 0x0101 + 0x080A
                       + tsval + tsecr + tcp_fixed + tcp_len)
            append(pack_ts(0x45, 0, total, ident, _IP4_DF, ttl, IPPROTO_TCP, 0xFFFF - ip_sum if ip_sum else 0,
                           src, dst, sport, dport, seq, ack, 0x80, flags, window, csum(payload, initial),
                           urgent, _NOP_NOP_TS, tsval, tsecr) + payload)
        else:
            tcp_len = 20 + len(payload)
            total = 20 + tcp_len
            if total > 0xFFFF:
                raise ValueError(f"IPv4 datagram of {total} bytes")
            ip_sum = (ip_fixed + total + ident) % 0xFFFF
            initial = (sport + dport + seq + ack + (0x5000 | flags) + window + urgent + tcp_fixed + tcp_len)
            append(pack(0x45, 0, total, ident, _IP4_DF, ttl, IPPROTO_TCP, 0xFFFF - ip_sum if ip_sum else 0,
                        src, dst, sport, dport, seq, ack, 0x50, flags, window, csum(payload, initial), urgent)
                   + payload)
    return packets, ident
