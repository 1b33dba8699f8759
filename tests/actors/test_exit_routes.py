"""Route selection (``actors.peers.routes``): the exit node from a selector and a netmap, the WireGuard
AllowedIPs of every peer for every combination of prefs, and what ``dial.resolve`` lets through."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from pytsnet.actors.peers.routes import (
    ExitNodeSelection,
    allowed_ips,
    offers_exit,
    own_addresses,
    select_exit_node,
    wg_peer_routes,
)
from pytsnet.dial import resolve
from pytsnet.errors import ExitNodeUnavailable, UnknownTailnetHost
from pytsnet.messages.peers import PeerInfo, RoutePrefs
from pytsnet.wire.tailcfg import Node
from pytsnet.wire.tailcfg.hostinfo import Hostinfo, Service

OWN = ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"]
SUBNET = "10.1.2.0/24"


def peer(node_id: int, routes: list[str] = (), *, online: bool | None = True, **kw: object) -> PeerInfo:  # type: ignore[assignment]
    addrs = [f"100.64.0.{node_id}/32", f"fd7a:115c:a1e0::{node_id}/128"]
    return PeerInfo(node_id=node_id, stable_id=f"n{node_id}CNTRL", name=f"node{node_id}.tail.ts.net.",
                    hostname=f"node{node_id}", addresses=addrs, allowed_ips=[*addrs, *routes],
                    online=online, **kw)


EXIT = peer(2, ["0.0.0.0/0", "::/0"])
ROUTER = peer(3, [SUBNET])
PLAIN = peer(4)
BOTH = peer(5, ["0.0.0.0/0", "::/0", "192.168.7.0/24"])
PEERS = [EXIT, ROUTER, PLAIN, BOTH]


def test_exit_node_selected_by_stable_id_ip_fqdn_and_short_name() -> None:
    for selector in ("n2CNTRL", "100.64.0.2", "fd7a:115c:a1e0::2", "node2.tail.ts.net", "node2.tail.ts.net.",
                     "NODE2"):
        sel = select_exit_node(selector, PEERS, have_netmap=True)
        assert sel.node == EXIT and sel.reason is None, selector
        info = sel.info()
        assert info is not None
        assert (info.stable_id, info.name, info.address) == ("n2CNTRL", "node2.tail.ts.net.", "100.64.0.2")


@pytest.mark.parametrize(("selector", "peers", "have_netmap", "reason"), [
    ("n2CNTRL", PEERS, False, "not-yet-selected"),
    ("n9CNTRL", PEERS, True, "not-in-tailnet"),
    ("100.64.0.9", PEERS, True, "not-in-tailnet"),
    ("nowhere", [], True, "not-in-tailnet"),
    ("n2CNTRL", [peer(2, ["0.0.0.0/0", "::/0"], online=False)], True, "offline"),
    ("n4CNTRL", PEERS, True, "no-exit-routes"),
    ("n3CNTRL", PEERS, True, "no-exit-routes"),  # a subnet router is no exit node
    ("n6CNTRL", [peer(6, ["0.0.0.1/0"])], True, "no-exit-routes"),  # host bits set: not a route at all
])
def test_health_reasons(selector: str, peers: list[PeerInfo], have_netmap: bool, reason: str) -> None:
    sel = select_exit_node(selector, peers, have_netmap=have_netmap)
    assert sel.node is None and sel.info() is None
    assert sel.reason == reason and sel.selected


def test_no_selector_is_no_exit_node_and_no_warning() -> None:
    sel = select_exit_node(None, PEERS, have_netmap=False)
    assert not sel.selected and sel.node is None and sel.reason is None


def test_online_unknown_is_not_offline() -> None:
    """Control leaves ``Online`` unset for nodes it has no word on; only an explicit false is offline."""
    assert select_exit_node("n2CNTRL", [peer(2, ["0.0.0.0/0"], online=None)], have_netmap=True).engaged


def test_offers_exit_needs_a_default_route() -> None:
    assert offers_exit(EXIT) and offers_exit(BOTH) and offers_exit(peer(7, ["::/0"]))
    assert not offers_exit(ROUTER) and not offers_exit(PLAIN)


@pytest.mark.parametrize(("accept", "exit_selector", "ipv6"),
                         list(itertools.product([False, True], [None, "n2CNTRL", "n5CNTRL", "n4CNTRL"],
                                                [False, True])))
def test_allowed_ips_for_every_combination(accept: bool, exit_selector: str | None, ipv6: bool) -> None:
    prefs = RoutePrefs(exit_node=exit_selector, accept_routes=accept)
    sel = select_exit_node(exit_selector, PEERS, have_netmap=True)
    got = wg_peer_routes(PEERS, prefs, sel, ipv6=ipv6)
    for p in PEERS:
        want = set(p.addresses)  # own addresses always
        if sel.node is not None and sel.node.node_id == p.node_id:
            want |= {"0.0.0.0/0"} | ({"::/0"} if ipv6 else set())
        if accept:
            want |= {r for r in p.allowed_ips if r not in p.addresses and not r.endswith("/0")}
        assert set(got[p.node_id]) == want, (p.node_id, prefs, ipv6)
    exits = [k for k, v in got.items() if "0.0.0.0/0" in v]
    assert exits == ([] if sel.node is None else [sel.node.node_id])  # one default route at most


def test_unavailable_exit_node_gets_no_default_route() -> None:
    for sel in (select_exit_node("n2CNTRL", [peer(2, ["0.0.0.0/0"], online=False)], have_netmap=True),
                ExitNodeSelection("n2CNTRL", reason="not-yet-selected")):
        assert allowed_ips(EXIT, RoutePrefs(exit_node="n2CNTRL"), sel, ipv6=True) == EXIT.addresses


def test_single_tailnet_ips_are_own_addresses_and_garbage_is_skipped() -> None:
    p = peer(8, ["100.64.9.9/32", "10.0.0.1/24", "not-a-prefix", "10.9.0.0/16"])
    assert own_addresses(p) == [*p.addresses, "100.64.9.9/32"]
    got = allowed_ips(p, RoutePrefs(accept_routes=True), ExitNodeSelection(), ipv6=True)
    assert got == [*p.addresses, "100.64.9.9/32", "10.9.0.0/16"]


def test_peerinfo_from_node_keeps_primary_routes_and_dns_proxy() -> None:
    n = Node(ID=3, StableID="s3", Addresses=["100.64.0.3/32"], AllowedIPs=["100.64.0.3/32", SUBNET],
             PrimaryRoutes=[SUBNET],
             Hostinfo=Hostinfo(Services=[Service(Proto="peerapi-dns-proxy", Port=1),
                                         Service(Proto="peerapi4", Port=40000)]))
    p = PeerInfo.from_node(n)
    assert p.primary_routes == [SUBNET] and p.dns_proxy and p.peerapi_ports == {"peerapi4": 40000}
    assert not PeerInfo.from_node(Node(ID=4, Addresses=["100.64.0.4/32"])).dns_proxy


def _resolve(host: str, prefs: RoutePrefs, peers: list[PeerInfo] = PEERS, have_netmap: bool = True) -> str:
    sel = select_exit_node(prefs.exit_node, peers, have_netmap=have_netmap)
    return resolve(host, peers, routes=wg_peer_routes(peers, prefs, sel, ipv6=True), exit_node=sel)


def test_resolve_subnet_only_when_accepted() -> None:
    assert _resolve("10.1.2.7", RoutePrefs(accept_routes=True)) == "10.1.2.7"
    with pytest.raises(UnknownTailnetHost):
        _resolve("10.1.2.7", RoutePrefs())
    with pytest.raises(UnknownTailnetHost):  # a peer's raw AllowedIPs alone never make an IP dialable
        resolve("10.1.2.7", PEERS)


def test_resolve_beyond_the_tailnet_needs_an_engaged_exit_node() -> None:
    assert _resolve("198.51.100.7", RoutePrefs(exit_node="node2")) == "198.51.100.7"
    assert _resolve("2001:db8::7", RoutePrefs(exit_node="node2")) == "2001:db8::7"
    with pytest.raises(UnknownTailnetHost):  # no exit node selected: today's error
        _resolve("198.51.100.7", RoutePrefs())
    for prefs, peers, have, reason in [
        (RoutePrefs(exit_node="node4"), PEERS, True, "no-exit-routes"),
        (RoutePrefs(exit_node="node9"), PEERS, True, "not-in-tailnet"),
        (RoutePrefs(exit_node="node2"), [peer(2, ["0.0.0.0/0"], online=False)], True, "offline"),
        (RoutePrefs(exit_node="node2"), PEERS, False, "not-yet-selected"),
    ]:
        with pytest.raises(ExitNodeUnavailable) as e:
            _resolve("198.51.100.7", prefs, peers, have)
        assert e.value.reason == reason and isinstance(e.value, ConnectionError)
    # a tailnet IP that is no peer's is never sent to the exit node, nor reported as its fault
    with pytest.raises(UnknownTailnetHost):
        _resolve("100.64.0.99", RoutePrefs(exit_node="node2"))
    # an accepted subnet route still works while the exit node is unavailable
    assert _resolve("10.1.2.7", RoutePrefs(exit_node="node4", accept_routes=True)) == "10.1.2.7"


def test_resolver_sends_the_rest_to_the_exit_nodes_doh_only() -> None:
    """With an exit node selected, names the tailnet does not answer go to its DoH instead of the
    app's fallback resolvers; selected without DoH they go nowhere; not selected, the fallback."""
    from pytsnet.actors.dns.config import resolver_config
    from pytsnet.messages.dns import DnsExitNode, DnsSettings
    from pytsnet.wire.dns import Upstream

    me = peer(1)
    settings = DnsSettings(routes={"corp.example": ["100.64.0.3"]})
    cfg = resolver_config(me, PEERS, settings, ["100.64.0.4"], DnsExitNode(selected=True, ip="100.64.0.2",
                                                                             port=40001))
    assert [str(u) for u in cfg.fallback] == ["http://100.64.0.2:40001/dns-query"]
    assert cfg.fallback[0] == Upstream.peerapi_doh(ipaddress.ip_address("100.64.0.2"), 40001)
    assert [str(u) for u in cfg.routes["corp.example"]] == ["100.64.0.3:53"]  # split DNS stays
    assert resolver_config(me, PEERS, settings, ["100.64.0.4"], DnsExitNode(selected=True)).fallback == ()
    assert [str(u) for u in resolver_config(me, PEERS, settings, ["100.64.0.4"], DnsExitNode()).fallback] == [
        "100.64.0.4:53"]
