"""IPv4 (RFC 791): a strict parser to ``Ipv4Packet`` and an emitter with the header checksum.

Options are skipped (accepted but not interpreted). Fragments are refused: the tunnel MTU is known
and our own packets are never fragmented, so reassembly would only be an attack surface.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from pytsnet.netstack.checksum import checksum, verify
from pytsnet.netstack.errors import Ipv4ParseError

VERSION = 4
HEADER_LEN = 20
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
FLAG_DF = 0x4000
FLAG_MF = 0x2000
FRAG_OFFSET_MASK = 0x1FFF

_HDR = struct.Struct("!BBHHHBBH4s4s")


@dataclass(frozen=True, slots=True)
class Ipv4Packet:
    """A parsed IPv4 datagram: the header fields we act on, and the payload."""

    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    protocol: int
    payload: bytes
    ttl: int = 64
    ident: int = 0
    dont_fragment: bool = True
    tos: int = 0


def parse_ipv4(data: bytes | bytearray | memoryview) -> Ipv4Packet:
    """Parse one IPv4 datagram; raise ``Ipv4ParseError`` for anything we will not accept."""
    if len(data) < HEADER_LEN:
        raise Ipv4ParseError("ipv4_truncated", f"{len(data)} bytes")
    vihl, tos, total_len, ident, frag, ttl, proto, _csum, src, dst = _HDR.unpack_from(data)
    if vihl >> 4 != VERSION:
        raise Ipv4ParseError("ipv4_version", str(vihl >> 4))
    ihl = (vihl & 0x0F) * 4
    if ihl < HEADER_LEN:
        raise Ipv4ParseError("ipv4_header_len", str(ihl))
    if total_len < ihl or total_len > len(data):
        raise Ipv4ParseError("ipv4_total_len", f"{total_len} with header {ihl}, buffer {len(data)}")
    if not verify(memoryview(data)[:ihl]):
        raise Ipv4ParseError("ipv4_checksum")
    if frag & FLAG_MF or frag & FRAG_OFFSET_MASK:
        raise Ipv4ParseError("ipv4_fragment")
    return Ipv4Packet(
        src=ipaddress.IPv4Address(src), dst=ipaddress.IPv4Address(dst), protocol=proto,
        payload=bytes(data[ihl:total_len]), ttl=ttl, ident=ident,
        dont_fragment=bool(frag & FLAG_DF), tos=tos,
    )


def emit_ipv4(packet: Ipv4Packet) -> bytes:
    """Serialise ``packet`` with a 20-byte header (no options) and a correct header checksum."""
    total = HEADER_LEN + len(packet.payload)
    if total > 0xFFFF:
        raise ValueError(f"IPv4 datagram of {total} bytes")
    head = bytearray(_HDR.pack(
        (VERSION << 4) | 5, packet.tos, total, packet.ident & 0xFFFF,
        FLAG_DF if packet.dont_fragment else 0, packet.ttl, packet.protocol, 0,
        packet.src.packed, packet.dst.packed,
    ))
    struct.pack_into("!H", head, 10, checksum(head))
    return bytes(head) + packet.payload
