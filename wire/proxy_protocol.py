"""HAProxy's PROXY protocol headers (v1 text, v2 binary), sans-IO (issue 20h).

Serve's TCP forward writes one before the first byte of a forward when its ``ProxyProtocol`` is 1 or
2, as Go's ``forwardTCPWithProxyProtocol`` does with pires/go-proxyproto: command PROXY, the tailnet
caller as the source, the node's own address of the same family as the destination, no TLVs.
The reader (:func:`parse`) exists for backends and tests; it accepts what the spec allows
(haproxy's proxy-protocol.txt: v1 ≤ 107 bytes with CRLF, ``UNKNOWN``; v2 PROXY/LOCAL, AF_INET/AF_INET6
over STREAM/DGRAM, TLVs skipped) and raises :class:`ProxyProtocolError` for anything else.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from pytsnet.wire.errors import ParseError

__all__ = ["V1_MAX", "V2_SIGNATURE", "ProxyHeader", "ProxyProtocolError", "encode", "encode_v1",
           "encode_v2", "parse"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107
"""The longest v1 line the spec allows, CRLF included (``PROXY UNKNOWN`` with two full IPv6 addresses)."""
_V2_HDR = struct.Struct(">12sBBH")
_V4 = struct.Struct(">4s4sHH")
_V6 = struct.Struct(">16s16sHH")

Addr = tuple[str, int]


class ProxyProtocolError(ParseError):
    """Not a PROXY protocol header the spec allows (or a header we cannot write)."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header: ``src``/``dst`` are None for LOCAL, ``UNKNOWN`` and unsupported families."""

    version: int
    src: Addr | None
    dst: Addr | None
    local: bool = False


def _family(src: Addr, dst: Addr) -> int:
    try:
        a, b = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    except ValueError as e:
        raise ProxyProtocolError(f"PROXY header: {e}") from None
    if a.version != b.version:
        raise ProxyProtocolError("PROXY header: source and destination must be the same family")
    for _, port in (src, dst):
        if not 0 <= port <= 0xFFFF:
            raise ProxyProtocolError(f"PROXY header: bad port {port}")
    return a.version


def _unmap(addr: Addr) -> Addr:
    """An IPv4-mapped IPv6 source as its IPv4 address (Go's ``Unmap`` before choosing the family)."""
    ip = ipaddress.ip_address(addr[0])
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (str(mapped), addr[1]) if mapped is not None else (str(ip), addr[1])


def encode_v1(src: Addr, dst: Addr) -> bytes:
    """``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`` (addresses in their canonical text)."""
    src, dst = _unmap(src), _unmap(dst)
    fam = _family(src, dst)
    return f"PROXY TCP{fam} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode("ascii")


def encode_v2(src: Addr, dst: Addr) -> bytes:
    """The binary header: signature, ``\\x21`` (v2, PROXY), ``\\x11``/``\\x21`` (TCP over IPv4/IPv6),
    the address block's length, the addresses and ports in network order; no TLVs."""
    src, dst = _unmap(src), _unmap(dst)
    fam = _family(src, dst)
    a, b = ipaddress.ip_address(src[0]).packed, ipaddress.ip_address(dst[0]).packed
    block = (_V4 if fam == 4 else _V6).pack(a, b, src[1], dst[1])
    return _V2_HDR.pack(V2_SIGNATURE, 0x21, 0x11 if fam == 4 else 0x21, len(block)) + block


def encode(version: int, src: Addr, dst: Addr) -> bytes:
    """The header of ``version`` (1 or 2) for a TCP connection from ``src`` to ``dst``."""
    if version == 1:
        return encode_v1(src, dst)
    if version == 2:
        return encode_v2(src, dst)
    raise ProxyProtocolError(f"invalid PROXY protocol version {version}; must be 1 or 2")


def parse(data: bytes) -> tuple[ProxyHeader, int] | None:
    """The header at the start of ``data`` and its length; None if more bytes are needed."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if data:
        raise ProxyProtocolError("not a PROXY protocol header")
    return None


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    if not b"PROXY ".startswith(data[:6]):
        raise ProxyProtocolError("not a PROXY protocol v1 header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError(f"PROXY v1 line longer than {V1_MAX} bytes")
        return None
    try:
        parts = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    if parts[0] != "PROXY" or len(parts) < 2:
        raise ProxyProtocolError("not a PROXY protocol v1 header")
    if parts[1] == "UNKNOWN":
        return ProxyHeader(1, None, None), end + 2
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise ProxyProtocolError(f"PROXY v1: bad protocol or field count: {parts[1][:8]!r}")
    try:
        ips = [ipaddress.ip_address(p) for p in parts[2:4]]
    except ValueError:
        raise ProxyProtocolError("PROXY v1: bad address") from None
    if any(ip.version != int(parts[1][3]) for ip in ips) or any("%" in p for p in parts[2:4]):
        raise ProxyProtocolError("PROXY v1: address family does not match the protocol")
    ports = []
    for p in parts[4:6]:  # decimal without leading zeros (spec: "not have leading zeroes")
        if not (p.isascii() and p.isdigit()) or (len(p) > 1 and p[0] == "0") or int(p) > 0xFFFF:
            raise ProxyProtocolError(f"PROXY v1: bad port {p[:8]!r}")
        ports.append(int(p))
    return ProxyHeader(1, (str(ips[0]), ports[0]), (str(ips[1]), ports[1])), end + 2


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    if not V2_SIGNATURE.startswith(data[:12]):
        raise ProxyProtocolError("not a PROXY protocol v2 header")
    if len(data) < _V2_HDR.size:
        return None
    _, ver_cmd, fam_proto, length = _V2_HDR.unpack_from(data)
    if ver_cmd >> 4 != 2 or ver_cmd & 0xF not in (0, 1):
        raise ProxyProtocolError(f"PROXY v2: bad version/command byte {ver_cmd:#04x}")
    total = _V2_HDR.size + length
    if len(data) < total:
        return None
    if ver_cmd & 0xF == 0:
        return ProxyHeader(2, None, None, local=True), total
    fam, proto = fam_proto >> 4, fam_proto & 0xF
    if proto not in (0, 1, 2) or fam > 3:
        raise ProxyProtocolError(f"PROXY v2: bad family/protocol byte {fam_proto:#04x}")
    layout = {1: _V4, 2: _V6}.get(fam)
    if layout is None or proto == 0:
        return ProxyHeader(2, None, None), total  # UNSPEC or AF_UNIX: addresses not for us
    if length < layout.size:
        raise ProxyProtocolError(f"PROXY v2: address block of {length} bytes is too short")
    a, b, sport, dport = layout.unpack_from(data, _V2_HDR.size)
    return ProxyHeader(2, (str(ipaddress.ip_address(a)), sport), (str(ipaddress.ip_address(b)), dport)), total
