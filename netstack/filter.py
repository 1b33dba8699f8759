"""The inbound packet filter, as Tailscale's wgengine/filter applies it (filter.go, match.go).

Rules are plain data (``Rule``: source prefixes, destination prefix + port ranges, protocols); the
conversion from the netmap's ``tailcfg.FilterRule`` lives with the engine, not here. ``Filter``
reads only the headers it needs from each packet (``summarize``), so the hot path copies nothing.

Inbound semantics (``runIn4``/``runIn6``): the destination must be one of our own addresses;
TCP SYNs need a rule (non-SYN TCP is return traffic and passes); UDP passes if it answers a flow
we sent (bounded LRU, like Go's 512-entry ``flowtrack`` cache) or a rule allows it; ICMP echo
replies and errors always pass, other ICMP needs a rule reaching the destination IP; TSMP passes;
other protocols need a rule allowing all ports. ``Filter(None, ...)`` is the state before any
filter arrived: no rule matches, so nothing new comes in, but replies to our own flows do.
IPv6 inbound is dropped unless enabled. Fragments are dropped (our netstack refuses them anyway).

``PeerApiAccess`` (21h, Tailnet Lock's ``UnsignedPeerAPIOnly``): TCP from its sources to its port on
its destinations (our own addresses) passes without a rule, as tstun lets a SYN to the peerAPI port
past Go's filter; only TCP (ICMP and the rest still need a rule), only for the sources it names.

Per packet (every inbound and outbound tunnel packet passes here): ``summarize`` reads the IPv4
header with one ``struct`` call into a NamedTuple; our own addresses are a set of (family, int)
host keys; and the verdict of the rule walk, a pure function of the rules and (family, protocol,
source, destination, destination port), is memoised per ``Filter`` in a bounded dict. A new netmap
builds a new ``Filter`` (``with_rules``), so the memo can never outlive the rules it came from
(fail closed: a revoked rule stops matching with the very next packet). Go's filter keeps no such
memo; it only changes the cost, never a verdict.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pytsnet.netstack.errors import ParseError

PROTO_ICMPV4 = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132
PROTO_TSMP = 99
DEFAULT_PROTOS = frozenset({PROTO_TCP, PROTO_UDP, PROTO_ICMPV4, PROTO_ICMPV6})
"""What an empty ``IPProto`` list means (filter/tailcfg.go ``defaultProtos``)."""

CONNTRACK_SIZE = 512  # filter.go: lruMax
TCP_SYN = 0x02
TCP_ACK = 0x10
_ICMPV4_OK = frozenset({0, 3, 4, 5, 11, 12})  # echo reply and the error types
_ICMPV6_OK = frozenset({129, 1, 2, 3, 4})
_PORTS = struct.Struct("!HH")
_V4 = struct.Struct("!B5xB2xB2xII")  # version/IHL, flags/fragment-high, protocol, source, destination
VERDICT_CACHE_SIZE = 4096
_TRACKED = frozenset({PROTO_UDP, PROTO_SCTP})
_U32 = struct.Struct("!I")
_new = tuple.__new__
_from_bytes = int.from_bytes

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class FilterParseError(ParseError):
    """A packet whose headers the filter cannot read (dropped as junk)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("filter_junk", detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PortRange:
    first: int = 0
    last: int = 65535

    def contains(self, port: int) -> bool:
        return self.first <= port <= self.last


ALL_PORTS = PortRange(0, 65535)


@dataclass(frozen=True, slots=True)
class NetPortRange:
    net: IPNetwork
    ports: PortRange = ALL_PORTS


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``filtertype.Match``: any source in ``srcs`` may reach any ``dsts`` over ``protos``."""

    srcs: tuple[IPNetwork, ...]
    dsts: tuple[NetPortRange, ...]
    protos: frozenset[int] = DEFAULT_PROTOS


@dataclass(frozen=True, slots=True)
class PeerApiAccess:
    """TCP from ``srcs`` to ``port`` on ``dsts`` (our addresses) passes without a rule."""

    srcs: tuple[IPNetwork, ...]
    dsts: tuple[IPNetwork, ...]
    port: int


class PacketSummary(NamedTuple):
    """The header fields the filter acts on; addresses as integers (the family is ``version``)."""

    version: int
    proto: int
    src: int
    dst: int
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    icmp_type: int = -1


def summarize(packet: bytes | bytearray | memoryview) -> PacketSummary:
    """Read the IP and transport headers; ``FilterParseError`` for anything unreadable."""
    n = len(packet)
    if n < 1:
        raise FilterParseError("empty")
    version = packet[0] >> 4
    if version == 4:
        if n < 20:
            raise FilterParseError("short ipv4 header")
        vihl, frag_hi, proto, src, dst = _V4.unpack_from(packet)
        ihl = (vihl & 0x0F) * 4
        if ihl < 20 or ihl > n:
            raise FilterParseError("bad ipv4 header length")
        if frag_hi & 0x3F or packet[7]:  # MF or a fragment offset
            raise FilterParseError("fragment")
        off = ihl
    elif version == 6:
        if n < 40:
            raise FilterParseError("short ipv6 header")
        proto = packet[6]
        src = _from_bytes(packet[8:24], "big")
        dst = _from_bytes(packet[24:40], "big")
        off = 40
    else:
        raise FilterParseError(f"ip version {version}")
    if proto == PROTO_TCP:
        if n < off + 14:
            raise FilterParseError("short transport header")
        sport, dport = _PORTS.unpack_from(packet, off)
        return _new(PacketSummary, (version, proto, src, dst, sport, dport, packet[off + 13], -1))
    if proto in (PROTO_UDP, PROTO_SCTP):
        if n < off + 4:
            raise FilterParseError("short transport header")
        sport, dport = _PORTS.unpack_from(packet, off)
        return _new(PacketSummary, (version, proto, src, dst, sport, dport, 0, -1))
    if proto in (PROTO_ICMPV4, PROTO_ICMPV6):
        if n < off + 4:
            raise FilterParseError("short icmp header")
        return _new(PacketSummary, (version, proto, src, dst, 0, 0, 0, packet[off]))
    return _new(PacketSummary, (version, proto, src, dst, 0, 0, 0, -1))


class _CompiledNet:
    __slots__ = ("mask", "network", "version")

    def __init__(self, net: IPNetwork) -> None:
        self.version = net.version
        self.network = int(net.network_address)
        self.mask = int(net.netmask)

    def contains(self, version: int, addr: int) -> bool:
        return version == self.version and addr & self.mask == self.network


class _CompiledRule:
    __slots__ = ("dsts", "protos", "srcs")

    def __init__(self, rule: Rule) -> None:
        self.protos = rule.protos
        self.srcs = [_CompiledNet(s) for s in rule.srcs]
        self.dsts = [(_CompiledNet(d.net), d.ports.first, d.ports.last) for d in rule.dsts]

    def src_ok(self, p: PacketSummary) -> bool:
        return any(s.contains(p.version, p.src) for s in self.srcs)


class Filter:
    """Decides inbound packets (``run_in``) and records outbound flows (``run_out``)."""

    def __init__(
        self,
        rules: Sequence[Rule] | None,
        local: Iterable[IPNetwork],
        *,
        ipv6: bool = False,
        conntrack_size: int = CONNTRACK_SIZE,
        peerapi: PeerApiAccess | None = None,
    ) -> None:
        self.has_filter = rules is not None
        self._rules = [_CompiledRule(r) for r in rules or ()]
        self.peerapi = peerapi
        self._peerapi = None if peerapi is None else (
            [_CompiledNet(n) for n in peerapi.srcs], [_CompiledNet(n) for n in peerapi.dsts], peerapi.port)
        local = list(local)
        # Host prefixes (our tailnet addresses) as set keys; any wider prefix is walked.
        self._local_hosts = frozenset((n.version, int(n.network_address)) for n in local
                                      if n.prefixlen == n.max_prefixlen)
        self._local = [_CompiledNet(n) for n in local if n.prefixlen != n.max_prefixlen]
        self._verdicts: dict[tuple[int, int, int, int, int], bool] = {}
        self.ipv6 = ipv6
        self._conntrack_size = conntrack_size
        self._flows: OrderedDict[tuple[int, int, int, int, int, int], None] = OrderedDict()
        self.drops: Counter[str] = Counter()
        self.accepted = 0

    def with_rules(self, rules: Sequence[Rule] | None, local: Iterable[IPNetwork], *,
                   peerapi: PeerApiAccess | None = None) -> Filter:
        """A new filter for a new netmap that keeps this one's outbound flows and counters."""
        f = Filter(rules, local, ipv6=self.ipv6, conntrack_size=self._conntrack_size, peerapi=peerapi)
        f._flows = self._flows
        f.drops = self.drops
        f.accepted = self.accepted
        return f

    # --- outbound ----------------------------------------------------------------------------

    def run_out(self, packet: bytes | bytearray | memoryview) -> None:
        """Outbound packets always pass; UDP/SCTP flows are remembered so their replies pass."""
        if len(packet) >= 20 and packet[0] >> 4 == 4 and packet[9] not in _TRACKED:
            return  # the bulk of outbound traffic (TCP): nothing to remember, nothing to parse
        try:
            p = summarize(packet)
        except FilterParseError:
            return
        if p.proto in (PROTO_UDP, PROTO_SCTP):
            key = (p.version, p.proto, p.src, p.sport, p.dst, p.dport)
            flows = self._flows
            if key in flows:
                flows.move_to_end(key)
            else:
                flows[key] = None
                if len(flows) > self._conntrack_size:
                    flows.popitem(last=False)

    def flow_count(self) -> int:
        return len(self._flows)

    # --- inbound -----------------------------------------------------------------------------

    def run_in(self, packet: bytes | bytearray | memoryview) -> bool:
        """True if the packet may reach the local stack; a drop is counted under its reason."""
        if (len(packet) >= 40 and packet[0] == 0x45 and packet[9] == PROTO_TCP
                and not (packet[6] & 0x3F or packet[7]) and (not packet[33] & TCP_SYN or packet[33] & TCP_ACK)
                and (4, _U32.unpack_from(packet, 16)[0]) in self._local_hosts):
            # The bulk of inbound traffic: IPv4 without options, TCP non-SYN, to one of our
            # addresses. ``check`` would accept it on the same reads ("tcp non-syn").
            self.accepted += 1
            return True
        try:
            p = summarize(packet)
        except FilterParseError as e:
            self.drops["fragment" if e.detail == "fragment" else "junk"] += 1
            return False
        reason = self.check(p)
        if reason is None:
            self.accepted += 1
            return True
        self.drops[reason] += 1
        return False

    def check(self, p: PacketSummary) -> str | None:
        """None to accept, else the drop reason."""
        if p.version == 6 and not self.ipv6:
            return "ipv6_disabled"
        if (p.version, p.dst) not in self._local_hosts and not any(
                n.contains(p.version, p.dst) for n in self._local):
            return "destination_not_local"
        proto = p.proto
        if proto == PROTO_TCP:
            if not (p.tcp_flags & TCP_SYN) or p.tcp_flags & TCP_ACK:
                return None  # non-SYN: return traffic of a connection (filter.go "tcp non-syn")
            return None if self._match_memo(p) else "no_rule"
        if proto in (PROTO_UDP, PROTO_SCTP):
            if (p.version, proto, p.dst, p.dport, p.src, p.sport) in self._flows:
                return None
            return None if self._match_memo(p) else "no_rule"
        if proto in (PROTO_ICMPV4, PROTO_ICMPV6):
            ok = _ICMPV4_OK if proto == PROTO_ICMPV4 else _ICMPV6_OK
            if p.icmp_type in ok:
                return None
            return None if self._match_ips_only(p) else "no_rule"
        if proto == PROTO_TSMP:
            return None
        return None if self._match_all_ports(p) else "unknown_proto"

    def _match_memo(self, p: PacketSummary) -> bool:
        """``_match``, memoised for this filter's rules (bounded: cleared when full)."""
        key = (p.version, p.proto, p.src, p.dst, p.dport)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._match(p)
            if len(self._verdicts) >= VERDICT_CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    def _match(self, p: PacketSummary) -> bool:
        for r in self._rules:
            if p.proto not in r.protos or not r.src_ok(p):
                continue
            for net, first, last in r.dsts:
                if net.contains(p.version, p.dst) and first <= p.dport <= last:
                    return True
        pa = self._peerapi  # TCP and UDP come here (memoised); only TCP to the port may pass
        return pa is not None and p.proto == PROTO_TCP and p.dport == pa[2] \
            and any(n.contains(p.version, p.dst) for n in pa[1]) \
            and any(n.contains(p.version, p.src) for n in pa[0])

    def _match_ips_only(self, p: PacketSummary) -> bool:
        for r in self._rules:
            if not r.src_ok(p):
                continue
            if any(net.contains(p.version, p.dst) for net, _, _ in r.dsts):
                return True
        return False

    def _match_all_ports(self, p: PacketSummary) -> bool:
        for r in self._rules:
            if p.proto not in r.protos or not r.src_ok(p):
                continue
            for net, first, last in r.dsts:
                if first == 0 and last == 65535 and net.contains(p.version, p.dst):
                    return True
        return False
