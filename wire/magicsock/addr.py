"""Text form of UDP endpoints (Go ``netip.AddrPort.String``): ``1.2.3.4:5`` and ``[::1]:5``.

Messages carry endpoints as text so they round-trip through JSON; the cores use ``(ip, port)`` tuples.
"""

from __future__ import annotations

import ipaddress

from pytsnet.wire.disco import AddrPort
from pytsnet.wire.errors import ParseError

DERP_MAGIC_IP = ipaddress.IPv4Address("127.3.3.40")  # tailcfg.DerpMagicIP: a DERP region as an "address"


class AddrParseError(ParseError):
    """Not an ``ip:port`` / ``[ip]:port`` string."""


def format_addr(ap: AddrPort) -> str:
    ip, port = ap
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def parse_addr(s: str) -> AddrPort:
    try:
        if s.startswith("["):
            host, _, port = s[1:].partition("]:")
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host)
        else:
            host, _, port = s.rpartition(":")
            ip = ipaddress.IPv4Address(host)
        p = int(port)
    except ValueError:
        raise AddrParseError(f"bad endpoint {s[:64]!r}") from None
    if not 0 <= p <= 0xFFFF:
        raise AddrParseError(f"port out of range in {s[:64]!r}")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, p


def derp_addr(region: int) -> str:
    return f"{DERP_MAGIC_IP}:{region}"
