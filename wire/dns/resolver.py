"""The MagicDNS resolver core: one DNS query in wire format → a reply, or "forward it" (sans-IO).

``Resolver.handle(query)`` answers from its ``ResolverConfig``: tailnet names (A, and AAAA when IPv6
is on), PTR for tailnet addresses, ``ExtraRecords``, short names under the search domains, NXDOMAIN
inside the authoritative suffixes. Any other name goes to a split-DNS route's upstreams or the
fallback upstreams as a ``Forward`` action (the caller sends it over the tailnet and calls
``complete`` with what came back, or None on timeout); without one it is NXDOMAIN: fail closed, no
name leaves the node unless the app or the tailnet's split DNS says where it goes.

Bad input never raises: an unparseable query gets FORMERR when its header is readable, else it is
dropped and counted. Pending forwards are bounded (``max_pending``; beyond, SERVFAIL).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pytsnet.wire.dns.config import DAEMON_NAME, SERVICE_V4, SERVICE_V6, ResolverConfig, Upstream, normalize

__all__ = ["Forward", "Reply", "Resolver"]

MAX_QUERY = 65535
"""The largest DNS message (TCP's length prefix); anything longer is not a query."""
UDP_DEFAULT_SIZE = 512
"""A UDP answer's size limit without EDNS (RFC 1035); beyond, it is truncated (TC) to move to TCP."""
NOTIMP_TYPES = frozenset({dns.rdatatype.NS, dns.rdatatype.SOA, dns.rdatatype.AXFR, dns.rdatatype.HINFO})
"""What Go's resolver answers NOTIMP for, inside its own names."""


@dataclass(frozen=True)
class Reply:
    """Send ``response`` (a whole DNS message) back to the asker."""

    response: bytes
    rcode: int


@dataclass(frozen=True)
class Forward:
    """Send ``query`` to ``upstreams`` (in order, until one answers), then call ``complete(token, ...)``."""

    token: int
    query: bytes
    upstreams: tuple[Upstream, ...]


@dataclass
class _Pending:
    query: dns.message.Message
    forwarded_id: int
    udp: bool


class Resolver:
    """One resolver: its config (replaced whole by ``reconfigure``), pending forwards and counters."""

    def __init__(self, config: ResolverConfig | None = None, *, max_pending: int = 256) -> None:
        self.config = config or ResolverConfig()
        self.max_pending = max_pending
        self.counters: collections.Counter[str] = collections.Counter()
        """``queries``, ``answers`` and ``rcode_<NAME>``, ``local``, ``forwarded``, ``forward_failed``,
        ``malformed`` (dropped unreadable), ``forward_busy``."""
        self._pending: dict[int, _Pending] = {}
        self._tokens = itertools.count(1)

    def reconfigure(self, config: ResolverConfig) -> None:
        """A new netmap or app config: later queries use it (forwards under way finish as they are)."""
        self.config = config

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- queries -----------------------------------------------------------------------------------
    def handle(self, query: bytes, *, udp: bool = True) -> Reply | Forward | None:
        """The reply to ``query``, a ``Forward`` to perform, or None (unreadable: dropped, counted).
        ``udp``: the answer must fit the asker's UDP size (else it is truncated, TC set)."""
        self.counters["queries"] += 1
        if len(query) < 12 or len(query) > MAX_QUERY:
            self.counters["malformed"] += 1
            return None
        try:
            msg = dns.message.from_wire(query)
        except Exception:  # dnspython raises many kinds for bad input; all mean "not a query"
            return self._formerr(query)
        if msg.flags & dns.flags.QR:
            self.counters["malformed"] += 1  # a response sent to us: never answer it (no reflection)
            return None
        if msg.opcode() != dns.opcode.QUERY:
            return self._answer(self._response(msg, dns.rcode.NOTIMP), msg, udp)
        if len(msg.question) != 1:
            return self._answer(self._response(msg, dns.rcode.FORMERR), msg, udp)
        q = msg.question[0]
        if q.rdclass != dns.rdataclass.IN:
            return self._answer(self._response(msg, dns.rcode.REFUSED), msg, udp)
        local = self._local(msg, q.name, q.rdtype)
        if local is not None:
            self.counters["local"] += 1
            return self._answer(local, msg, udp)
        name = normalize(q.name.to_text())
        upstreams = self.config.route_for(name)
        if upstreams is None:
            upstreams = self.config.fallback
        if not upstreams:
            self.counters["local"] += 1
            return self._answer(self._response(msg, dns.rcode.NXDOMAIN), msg, udp)
        if len(self._pending) >= self.max_pending:
            self.counters["forward_busy"] += 1
            return self._answer(self._response(msg, dns.rcode.SERVFAIL), msg, udp)
        token = next(self._tokens)
        forwarded_id = token & 0xFFFF
        self._pending[token] = _Pending(msg, forwarded_id, udp)
        self.counters["forwarded"] += 1
        return Forward(token, forwarded_id.to_bytes(2, "big") + query[2:], upstreams)

    def complete(self, token: int, response: bytes | None) -> Reply | None:
        """The answer for forward ``token``: ``response`` from an upstream (checked: same ID and
        question, else SERVFAIL), or None (every upstream failed: SERVFAIL). None for an unknown token."""
        p = self._pending.pop(token, None)
        if p is None:
            return None
        got: dns.message.Message | None = None
        if response is not None and len(response) >= 12 and response[:2] == p.forwarded_id.to_bytes(2, "big"):
            try:
                got = dns.message.from_wire(response)
            except Exception:  # an upstream's garbage is its failure, not ours
                got = None
        if got is None or not got.flags & dns.flags.QR or got.question != p.query.question:
            self.counters["forward_failed"] += 1
            return self._answer(self._response(p.query, dns.rcode.SERVFAIL), p.query, p.udp)
        got.id = p.query.id
        return self._answer(got, p.query, p.udp)

    def abandon(self) -> list[int]:
        """Forget every pending forward (the actor restarted its I/O): their tokens."""
        tokens = list(self._pending)
        self._pending.clear()
        return tokens

    # -- local answers -------------------------------------------------------------------------------
    def _local(self, msg: dns.message.Message, qname: dns.name.Name, qtype: dns.rdatatype.RdataType,
               ) -> dns.message.Message | None:
        """The answer from our own names, or None when the name is not ours (forward or NXDOMAIN)."""
        cfg = self.config
        name = normalize(qname.to_text())
        if name == "onion" or name.endswith(".onion"):
            return self._response(msg, dns.rcode.NXDOMAIN)  # RFC 7686
        if qtype == dns.rdatatype.PTR:
            target = cfg.ptr.get(name)
            if target is not None:
                r = self._response(msg, dns.rcode.NOERROR)
                r.answer.append(dns.rrset.from_text(qname, cfg.ttl, "IN", "PTR", target + "."))
                return r
        addrs = cfg.hosts.get(name)
        if addrs is None and name == DAEMON_NAME:
            addrs = (SERVICE_V4, SERVICE_V6) if cfg.ipv6 else (SERVICE_V4,)
        if addrs is None and "." not in name and name:
            for sd in cfg.search:  # a short name: under each search domain, in order
                addrs = cfg.hosts.get(f"{name}.{sd}")
                if addrs is not None:
                    break
        if addrs is not None:
            if qtype in NOTIMP_TYPES:
                return self._response(msg, dns.rcode.NOTIMP)
            r = self._response(msg, dns.rcode.NOERROR)
            want = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6, dns.rdatatype.ANY: 0}.get(qtype)
            for rdtype, version in (("A", 4), ("AAAA", 6)):
                vals = [str(a) for a in addrs if a.version == version]
                if want in (0, version) and vals:
                    r.answer.append(dns.rrset.from_text_list(qname, cfg.ttl, "IN", rdtype, vals))
            return r  # a type with no matching address: empty NOERROR (Go)
        auth = _longest(name, cfg.authoritative)
        route = _longest(name, cfg.routes)
        if auth is not None and (route is None or len(auth) >= len(route)):
            return self._response(msg, dns.rcode.NXDOMAIN)  # ours, and unknown
        return None

    # -- building replies ----------------------------------------------------------------------------
    @staticmethod
    def _response(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
        r = dns.message.make_response(query, recursion_available=True)
        r.set_rcode(rcode)
        return r

    def _answer(self, r: dns.message.Message, query: dns.message.Message, udp: bool) -> Reply:
        limit = MAX_QUERY
        if udp:
            limit = max(UDP_DEFAULT_SIZE, query.payload) if query.edns >= 0 else UDP_DEFAULT_SIZE
        try:
            wire = r.to_wire(max_size=limit)
        except dns.exception.TooBig:
            r.answer.clear()
            r.authority.clear()
            r.additional.clear()
            r.flags |= dns.flags.TC
            wire = r.to_wire(max_size=limit)
        rcode = r.rcode()
        self.counters["answers"] += 1
        self.counters[f"rcode_{dns.rcode.to_text(rcode)}"] += 1
        return Reply(wire, rcode)

    def _formerr(self, query: bytes) -> Reply | None:
        """FORMERR for a query whose header is readable (id, a query, opcode QUERY), else a drop."""
        flags = int.from_bytes(query[2:4], "big")
        if flags & dns.flags.QR:
            self.counters["malformed"] += 1
            return None
        out = bytearray(12)
        out[0:2] = query[0:2]
        out[2:4] = ((flags & 0x7900) | dns.flags.QR | dns.flags.RA | dns.rcode.FORMERR).to_bytes(2, "big")
        self.counters["answers"] += 1
        self.counters["rcode_FORMERR"] += 1
        return Reply(bytes(out), dns.rcode.FORMERR)


def _longest(name: str, suffixes: Iterable[str]) -> str | None:
    """The longest of ``suffixes`` that ``name`` is under (or equals), else None."""
    best: str | None = None
    for s in suffixes:
        if (name == s or name.endswith("." + s)) and (best is None or len(s) > len(best)):
            best = s
    return best
