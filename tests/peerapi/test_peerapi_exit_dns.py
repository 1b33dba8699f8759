"""Who may use an exit node's DoH, which names go to the host resolver, and the namespace-aware
resolv.conf (issue 17: the exit node serves DNS for its clients)."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import dns.message
import pytest

from pytsnet.actors.peerapi import hostdns
from pytsnet.actors.peerapi.conn import _filter_allows_internet_dns, _is_tailnet_name
from pytsnet.messages.wgengine import WgFilterRule, WgNetPortRange, WgPortRange
from pytsnet.testing.netns import Netns

CLIENT = ipaddress.ip_address("100.64.0.7")
LOOPBACKS = ["127.0.0.1", "127.0.0.9"]


def rule(src: str, dst: str, first: int = 0, last: int = 65535) -> WgFilterRule:
    ports = WgPortRange(First=first, Last=last)
    return WgFilterRule(SrcIPs=[src], DstPorts=[WgNetPortRange(IP=dst, Ports=ports)])


def test_allow_all_policy_lets_a_client_ask() -> None:
    assert _filter_allows_internet_dns([rule("*", "*")], CLIENT)


def test_internet_rule_for_this_client_lets_it_ask() -> None:
    assert _filter_allows_internet_dns([rule("100.64.0.7/32", "0.0.0.0/0", 53, 53)], CLIENT)


@pytest.mark.parametrize("rules", [
    None,  # no netmap filter yet: fail closed
    [],  # deny all
    [rule("100.64.0.7/32", "100.64.0.0/10")],  # tailnet only: no autogroup:internet
    [rule("100.64.0.8/32", "*")],  # someone else
    [rule("100.64.0.7/32", "0.0.0.0/0", 80, 80)],  # internet, but not port 53
])
def test_without_internet_access_the_client_is_refused(rules: list[WgFilterRule] | None) -> None:
    assert not _filter_allows_internet_dns(rules, CLIENT)


def q(name: str) -> bytes:
    return dns.message.make_query(name, "A").to_wire()


def test_tailnet_names_stay_with_magicdns() -> None:
    suffix = "tail1234.ts.net."
    assert _is_tailnet_name(q("web.tail1234.ts.net."), suffix)
    assert _is_tailnet_name(dns.message.make_query("7.0.64.100.in-addr.arpa.", "PTR").to_wire(), suffix)
    assert not _is_tailnet_name(q("site.example.test."), suffix)
    assert not _is_tailnet_name(q("ts.net.example.test."), suffix)
    assert not _is_tailnet_name(dns.message.make_query("1.1.168.192.in-addr.arpa.", "PTR").to_wire(), suffix)


def test_nameservers_are_read_bounded_and_without_comments(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nsearch lan\nnameserver 10.0.0.1 # first\nnameserver fe80::1%eth0\n"
                    "nameserver 10.0.0.3\nnameserver 10.0.0.4\n")
    assert hostdns.nameservers(conf) == ["10.0.0.1", "fe80::1", "10.0.0.3"]


def test_no_nameserver_or_bad_query_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(hostdns.HostDnsError, match="no nameserver"):
        hostdns.resolve(q("site.example.test."), servers=[])
    with pytest.raises(hostdns.HostDnsError, match="malformed"):
        hostdns.resolve(b"\x00\x01junk", servers=["127.0.0.1"])
    with pytest.raises(hostdns.HostDnsError, match="cannot read"):
        hostdns.nameservers(tmp_path / "missing")


def test_unanswered_query_fails_within_its_deadline(netns: Netns) -> None:
    t0 = time.monotonic()
    with pytest.raises(hostdns.HostDnsError, match="host resolver failed"):  # nothing serves DNS there
        netns.call(lambda: hostdns.resolve(q("site.example.test."), timeout=0.5, servers=LOOPBACKS))
    assert time.monotonic() - t0 < 3.0


def test_resolv_conf_follows_the_threads_named_namespace(netns: Netns) -> None:
    path = netns.call(hostdns.resolv_conf_path)
    assert path == Path("/etc/netns") / netns.name / "resolv.conf"
    assert netns.call(hostdns.nameservers) == ["127.0.0.1"]  # what Netns writes there
