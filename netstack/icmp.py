"""ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages: echo and destination-unreachable.

One ``IcmpMessage`` repr serves both families: type, code, the 4-byte "rest of header" and the
body (a NamedTuple, cheap to build). ICMPv6 checksums cover the IPv6 pseudo-header; ICMPv4
checksums cover only the message.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from pytsnet.netstack.checksum import checksum, pseudo_header_sum, verify
from pytsnet.netstack.errors import IcmpParseError

HEADER_LEN = 8
PROTO_ICMP = 1
NEXT_ICMPV6 = 58

# ICMPv4 types and codes (RFC 792)
ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACHABLE = 3
ICMP_ECHO_REQUEST = 8
ICMP_CODE_PORT_UNREACHABLE = 3
# ICMPv6 types and codes (RFC 4443)
ICMPV6_DEST_UNREACHABLE = 1
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ICMPV6_CODE_PORT_UNREACHABLE = 4

# RFC 1812 §4.3.2.3 / RFC 4443 §2.4(c): quote as much of the offending packet as fits.
ICMPV4_QUOTE_MAX = 576 - 20 - HEADER_LEN
ICMPV6_QUOTE_MAX = 1280 - 40 - HEADER_LEN

_HDR = struct.Struct("!BBH4s")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class IcmpMessage(NamedTuple):
    type: int
    code: int
    rest: bytes  # the 4 bytes after the checksum: (identifier, sequence) for echo
    body: bytes

    @property
    def echo_ident(self) -> int:
        return int.from_bytes(self.rest[:2], "big")

    @property
    def echo_seq(self) -> int:
        return int.from_bytes(self.rest[2:4], "big")


def echo(type_: int, ident: int, seq: int, data: bytes) -> IcmpMessage:
    """An echo request or reply (either family; pass the family's type)."""
    return IcmpMessage(type_, 0, struct.pack("!HH", ident & 0xFFFF, seq & 0xFFFF), data)


def port_unreachable_v4(offending_ip_packet: bytes) -> IcmpMessage:
    return IcmpMessage(ICMP_DEST_UNREACHABLE, ICMP_CODE_PORT_UNREACHABLE, b"\x00" * 4,
                       offending_ip_packet[:ICMPV4_QUOTE_MAX])


def port_unreachable_v6(offending_ip_packet: bytes) -> IcmpMessage:
    return IcmpMessage(ICMPV6_DEST_UNREACHABLE, ICMPV6_CODE_PORT_UNREACHABLE, b"\x00" * 4,
                       offending_ip_packet[:ICMPV6_QUOTE_MAX])


def _split(data: bytes | bytearray | memoryview) -> IcmpMessage:
    type_, code, _csum, rest = _HDR.unpack_from(data)
    return IcmpMessage(type_, code, bytes(rest), bytes(data[HEADER_LEN:]))


def parse_icmpv4(data: bytes | bytearray | memoryview) -> IcmpMessage:
    """Parse an ICMPv4 message (the IPv4 payload); raise ``IcmpParseError``."""
    if len(data) < HEADER_LEN:
        raise IcmpParseError("icmp_truncated", f"{len(data)} bytes")
    if not verify(data):
        raise IcmpParseError("icmp_checksum")
    return _split(data)


def parse_icmpv6(data: bytes | bytearray | memoryview, src: IPAddress, dst: IPAddress) -> IcmpMessage:
    """Parse an ICMPv6 message (the IPv6 payload), pseudo-header included; raise ``IcmpParseError``."""
    if len(data) < HEADER_LEN:
        raise IcmpParseError("icmp_truncated", f"{len(data)} bytes")
    if not verify(data, pseudo_header_sum(src, dst, NEXT_ICMPV6, len(data))):
        raise IcmpParseError("icmp_checksum")
    return _split(data)


def emit_icmpv4(msg: IcmpMessage) -> bytes:
    raw = _HDR.pack(msg.type, msg.code, 0, msg.rest) + msg.body
    return raw[:2] + checksum(raw).to_bytes(2, "big") + raw[4:]


def emit_icmpv6(msg: IcmpMessage, src: IPAddress, dst: IPAddress) -> bytes:
    raw = _HDR.pack(msg.type, msg.code, 0, msg.rest) + msg.body
    csum = checksum(raw, pseudo_header_sum(src, dst, NEXT_ICMPV6, len(raw)))
    return raw[:2] + csum.to_bytes(2, "big") + raw[4:]
