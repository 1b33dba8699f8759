"""What the NAT lab showed missing in endpoint discovery, as Go's ``determineEndpoints``: local
interface addresses when bound to 0.0.0.0 (same-LAN peers), and the hard-NAT ``Stun4LocalPort`` guess."""

from __future__ import annotations

import ipaddress

import pytest

from pytsnet.actors.magicsock import stun as stun_mod
from pytsnet.actors.magicsock.localaddr import local_ipv4
from pytsnet.actors.magicsock.stun import StunProber
from pytsnet.messages.magicsock import MagicsockSpawn
from pytsnet.testing.netns import isolated_netns, netns_available
from pytsnet.wire.magicsock.netcheck import Report

WAN = (ipaddress.ip_address("203.0.113.10"), 40000)
LAN = ipaddress.IPv4Address("10.1.0.10")


def report(varies: bool | None) -> Report:
    return Report(udp=True, global_v4=WAN, global_v6=None, region_latency={900: 0.001}, preferred_derp=900,
                  mapping_varies_by_dest_ip=varies)


def prober(monkeypatch: pytest.MonkeyPatch, **cfg: object) -> StunProber:
    monkeypatch.setattr(stun_mod, "local_ipv4", lambda: (LAN,))
    p = StunProber(MagicsockSpawn(node_public="nodekey:" + "00" * 32, wg_sink="wg", **cfg))  # type: ignore[arg-type]
    p.bound_port = 41641
    return p


def test_unspecified_bind_offers_the_local_addresses_after_stun(monkeypatch: pytest.MonkeyPatch) -> None:
    p = prober(monkeypatch)
    assert p._endpoints(report(False)) == ("203.0.113.10:40000", "10.1.0.10:41641")
    p.bound_port = 0  # not bound yet: no port to offer
    assert p._endpoints(report(False)) == ("203.0.113.10:40000",)


def test_specific_bind_offers_only_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    p = prober(monkeypatch, bind_host="127.0.0.1")
    assert p._endpoints(report(False)) == ("203.0.113.10:40000", "127.0.0.1:41641")


def test_hard_nat_with_a_fixed_port_guesses_that_port_on_the_stun_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    p = prober(monkeypatch, bind_port=41641)
    assert p._endpoints(report(True)) == ("203.0.113.10:40000", "203.0.113.10:41641", "10.1.0.10:41641")
    assert "203.0.113.10:41641" not in p._endpoints(report(False))  # easy NAT: the STUN port is right
    assert "203.0.113.10:41641" not in p._endpoints(report(None))  # unknown (one STUN server)
    q = prober(monkeypatch)  # OS-chosen port: nothing to guess (as Go: c.port == 0)
    assert q._endpoints(report(True)) == ("203.0.113.10:40000", "10.1.0.10:41641")


def test_nothing_when_endpoints_are_not_advertised(monkeypatch: pytest.MonkeyPatch) -> None:
    assert prober(monkeypatch, advertise_endpoints=False, bind_port=41641)._endpoints(report(True)) == ()


@pytest.mark.root
def test_local_ipv4_reads_the_calling_threads_namespace() -> None:
    if reason := netns_available():
        pytest.skip(reason)
    with isolated_netns("nla") as ns:
        assert ns.call(local_ipv4) == ()  # only loopback
        ns.sh("ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up && "
              "ip addr add 10.9.8.7/24 dev d0 && ip addr add 169.254.1.1/16 dev d0 && "
              "ip addr add 198.51.100.9/24 dev d1")
        got = ns.call(local_ipv4)
        assert sorted(got) == [ipaddress.IPv4Address("10.9.8.7"), ipaddress.IPv4Address("198.51.100.9")]
