"""The IPv4 addresses of this thread's network namespace's interfaces: magicsock's local endpoints.

Go's magicsock offers every local interface address (``netmon.LocalAddresses``) with its port when
its socket is bound to the unspecified address, so two peers behind one NAT find each other on their
LAN without the router hairpinning. Read per netcheck report (a link change shows by the next one)
with the ``SIOCGIFADDR`` ioctl on a socket made here; the actors' threads live in the node's
namespace, so it is the node's interfaces that are read. Loopback and link-local are skipped.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

__all__ = ["local_ipv4"]

_SIOCGIFADDR = 0x8915


def local_ipv4() -> tuple[ipaddress.IPv4Address, ...]:
    """Each interface's primary IPv4 address (SIOCGIFADDR), minus loopback and link-local, in order."""
    out: list[ipaddress.IPv4Address] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # down, or no IPv4 address
            ip = ipaddress.IPv4Address(raw[20:24])
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                out.append(ip)
    return tuple(dict.fromkeys(out))
