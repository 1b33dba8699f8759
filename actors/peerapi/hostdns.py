"""The host's resolver, for an exit node's DoH (Go ``HandlePeerDNSQuery`` forwarding to the OS's DNS).

An exit node answers its clients' non-tailnet names as its own host would: with the nameservers of
the ``resolv.conf`` that applies to the calling thread's network namespace. Our threads enter a
namespace with ``setns`` only (no mount namespace), so ``/etc/resolv.conf`` is still the host's;
iproute2's convention (``ip netns exec`` bind-mounts ``/etc/netns/<name>/resolv.conf``) is applied
by finding the named namespace (``/run/netns/<name>``) whose inode is this thread's, as
``ip netns identify`` does. dnspython is the stub: UDP, then TCP if truncated, nameservers in order,
within one overall deadline; every failure is a typed ``HostDnsError``, never an exception the
connection actor does not expect.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query

__all__ = ["HostDnsError", "nameservers", "resolv_conf_path", "resolve"]

MAX_NAMESERVERS = 3  # as glibc's MAXNS


class HostDnsError(Exception):
    """The host's resolver gave no answer (no nameserver configured, all timed out, or junk)."""


def resolv_conf_path() -> Path:
    """``/etc/netns/<name>/resolv.conf`` when this thread is in the named namespace ``<name>`` and
    that file exists, else ``/etc/resolv.conf``."""
    try:
        here = os.stat("/proc/thread-self/ns/net").st_ino
        for entry in os.scandir("/run/netns"):
            if os.stat(entry.path).st_ino == here:
                candidate = Path("/etc/netns") / entry.name / "resolv.conf"
                if candidate.exists():
                    return candidate
                break
    except OSError:
        pass
    return Path("/etc/resolv.conf")


def nameservers(path: Path | None = None) -> list[str]:
    """The ``nameserver`` lines of ``path`` (the namespace's resolv.conf), at most ``MAX_NAMESERVERS``."""
    try:
        text = (path or resolv_conf_path()).read_text(errors="replace")
    except OSError as e:
        raise HostDnsError(f"cannot read resolv.conf: {e.strerror}") from None
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append(parts[1].split("%", 1)[0])
    return out[:MAX_NAMESERVERS]


def resolve(query: bytes, timeout: float = 5.0, servers: list[str] | None = None) -> bytes:
    """The host resolver's answer to the DNS message ``query`` (wire format), with its ID kept."""
    try:
        q = dns.message.from_wire(query)
    except dns.exception.DNSException as e:
        raise HostDnsError(f"malformed query: {type(e).__name__}") from None
    servers = nameservers() if servers is None else servers
    if not servers:
        raise HostDnsError("no nameserver in resolv.conf")
    deadline = time.monotonic() + timeout
    last = "no answer"
    for ns in servers:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            r = dns.query.udp(q, ns, timeout=min(left, timeout / len(servers) + 0.5), ignore_unexpected=True)
            if r.flags & dns.flags.TC:
                r = dns.query.tcp(q, ns, timeout=max(0.1, deadline - time.monotonic()))
            return r.to_wire()
        except (dns.exception.DNSException, OSError, ValueError) as e:
            last = f"{ns}: {type(e).__name__}"
    raise HostDnsError(f"host resolver failed ({last})")
