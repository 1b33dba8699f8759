"""Netmap → ``ResolverConfig``: which names the node answers, and where the rest may go.

Facts (Go ``ipn/ipnlocal/node_backend.go``, ``dnsConfigForNetmap``): every node's FQDN answers with
its addresses (IPv4; IPv6 only when our node has IPv6 on); ``ExtraRecords`` add names; with MagicDNS
on (``Proxied``) the tailnet domain is ours (unknown names under it are NXDOMAIN) and the search
domains make short names work; ``Routes`` with resolvers are split DNS, without them the suffix is
answered locally only. Deliberately left out (fail closed): ``Resolvers`` (control's default
upstreams) and control's ``FallbackResolvers``: only the app's ``Config.fallback_resolvers``
forwards the rest, or, with an exit node selected, only that exit node's peerAPI DoH (``DnsExitNode``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.dns import DnsExitNode, DnsSettings
from pytsnet.messages.peers import PeerInfo
from pytsnet.wire.dns import ResolverConfig, Upstream
from pytsnet.wire.dns.config import IPAddress, addresses, normalize

__all__ = ["resolver_config", "upstreams"]

log = subsystem_logger("dns")


def upstreams(addrs: Iterable[str], where: str) -> tuple[Upstream, ...]:
    """Parsed resolver addresses; an unusable one (DoH, garbage) is skipped with a warning."""
    out = []
    for a in addrs:
        try:
            out.append(Upstream.parse(a))
        except ValueError as e:
            log.warning("%s: skipping resolver: %s", where, e)
    return tuple(out)


def resolver_config(self_node: PeerInfo | None, peers: Iterable[PeerInfo], settings: DnsSettings | None,
                    fallback: Iterable[str] = (), exit_node: DnsExitNode | None = None) -> ResolverConfig:
    """The resolver's view of one netmap (``self_node`` None: not registered yet, only ``fallback``).

    With an exit node selected, the rest goes to its DoH only (Go: the exit node's DoH replaces the
    default resolvers), or nowhere while it has none; split DNS routes stay."""
    s = settings or DnsSettings()
    own = addresses(self_node.addresses) if self_node is not None else ()
    ipv6 = any(a.version == 6 for a in own)

    def answer_set(addrs: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
        return tuple(a for a in addrs if a.version == 4 or ipv6)

    hosts: dict[str, tuple[IPAddress, ...]] = {}
    nodes = [*([self_node] if self_node is not None else []), *peers]
    for n in nodes:
        if n.name:
            hosts[normalize(n.name)] = answer_set(addresses(n.addresses))
    for cd in s.cert_domains:
        if self_node is not None:
            hosts.setdefault(normalize(cd), answer_set(own))
    for r in s.extra_records:
        try:
            ip = ipaddress.ip_address(r.value)
        except ValueError:
            log.warning("ExtraRecords: %r is not an IP address; skipped", r.value)
            continue
        if r.type not in ("", {4: "A", 6: "AAAA"}[ip.version]):
            log.warning("ExtraRecords: %s %s %s does not fit; skipped", r.name, r.type, r.value)
            continue
        if ip.version == 6 and not ipv6:
            continue
        name = normalize(r.name)
        hosts[name] = (*hosts.get(name, ()), ip)
    authoritative: list[str] = []
    search = list(s.domains)
    suffix = normalize(self_node.name).partition(".")[2] if self_node is not None else ""
    if s.proxied and suffix:
        authoritative.append(suffix)
        if suffix not in (normalize(d) for d in search):
            search.append(suffix)
    routes = {}
    for dom, addrs in s.routes.items():
        if addrs:
            routes[dom] = upstreams(addrs, f"split DNS route {dom}")
        else:
            authoritative.append(dom)
    rest = upstreams(fallback, "Config.fallback_resolvers")
    if exit_node is not None and exit_node.selected:
        rest = ()
        if exit_node.ip:
            rest = (Upstream.peerapi_doh(ipaddress.ip_address(exit_node.ip), exit_node.port),)
    return ResolverConfig(hosts=hosts, authoritative=tuple(authoritative), routes=routes,
                          fallback=rest, search=tuple(search), ipv6=ipv6)
