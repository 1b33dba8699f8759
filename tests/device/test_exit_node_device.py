"""Using an exit node and accepting subnet routes, device level, on a LocalTailnet over loopback.

The control server's route advertisement and approval are another piece of work (issue 17, localnet);
here control's side is faked where it is rendered: ``ROUTES`` adds prefixes to a node's
``AllowedIPs``/``PrimaryRoutes`` (and ``DNS_PROXY`` the ``peerapi-dns-proxy`` service to its
Hostinfo) in every map, exactly the fields Go's control sends for an approved exit node or a primary
subnet router. The exit node does not forward yet either (issue 17, forwarders): what is proved here is
that A's engine sends the packet to the right peer (it arrives at that peer's engine, whose filter
drops it as not local) and that nothing is sent while the exit node is unusable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from pytsnet.actors.dataplane.bridge import DataplaneBridge
from pytsnet.actors.peerapi import conn as peerapi_conn
from pytsnet.actors.runtime import FaultInjector
from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import ConfigError, DialTimeout, ExitNodeUnavailable, UnknownTailnetHost
from pytsnet.localnet import netmap
from pytsnet.localnet.server import LocalTailnet
from pytsnet.messages.peers import PeersChanged
from pytsnet.testing.polling import wait_until
from pytsnet.tree import DATAPLANE

INTERNET = "198.51.100.7"
SUBNET_HOST = "10.1.2.7"
ROUTES: dict[str, list[str]] = {}
DNS_PROXY: set[str] = set()
EXIT = ["0.0.0.0/0", "::/0"]


@pytest.fixture(autouse=True)
def fake_control_routes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = netmap.node_json

    def node_json(n: Any, net: Any, *, cap: int = 0) -> dict[str, Any]:
        out = real(n, net, cap=cap)
        extra = ROUTES.get(n.hostname, [])
        out["AllowedIPs"] = [*out["Addresses"], *extra]
        out["PrimaryRoutes"] = [r for r in extra if r not in EXIT]
        if n.hostname in DNS_PROXY:
            out["Hostinfo"] = {**out["Hostinfo"], "Services": [*out["Hostinfo"].get("Services", []),
                                                                {"Proto": "peerapi-dns-proxy", "Port": 1}]}
        return out

    monkeypatch.setattr(netmap, "node_json", node_json)
    ROUTES.clear()
    DNS_PROXY.clear()
    yield
    ROUTES.clear()
    DNS_PROXY.clear()


def control_changed(net: LocalTailnet) -> None:
    assert net.control is not None
    net._call(net.control.notify)


def not_local(dev: ActorDevice) -> int:
    """Packets that reached ``dev``'s engine for an address that is not its own."""
    return dev.status().drops.get("filter_destination_not_local", 0)


def stable_id(dev: ActorDevice) -> str:
    st = dev.status()
    assert st.self_node is not None
    return st.self_node.stable_id


def unavailable(dev: ActorDevice, host: str = INTERNET) -> str:
    """The reason ``dev``'s dial to ``host`` is refused (it must be refused with ExitNodeUnavailable)."""
    with pytest.raises(ExitNodeUnavailable) as e:
        dev.tcp_connect_blocking(host, 80, timeout=2.0)
    return e.value.reason


def sent_to(dev: ActorDevice, hop: ActorDevice, host: str = INTERNET) -> None:
    """A dial from ``dev`` to ``host`` leaves through the tunnel to ``hop`` (whose engine sees the SYN)."""
    before = not_local(hop)
    with pytest.raises(DialTimeout):  # nobody forwards it (yet): the SYN's arrival is the proof
        dev.tcp_connect_blocking(host, 80, timeout=1.5)
    wait_until(lambda: not_local(hop) > before, 5, f"{host} arriving at {hop.config.hostname}'s engine")


