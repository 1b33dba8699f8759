"""``Config.ipv6`` piece by piece (no sockets but one throwaway each): the config rule for
``bind_host``, the login machine dropping our IPv6 tailnet address, the socket plan, DERP-map
reading of ``IPv6``, the dual-stack netcheck, and the DERP dial's family choice."""

from __future__ import annotations

import ipaddress
import json
import random
import socket

import pytest

import pytsnet.wire.control as lm
from pytsnet.actors.dataplane.netmap import derp_regions
from pytsnet.actors.magicsock import derp_link
from pytsnet.actors.magicsock.udp_families import bind_plan, udp_families
from pytsnet.actors.magicsock.udp_lane import dst_for
from pytsnet.config import Config
from pytsnet.errors import ConfigError
from pytsnet.messages.magicsock import DerpRegion, MagicsockSpawn
from pytsnet.wire import stun
from pytsnet.wire.keys import DiscoPrivate
from pytsnet.wire.magicsock.netcheck import Netcheck
from pytsnet.wire.magicsock.netcheck_dual import DualNetcheck, netcheck_for
from pytsnet.wire.tailcfg import DERPMap, Hostinfo

V4, V6 = "100.64.0.5/32", "fd7a:115c:a1e0:ab12:4843:cd96:6440:5/128"


# -- Config ------------------------------------------------------------------------------------------
def test_ipv6_is_off_by_default_and_an_ipv6_bind_host_needs_it() -> None:
    assert Config().ipv6 is False
    for host in ("::", "::1", "2001:db8::1"):
        with pytest.raises(ConfigError, match="ipv6"):
            Config(bind_host=host, ephemeral=True).resolved()
        assert Config(bind_host=host, ipv6=True, ephemeral=True).resolved().bind_host == host
    Config(bind_host="127.0.0.1", ipv6=True, ephemeral=True).resolved()  # the host binds only IPv4


# -- the login machine: our own IPv6 address ----------------------------------------------------------
def _running(ipv6: bool) -> tuple[lm.LoginMachine, list[lm.Action]]:
    """A machine taken to Running with a netmap giving us an IPv4 and an IPv6 address; every action."""
    cfg = lm.LoginConfig(control_url="http://control.test", hostinfo=Hostinfo(Hostname="me"),
                         auth_key="tskey-auth-x", ipv6=ipv6)
    m = lm.LoginMachine(cfg, rng=random.Random(1))
    out = m.start(0.0, stored_node=None, stored_netmap=None, restarted=False)
    out += m.handle(lm.Connected(m.conn), 0.0)
    body = json.dumps({"MachineAuthorized": True, "Login": {"LoginName": "u@example"}}).encode()
    out += m.handle(lm.RegisterAnswered(m.conn, 200, body), 0.0)
    out += m.handle(lm.MapPollAnswered(m.stream, 200), 0.0)
    me = {"ID": 5, "StableID": "n5", "Name": "me.example.ts.net.", "User": 1,
          "Key": m.node.public().to_text(), "DiscoKey": DiscoPrivate.generate().public().to_text(),
          "Addresses": [V4, V6], "AllowedIPs": [V4, V6], "MachineAuthorized": True}
    out += m.handle(lm.MapFrameReceived(m.stream, json.dumps({"Node": me}).encode()), 0.0)
    return m, out


@pytest.mark.parametrize("ipv6", [False, True])
def test_our_ipv6_address_only_with_ipv6_on(ipv6: bool) -> None:
    m, out = _running(ipv6)
    assert m.status.state == "Running"
    nm = next(a for a in out if isinstance(a, lm.PublishNetmap)).netmap
    want = [V4, V6] if ipv6 else [V4]
    assert nm.self_node.Addresses == want and nm.self_node.AllowedIPs == want
    assert list(m.status.addresses) == want
    stored = next(a for a in out if isinstance(a, lm.PersistNetmap)).blob
    assert V6.split("/")[0] in stored.decode()  # the store keeps control's netmap as it came
    # a restart shows the stored netmap's addresses through the same rule
    node = [a for a in out if isinstance(a, lm.PersistNode)][-1].blob
    m2 = lm.LoginMachine(m.cfg, rng=random.Random(2))
    m2.start(1.0, stored_node=node, stored_netmap=stored, restarted=True)
    assert list(m2.status.addresses) == want


# -- the magicsock socket ----------------------------------------------------------------------------
def _spawn(host: str, ipv6: bool, regions: tuple[DerpRegion, ...] = ()) -> MagicsockSpawn:
    return MagicsockSpawn(node_public="nodekey:00", wg_sink="w", bind_host=host, ipv6=ipv6, regions=regions)


