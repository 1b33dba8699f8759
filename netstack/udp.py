"""UDP (RFC 768): parse with the pseudo-header checksum verified; emit with it computed.

Over IPv4 a zero checksum means "none" and is accepted; over IPv6 it is mandatory (RFC 8200 §8.1).
``UdpDatagram`` is a NamedTuple (cheaper per packet than a frozen dataclass); the emitter sums the
header from its fields and the payload in place, so the datagram is built with one concatenation.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from pytsnet.netstack.checksum import checksum, pseudo_header_sum, verify
from pytsnet.netstack.errors import UdpParseError

HEADER_LEN = 8
PROTO_UDP = 17

_HDR = struct.Struct("!HHHH")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UdpDatagram(NamedTuple):
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
    return UdpDatagram(sport, dport, bytes(data[HEADER_LEN:length]))


def emit_udp(dgram: UdpDatagram, src: IPAddress, dst: IPAddress) -> bytes:
    """Serialise ``dgram`` with its checksum (0 is sent as 0xFFFF, RFC 768)."""
    length = HEADER_LEN + len(dgram.payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram of {length} bytes")
    sport, dport, payload = dgram
    csum = checksum(payload, sport + dport + length + pseudo_header_sum(src, dst, PROTO_UDP, length))
    return _HDR.pack(sport, dport, length, csum or 0xFFFF) + payload
