"""The host LANs an exit node keeps to itself (Go ``interfaceRoutes`` + ``shrinkDefaultRoute``).

Go's exit node removes the prefixes of the host's own interfaces (and keeps the host's own
addresses) from what its default route reaches: clients get the internet, not the exit node's LAN,
unless that LAN is advertised as a subnet route. ``host_lan`` reads them for the calling thread's
network namespace (the device's actor threads live in the node's namespace): IPv4 from the
``SIOCGIFADDR``/``SIOCGIFNETMASK`` ioctls on a socket made here, IPv6 from ``if_inet6``.
Loopback is skipped (the forwarder never reaches it anyway). Read when the data plane is built;
Go re-reads on a link change, we do not (a rebuild does).
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from dataclasses import replace
from pathlib import Path

from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.netstack.config import IPAddress
from pytsnet.netstack.forward import ForwardPolicy, IPNetwork

__all__ = ["host_lan", "with_host_lan"]

log = subsystem_logger("forwarder")

_SIOCGIFADDR, _SIOCGIFNETMASK = 0x8915, 0x891B
_PRIVATE: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))


def _ipv4(sock: socket.socket, name: str) -> tuple[IPNetwork, IPAddress] | None:
    req = struct.pack("256s", name.encode()[:15])
    try:
        addr = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, req)[20:24]
        mask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, req)[20:24]
    except OSError:
        return None  # no IPv4 address on it
    ip = ipaddress.IPv4Address(addr)
    net = ipaddress.IPv4Network(f"{ip}/{ipaddress.IPv4Address(mask)}", strict=False)
    return net, ip


def host_lan() -> tuple[tuple[IPNetwork, ...], tuple[IPAddress, ...]]:
    """(interface prefixes, host addresses) of the calling thread's network namespace."""
    nets: list[IPNetwork] = []
    hosts: list[IPAddress] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            got = _ipv4(sock, name)
            if got is not None and not got[1].is_loopback:
                nets.append(got[0])
                hosts.append(got[1])
    try:
        lines = Path("/proc/thread-self/net/if_inet6").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6:
            continue
        ip6 = ipaddress.IPv6Address(bytes.fromhex(parts[0]))
        if ip6.is_loopback or ip6.is_link_local:
            continue  # link-local is never forwarded at all
        nets.append(ipaddress.IPv6Network(f"{ip6}/{int(parts[2], 16)}", strict=False))
        hosts.append(ip6)
    return tuple(dict.fromkeys(nets)), tuple(dict.fromkeys(hosts))


def with_host_lan(policy: ForwardPolicy) -> ForwardPolicy:
    """``policy`` with the host's LANs filled in when it offers an exit node (else unchanged)."""
    if not policy.exit_node:
        return policy
    try:
        nets, hosts = host_lan()
    except OSError as e:  # cannot tell the LAN: fail closed, every private range counts as one
        log.warning("exit node: cannot read the host's interfaces (%s); excluding all private ranges", e)
        return replace(policy, lan=_PRIVATE, lan_hosts=())
    return replace(policy, lan=nets, lan_hosts=hosts)
