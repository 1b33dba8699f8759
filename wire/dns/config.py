"""What the MagicDNS resolver answers from: names, authoritative suffixes and upstreams, immutable.

Built by the DNS actor from the netmap (``tailcfg.DNSConfig`` plus our and our peers' names and
addresses) and the app's ``Config.fallback_resolvers``. Names are stored lower-case without the
trailing dot. Facts: Go ``net/dns/resolver/tsdns.go`` and ``ipn/ipnlocal/node_backend.go``
(``dnsConfigForNetmap``): see docs/protocol/features.md §1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SERVICE_V4 = ipaddress.IPv4Address("100.100.100.100")
"""Quad-100: the resolver's address inside every node (``tsaddr.TailscaleServiceIP``)."""
SERVICE_V6 = ipaddress.IPv6Address("fd7a:115c:a1e0::53")

DAEMON_NAME = "magicdns.localhost-tailscale-daemon"
"""Go answers this name with the quad-100 addresses."""

REVERSE_ZONES = (*(f"{n}.100.in-addr.arpa" for n in range(64, 128)), "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa")
"""The tailnet's reverse zones (100.64.0.0/10 and fd7a:115c:a1e0::/48): answered here, never forwarded."""


def normalize(name: str) -> str:
    """Lower-case, without the trailing dot (how every name is stored and looked up)."""
    return name.strip().lower().rstrip(".")


def reverse_name(ip: IPAddress) -> str:
    """The PTR name of ``ip`` (normalized)."""
    return normalize(ip.reverse_pointer)


@dataclass(frozen=True)
class Upstream:
    """A resolver a query may be forwarded to: an IP and port, reached over the tailnet; with ``doh_path``
    it is DoH (RFC 8484 POST) on that HTTP port, as an exit node's peerAPI ``/dns-query``."""

    ip: IPAddress
    port: int = 53
    doh_path: str = ""
    """Empty: plain DNS (UDP). Else the DoH path, e.g. ``/dns-query`` (Go ``exitNodeCanProxyDNS``)."""

    @classmethod
    def peerapi_doh(cls, ip: IPAddress, port: int) -> Upstream:
        """An exit node's DoH: ``http://<ip>:<peerapi port>/dns-query`` (Go ``peerAPIBase`` + path)."""
        return cls(ip, port, "/dns-query")

    @classmethod
    def parse(cls, addr: str) -> Upstream:
        """``dnstype.Resolver.Addr``: ``IP``, ``IP:port`` or ``[IPv6]:port``. DoH URLs are refused
        (``ValueError``): the resolver forwards plain DNS only."""
        text = addr.strip()
        if "://" in text:
            raise ValueError(f"DoH resolver {addr!r} is not supported (plain DNS only)")
        try:
            return cls(ipaddress.ip_address(text))
        except ValueError:
            pass
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"resolver address {addr!r}: want IP or IP:port")
        return cls(ipaddress.ip_address(host.strip("[]")), int(port))

    def __str__(self) -> str:
        hostport = f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"
        return f"http://{hostport}{self.doh_path}" if self.doh_path else hostport


@dataclass(frozen=True)
class ResolverConfig:
    """Everything one resolver generation answers from.

    ``hosts``: FQDN → the addresses a query for it returns (the answer set is decided by the builder:
    IPv4, plus IPv6 only when IPv6 is on). ``authoritative``: suffixes answered here and nowhere else
    (the MagicDNS domain, ``Routes`` entries with no resolvers, the reverse zones): an unknown name
    under one is NXDOMAIN. ``routes``: split DNS, suffix → upstreams (longest suffix wins).
    ``fallback``: where every other name goes; empty = NXDOMAIN (fail closed). ``search``: the
    search domains a single-label name is tried under (a tsnet app has no OS resolver to expand
    ``web`` into ``web.<tailnet>``, so the resolver does it)."""

    hosts: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    authoritative: tuple[str, ...] = ()
    routes: Mapping[str, tuple[Upstream, ...]] = field(default_factory=dict)
    fallback: tuple[Upstream, ...] = ()
    search: tuple[str, ...] = ()
    ipv6: bool = False
    ttl: int = 600
    """Seconds (Go's ``defaultTTL``)."""

    def __post_init__(self) -> None:
        hosts = {normalize(k): tuple(v) for k, v in self.hosts.items()}
        object.__setattr__(self, "hosts", MappingProxyType(hosts))
        routes = {normalize(k): tuple(v) for k, v in self.routes.items()}
        object.__setattr__(self, "routes", MappingProxyType(routes))
        object.__setattr__(self, "authoritative", tuple(dict.fromkeys(
            [*(normalize(s) for s in self.authoritative if normalize(s)), *REVERSE_ZONES])))
        object.__setattr__(self, "search", tuple(normalize(s) for s in self.search if normalize(s)))
        ptr: dict[str, str] = {}
        for name, addrs in hosts.items():
            for ip in addrs:
                ptr.setdefault(reverse_name(ip), name)
        object.__setattr__(self, "_ptr", MappingProxyType(ptr))

    @property
    def ptr(self) -> Mapping[str, str]:
        """Reverse name → FQDN, for every address in ``hosts`` (the first name owning it wins)."""
        got: Mapping[str, str] = self._ptr  # type: ignore[attr-defined]
        return got

    def authoritative_for(self, name: str) -> bool:
        return any(_under(name, s) for s in self.authoritative)

    def route_for(self, name: str) -> tuple[Upstream, ...] | None:
        """The upstreams of the longest ``routes`` suffix containing ``name`` (None: no route)."""
        best: str | None = None
        for suffix in self.routes:
            if _under(name, suffix) and (best is None or len(suffix) > len(best)):
                best = suffix
        return None if best is None else self.routes[best]


def _under(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def addresses(texts: Iterable[str]) -> tuple[IPAddress, ...]:
    """Addresses from ``ip`` or ``ip/bits`` strings (netmap ``Addresses``)."""
    return tuple(ipaddress.ip_interface(t).ip for t in texts)
