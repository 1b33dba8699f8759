"""Which address families the magicsock UDP socket carries, from ``bind_host`` and ``ipv6`` (24d).

One rule, read by the socket's owner (what to bind) and the StunProber (which STUN servers it can
reach): IPv6 off is IPv4 only, whatever the host says; IPv6 on with a wildcard host is one
dual-stack socket on ``::``; a specific address binds exactly its own family.
"""

from __future__ import annotations

import socket

from pytsnet.messages.magicsock import MagicsockSpawn

__all__ = ["WILDCARDS", "BindPlan", "bind_plan", "udp_families"]

WILDCARDS = frozenset({"", "0.0.0.0", "::"})


class BindPlan:
    """The socket to make: its family, the host to bind, and whether IPV6_V6ONLY is turned off."""

    __slots__ = ("dual", "family", "host")

    def __init__(self, family: int, host: str, dual: bool) -> None:
        self.family, self.host, self.dual = family, host, dual


def udp_families(c: MagicsockSpawn) -> tuple[bool, bool]:
    """(carries IPv4, carries IPv6)."""
    if not c.ipv6:
        return True, False
    if c.bind_host in WILDCARDS:
        return True, True
    return (False, True) if ":" in c.bind_host else (True, False)


def bind_plan(c: MagicsockSpawn) -> BindPlan:
    """IPv6 off: an IPv4 socket (an IPv6 ``bind_host`` is refused with ``ValueError``: ``Config``
    rejects it first); on: dual-stack ``::`` for a wildcard, else the host's own family."""
    if not c.ipv6:
        if ":" in c.bind_host:
            raise ValueError(f"bind_host {c.bind_host!r} is IPv6 but ipv6 is off")
        return BindPlan(socket.AF_INET, c.bind_host or "0.0.0.0", False)
    if c.bind_host in WILDCARDS:
        return BindPlan(socket.AF_INET6, "::", True)
    return BindPlan(socket.AF_INET6 if ":" in c.bind_host else socket.AF_INET, c.bind_host, False)
