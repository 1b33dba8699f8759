"""Tailnet Lock's ``UnsignedPeerAPIOnly`` confinement in the packet filter (21h): Go's
``TestPacketFilterPermitsUnlockedNodes`` (ipn/ipnlocal/local_test.go, v1.90.9) case for case, then what
the engine installs (``confine_unlocked``) and the engine actor itself: such a peer reaches our peerAPI
port and nothing else, and a filter letting it in is dropped whole with the health flag set."""

from __future__ import annotations

import ipaddress

import pytest
from wgengine_helpers import ICMP4, TCP, UDP, packet, udp
from wgengine_rig import make_pair

from pytsnet.actors.wgengine.filter_rules import (
    INVALID_PACKET_FILTER,
    confine_unlocked,
    filter_in_force,
    invalid_packet_filter_health,
    packet_filter_permits_unlocked_nodes,
    rules_from_tailcfg,
    rules_permit,
)
from pytsnet.messages.peers import PeerInfo
from pytsnet.messages.wgengine import GetWgStatus, IpPacketOut, WgConfig, WgFilterRule, WgNetPortRange, WgPeer
from pytsnet.netstack.filter import Filter, NetPortRange, Rule
from pytsnet.testing.polling import wait_until
from pytsnet.wire.tailcfg.filter import CapGrant, FilterRule

PEERAPI = 45678
ME = "100.99.0.0"


def _rule(src: str, dst: str | None) -> Rule:
    dsts = (NetPortRange(ipaddress.ip_network(dst)),) if dst else ()
    return Rule((ipaddress.ip_network(src),), dsts)


# Go's table: (name, peers, filter, want)
GO_CASES: list[tuple[str, list[PeerInfo], list[Rule], bool]] = [
    ("empty", [], [], False),
    ("no-unsigned", [PeerInfo(node_id=1)], [], False),
    ("unsigned-good", [PeerInfo(node_id=1, unsigned_peer_api_only=True)], [], False),
    ("unsigned-bad", [PeerInfo(node_id=1, unsigned_peer_api_only=True, allowed_ips=["100.64.0.0/32"])],
     [_rule("100.64.0.0/32", "100.99.0.0/32")], True),
    ("unsigned-bad-src-is-superset",
     [PeerInfo(node_id=1, unsigned_peer_api_only=True, allowed_ips=["100.64.0.0/32"])],
     [_rule("100.64.0.0/24", "100.99.0.0/32")], True),
    ("unsigned-okay-because-no-dsts",  # Go: a Match with Caps only; ours has no dsts either
     [PeerInfo(node_id=1, unsigned_peer_api_only=True, allowed_ips=["100.64.0.0/32"])],
     [_rule("100.64.0.0/32", None)], False),
]


@pytest.mark.parametrize(("name", "peers", "rules", "want"), GO_CASES, ids=[c[0] for c in GO_CASES])
def test_go_packet_filter_permits_unlocked_nodes(name: str, peers: list[PeerInfo], rules: list[Rule],
                                                 want: bool) -> None:
    assert packet_filter_permits_unlocked_nodes(peers, rules) is want


def test_cap_grant_only_rule_from_tailcfg_permits_nothing() -> None:
    """The Go caps-only case through our tailcfg conversion: a CapGrant-only rule compiles to no Rule."""
    peer = PeerInfo(node_id=1, unsigned_peer_api_only=True, allowed_ips=["100.64.0.0/32"])
    fr = FilterRule(SrcIPs=["100.64.0.0/32"], CapGrant=[CapGrant(Dsts=["100.99.0.0/32"], Caps=["foo"])])
    assert not packet_filter_permits_unlocked_nodes([peer], rules_from_tailcfg([fr]))


def test_more_cases_wildcards_routes_families_and_bad_prefixes() -> None:
    peer = PeerInfo(node_id=1, unsigned_peer_api_only=True,
                    allowed_ips=["100.64.0.5/32", "fd7a:115c:a1e0::5/128", "10.1.0.0/16"])
    signed = PeerInfo(node_id=2, allowed_ips=["100.64.0.6/32"])
    star = rules_from_tailcfg([FilterRule.model_validate({"SrcIPs": ["*"], "DstPorts": [{"IP": "*"}]})])
    assert packet_filter_permits_unlocked_nodes([peer, signed], star)  # "*" covers everyone
    assert packet_filter_permits_unlocked_nodes([peer], [_rule("10.1.2.0/24", ME)])  # a route, not an address
    assert packet_filter_permits_unlocked_nodes([peer], [_rule("fd7a:115c:a1e0::/48", "fd7a::1/128")])
    assert not packet_filter_permits_unlocked_nodes([peer, signed], [_rule("100.64.0.6/32", ME)])
    assert not packet_filter_permits_unlocked_nodes([signed], star)  # only unlocked peers count
    assert not packet_filter_permits_unlocked_nodes([peer], [_rule("100.64.0.0/30", ME)])  # .0-.3
    assert rules_permit(["not-a-prefix"], [])  # unparsable: fail closed, as Go's IPSet error


def _confined(rules: list[Rule] | None, unlocked: list[str]) -> tuple[Filter, bool]:
    local = [ipaddress.ip_network(f"{ME}/32")]
    got, access, invalid = confine_unlocked(rules, unlocked, local, PEERAPI)
    return Filter(got, local, peerapi=access), invalid


