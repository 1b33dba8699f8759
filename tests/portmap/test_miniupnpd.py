"""The port mapper against miniupnpd in a hard-NAT lab router (``pytsnet.testing.portmap_lab``).

For each protocol in turn (pinned): the magicsock tree's PortMapper maps the bound UDP port, the
StunProber advertises the mapped endpoint, a datagram from the "internet" to WAN:mapped_port reaches
the node's socket (and does not before: the NAT is endpoint-dependent and drops unsolicited traffic),
a short lease is renewed past its lifetime, and closing the node deletes the mapping.

The router's WAN address is RFC 5737 (203.0.113.10), which miniupnpd maps for only after its STUN
test against the lab's RFC 5780 reflectors found no filtering and no port change: the tests read
that verdict, the external address it then reports, and that filtered answers or a router that
NATs its own requests turn port forwarding off (the lab's explicit rules are what make it work).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator

import pytest

from pytsnet.actors.keeper import MEMORY, MemoryKeeper
from pytsnet.actors.magicsock.node import spawn_magicsock
from pytsnet.actors.runtime import Actor, ActorSystem, handles
from pytsnet.messages.magicsock import (
    HomeRegion,
    LocalAddrRequest,
    LocalEndpoints,
    MagicsockKeys,
    MagicsockSpawn,
    NetcheckReport,
    PathStatusRequest,
    WgDatagramIn,
)
from pytsnet.messages.portmap import PortmapSpawn, PortmapStatus, PortmapStatusRequest
from pytsnet.testing.netns import netns_available
from pytsnet.testing.polling import wait_until
from pytsnet.testing.portmap_lab import (
    LAN_GATEWAY,
    LAN_NODE,
    WAN_IF,
    WAN_ROUTER,
    WAN_SECOND,
    PortmapLab,
    miniupnpd_available,
    portmap_lab,
)
from pytsnet.wire.keys import DiscoPrivate, NodePrivate
from pytsnet.wire.portmap import natpmp

pytestmark = pytest.mark.skipif(bool(netns_available() or miniupnpd_available()),
                                reason=str(netns_available() or miniupnpd_available()))

LEASE = 4  # seconds: renewed every 2 s


class Collect(Actor):
    """The wg sink and the "control" the StunProber tells our endpoints."""

    def __init__(self, endpoints: list[tuple[str, ...]], reports: list[NetcheckReport] | None = None) -> None:
        self.endpoints = endpoints
        self.reports = reports

    @handles(LocalEndpoints)
    def on_eps(self, msg: LocalEndpoints) -> None:
        self.endpoints.append(msg.endpoints)

    @handles(WgDatagramIn)
    def on_in(self, msg: WgDatagramIn) -> None:
        pass

    @handles(NetcheckReport)
    def on_report(self, msg: NetcheckReport) -> None:
        if self.reports is not None:
            self.reports.append(msg)

    @handles(HomeRegion)
    def on_home(self, msg: HomeRegion) -> None:
        pass


@pytest.fixture(scope="module")
def lab() -> Iterator[PortmapLab]:
    with portmap_lab() as lab:
        lab.miniupnpd()
        yield lab


Started = tuple[ActorSystem, MagicsockSpawn, list[tuple[str, ...]]]


def _node(lab: PortmapLab, portmap: PortmapSpawn | None,
          reports: list[NetcheckReport] | None = None) -> Started:
    eps: list[tuple[str, ...]] = []
    private = NodePrivate.generate()
    cfg = MagicsockSpawn(node_public=private.public().to_text(), wg_sink="w", control="w", memory=MEMORY,
                         bind_host="0.0.0.0", stun_interval=(0.5, 0.5), portmap=portmap)

    def start() -> ActorSystem:
        system = ActorSystem("pm")
        system.spawn(Collect, eps, reports, name="w")
        system.spawn(MemoryKeeper, name=MEMORY)
        spawn_magicsock(system, cfg, MagicsockKeys(node_private=private.to_text(),
                                                   disco_private=DiscoPrivate.generate().to_text()))
        return system

    return lab.node.call(start), cfg, eps  # every thread of the node starts on the LAN


def _bound_port(system: ActorSystem, cfg: MagicsockSpawn) -> int:
    ref = system.lookup(cfg.name("udp"))
    assert ref is not None
    return int(ref.ask(LocalAddrRequest(), timeout=5).addr.rsplit(":", 1)[1])


def _reads(system: ActorSystem, cfg: MagicsockSpawn) -> int:
    ref = system.lookup(cfg.name("udp"))
    assert ref is not None
    return ref.ask(PathStatusRequest(), timeout=5).datagrams_read


def _from_internet(lab: PortmapLab, port: int) -> None:
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                s.sendto(b"\x7f" + b"portmap-lab" * 4, (WAN_ROUTER, port))
    lab.internet.call(send)


def _status(system: ActorSystem, cfg: MagicsockSpawn) -> PortmapStatus:
    ref = system.lookup(cfg.name("portmap"))
    assert ref is not None
    return ref.ask(PortmapStatusRequest(), timeout=5)


def _natpmp(lab: PortmapLab, request: bytes) -> natpmp.PmpResponse:
    """One NAT-PMP exchange from the node with the gateway's miniupnpd."""
    def ask() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(request, (LAN_GATEWAY, 5351))
            return s.recv(64)
    return natpmp.parse_response(lab.node.call(ask))