def engine_drops_it(dev: ActorDevice, quiet: ActorDevice, host: str = INTERNET) -> None:
    """Below the facade's check: a SYN the netstack sends to ``host`` finds no route in ``dev``'s
    engine (dropped and counted there) and never reaches ``quiet``."""
    before, quiet_before = dev.status().drops.get("wg_no_route", 0), not_local(quiet)
    with pytest.raises(TimeoutError):
        dev._netstack().create_connection((host, 80), 1.0)
    wait_until(lambda: dev.status().drops.get("wg_no_route", 0) > before, 5, "no route in the engine")
    assert not_local(quiet) == quiet_before


def restart(dev: ActorDevice, name: str) -> None:
    """Kill ``dev``'s actor ``name`` as a crash and wait for its supervisor's new incarnation."""
    assert dev.system is not None
    ref = dev.system.lookup(name)
    assert ref is not None
    before = ref.incarnation
    FaultInjector.kill_now(ref, f"test: {name} crashes")
    wait_until(lambda: (r := dev.system.lookup(name)) is not None  # type: ignore[union-attr]
               and r.incarnation > before and r.is_alive, 5, f"{name} restarted")


def test_not_yet_selected_before_any_netmap(make_device: Callable[..., ActorDevice]) -> None:
    """No netmap (control unreachable): the selection cannot be made, and nothing is dialed."""
    with pytest.raises(ConfigError):
        Config(exit_node=" ").resolved()
    a = make_device("early", "http://127.0.0.1:9", exit_node="anything")
    with pytest.raises(ConfigError):
        a.set_exit_node_blocking("")
    with pytest.raises(ExitNodeUnavailable) as e:
        a.resolve(INTERNET)
    assert e.value.reason == "not-yet-selected"
    with pytest.raises(ExitNodeUnavailable):
        a.lookup_blocking("site.example.test", timeout=1.0)
    st = a.status()
    assert st.exit_node is None and st.exit_node_unavailable == "not-yet-selected"
    assert a.active_exit_node() is None