def test_unlocked_peer_reaches_only_the_peerapi_port() -> None:
    other = "100.64.0.6"
    f, invalid = _confined([_rule(f"{other}/32", f"{ME}/32")], ["100.64.0.5/32"])
    assert not invalid
    u = "100.64.0.5"
    assert f.run_in(packet(TCP, u, ME, 40000, PEERAPI))  # SYN to our peerAPI
    assert not f.run_in(packet(TCP, u, ME, 40000, 22))  # any other port
    assert not f.run_in(packet(TCP, u, ME, 40000, PEERAPI + 1))
    assert not f.run_in(packet(UDP, u, ME, 40000, PEERAPI))
    assert not f.run_in(packet(ICMP4, u, ME))  # echo request
    assert not f.run_in(packet(TCP, u, "100.99.0.1", 40000, PEERAPI))  # not our address
    assert f.run_in(packet(TCP, other, ME, 40000, 22))  # the policy's own rule still works
    # an ordinary peer is still behind the filter for the peerAPI (no exemption for it)
    assert not _confined([], ["100.64.0.5/32"])[0].run_in(packet(TCP, other, ME, 40000, PEERAPI))


def test_a_filter_letting_an_unlocked_peer_in_is_dropped_whole() -> None:
    f, invalid = _confined([_rule("0.0.0.0/0", f"{ME}/32")], ["100.64.0.5/32"])
    assert invalid
    assert not f.run_in(packet(TCP, "100.64.0.6", ME, 40000, 22))  # nothing new comes in for anyone
    assert not f.run_in(packet(TCP, "100.64.0.5", ME, 40000, 22))
    assert f.run_in(packet(TCP, "100.64.0.5", ME, 40000, PEERAPI))  # peerAPI only, as Go
    assert f.run_in(packet(TCP, "100.64.0.6", ME, 22, 40000, flags=0x10))  # replies to our own flows


def test_no_filter_yet_stays_none_and_no_unlocked_peer_changes_nothing() -> None:
    local = [ipaddress.ip_network(f"{ME}/32"), ipaddress.ip_network("10.9.0.0/16")]  # + a subnet we route
    assert confine_unlocked(None, ["100.64.0.5/32"], local, PEERAPI) == (None, None, False)
    rules = [_rule("0.0.0.0/0", f"{ME}/32")]
    assert confine_unlocked(rules, [], local, PEERAPI) == (rules, None, False)
    assert confine_unlocked(rules, ["100.64.0.5/32"], local, 0) == ([], None, True)  # no peerAPI: no access
    _, access, _ = confine_unlocked([], ["100.64.0.5/32"], local, PEERAPI)
    assert access is not None and access.dsts == (ipaddress.ip_network(f"{ME}/32"),)  # our host, no subnet
    f = Filter([], local, peerapi=access)
    assert not f.run_in(packet(TCP, "100.64.0.5", "10.9.1.1", 40000, PEERAPI))


def test_engine_drops_the_filter_and_confines_the_unlocked_peer() -> None:
    a, b, _ = make_pair(peerapi_port=PEERAPI)
    try:
        peer_a = WgPeer(node_key=a.text, allowed_ips=[f"{a.addr}/32"])
        allow_all = [WgFilterRule(SrcIPs=["*"], DstPorts=[WgNetPortRange(IP="*")])]
        b.engine.tell(WgConfig(addresses=[f"{b.addr}/32"], peers=[peer_a], packet_filter=allow_all,
                               unlocked_allowed_ips=[f"{a.addr}/32"]))
        assert b.engine.ask(GetWgStatus()).invalid_packet_filter
        a.engine.tell(IpPacketOut(data=packet(TCP, a.addr, b.addr, 5000, 22)))
        a.engine.tell(IpPacketOut(data=udp(a.addr, b.addr)))
        a.engine.tell(IpPacketOut(data=packet(TCP, a.addr, b.addr, 5001, PEERAPI)))
        wait_until(lambda: len(b.got) == 1)
        wait_until(lambda: sum(b.engine.ask(GetWgStatus()).filter_drops.values()) == 2)
        assert [p[22:24] for p in b.got] == [PEERAPI.to_bytes(2, "big")]  # only the peerAPI SYN
        # the same peer, now signed (no longer unlocked): the policy's filter is back in force
        b.engine.tell(WgConfig(addresses=[f"{b.addr}/32"], peers=[peer_a], packet_filter=allow_all))
        assert not b.engine.ask(GetWgStatus()).invalid_packet_filter
        a.engine.tell(IpPacketOut(data=packet(TCP, a.addr, b.addr, 5002, 22)))
        wait_until(lambda: len(b.got) == 2)
    finally:
        a.system.shutdown()
        b.system.shutdown()


def test_invalid_packet_filter_health_follows_the_engines_verdict() -> None:
    """The LocalAPI's Health line and the peerAPI's capability source read this: the same inputs as the
    engine (admitted peers, the netmap's filter), the same verdict; a filter refused for its own reasons
    (``SrcBits``) or none yet is not this warning."""
    peer = PeerInfo(node_id=1, unsigned_peer_api_only=True, allowed_ips=["100.64.0.5/32"])
    lets_in = [WgFilterRule(SrcIPs=["100.64.0.0/24"], DstPorts=[WgNetPortRange(IP="*")])]
    keeps_out = [WgFilterRule(SrcIPs=["100.64.0.6"], DstPorts=[WgNetPortRange(IP="*")])]
    assert invalid_packet_filter_health([peer], lets_in) == INVALID_PACKET_FILTER
    assert invalid_packet_filter_health([peer], keeps_out) is None
    signed = peer.model_copy(update={"unsigned_peer_api_only": False})
    assert invalid_packet_filter_health([signed], lets_in) is None
    assert invalid_packet_filter_health([peer], None) is None
    assert invalid_packet_filter_health([peer], [WgFilterRule(SrcIPs=["*"], SrcBits=[32])]) is None
    assert filter_in_force([peer], lets_in) == [] and filter_in_force([peer], keeps_out) == keeps_out
    assert filter_in_force([peer], None) is None
