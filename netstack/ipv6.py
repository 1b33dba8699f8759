"""IPv6 (RFC 8200): a strict parser to ``Ipv6Packet`` and an emitter; used only with enable_ipv6.

Extension headers are refused rather than walked: nothing on a tailnet needs them for TCP, UDP or
ICMPv6 echo, and refusing keeps the parser small and bounded. As in ``ipv4``, the packet is a
NamedTuple and address objects come from a small bounded cache (both cheaper per packet).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from pytsnet.netstack.address_cache import AddressCache
from pytsnet.netstack.errors import Ipv6ParseError

VERSION = 6
HEADER_LEN = 40
NEXT_TCP = 6
NEXT_UDP = 17
NEXT_ICMPV6 = 58
NEXT_TSMP = 99  # Tailscale's TSMP (ping/pong between nodes)
UPPER_LAYER = frozenset({NEXT_TCP, NEXT_UDP, NEXT_ICMPV6, NEXT_TSMP})

_HDR = struct.Struct("!IHBB16s16s")




class Ipv6Packet(NamedTuple):
    """A parsed IPv6 packet whose next header is an upper-layer protocol."""

    src: ipaddress.IPv6Address
    dst: ipaddress.IPv6Address
    next_header: int
    payload: bytes
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0

    @property
    def protocol(self) -> int:
        """Same name as ``Ipv4Packet.protocol`` so the demultiplexer treats both alike."""
        return self.next_header


_addrs: AddressCache[bytes, ipaddress.IPv6Address] = AddressCache(ipaddress.IPv6Address)


def address(packed: bytes) -> ipaddress.IPv6Address:
    """The (shared, immutable) ``IPv6Address`` for 16 packed bytes, from a bounded cache."""
    return _addrs[packed]


def parse_ipv6(data: bytes | bytearray | memoryview) -> Ipv6Packet:
    """Parse one IPv6 packet; raise ``Ipv6ParseError`` for anything we will not accept."""
    if len(data) < HEADER_LEN:
        raise Ipv6ParseError("ipv6_truncated", f"{len(data)} bytes")
    vtf, plen, nxt, hlim, src, dst = _HDR.unpack_from(data)
    if vtf >> 28 != VERSION:
        raise Ipv6ParseError("ipv6_version", str(vtf >> 28))
    if HEADER_LEN + plen > len(data):
        raise Ipv6ParseError("ipv6_payload_len", f"{plen} in a buffer of {len(data)}")
    if nxt not in UPPER_LAYER:
        raise Ipv6ParseError("ipv6_next_header", str(nxt))
    return Ipv6Packet(
        src=address(src), dst=address(dst), next_header=nxt,
        payload=bytes(data[HEADER_LEN:HEADER_LEN + plen]), hop_limit=hlim,
        traffic_class=(vtf >> 20) & 0xFF, flow_label=vtf & 0xFFFFF,
    )


def emit_ipv6(packet: Ipv6Packet) -> bytes:
    """Serialise ``packet`` with its fixed 40-byte header."""
    if len(packet.payload) > 0xFFFF:
        raise ValueError("IPv6 jumbograms are not supported")
    vtf = (VERSION << 28) | ((packet.traffic_class & 0xFF) << 20) | (packet.flow_label & 0xFFFFF)
    return _HDR.pack(vtf, len(packet.payload), packet.next_header, packet.hop_limit,
                     packet.src.packed, packet.dst.packed) + packet.payload
