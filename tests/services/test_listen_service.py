"""``dev.listen_service``: a tagged Python node hosts ``svc:web`` on a LocalTailnet that defines it;
control approves it by its ``Hostinfo.ServicesHash``, hands it the VIP (``service-host``), routes peers
to the VIP through the host's AllowedIPs and names it in DNS. A Python peer reaches the service by VIP
and by name; other ports of the VIP are refused (fail closed); an untagged node gets the typed error."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator

import pytest

from pytsnet.device import ActorDevice
from pytsnet.errors import ConnectionRefused, ServiceUnavailable, UntaggedServiceHost
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.services import SERVICE_V4, ServiceDef
from pytsnet.services.listener import ServiceListener, ServiceModeHTTP, ServiceModeTCP
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import tagged_host_and_peer

pytestmark = pytest.mark.timeout(180)

SERVICES = {"svc:web": ServiceDef(ports=("tcp:80",), tags=("tag:web",))}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalTailnet, ActorDevice, ActorDevice]]:
    with tagged_host_and_peer(tmp_path_factory.mktemp("services"), services=SERVICES) as rig:
        yield rig


def _serve_one(lst: ServiceListener, tag: bytes) -> threading.Thread:
    def run() -> None:
        conn, _ = lst.accept(timeout=30)
        with conn:
            conn.sendall(tag + conn.recv(100))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _echo(dev: ActorDevice, host: str, port: int) -> bytes:
    sock = dev.tcp_connect_blocking(host, port, timeout=15)
    sock.settimeout(15)
    with sock:
        sock.sendall(b"hi")
        return sock.recv(100)


def test_tagged_host_serves_its_vip_by_address_and_name(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice]) -> None:
    _net, host, peer = rig
    with host.listen_service_blocking("svc:web", ServiceModeTCP(port=80)) as lst:
        assert isinstance(lst, ServiceListener)  # TCP without a forward target: the app accepts
        assert lst.fqdn == "web." + host.dataplane_info().netmap.domain  # type: ignore[union-attr]
        wait_until(lambda: bool(lst.vips()), 20, "control approves the host and gives it the VIP")
        (vip,) = lst.vips()
        assert ipaddress.ip_address(vip) in SERVICE_V4
        assert vip not in host.tailscale_ips()
        # peers route the VIP to the host: it is in the host's AllowedIPs
        wait_until(lambda: any(f"{vip}/32" in p.allowed_ips for p in peer.peers() if p.hostname == "host"),
                   20, "the peer's netmap routes the VIP to the host")

        t = _serve_one(lst, b"svc:")
        assert _echo(peer, vip, 80) == b"svc:hi"
        t.join(10)

        t = _serve_one(lst, b"byname:")  # Go gives the service a MagicDNS name: <label>.<domain>
        assert _echo(peer, lst.fqdn, 80) == b"byname:hi"
        t.join(10)

        with pytest.raises(ConnectionRefused):  # another port of the VIP: nobody hosts it there
            _echo(peer, vip, 81)
        with pytest.raises(ConnectionRefused):  # the node's own address does not get the service port
            _echo(peer, host.tailscale_ips()[0], 80)

        echo = peer.icmp_ping_blocking(vip, timeout=10)  # Go's netstack answers echo on a VIP too
        assert echo.done and not echo.error, echo

        def udp_drops() -> int:
            return host.status().drops.get("netstack_service_protocol_unsupported", 0)
        before = udp_drops()
        usock = peer.listen_packet_blocking()  # UDP to a VIP: dropped and counted, no ICMP answer
        try:
            usock.sendto_blocking(b"nobody", (vip, 53))
            wait_until(lambda: udp_drops() > before, 10, "the host counts the UDP datagram to its VIP")
        finally:
            usock.close()


def test_a_node_listener_never_takes_vip_traffic(rig: tuple[LocalTailnet, ActorDevice, ActorDevice]) -> None:
    """A plain listener on port 80 of the host serves its own address only: the VIP stays closed
    on every port it does not host (fail closed)."""
    _net, host, peer = rig
    with host.listen_service_blocking("svc:web", ServiceModeTCP(port=80)) as lst:
        wait_until(lambda: bool(lst.vips()), 20, "VIP assigned")
        vip = lst.vips()[0]
        plain = host.listen_blocking(8081)
        try:
            with pytest.raises(ConnectionRefused):
                _echo(peer, vip, 8081)
        finally:
            plain.close()


def test_duplicate_port_and_unsupported_modes(rig: tuple[LocalTailnet, ActorDevice, ActorDevice]) -> None:
    _net, host, _peer = rig
    with host.listen_service_blocking("svc:web", ServiceModeTCP(port=80)), pytest.raises(ServiceUnavailable):
        host.listen_service_blocking("svc:web", ServiceModeHTTP(port=80))
    with pytest.raises(ServiceUnavailable):  # 20f: HTTPS served; app caps not yet
        host.listen_service_blocking("svc:web", ServiceModeHTTP(port=80, accept_app_caps={"/": ["x"]}))
    with pytest.raises(ValueError):
        host.listen_service_blocking("web", ServiceModeTCP(port=80))
    with pytest.raises(ValueError):
        host.listen_service_blocking("svc:web", ServiceModeTCP(port=0))


def test_closing_the_last_listener_withdraws_the_service(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice]) -> None:
    _net, host, peer = rig
    lst = host.listen_service_blocking("svc:web", ServiceModeTCP(port=80))
    wait_until(lambda: bool(lst.vips()), 20, "VIP assigned")
    lst.close()
    wait_until(lambda: not host.service_ips("svc:web"), 20, "control withdraws the VIP from the host")
    wait_until(lambda: not any(p.hostname == "host" and any(a.startswith("100.100.0.") for a in p.allowed_ips)
                               for p in peer.peers()), 20, "peers stop routing the VIP")


def test_untagged_host_gets_the_typed_error(rig: tuple[LocalTailnet, ActorDevice, ActorDevice]) -> None:
    _net, _host, peer = rig
    with pytest.raises(UntaggedServiceHost):
        peer.listen_service_blocking("svc:web", ServiceModeTCP(port=80))
