"""Packet filter semantics, with the cases of Go's wgengine/filter/filter_test.go TestFilter, and
the tailcfg FilterRule conversion."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wgengine_helpers import ICMP4, ICMP6, TCP, UDP, packet

from pytsnet.actors.wgengine.filter_rules import FilterRuleError, parse_ip_set, rules_from_tailcfg
from pytsnet.messages.wgengine import WgFilterRule
from pytsnet.netstack.filter import Filter, FilterParseError, NetPortRange, PortRange, Rule, summarize
from pytsnet.wire.tailcfg.filter import FilterRule
from pytsnet.wire.tailcfg.filter import NetPortRange as TNetPortRange
from pytsnet.wire.tailcfg.filter import PortRange as TPortRange

ALLOWED_PROTO, DENIED_PROTO, SCTP = 116, 127, 132
DEFAULT = frozenset({TCP, UDP, ICMP4, ICMP6})


def nets(*xs: str) -> tuple:
    return tuple(ipaddress.ip_network(x) for x in xs)


def netports(*xs: str) -> tuple:
    out = []
    for x in xs:
        host, _, ports = x.rpartition(":")
        if ports == "*":
            pr = PortRange(0, 65535)
        else:
            a, _, b = ports.partition("-")
            pr = PortRange(int(a), int(b or a))
        out.append(NetPortRange(ipaddress.ip_network(host), pr))
    return tuple(out)


def m(srcs: tuple, dsts: tuple, *protos: int) -> Rule:
    return Rule(srcs, dsts, frozenset(protos) or DEFAULT)


def go_filter() -> Filter:
    """newFilter() from filter_test.go (the cap-based rule has no effect on the packet path here)."""
    rules = [
        m(nets("8.1.1.1/32", "8.2.2.2/32"), netports("1.2.3.4/32:22", "5.6.7.8/32:23-24")),
        m(nets("9.1.1.1/32", "9.2.2.2/32"), netports("1.2.3.4/32:22", "5.6.7.8/32:23-24"), SCTP),
        m(nets("8.1.1.1/32", "8.2.2.2/32"), netports("5.6.7.8/32:27-28")),
        m(nets("2.2.2.2/32"), netports("8.1.1.1/32:22")),
        m(nets("0.0.0.0/0"), netports("100.122.98.50/32:*")),
        m(nets("0.0.0.0/0"), netports("0.0.0.0/0:443")),
        m(nets("153.1.1.1/32", "153.1.1.2/32", "153.3.3.3/32"), netports("1.2.3.4/32:999")),
        m(nets("::1/128", "::2/128"), netports("2001::1/128:22", "2001::2/128:22")),
        m(nets("::/0"), netports("::/0:443")),
        m(nets("0.0.0.0/0"), netports("0.0.0.0/0:*"), ALLOWED_PROTO),
        m(nets("::/0"), netports("::/0:*"), ALLOWED_PROTO),
    ]
    local = nets("100.122.98.50/32", "1.2.3.4/32", "5.6.7.8/32", "102.102.102.102/32",
                 "119.119.119.119/32", "8.1.0.0/16", "2001::/16")
    return Filter(rules, local, ipv6=True)


GO_CASES = [
    (True, TCP, "8.1.1.1", "1.2.3.4", 999, 22),
    (True, ICMP4, "8.1.1.1", "1.2.3.4", 0, 0),
    (False, TCP, "8.1.1.1", "1.2.3.4", 0, 0),
    (True, TCP, "8.1.1.1", "1.2.3.4", 0, 22),
    (False, TCP, "8.1.1.1", "1.2.3.4", 0, 21),
    (True, TCP, "8.2.2.2", "1.2.3.4", 0, 22),
    (False, TCP, "8.2.2.2", "1.2.3.4", 0, 23),
    (False, TCP, "8.3.3.3", "1.2.3.4", 0, 22),
    (True, TCP, "8.1.1.1", "5.6.7.8", 0, 23),
    (True, TCP, "8.1.1.1", "5.6.7.8", 0, 24),
    (False, TCP, "8.1.1.3", "5.6.7.8", 0, 24),
    (False, TCP, "8.1.1.1", "5.6.7.8", 0, 22),
    (True, TCP, "17.34.51.68", "8.1.34.51", 0, 443),
    (False, TCP, "17.34.51.68", "8.1.34.51", 0, 444),
    (True, TCP, "17.34.51.68", "100.122.98.50", 0, 999),
    (True, TCP, "17.34.51.68", "100.122.98.50", 0, 0),
    (True, TCP, "::1", "2001::1", 0, 22),
    (True, ICMP6, "::1", "2001::1", 0, 0),
    (True, TCP, "::2", "2001::1", 0, 22),
    (True, TCP, "::2", "2001::2", 0, 22),
    (False, TCP, "::1", "2001::1", 0, 23),
    (False, TCP, "::1", "2001::3", 0, 22),
    (False, TCP, "::3", "2001::1", 0, 22),
    (True, TCP, "::1", "2001::1", 0, 443),
    (False, TCP, "::1", "2001::1", 0, 444),
    (False, TCP, "8.1.1.1", "16.32.48.64", 0, 443),  # accepted by policy but not a local destination
    (False, TCP, "1::", "2602::1", 0, 443),
    (False, SCTP, "8.1.1.1", "1.2.3.4", 999, 22),
    (True, SCTP, "9.1.1.1", "1.2.3.4", 999, 22),
    (True, ALLOWED_PROTO, "1.2.3.4", "5.6.7.8", 0, 0),
    (True, ALLOWED_PROTO, "2001::1", "2001::2", 0, 0),
    (False, DENIED_PROTO, "1.2.3.4", "5.6.7.8", 0, 0),
    (False, DENIED_PROTO, "2001::1", "2001::2", 0, 0),
]


@pytest.mark.parametrize("case", GO_CASES, ids=[f"#{i}" for i in range(len(GO_CASES))])
def test_go_filter_cases(case: tuple) -> None:
    want, proto, src, dst, sport, dport = case
    f = go_filter()
    icmp_type = 8 if proto == ICMP4 else 128
    assert f.run_in(packet(proto, src, dst, sport, dport, icmp_type=icmp_type)) is want
    if proto == TCP:  # "TCP and UDP are treated equivalently in the filter - verify that."
        assert go_filter().run_in(packet(UDP, src, dst, sport, dport)) is want


def test_udp_replies_to_our_flows_pass_without_any_filter() -> None:
    f = Filter(None, nets("100.64.0.1/32"))
    inbound = packet(UDP, "100.64.0.2", "100.64.0.1", 53, 40000)
    assert not f.run_in(inbound)
    assert f.drops["no_rule"] == 1
    f.run_out(packet(UDP, "100.64.0.1", "100.64.0.2", 40000, 53))
    assert f.run_in(inbound)
    assert not f.run_in(packet(UDP, "100.64.0.2", "100.64.0.1", 53, 40001))  # other port: not our flow
    assert not f.run_in(packet(UDP, "100.64.0.3", "100.64.0.1", 53, 40000))  # other host


def test_no_filter_no_inbound_but_tcp_return_traffic_and_icmp_replies_pass() -> None:
    f = Filter(None, nets("100.64.0.1/32"))
    assert not f.run_in(packet(TCP, "100.64.0.2", "100.64.0.1", 5000, 80, flags=0x02))  # SYN
    assert f.run_in(packet(TCP, "100.64.0.2", "100.64.0.1", 80, 5000, flags=0x12))  # SYN-ACK
    assert f.run_in(packet(TCP, "100.64.0.2", "100.64.0.1", 80, 5000, flags=0x10))  # ACK
    assert not f.run_in(packet(ICMP4, "100.64.0.2", "100.64.0.1", icmp_type=8))  # echo request
    assert f.run_in(packet(ICMP4, "100.64.0.2", "100.64.0.1", icmp_type=0))  # echo reply
    assert f.run_in(packet(99, "100.64.0.2", "100.64.0.1"))  # TSMP


def test_conntrack_is_bounded_lru() -> None:
    f = Filter(None, nets("100.64.0.1/32"), conntrack_size=4)
    for port in range(10):
        f.run_out(packet(UDP, "100.64.0.1", "100.64.0.2", 1000 + port, 53))
    assert f.flow_count() == 4
    assert f.run_in(packet(UDP, "100.64.0.2", "100.64.0.1", 53, 1009))
    assert not f.run_in(packet(UDP, "100.64.0.2", "100.64.0.1", 53, 1000))


def test_ipv6_off_by_default_and_junk_counted() -> None:
    f = Filter([m(nets("::/0"), netports("::/0:*"))], nets("fd7a:115c:a1e0::1/128"))
    assert not f.run_in(packet(UDP, "fd7a:115c:a1e0::2", "fd7a:115c:a1e0::1", 1, 2))
    assert f.drops["ipv6_disabled"] == 1
    assert not f.run_in(b"\x45\x00")
    assert f.drops["junk"] == 1


def test_filter_replacement_keeps_flows() -> None:
    f = Filter(None, nets("100.64.0.1/32"))
    f.run_out(packet(UDP, "100.64.0.1", "100.64.0.2", 1000, 53))
    g = f.with_rules([], nets("100.64.0.1/32"))
    assert g.run_in(packet(UDP, "100.64.0.2", "100.64.0.1", 53, 1000))


@given(st.binary(max_size=120))
def test_summarize_never_raises_other_errors(data: bytes) -> None:
    f = Filter([m(nets("0.0.0.0/0"), netports("0.0.0.0/0:*"))], nets("0.0.0.0/0"), ipv6=True)
    f.run_in(data)
    f.run_out(data)


@given(st.binary(min_size=20, max_size=80))
def test_summarize_mutated_ipv4(data: bytes) -> None:
    buf = bytearray(packet(UDP, "1.2.3.4", "5.6.7.8", 1, 2)) + data
    buf[0] = 0x40 | (data[0] & 0x0F)
    try:
        summarize(bytes(buf[: data[1] % len(buf)]))
    except Exception as e:
        assert isinstance(e, FilterParseError)


# --- tailcfg conversion -------------------------------------------------------------------------

def test_parse_ip_set() -> None:
    assert parse_ip_set("*") == nets("0.0.0.0/0", "::/0")
    assert parse_ip_set("100.64.0.1") == nets("100.64.0.1/32")
    assert parse_ip_set("10.0.0.0/8") == nets("10.0.0.0/8")
    assert parse_ip_set("10.0.0.1-10.0.0.4") == nets("10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/32")
    assert parse_ip_set("cap:foo") == ()
    for bad in ("10.0.0.1/8", "nope", "10.0.0.5-10.0.0.1", "10.0.0.1-::1"):
        with pytest.raises(FilterRuleError):
            parse_ip_set(bad)


def test_allow_all_and_specific_rules_from_tailcfg() -> None:
    everything = TNetPortRange(IP="*", Ports=TPortRange(First=0, Last=65535))
    allow_all = [FilterRule(SrcIPs=["*"], DstPorts=[everything])]
    f = Filter(rules_from_tailcfg(allow_all), nets("100.64.0.1/32"))
    assert f.run_in(packet(TCP, "100.64.0.9", "100.64.0.1", 1, 22))
    ssh = TNetPortRange(IP="100.64.0.1", Ports=TPortRange(First=22, Last=22))
    only_ssh = [FilterRule(SrcIPs=["100.64.0.2"], DstPorts=[ssh], IPProto=[6])]
    g = Filter(rules_from_tailcfg(only_ssh), nets("100.64.0.1/32"))
    as_message = [WgFilterRule.from_tailcfg(r) for r in only_ssh]
    assert rules_from_tailcfg(as_message) == rules_from_tailcfg(only_ssh)
    assert g.run_in(packet(TCP, "100.64.0.2", "100.64.0.1", 1, 22))
    assert not g.run_in(packet(TCP, "100.64.0.3", "100.64.0.1", 1, 22))
    assert not g.run_in(packet(UDP, "100.64.0.2", "100.64.0.1", 1, 22))  # IPProto TCP only
    assert not g.run_in(packet(TCP, "100.64.0.2", "100.64.0.1", 1, 23))
    with pytest.raises(FilterRuleError):
        rules_from_tailcfg([FilterRule(SrcIPs=["*"], SrcBits=[32])])
