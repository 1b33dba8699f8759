"""Chaos (20d): the host's NetstackActor killed, and its whole data plane rebuilt, while it hosts a
VIP service and has a fallback TCP handler. Both keep working afterwards (the registry carries the
channel, the fallback switch and the VIPs into the next incarnation; a rebuilt netstack is told
again by the device and the bridge), and the VIP stays closed on ports nobody hosts."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.actors.runtime import FaultInjector
from pytsnet.device import ActorDevice
from pytsnet.errors import ConnectionRefused
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.services import ServiceDef
from pytsnet.messages.control import LiteUpdate
from pytsnet.net.socket import SocketLike
from pytsnet.services.fallback import ConnHandler
from pytsnet.services.listener import ServiceListener, ServiceModeTCP
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import accept_each
from pytsnet.testing.tailnet import tagged_host_and_peer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[LocalTailnet, ActorDevice, ActorDevice]]:
    services = {"svc:web": ServiceDef(ports=("tcp:80",), tags=("tag:web",))}
    with tagged_host_and_peer(tmp_path, services=services) as rig:
        yield rig


def _echo_handler(conn: SocketLike) -> None:
    with conn:
        conn.sendall(b"fb:" + conn.recv(100))


def _fallback(src: tuple[str, int], dst: tuple[str, int]) -> tuple[ConnHandler | None, bool]:
    return (_echo_handler, True) if dst[1] == 9000 else (None, False)


def _svc_echo(conn: SocketLike) -> None:
    conn.sendall(b"svc:" + conn.recv(100))


def _ask(peer: ActorDevice, host: str, port: int) -> bytes:
    sock = peer.tcp_connect_blocking(host, port, timeout=10)
    sock.settimeout(10)
    with sock:
        sock.sendall(b"x")
        return sock.recv(100)


def _works(peer: ActorDevice, host: ActorDevice, vip: str) -> None:
    assert _ask(peer, vip, 80) == b"svc:x"
    assert _ask(peer, host.tailscale_ips()[0], 9000) == b"fb:x"
    with pytest.raises(ConnectionRefused):
        _ask(peer, vip, 9000)  # the fallback is for our own addresses, never a VIP
    with pytest.raises(ConnectionRefused):
        _ask(peer, host.tailscale_ips()[0], 9001)  # the handler passes: RST


def _eventually_works(peer: ActorDevice, host: ActorDevice, vip: str) -> None:
    def ok() -> bool:
        try:
            _works(peer, host, vip)
        except (OSError, AssertionError):
            return False
        return True
    wait_until(ok, 30, "service and fallback work again", interval=0.2)


def test_netstack_kill_and_dataplane_rebuild_keep_services_and_fallback(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice]) -> None:
    net, host, peer = rig
    stop = threading.Event()
    unregister = host.register_fallback_tcp_handler(_fallback)
    lst = host.listen_service_blocking("svc:web", ServiceModeTCP(port=80))
    assert isinstance(lst, ServiceListener)
    server = accept_each(lst, stop, _svc_echo)
    try:
        wait_until(lambda: bool(lst.vips()), 20, "VIP assigned")
        vip = lst.vips()[0]
        _eventually_works(peer, host, vip)

        assert host.system is not None
        ref = host.system.lookup("netstack")
        assert ref is not None
        FaultInjector.kill_now(ref, "chaos: the service host's netstack")
        wait_until(lambda: ref.incarnation == 2 and ref.is_alive, 20, "netstack restarted")
        _eventually_works(peer, host, vip)

        old = host._ns
        assert net.relay is not None
        dm = copy.deepcopy(net.relay.derp_map)  # one more region: a new data-plane identity, rebuilt
        extra = copy.deepcopy(dm["Regions"]["900"])
        extra.update(RegionID=901, RegionCode="spare")
        extra["Nodes"] = [dict(n, Name="901a", RegionID=901, DERPPort=9, STUNPort=9) for n in extra["Nodes"]]
        dm["Regions"]["901"] = extra
        net.set_derp_map(dm)
        wait_until(lambda: host._ns is not None and host._ns is not old, 30, "host data plane rebuilt")
        host.up_blocking(30)
        _eventually_works(peer, host, vip)
    finally:
        stop.set()
        lst.close()
        unregister()
        server.join(5)


def test_a_restarted_control_runner_keeps_advertising(
        rig: tuple[LocalTailnet, ActorDevice, ActorDevice]) -> None:
    """The ServicesHash lives in the runner's restart memory: its next incarnation's map polls carry
    it, so control keeps the node as the host (without it control would withdraw the VIP)."""
    net, host, peer = rig
    stop = threading.Event()
    lst = host.listen_service_blocking("svc:web", ServiceModeTCP(port=80))
    assert isinstance(lst, ServiceListener)
    server = accept_each(lst, stop, _svc_echo)
    try:
        wait_until(lambda: bool(lst.vips()), 20, "VIP assigned")
        vip = lst.vips()[0]
        assert _ask(peer, vip, 80) == b"svc:x"
        assert net.control is not None and host.system is not None
        ref = host.system.lookup("control")
        assert ref is not None
        control = net.control
        polls = control.stats["map_polls"]
        FaultInjector.kill_now(ref, "chaos: the service host's control runner")
        wait_until(lambda: ref.incarnation == 2 and ref.is_alive, 20, "control runner restarted")
        wait_until(lambda: control.stats["map_polls"] > polls, 20, "the new incarnation polls")
        host.up_blocking(30)
        # An endpoint update (a lite map request, whose Hostinfo control applies at once): what the
        # bridge sends whenever our endpoints change. Its Hostinfo must still carry the hash.
        endpoints = list(host.dataplane_info().endpoints)
        update = LiteUpdate(endpoints=endpoints, endpoint_types=[2] * len(endpoints))
        wait_until(lambda: ref.ask(update, timeout=15).ok, 30, "control took the lite update",
                   interval=0.2)  # not ok while the new incarnation's poll is still opening
        assert [n for n, svcs in net.control.services.hosting.items() if "svc:web" in svcs]
        assert host.service_ips("svc:web") == [vip]
        assert _ask(peer, vip, 80) == b"svc:x"
    finally:
        stop.set()
        lst.close()
        server.join(5)