def test_exit_node_reasons_switch_clear_and_offline(net: LocalTailnet,
                                                    make_device: Callable[..., ActorDevice]) -> None:
    ROUTES["exitb"] = EXIT
    key = net.create_authkey(reusable=True)
    a = make_device("client", net.control_url, key, exit_node="nosuch", bind_host="127.0.0.1")
    b = make_device("exitb", net.control_url, key, bind_host="127.0.0.1")
    c = make_device("plainc", net.control_url, key, bind_host="127.0.0.1")
    for d in (a, b, c):
        d.wait_until_running_blocking(30)
    wait_until(lambda: len(a.peers()) == 2, 15, "a sees b and c")

    # a selector no node matches: fail closed, with Go's reason, in status() too
    assert unavailable(a) == "not-in-tailnet"
    st = a.status()
    assert st.exit_node is None and st.exit_node_unavailable == "not-in-tailnet"
    with pytest.raises(ExitNodeUnavailable):
        a.lookup_blocking("site.example.test", timeout=1.0)
    b_fqdn = next(p.name for p in a.peers() if p.hostname == "exitb")
    assert a.lookup_blocking(b_fqdn) == a.lookup_blocking("exitb") == b.tailscale_ips()[0:1]  # tailnet names
    with pytest.raises(ExitNodeUnavailable):  # UDP too
        sock = a.listen_packet_blocking()
        try:
            sock.sendto_blocking(b"x", (INTERNET, 53))
        finally:
            sock.close()

    # a node that offers no exit route
    assert a.set_exit_node_blocking("plainc") is None
    assert unavailable(a) == "no-exit-routes" and a.status().exit_node_unavailable == "no-exit-routes"

    # engaged by MagicDNS name: the resolved node, not the selector; its 0.0.0.0/0 routes to it
    got = a.set_exit_node_blocking("exitb")
    assert got is not None and got == a.active_exit_node() == a.status().exit_node
    assert (got.stable_id, got.address) == (stable_id(b), b.tailscale_ips()[0])
    assert got.name.startswith("exitb.") and a.status().exit_node_unavailable is None
    c_before = not_local(c)
    sent_to(a, b)
    # the selection survives a crash of the bridge: the next netmap change re-plumbs the engine with it
    restart(a, "dataplane")
    ROUTES["plainc"] = EXIT
    control_changed(net)
    wait_until(lambda: any(p.allowed_ips[-2:] == EXIT for p in a.peers() if p.hostname == "plainc"), 10,
               "control's new AllowedIPs for c")
    sent_to(a, b)
    assert a.active_exit_node() == got
    with pytest.raises(UnknownTailnetHost):  # ::/0 only when our node has IPv6 (this tailnet has none)
        a.resolve("2001:db8::7")
    with pytest.raises(UnknownTailnetHost):  # a tailnet IP no node owns never goes to the exit node
        a.resolve("100.100.99.99")

    # switch at runtime (by stable ID) to C, now that control offers C as exit node: C gets the traffic
    got = a.set_exit_node_blocking(stable_id(c))
    assert got is not None and got.stable_id == stable_id(c)
    b_before = not_local(b)
    sent_to(a, c)
    assert not_local(b) == b_before and not_local(c) > c_before

    # cleared: nothing beyond the tailnet, today's error
    assert a.set_exit_node_blocking(None) is None
    with pytest.raises(UnknownTailnetHost):
        a.tcp_connect_blocking(INTERNET, 80, timeout=2.0)
    engine_drops_it(a, c)
    st = a.status()
    assert st.exit_node is None and st.exit_node_unavailable is None

    # back to B, then B stops: within 5 s A's dials fail closed (control marks it offline)
    assert a.set_exit_node_blocking(b.tailscale_ips()[0]) is not None
    b.close()
    t0 = time.monotonic()
    wait_until(lambda: a.status().exit_node_unavailable is not None, 5, "exit node b seen unavailable")
    assert time.monotonic() - t0 < 5
    assert unavailable(a) == "offline"
    engine_drops_it(a, c)  # the engine took B's default route away as well


def test_subnet_routes_only_when_accepted(net: LocalTailnet, make_device: Callable[..., ActorDevice]) -> None:
    ROUTES["router"] = ["10.1.2.0/24"]
    key = net.create_authkey(reusable=True)
    r = make_device("router", net.control_url, key, bind_host="127.0.0.1")
    yes = make_device("accepts", net.control_url, key, accept_routes=True, bind_host="127.0.0.1")
    no = make_device("ignores", net.control_url, key, bind_host="127.0.0.1")
    for d in (r, yes, no):
        d.wait_until_running_blocking(30)
    wait_until(lambda: any(p.primary_routes == ["10.1.2.0/24"] for p in yes.peers()), 15, "router's routes")

    assert yes.resolve(SUBNET_HOST) == SUBNET_HOST
    sent_to(yes, r, SUBNET_HOST)
    with pytest.raises(UnknownTailnetHost):
        no.resolve(SUBNET_HOST)
    before = not_local(r)
    with pytest.raises(UnknownTailnetHost):
        no.tcp_connect_blocking(SUBNET_HOST, 80, timeout=2.0)
    assert not_local(r) == before
    engine_drops_it(no, r, SUBNET_HOST)
    # a route outside what control made the router primary for is not used
    with pytest.raises(UnknownTailnetHost):
        yes.resolve("10.1.3.7")


