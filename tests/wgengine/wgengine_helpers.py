"""Packet builders and a simulated link shared by the wgengine tests."""

from __future__ import annotations

import ipaddress
import struct

from pytsnet.netstack.ipv4 import Ipv4Packet, emit_ipv4
from pytsnet.netstack.ipv6 import Ipv6Packet, emit_ipv6
from pytsnet.wire.wireguard.device import Device

TCP, UDP, ICMP4, ICMP6 = 6, 17, 1, 58


def packet(proto: int, src: str, dst: str, sport: int = 0, dport: int = 0, *,
           flags: int = 0x02, icmp_type: int = 8, payload: bytes = b"") -> bytes:
    """An IPv4/IPv6 packet with a transport header the filter reads (checksums are not its business)."""
    if proto == TCP:
        body = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, flags, 65535, 0, 0) + payload
    elif proto in (UDP, 132):
        body = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    elif proto in (ICMP4, ICMP6):
        body = struct.pack("!BBHI", icmp_type, 0, 0, 0) + payload
    else:
        body = payload or b"\x00" * 8
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return emit_ipv4(Ipv4Packet(src=s, dst=d, protocol=proto, payload=body))  # type: ignore[arg-type]
    return emit_ipv6(Ipv6Packet(src=s, dst=d, next_header=proto, payload=body))  # type: ignore[arg-type]


def udp(src: str, dst: str, sport: int = 1000, dport: int = 2000, payload: bytes = b"hi") -> bytes:
    return packet(UDP, src, dst, sport, dport, payload=payload)


class Link:
    """Carries datagrams between named devices; ``drop`` makes it lossy for a while."""

    def __init__(self, devices: dict[bytes, Device]) -> None:
        self.devices = devices  # public raw -> device
        self.drop = False
        self.carried = 0

    def pump(self, now: float, rounds: int = 10) -> None:
        for _ in range(rounds):
            moved = False
            for dev in list(self.devices.values()):
                for peer, data in dev.datagrams_to_send():
                    moved = True
                    if self.drop:
                        continue
                    self.carried += 1
                    self.devices[peer.raw].receive(bytes(data), now, src=b"sim")
            if not moved:
                return
