"""The sans-IO MagicDNS core: local answers, fail-closed NXDOMAIN, split DNS and fallback forwards."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from pytsnet.wire.dns import Forward, Reply, Resolver, ResolverConfig, Upstream

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def _cfg(**kw: object) -> ResolverConfig:
    base: dict[str, object] = dict(
        hosts={"web.tail.ts.net.": (V4("100.64.0.2"), V6("fd7a:115c:a1e0::2")),
               "app.example.internal": (V4("100.64.0.3"),)},
        authoritative=("tail.ts.net",), search=("tail.ts.net",))
    base.update(kw)
    return ResolverConfig(**base)  # type: ignore[arg-type]


def _ask(r: Resolver, name: str, rdtype: str = "A", *, udp: bool = True) -> dns.message.Message:
    out = r.handle(dns.message.make_query(name, rdtype).to_wire(), udp=udp)
    assert isinstance(out, Reply)
    return dns.message.from_wire(out.response)


def _addrs(m: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in m.answer for rd in rrset)


def test_fqdn_short_name_and_extra_record() -> None:
    r = Resolver(_cfg())
    assert _addrs(_ask(r, "web.tail.ts.net.")) == ["100.64.0.2"]
    assert _addrs(_ask(r, "WEB.tail.ts.net")) == ["100.64.0.2"]
    assert _addrs(_ask(r, "web")) == ["100.64.0.2"]
    assert _addrs(_ask(r, "app.example.internal")) == ["100.64.0.3"]
    assert _addrs(_ask(r, "web", "AAAA")) == ["fd7a:115c:a1e0::2"]
    empty = _ask(r, "app.example.internal", "AAAA")
    assert empty.rcode() == dns.rcode.NOERROR and not empty.answer
    assert r.counters["queries"] == r.counters["answers"] == 6


def test_ptr_for_tailnet_addresses() -> None:
    r = Resolver(_cfg())
    m = _ask(r, "2.0.64.100.in-addr.arpa.", "PTR")
    assert [rd.to_text() for rd in m.answer[0]] == ["web.tail.ts.net."]
    assert _ask(r, "9.0.64.100.in-addr.arpa.", "PTR").rcode() == dns.rcode.NXDOMAIN


def test_fail_closed_by_default() -> None:
    r = Resolver(_cfg())
    assert _ask(r, "example.com").rcode() == dns.rcode.NXDOMAIN
    assert _ask(r, "nope.tail.ts.net").rcode() == dns.rcode.NXDOMAIN
    assert _ask(r, "x.onion").rcode() == dns.rcode.NXDOMAIN
    assert r.counters["forwarded"] == 0


def test_fallback_forward_round_trip_checks_id_and_question() -> None:
    up = Upstream.parse("100.64.0.9:5353")
    r = Resolver(_cfg(fallback=(up,)))
    q = dns.message.make_query("example.com", "A")
    fwd = r.handle(q.to_wire())
    assert isinstance(fwd, Forward) and fwd.upstreams == (up,)
    sent = dns.message.from_wire(fwd.query)
    resp = dns.message.make_response(sent)
    resp.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "192.0.2.7"))
    done = r.complete(fwd.token, resp.to_wire())
    assert done is not None
    m = dns.message.from_wire(done.response)
    assert m.id == q.id and _addrs(m) == ["192.0.2.7"]
    # A mismatched answer (wrong ID) and a timeout are SERVFAIL, never a forged answer.
    fwd2 = r.handle(q.to_wire())
    assert isinstance(fwd2, Forward)
    bad = bytearray(resp.to_wire())
    bad[0] ^= 0xFF
    done2 = r.complete(fwd2.token, bytes(bad))
    assert done2 is not None and done2.rcode == dns.rcode.SERVFAIL
    fwd3 = r.handle(q.to_wire())
    assert isinstance(fwd3, Forward)
    done3 = r.complete(fwd3.token, None)
    assert done3 is not None and done3.rcode == dns.rcode.SERVFAIL
    assert r.counters["forward_failed"] == 2 and r.pending == 0


def test_split_dns_longest_suffix() -> None:
    a, b = Upstream.parse("100.64.0.5"), Upstream.parse("[fd7a:115c:a1e0::7]:53")
    r = Resolver(_cfg(routes={"corp.example": (a,), "lab.corp.example.": (b,)}))
    f1 = r.handle(dns.message.make_query("db.corp.example", "A").to_wire())
    f2 = r.handle(dns.message.make_query("x.lab.corp.example", "A").to_wire())
    assert isinstance(f1, Forward) and f1.upstreams == (a,)
    assert isinstance(f2, Forward) and f2.upstreams == (b,)
    assert _ask(r, "other.example").rcode() == dns.rcode.NXDOMAIN


def test_bad_input_is_formerr_or_dropped() -> None:
    r = Resolver(_cfg())
    assert r.handle(b"") is None and r.handle(b"\x00" * 5) is None
    bad = r.handle(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff")
    assert isinstance(bad, Reply) and bad.rcode == dns.rcode.FORMERR and bad.response[:2] == b"\x12\x34"
    resp = dns.message.make_response(dns.message.make_query("web", "A")).to_wire()
    assert r.handle(resp) is None  # a response sent to us is never answered (no reflection)
    assert r.counters["malformed"] == 3


def test_busy_forwarder_is_servfail() -> None:
    r = Resolver(_cfg(fallback=(Upstream.parse("100.64.0.9"),)), max_pending=1)
    assert isinstance(r.handle(dns.message.make_query("a.example", "A").to_wire()), Forward)
    assert _ask(r, "b.example").rcode() == dns.rcode.SERVFAIL
    assert r.counters["forward_busy"] == 1


def test_large_udp_answer_truncates() -> None:
    many = tuple(V4(f"100.64.1.{i}") for i in range(1, 60))
    r = Resolver(_cfg(hosts={"big.tail.ts.net": many}))
    m = _ask(r, "big.tail.ts.net")
    assert m.flags & dns.flags.TC and not m.answer
    assert len(_addrs(_ask(r, "big.tail.ts.net", udp=False))) == 59


@pytest.mark.parametrize("bad", ["https://dns.example/dns-query", "host:99999", "nonsense"])
def test_upstream_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        Upstream.parse(bad)