def test_stun_verdict_and_the_external_address_it_reports(lab: PortmapLab) -> None:
    """miniupnpd learned 203.0.113.10 (its own, reserved, WAN address) by STUN, found it unrestricted
    after all four answers (two of them from the other IP), and NAT-PMP reports that address."""
    verdict = lab.daemon.stun_verdict()
    assert (f"STUN: ext interface {WAN_IF} with IP address {WAN_ROUTER} is now behind unrestricted full-cone "
            f"NAT 1:1 with public IP address {WAN_ROUTER}") in verdict, lab.daemon_log()[-3000:]
    assert "Port forwarding is now enabled" in lab.daemon_log()
    assert f"RESPONSE-ORIGIN {WAN_SECOND}:3479" in lab.daemon_log()  # the change-IP-and-port answer
    assert lab.reflectors.stun_answers >= 4
    addr = _natpmp(lab, natpmp.external_address_request())
    assert addr.result == 0 and addr.public_ip == ipaddress.ip_address(WAN_ROUTER)


@pytest.mark.parametrize("breakage", ["input-filters-other-ip", "router-nats-itself"])
def test_without_the_labs_stun_rules_port_forwarding_is_off(lab: PortmapLab, breakage: str) -> None:
    """Each rule the lab adds for the STUN test is needed: answers from the other IP dropped at the
    router's input (conntrack does not know them), or the router's own requests sent through
    ``masquerade random`` (a NAT chain before the lab's exemption), make miniupnpd find a restrictive
    NAT, turn port forwarding off, and :meth:`Miniupnpd.start` refuse."""
    if breakage == "input-filters-other-ip":
        chain = (f"type filter hook input priority -10; policy accept;\n"
                 f"ip saddr {WAN_SECOND} udp sport {{ 3478, 3479 }} drop")
    else:
        chain = (f"type nat hook postrouting priority 50; policy accept;\n"
                 f'oifname "{WAN_IF}" fib saddr type local masquerade random')
    rules = lab.workdir / "stunbreak.nft"
    rules.write_text(f"table inet stunbreak {{\n chain c {{\n{chain}\n }}\n}}\n")
    lab.router.run(["nft", "-f", str(rules)])
    try:
        with pytest.raises(RuntimeError, match="did not start"):
            lab.miniupnpd()
        assert "Port forwarding is now disabled" in lab.daemon_log().rsplit("STUN: Performing", 1)[-1]
        assert "restrictive or symmetric NAT" in lab.daemon.stun_verdict()
        assert lab.daemon.daemon is None  # not left running
    finally:
        lab.router.run(["nft", "delete", "table", "inet", "stunbreak"], check=False)
        lab.miniupnpd()
    assert "unrestricted full-cone" in lab.daemon.stun_verdict()


