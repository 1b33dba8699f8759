"""UDP (RFC 768): parse with the pseudo-header checksum verified; emit with it computed.

Over IPv4 a zero checksum means "none" and is accepted; over IPv6 it is mandatory (RFC 8200 §8.1).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from pytsnet.netstack.checksum import checksum, pseudo_header_sum, verify
from pytsnet.netstack.errors import UdpParseError

HEADER_LEN = 8
PROTO_UDP = 17

_HDR = struct.Struct("!HHHH")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    src_port: int
    dst_port: int
    payload: bytes


def parse_udp(data: bytes | bytearray | memoryview, src: IPAddress, dst: IPAddress) -> UdpDatagram:
    """Parse a UDP datagram carried between ``src`` and ``dst``; raise ``UdpParseError``."""
    if len(data) < HEADER_LEN:
        raise UdpParseError("udp_truncated", f"{len(data)} bytes")
    sport, dport, length, csum = _HDR.unpack_from(data)
    if length < HEADER_LEN or length > len(data):
        raise UdpParseError("udp_length", f"{length} in a buffer of {len(data)}")
    body = memoryview(data)[:length]
    if csum == 0:
        if src.version == 6:
            raise UdpParseError("udp_checksum", "zero checksum over IPv6")
    elif not verify(body, pseudo_header_sum(src, dst, PROTO_UDP, length)):
        raise UdpParseError("udp_checksum")
    if dport == 0:
        raise UdpParseError("udp_port", "destination port 0")
    return UdpDatagram(sport, dport, bytes(body[HEADER_LEN:]))


def emit_udp(dgram: UdpDatagram, src: IPAddress, dst: IPAddress) -> bytes:
    """Serialise ``dgram`` with its checksum (0 is sent as 0xFFFF, RFC 768)."""
    length = HEADER_LEN + len(dgram.payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram of {length} bytes")
    head = _HDR.pack(dgram.src_port, dgram.dst_port, length, 0)
    csum = checksum(head + dgram.payload, pseudo_header_sum(src, dst, PROTO_UDP, length)) or 0xFFFF
    return head[:6] + csum.to_bytes(2, "big") + dgram.payload