def test_dns_beyond_the_tailnet_goes_to_the_exit_nodes_doh(net: LocalTailnet, monkeypatch: pytest.MonkeyPatch,
                                                           make_device: Callable[..., ActorDevice]) -> None:
    """Names the tailnet does not answer are asked of the exit node's peerAPI ``/dns-query`` over the
    tunnel. The exit node's side (DoH for its clients, its own upstream) is faked at its peerAPI router:
    it answers from ``ANSWERS`` and records who asked; the client side here is real."""
    asked: list[str] = []
    answers = {"www.example.test": INTERNET}
    real_route = peerapi_conn.route

    def stub_resolve(query: bytes) -> bytes:
        q = dns.message.from_wire(query)
        name = q.question[0].name.to_text().rstrip(".")
        asked.append(name)
        resp = dns.message.make_response(q)
        if name in answers and q.question[0].rdtype == dns.rdatatype.A:
            resp.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", answers[name]))
        elif name not in answers:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        return resp.to_wire()

    def route(req: Any, *, our_addresses: Any, dns_allowed: bool, resolve: Any) -> Any:
        return real_route(req, our_addresses=our_addresses, dns_allowed=True, resolve=stub_resolve)

    monkeypatch.setattr(peerapi_conn, "route", route)
    ROUTES.update(exitb=EXIT, plainc=EXIT)
    DNS_PROXY.add("exitb")
    key = net.create_authkey(reusable=True)
    a = make_device("client", net.control_url, key, exit_node="exitb", bind_host="127.0.0.1")
    b = make_device("exitb", net.control_url, key, bind_host="127.0.0.1")
    c = make_device("plainc", net.control_url, key, bind_host="127.0.0.1")
    for d in (a, b, c):
        d.wait_until_running_blocking(30)
    wait_until(lambda: len(a.peers()) == 2 and any(p.dns_proxy for p in a.peers()), 15,
               "b's peerapi-dns-proxy service")
    wait_until(lambda: a.set_exit_node_blocking("exitb") is not None, 15, "exit node b engaged")

    assert a.lookup_blocking("www.example.test") == [INTERNET]
    assert asked == ["www.example.test"]
    assert b.status().counters.get("peerapi_dns", 0) >= 1  # over the tunnel, at B's peerAPI
    assert a.lookup_blocking("exitb") == [b.tailscale_ips()[0]]  # tailnet names never leave
    restart(a, "dns")  # a new resolver incarnation asks the bridge where names go
    assert a.lookup_blocking("www.example.test") == [INTERNET]
    asked.pop()
    with pytest.raises(UnknownTailnetHost):
        a.lookup_blocking("nowhere.example.test")
    assert asked == ["www.example.test", "nowhere.example.test"]
    sent_to(a, b, "www.example.test")  # the dial by name goes through the exit node too
    assert asked[-1] == "www.example.test" and len(asked) == 3

    # an exit node without DoH for its clients: fail closed, no query anywhere
    assert a.set_exit_node_blocking("plainc") is not None
    with pytest.raises(ExitNodeUnavailable) as e:
        a.lookup_blocking("www.example.test")
    assert e.value.reason == "no-dns-proxy"
    # and none selected: names beyond the tailnet are NXDOMAIN here (no fallback resolvers set)
    a.set_exit_node_blocking(None)
    with pytest.raises(UnknownTailnetHost):
        a.lookup_blocking("www.example.test")
    assert len(asked) == 3


