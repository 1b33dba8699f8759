"""tailcfg ``FilterRule`` -> ``netstack.filter.Rule`` (filter/tailcfg.go, ``MatchesFromFilterRules``).

IP-set strings: ``"*"`` (every IPv4 and IPv6 address), one IP, a CIDR (host bits must be zero), an
inclusive ``"a-b"`` range (covered by its CIDR blocks). ``"cap:…"`` sources match by node capability,
which the packet path does not evaluate, so they admit nobody here. Like Go, a rule with the
deprecated ``SrcBits`` or a ``Bits`` field rejects the whole filter (``FilterRuleError``), and the
engine then falls back to no filter (fail closed).

Tailnet Lock's ``UnsignedPeerAPIOnly`` carve-out (21h, Go ``packetFilterPermitsUnlockedNodes`` and
tstun's peerAPI accept): such a peer is admitted unsigned but may reach only our peerAPI. A filter
with any rule whose sources overlap such a peer's AllowedIPs and that has destinations is control
trying to give it network access: the WHOLE filter is dropped (nothing new comes in) and the node
shows Go's ``invalid-packet-filter`` health text (``INVALID_PACKET_FILTER``). Go lets every peer's
SYN to the peerAPI port past its filter; ours keeps ordinary peers behind the filter (docs/security.md,
"The peerAPI") and lets only the unsigned peers' AllowedIPs open TCP to our addresses on the peerAPI
port (``confine_unlocked`` → ``netstack.filter.PeerApiAccess``; ICMP and the rest still need a rule).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pytsnet.netstack.filter import DEFAULT_PROTOS, NetPortRange, PeerApiAccess, PortRange, Rule

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


# -- unsigned peerAPI-only (21h) ------------------------------------------------------------------

INVALID_PACKET_FILTER = ("The coordination server sent an invalid packet filter permitting traffic to "
                         "unlocked nodes; rejecting all packets for safety")
"""Go's ``invalidPacketFilterWarnable`` text (code ``invalid-packet-filter``), word for word."""


class UnlockedCandidate(Protocol):
    """What the check reads of a peer (``messages.peers.PeerInfo`` has both)."""

    @property
    def unsigned_peer_api_only(self) -> bool: ...

    @property
    def allowed_ips(self) -> Sequence[str]: ...


def unlocked_allowed_ips(peers: Iterable[UnlockedCandidate]) -> list[str]:
    """Control's AllowedIPs of the ``UnsignedPeerAPIOnly`` peers (not only addresses, as Go)."""
    return [a for p in peers if p.unsigned_peer_api_only for a in p.allowed_ips]


def _networks(prefixes: Iterable[str]) -> list[IPNetwork] | None:
    """Parsed prefixes; None if one does not parse (the caller then fails closed)."""
    try:
        return [ipaddress.ip_network(a, strict=False) for a in prefixes]
    except ValueError:
        return None


def rules_permit(unlocked: Sequence[str], rules: Iterable[Rule]) -> bool:
    """Some rule with destinations has a source overlapping ``unlocked`` (an unparsable prefix: True)."""
    if not unlocked:
        return False
    nets = _networks(unlocked)
    if nets is None:
        return True  # Go: "Shouldn't happen, but if it does, fail closed."
    return any(r.dsts and any(s.version == n.version and s.overlaps(n) for s in r.srcs for n in nets)
               for r in rules)


def packet_filter_permits_unlocked_nodes(peers: Iterable[UnlockedCandidate], rules: Iterable[Rule]) -> bool:
    """Go's ``packetFilterPermitsUnlockedNodes``: the filter would let an unsigned peerAPI-only
    peer's AllowedIPs reach some destination."""
    return rules_permit(unlocked_allowed_ips(peers), rules)


def confine_unlocked(rules: list[Rule] | None, unlocked: Sequence[str], local: Sequence[IPNetwork],
                     peerapi_port: int) -> tuple[list[Rule] | None, PeerApiAccess | None, bool]:
    """The rules the engine installs, the unlocked peers' peerAPI access, and whether the netmap's
    filter was refused for letting them in.

    A filter that lets an unlocked peer in is replaced by none (``[]``: deny all new inbound, replies to
    our own flows still pass). With a filter in force and a peerAPI, the unlocked peers may open TCP to
    our peerAPI port on our own host addresses (tstun's peerAPI accept, for them only). No filter yet
    (``None``) stays None, with no access: nothing comes in."""
    if rules is None:
        return None, None, False
    invalid = rules_permit(unlocked, rules)
    nets = _networks(unlocked) if unlocked and 0 < peerapi_port < 65536 else None
    hosts = tuple(n for n in local if n.prefixlen == n.max_prefixlen)
    access = PeerApiAccess(tuple(nets), hosts, peerapi_port) if nets and hosts else None
    return ([] if invalid else rules), access, invalid


def invalid_packet_filter_health(peers: Iterable[UnlockedCandidate],
                                 packet_filter: Iterable[Any] | None) -> str | None:
    """The health text for status (``INVALID_PACKET_FILTER``) when the engine drops this netmap filter
    for letting an unlocked peer in; None otherwise (no filter, or one refused for its own reasons)."""
    if packet_filter is None:
        return None
    try:
        rules = rules_from_tailcfg(packet_filter)
    except FilterRuleError:
        return None
    return INVALID_PACKET_FILTER if packet_filter_permits_unlocked_nodes(peers, rules) else None


def filter_in_force(peers: Iterable[UnlockedCandidate], packet_filter: list[Any] | None) -> list[Any] | None:
    """The netmap's filter as the engine applies it: none (``[]``) when it lets an unlocked peer in,
    so capabilities and rules read from it elsewhere (the peerAPI's) grant nothing either."""
    return [] if invalid_packet_filter_health(peers, packet_filter) else packet_filter
