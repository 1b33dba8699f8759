"""NAT-PMP (RFC 6886): the external-address and UDP-mapping requests and their replies.

Go ``net/portmapper/portmapper.go``: one request for the public address, one for the mapping (a
lifetime of 0 deletes it), both to the gateway's port 5351.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from pytsnet.wire.portmap import PortmapParseError

__all__ = ["LIFETIME_DELETE", "MAP_LIFETIME", "PORT", "VERSION", "PmpResponse", "external_address_request",
           "map_udp_request", "parse_response"]

PORT = 5351
VERSION = 0
MAP_LIFETIME = 7200  # Go pmpMapLifetimeSec: RFC 6886's recommended two hours
LIFETIME_DELETE = 0
OP_PUBLIC_ADDR, OP_MAP_UDP, OP_REPLY = 0, 1, 0x80
RESULT_NAMES = {0: "ok", 1: "unsupported version", 2: "not authorized", 3: "network failure",
                4: "out of resources", 5: "unsupported opcode"}


@dataclass(frozen=True)
class PmpResponse:
    opcode: int  # the request's opcode | 0x80
    result: int  # 0: success (RESULT_NAMES)
    epoch: int  # seconds since the gateway's mapping table started (a drop: it rebooted)
    public_ip: ipaddress.IPv4Address | None = None  # OP_PUBLIC_ADDR replies (None: 0.0.0.0)
    internal_port: int = 0  # OP_MAP_UDP replies
    external_port: int = 0
    lifetime: int = 0


def external_address_request() -> bytes:
    return bytes((VERSION, OP_PUBLIC_ADDR))


def map_udp_request(local_port: int, prev_port: int, lifetime: int) -> bytes:
    """Map UDP ``local_port``; ``prev_port`` is the external port we would like (0: any)."""
    return struct.pack("!BBHHHI", VERSION, OP_MAP_UDP, 0, local_port, prev_port, lifetime)


def parse_response(pkt: bytes) -> PmpResponse:
    """A reply to either request; anything else raises ``PortmapParseError``."""
    if len(pkt) < 12:
        raise PortmapParseError(f"NAT-PMP reply of {len(pkt)} bytes (at least 12)")
    if pkt[0] != VERSION:
        raise PortmapParseError(f"NAT-PMP reply of version {pkt[0]}")
    op, result, epoch = pkt[1], *struct.unpack_from("!HI", pkt, 2)
    if op == OP_REPLY | OP_MAP_UDP:
        if len(pkt) != 16:
            raise PortmapParseError(f"NAT-PMP map reply of {len(pkt)} bytes (16)")
        internal, external, lifetime = struct.unpack_from("!HHI", pkt, 8)
        return PmpResponse(op, result, epoch, internal_port=internal, external_port=external,
                           lifetime=lifetime)
    if op == OP_REPLY | OP_PUBLIC_ADDR:
        if len(pkt) != 12:
            raise PortmapParseError(f"NAT-PMP address reply of {len(pkt)} bytes (12)")
        ip = ipaddress.IPv4Address(pkt[8:12])
        return PmpResponse(op, result, epoch, public_ip=None if ip.is_unspecified else ip)
    if op & OP_REPLY:  # a reply to an opcode we never send (an error result echoes it)
        return PmpResponse(op, result, epoch)
    raise PortmapParseError(f"NAT-PMP opcode {op:#x} is not a reply")