def test_set_exit_node_answers_with_what_the_engine_was_plumbed_with(
        net: LocalTailnet, monkeypatch: pytest.MonkeyPatch, make_device: Callable[..., ActorDevice]) -> None:
    """The facade's peer list and the bridge's are fed separately, and the bridge's may lag. The
    answer to ``set_exit_node`` is the bridge's (the engine's routes and the resolver's DoH), so a
    caller that sees it engaged can look names up at once: not engaged while the bridge has yet to
    see the exit routes approved, even though the facade's own view already has them."""
    DNS_PROXY.add("exitb")
    key = net.create_authkey(reusable=True)
    a = make_device("client", net.control_url, key, bind_host="127.0.0.1")
    b = make_device("exitb", net.control_url, key, bind_host="127.0.0.1")
    for d in (a, b):
        d.wait_until_running_blocking(30)
    wait_until(lambda: len(a.peers()) == 1, 15, "a sees b")
    assert a.set_exit_node_blocking("exitb") is None  # no exit routes approved yet

    lagging: list[Any] = []
    real_on_peers = DataplaneBridge.on_peers
    monkeypatch.setattr(DataplaneBridge, "on_peers", lambda self, msg: lagging.append(msg))
    ROUTES["exitb"] = EXIT  # control approves b's exit routes ...
    control_changed(net)
    # the tracker tells the bridge and the facade separately: either may handle its copy first
    wait_until(lambda: a.active_exit_node() is not None and lagging, 15,
               "the facade's view: b engaged; the bridge's copy held back")
    assert a.set_exit_node_blocking("exitb") is None  # ... the bridge has not taken that netmap in

    monkeypatch.setattr(DataplaneBridge, "on_peers", real_on_peers)
    assert a.system is not None
    bridge = a.system.lookup(DATAPLANE)
    assert bridge is not None
    for held in lagging:  # the held netmap reaches the bridge late, as a slow mailbox would deliver it
        bridge.tell(held)
    wait_until(lambda: a.set_exit_node_blocking("exitb") is not None, 15, "the bridge's view: b engaged")
    st = a.status()
    assert st.exit_node is not None and st.exit_node.name.startswith("exitb")


def test_engaged_answer_holds_for_the_facades_next_dial(
        net: LocalTailnet, monkeypatch: pytest.MonkeyPatch, make_device: Callable[..., ActorDevice]) -> None:
    """The other lag: the bridge takes the netmap in first and the facade hears of it later (here
    0.3 s, as on a loaded machine). ``set_exit_node`` answering engaged means the facade's next dial
    goes through that node, not ``ExitNodeUnavailable`` on the facade's older peer table."""
    real_on_event = ActorDevice._on_event

    def late_peers(self: ActorDevice, msg: Any) -> None:
        if isinstance(msg, PeersChanged) and self.config.hostname == "client":
            time.sleep(0.3)
        real_on_event(self, msg)

    monkeypatch.setattr(ActorDevice, "_on_event", late_peers)
    key = net.create_authkey(reusable=True)
    a = make_device("client", net.control_url, key, bind_host="127.0.0.1")
    b = make_device("exitb", net.control_url, key, bind_host="127.0.0.1")
    for d in (a, b):
        d.wait_until_running_blocking(30)
    wait_until(lambda: len(a.peers()) == 1, 15, "a sees b")
    assert a.set_exit_node_blocking("exitb") is None  # no exit routes approved yet

    ROUTES["exitb"] = EXIT
    control_changed(net)
    engaged: list[Any] = []
    wait_until(lambda: engaged.append(a.set_exit_node_blocking("exitb")) or engaged[-1] is not None, 15,
               "b engaged")
    assert a.active_exit_node() == engaged[-1]
    assert a.resolve(INTERNET) == INTERNET  # not ExitNodeUnavailable
    sent_to(a, b)


def test_ipv6_default_route_with_ipv6_on(tmp_path: Any, make_device: Callable[..., ActorDevice]) -> None:
    """On a tailnet with IPv6 addresses the engaged exit node also gets ``::/0``."""
    ROUTES["exitb"] = EXIT
    with LocalTailnet(tmp_path / "control6", listen="127.0.0.1:0", ipv6=True) as net6:
        key = net6.create_authkey(reusable=True)
        a = make_device("client", net6.control_url, key, exit_node="exitb", bind_host="127.0.0.1", ipv6=True)
        b = make_device("exitb", net6.control_url, key, bind_host="127.0.0.1", ipv6=True)  # 24d: opt-in
        for d in (a, b):
            d.wait_until_running_blocking(30)
        wait_until(lambda: a.set_exit_node_blocking("exitb") is not None, 15, "exit node b engaged")
        assert any(":" in ip for ip in a.tailscale_ips())
        sent_to(a, b, "2001:db8::7")
        sent_to(a, b)
        a.close()
        b.close()