def test_bind_plan_follows_the_knob() -> None:
    p = bind_plan(_spawn("0.0.0.0", False))
    assert (p.family, p.host, p.dual) == (socket.AF_INET, "0.0.0.0", False)
    assert udp_families(_spawn("0.0.0.0", False)) == (True, False)
    p = bind_plan(_spawn("0.0.0.0", True))
    assert (p.family, p.host, p.dual) == (socket.AF_INET6, "::", True)
    assert udp_families(_spawn("::", True)) == (True, True)
    p = bind_plan(_spawn("127.0.0.1", True))
    assert (p.family, p.host) == (socket.AF_INET, "127.0.0.1")
    assert udp_families(_spawn("127.0.0.1", True)) == (True, False)
    p = bind_plan(_spawn("::1", True))
    assert (p.family, p.host, p.dual) == (socket.AF_INET6, "::1", False)
    assert udp_families(_spawn("::1", True)) == (False, True)
    with pytest.raises(ValueError):
        bind_plan(_spawn("::", False))


def test_dual_stack_sends_map_ipv4() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6, socket.socket(socket.AF_INET,
                                                                                 socket.SOCK_DGRAM) as s4:
        assert dst_for(s6, ("192.0.2.1", 9)) == ("::ffff:192.0.2.1", 9)
        assert dst_for(s6, ("2001:db8::1", 9)) == ("2001:db8::1", 9)
        assert dst_for(s4, ("192.0.2.1", 9)) == ("192.0.2.1", 9)


# -- the DERP map's IPv6 -------------------------------------------------------------------------------
def _dm(**node: object) -> DERPMap:
    n = {"Name": "1a", "RegionID": 1, "HostName": "derp.example.com", "DERPPort": 443, **node}
    return DERPMap.model_validate({"Regions": {"1": {"RegionID": 1, "RegionCode": "x", "Nodes": [n]}}})


def test_derp_regions_read_ipv6() -> None:
    (r,) = derp_regions(_dm(IPv4="192.0.2.10", IPv6="2001:db8::10"))
    assert (r.host, r.host6) == ("192.0.2.10", "2001:db8::10")
    (r,) = derp_regions(_dm(IPv4="192.0.2.10", IPv6="none"))
    assert (r.host, r.host6) == ("192.0.2.10", "")
    (r,) = derp_regions(_dm(HostName="2001:db8::10", IPv4="none", IPv6="2001:db8::10"))
    assert (r.host, r.host6) == ("", "2001:db8::10")
    (r,) = derp_regions(_dm(HostName="2001:db8::10", IPv4="2001:db8::10", IPv6="none"))
    assert (r.host, r.host6) == ("", "2001:db8::10")  # an IPv6 literal given as IPv4 is IPv6


def test_derp_dial_never_uses_ipv6_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[tuple[str, int]] = []

    def fake(addr: tuple[str, int], timeout: float) -> socket.socket:
        dialled.append(addr)
        raise OSError("refused")
    monkeypatch.setattr(derp_link.socket, "create_connection", fake)
    only6 = DerpRegion(region_id=1, host="", host6="2001:db8::10", port=443)
    with pytest.raises(OSError, match="IPv6 is off"):
        derp_link._connect(only6, ipv6=False)
    assert dialled == []
    both = DerpRegion(region_id=1, host="192.0.2.10", host6="2001:db8::10", port=443)
    with pytest.raises(OSError):
        derp_link._connect(both, ipv6=False)
    assert dialled == [("192.0.2.10", 443)]
    dialled.clear()
    with pytest.raises(OSError):
        derp_link._connect(both, ipv6=True)
    assert dialled == [("192.0.2.10", 443), ("2001:db8::10", 443)]  # IPv4 first, IPv6 when it fails
    assert derp_link._host_header("2001:db8::10") == "[2001:db8::10]"


# -- netcheck over both families ---------------------------------------------------------------------
def test_netcheck_for_is_ipv4_only_without_ipv6_servers() -> None:
    s4 = {1: [(ipaddress.ip_address("192.0.2.1"), 3478)]}
    assert isinstance(netcheck_for(s4, {}), Netcheck)
    assert isinstance(netcheck_for(s4, {1: [(ipaddress.ip_address("2001:db8::1"), 3478)]}), DualNetcheck)


def test_dual_netcheck_learns_both_global_addresses() -> None:
    v4s, v6s = (ipaddress.ip_address("192.0.2.1"), 3478), (ipaddress.ip_address("2001:db8::1"), 3478)
    tx = iter(bytes([i]) * 12 for i in range(1, 50))
    check = DualNetcheck({1: [v4s]}, {1: [v6s]}, tx_id=lambda: next(tx))
    sends = check.start(0.0)
    assert {s.dst for s in sends} == {v4s, v6s}
    me4, me6 = (ipaddress.ip_address("198.51.100.7"), 41641), (ipaddress.ip_address("2001:db8:9::7"), 41641)
    by_dst = {s.dst: stun.parse_binding_request(s.data) for s in sends}
    assert check.on_response(0.010, stun.response(by_dst[v4s], *me4))
    assert not check.done  # the IPv4 answer does not end the IPv6 probe
    assert check.on_response(0.020, stun.response(by_dst[v6s], *me6))
    assert check.done
    rep = check.report()
    assert (rep.global_v4, rep.global_v6) == (me4, me6)
    assert rep.region_latency == {1: pytest.approx(0.010)} and rep.preferred_derp == 1 and rep.udp
    assert rep.derp_latency == {"1-v4": pytest.approx(0.010), "1-v6": pytest.approx(0.020)}  # per family
