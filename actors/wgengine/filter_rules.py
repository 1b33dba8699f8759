"""tailcfg ``FilterRule`` -> ``netstack.filter.Rule`` (filter/tailcfg.go, ``MatchesFromFilterRules``).

IP-set strings: ``"*"`` (every IPv4 and IPv6 address), one IP, a CIDR (host bits must be zero), an
inclusive ``"a-b"`` range (covered by its CIDR blocks). ``"cap:…"`` sources match by node capability,
which the packet path does not evaluate, so they admit nobody here. Like Go, a rule with the
deprecated ``SrcBits`` or a ``Bits`` field rejects the whole filter (``FilterRuleError``), and the
engine then falls back to no filter (fail closed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from pytsnet.netstack.filter import DEFAULT_PROTOS, NetPortRange, PortRange, Rule

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_ALL = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


class FilterRuleError(ValueError):
    """A FilterRule that this client must refuse (Go returns an error for the whole filter)."""


def parse_ip_set(text: str) -> tuple[IPNetwork, ...]:
    """The prefixes an IP-set string denotes (``parseIPSet``)."""
    if text == "*":
        return _ALL
    if text.startswith("cap:"):
        return ()
    try:
        if "-" in text:
            a, b = (ipaddress.ip_address(x) for x in text.split("-", 1))
            if a.version != b.version or int(b) < int(a):
                raise FilterRuleError(f"invalid IP range {text!r}")
            return tuple(ipaddress.summarize_address_range(a, b))
        if "/" in text:
            return (ipaddress.ip_network(text, strict=True),)
        addr = ipaddress.ip_address(text)
        return (ipaddress.ip_network(addr),)
    except ValueError as e:
        if isinstance(e, FilterRuleError):
            raise
        raise FilterRuleError(f"invalid IP set {text!r}: {e}") from e


def rules_from_tailcfg(filter_rules: Iterable[Any]) -> list[Rule]:
    """Compile a netmap's PacketFilter; ``FilterRuleError`` if any rule must be refused.

    Takes ``tailcfg.FilterRule`` or ``messages.wgengine.WgFilterRule`` (the same field names)."""
    out: list[Rule] = []
    for fr in filter_rules:
        if fr.SrcBits:
            raise FilterRuleError("unexpected SrcBits; control should not send this to this client version")
        protos = frozenset(p for p in fr.IPProto if 0 <= p <= 255) or DEFAULT_PROTOS
        srcs = tuple(n for s in fr.SrcIPs for n in parse_ip_set(s))
        dsts: list[NetPortRange] = []
        for d in fr.DstPorts:
            if d.Bits is not None:
                raise FilterRuleError("unexpected DstBits; control should not send this to this client")
            if d.IP.startswith("cap:"):
                raise FilterRuleError(f"unexpected capability destination {d.IP!r}")
            ports = PortRange(d.Ports.First, d.Ports.Last)
            dsts.extend(NetPortRange(n, ports) for n in parse_ip_set(d.IP))
        if srcs and dsts:
            out.append(Rule(srcs, tuple(dsts), protos))
    return out
