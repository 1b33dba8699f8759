"""The 16-byte address form DERP (PeerPresent) and disco (CallMeMaybe, Pong) share: IPv4 as ::ffff:a.b.c.d."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = ["IPAddress", "pack_ip16", "unpack_ip16"]


def pack_ip16(addr: IPAddress) -> bytes:
    if isinstance(addr, ipaddress.IPv4Address):
        return b"\x00" * 10 + b"\xff\xff" + addr.packed
    return addr.packed


def unpack_ip16(b: bytes) -> IPAddress:
    a = ipaddress.IPv6Address(b)
    return a.ipv4_mapped or a