def test_hard_nat_drops_unsolicited_without_a_mapping(lab: PortmapLab) -> None:
    system, cfg, _eps = _node(lab, None)
    try:
        port = _bound_port(system, cfg)
        assert system.lookup(cfg.name("portmap")) is None
        before = _reads(system, cfg)
        _from_internet(lab, port)
        time.sleep(1.0)
        assert _reads(system, cfg) == before
    finally:
        assert system.shutdown(10)


@pytest.mark.parametrize("protocol", ["pmp", "pcp", "upnp"])
def test_maps_advertises_renews_and_releases(lab: PortmapLab, protocol: str) -> None:
    system, cfg, eps = _node(lab, PortmapSpawn(protocols=(protocol,), lifetime=LEASE, retry=1.0))
    closed = False
    try:
        port = _bound_port(system, cfg)
        wait_until(lambda: _status(system, cfg).external is not None, timeout=15,
                   what=f"a {protocol} mapping ({_status(system, cfg).last_error})")
        st = _status(system, cfg)
        assert st.protocol == protocol and st.local_port == port
        ext = st.external
        assert ext is not None and ext.startswith(f"{WAN_ROUTER}:")
        ext_port = int(ext.rsplit(":", 1)[1])
        assert (ext_port, LAN_NODE, port) in lab.redirects()
        # advertised, first (Go's EndpointPortmapped)
        wait_until(lambda: any(e and e[0] == ext for e in eps), timeout=10,
                   what="the mapped endpoint advertised")

        before = _reads(system, cfg)
        _from_internet(lab, ext_port)
        wait_until(lambda: _reads(system, cfg) > before, timeout=5,
                   what="a datagram from the WAN via the mapping")

        # renewal: well past one lease the mapping is still there and was renewed
        first = st.mappings
        time.sleep(LEASE * 1.6)
        st = _status(system, cfg)
        assert st.mappings >= first + 2, st
        assert st.external == ext
        assert (ext_port, LAN_NODE, port) in lab.redirects()
        before = _reads(system, cfg)
        _from_internet(lab, ext_port)
        wait_until(lambda: _reads(system, cfg) > before, timeout=5, what="still reachable after renewals")

        assert system.shutdown(10)
        closed = True
        assert all(r[0] != ext_port for r in lab.redirects()), lab.redirects()
    finally:
        if not closed:
            system.shutdown(10)


def test_no_gateway_service_is_a_counted_failure(lab: PortmapLab) -> None:
    """miniupnpd without NAT-PMP/PCP: a pinned NAT-PMP mapper fails, counts it and advertises nothing."""
    lab.miniupnpd(natpmp=False, upnp=True)
    try:
        system, cfg, eps = _node(lab, PortmapSpawn(protocols=("pmp",), lifetime=LEASE, retry=0.5))
        try:
            wait_until(lambda: _status(system, cfg).failures >= 2, timeout=15, what="counted failures")
            st = _status(system, cfg)
            assert st.external is None and "pmp" in st.last_error
            assert not any(e and e[0].startswith(f"{WAN_ROUTER}:") for e in eps)
        finally:
            assert system.shutdown(10)
    finally:
        lab.miniupnpd()


def test_what_the_gateway_offers_goes_into_the_report(lab: PortmapLab) -> None:
    """Go's ``NetInfo.PMP``/``PCP``/``UPnP``/``HavePortMap``: with miniupnpd serving UPnP alone, the
    mapper's NAT-PMP and PCP attempts fail and UPnP maps; the StunProber's report (what control hears
    as NetInfo) says which protocol took and which did not."""
    lab.miniupnpd(natpmp=False, upnp=True)
    try:
        reports: list[NetcheckReport] = []
        system, cfg, _eps = _node(lab, PortmapSpawn(lifetime=LEASE, retry=1.0), reports)
        try:
            want = {"pmp": False, "pcp": False, "upnp": True}
            wait_until(lambda: any(r.portmap_protocols == want and r.have_port_map for r in list(reports)),
                       timeout=20, what=f"the offer in a report ({reports[-1:]}, {_status(system, cfg)})")
        finally:
            assert system.shutdown(10)
    finally:
        lab.miniupnpd()
