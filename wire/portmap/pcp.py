"""PCP (RFC 6887): the ANNOUNCE probe and the MAP opcode for one UDP port.

Go ``net/portmapper/pcp.go``: a 24-byte common header (version 2, opcode, lifetime, our address as
16 bytes) and a 36-byte MAP body (a 96-bit nonce, protocol 17, internal and suggested external port,
suggested external address). A reply echoes the nonce; the epoch lets a client notice a gateway that
lost its state. A lifetime of 0 deletes the mapping (it must carry the same nonce).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from pytsnet.wire.portmap import PortmapParseError

__all__ = ["MAP_LIFETIME", "PORT", "VERSION", "PcpMapResponse", "PcpResponse", "announce_request",
           "map_request", "parse_map_response", "parse_response"]

PORT = 5351
VERSION = 2
MAP_LIFETIME = 7200  # Go pcpMapLifetimeSec (taken from NAT-PMP)
OP_ANNOUNCE, OP_MAP, OP_REPLY = 0, 1, 0x80
PROTO_UDP = 17
RESULT_NAMES = {0: "ok", 1: "unsupported version", 2: "not authorized", 3: "malformed request",
                4: "unsupported opcode", 5: "unsupported option", 6: "malformed option",
                7: "network failure", 8: "no resources", 9: "unsupported protocol",
                10: "user exceeded quota", 11: "cannot provide external", 12: "address mismatch",
                13: "excessive remote peers"}
_WILDCARD = ipaddress.IPv6Address("::ffff:0.0.0.0")  # Go's wildcardIP (0.0.0.0) as 16 bytes

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _as16(ip: IP) -> bytes:
    if isinstance(ip, ipaddress.IPv4Address):
        return b"\0" * 10 + b"\xff\xff" + ip.packed
    return ip.packed


def _from16(b: bytes) -> IP:
    ip = ipaddress.IPv6Address(b)
    return ip.ipv4_mapped or ip


@dataclass(frozen=True)
class PcpResponse:
    opcode: int
    result: int
    lifetime: int
    epoch: int


@dataclass(frozen=True)
class PcpMapResponse(PcpResponse):
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_ip: IP


def announce_request(my_ip: IP) -> bytes:
    """The probe Go sends: ANNOUNCE with lifetime 0 (a PCP server replies; a NAT-PMP-only one does not)."""
    return struct.pack("!BBHI", VERSION, OP_ANNOUNCE, 0, 0) + _as16(my_ip)


def map_request(my_ip: IP, nonce: bytes, local_port: int, prev_port: int, lifetime: int,
                prev_external: IP | None = None) -> bytes:
    """MAP UDP ``local_port`` from ``my_ip`` (as the gateway sees it: a mismatch is refused)."""
    if len(nonce) != 12:
        raise ValueError("a PCP nonce is 12 bytes")
    header = struct.pack("!BBHI", VERSION, OP_MAP, 0, lifetime) + _as16(my_ip)
    body = nonce + struct.pack("!B3xHH", PROTO_UDP, local_port, prev_port)
    ext = _as16(prev_external) if prev_external is not None else _WILDCARD.packed
    return header + body + ext


def parse_response(pkt: bytes) -> PcpResponse:
    """The common reply header; ``PortmapParseError`` unless it is a PCP v2 reply."""
    if len(pkt) < 24:
        raise PortmapParseError(f"PCP reply of {len(pkt)} bytes (at least 24)")
    if len(pkt) > 1100:
        raise PortmapParseError(f"PCP reply of {len(pkt)} bytes (at most 1100)")
    if pkt[0] != VERSION:
        raise PortmapParseError(f"PCP reply of version {pkt[0]}")
    if not pkt[1] & OP_REPLY:
        raise PortmapParseError("PCP message is a request, not a reply")
    lifetime, epoch = struct.unpack_from("!II", pkt, 4)
    return PcpResponse(pkt[1], pkt[3], lifetime, epoch)


def parse_map_response(pkt: bytes) -> PcpMapResponse:
    """A MAP reply (any result code: the caller checks ``result``)."""
    head = parse_response(pkt)
    if head.opcode != OP_REPLY | OP_MAP:
        raise PortmapParseError(f"PCP opcode {head.opcode:#x} is not a MAP reply")
    if len(pkt) < 60:
        raise PortmapParseError(f"PCP MAP reply of {len(pkt)} bytes (at least 60)")
    body = pkt[24:60]
    proto, internal, external = body[12], *struct.unpack_from("!HH", body, 16)
    return PcpMapResponse(head.opcode, head.result, head.lifetime, head.epoch, nonce=bytes(body[:12]),
                          protocol=proto, internal_port=internal, external_port=external,
                          external_ip=_from16(bytes(body[20:36])))
