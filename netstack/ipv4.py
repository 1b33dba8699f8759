"""IPv4 (RFC 791): a strict parser to ``Ipv4Packet`` and an emitter with the header checksum.

Options are skipped (accepted but not interpreted). Fragments are refused: the tunnel MTU is known
and our own packets are never fragmented, so reassembly would only be an attack surface.

Per-packet cost matters here (every tunnel packet passes through both functions): the header is
read and written with one ``struct`` call, its checksum is summed from the unpacked fields (each
32-bit address is ≡ the sum of its two 16-bit words mod 0xFFFF), ``Ipv4Packet`` is a NamedTuple
(a frozen dataclass's ``__init__`` costs about 3 times more), and address objects come from a small cache
instead of being built per packet (a tailnet node talks to few addresses).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from pytsnet.netstack.address_cache import AddressCache
from pytsnet.netstack.checksum import verify
from pytsnet.netstack.errors import Ipv4ParseError

VERSION = 4
HEADER_LEN = 20
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
FLAG_DF = 0x4000
FLAG_MF = 0x2000
FRAG_OFFSET_MASK = 0x1FFF

_HDR = struct.Struct("!BBHHHBBHII")


class Ipv4Packet(NamedTuple):
    """A parsed IPv4 datagram: the header fields we act on, and the payload."""

    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    protocol: int
    payload: bytes
    ttl: int = 64
    ident: int = 0
    dont_fragment: bool = True
    tos: int = 0


_addrs: AddressCache[int, ipaddress.IPv4Address] = AddressCache(ipaddress.IPv4Address)


def address(value: int) -> ipaddress.IPv4Address:
    """The (shared, immutable) ``IPv4Address`` for an integer, from a bounded cache."""
    return _addrs[value]


def parse_ipv4(data: bytes | bytearray | memoryview) -> Ipv4Packet:
    """Parse one IPv4 datagram; raise ``Ipv4ParseError`` for anything we will not accept."""
    n = len(data)
    if n < HEADER_LEN:
        raise Ipv4ParseError("ipv4_truncated", f"{n} bytes")
    vihl, tos, total_len, ident, frag, ttl, proto, csum, src, dst = _HDR.unpack_from(data)
    if vihl >> 4 != VERSION:
        raise Ipv4ParseError("ipv4_version", str(vihl >> 4))
    ihl = (vihl & 0x0F) * 4
    if ihl < HEADER_LEN:
        raise Ipv4ParseError("ipv4_header_len", str(ihl))
    if total_len < ihl or total_len > n:
        raise Ipv4ParseError("ipv4_total_len", f"{total_len} with header {ihl}, buffer {n}")
    if ihl == HEADER_LEN:
        # The 16-bit words sum to a multiple of 0xFFFF (never 0: the version byte is non-zero).
        if ((vihl << 8 | tos) + total_len + ident + frag + (ttl << 8 | proto) + csum + src + dst) % 0xFFFF:
            raise Ipv4ParseError("ipv4_checksum")
    elif not verify(memoryview(data)[:ihl]):
        raise Ipv4ParseError("ipv4_checksum")
    if frag & (FLAG_MF | FRAG_OFFSET_MASK):
        raise Ipv4ParseError("ipv4_fragment")
    return Ipv4Packet(
        _addrs[src], _addrs[dst], proto,
        bytes(data[ihl:total_len]), ttl, ident, bool(frag & FLAG_DF), tos,
    )


def emit_ipv4(packet: Ipv4Packet) -> bytes:
    """Serialise ``packet`` with a 20-byte header (no options) and a correct header checksum."""
    src, dst, proto, payload, ttl, ident, df, tos = packet
    return emit_ipv4_fields(int(src), int(dst), proto, payload, ttl, ident, df, tos)


def emit_ipv4_fields(src: int, dst: int, proto: int, payload: bytes, ttl: int = 64, ident: int = 0,
                     dont_fragment: bool = True, tos: int = 0) -> bytes:
    """``emit_ipv4`` without the ``Ipv4Packet``: addresses as integers (a hot-path variant)."""
    total = HEADER_LEN + len(payload)
    if total > 0xFFFF:
        raise ValueError(f"IPv4 datagram of {total} bytes")
    ident &= 0xFFFF
    frag = FLAG_DF if dont_fragment else 0
    r = (0x4500 + tos + total + ident + frag + (ttl << 8 | proto) + src + dst) % 0xFFFF
    return _HDR.pack(0x45, tos, total, ident, frag, ttl, proto, 0xFFFF - r if r else 0, src, dst) + payload
