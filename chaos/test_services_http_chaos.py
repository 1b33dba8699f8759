"""Chaos (20f): Serve's actors killed while it serves an HTTP-mode ``ListenService`` on the VIP.

The service port's server (``serve.svc.<label>.<port>``) and the ServeManager are killed in turn;
each is restarted by its supervisor, the manager reads the ``Services`` entry back from the state
store, and the VIP keeps serving through the same ``ServiceAcceptor`` (a facade object, it outlives
the actors): the next request reaches the app with the caller's identity again."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.actors.runtime import FaultInjector
from pytsnet.device import ActorDevice
from pytsnet.localnet.services import ServiceDef
from pytsnet.services.listener import ServiceModeHTTP
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import header_values, ok_response, serve_app
from pytsnet.testing.tailnet import tagged_host_and_peer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[ActorDevice, ActorDevice]]:
    services = {"svc:web": ServiceDef(ports=("tcp:80",), tags=("tag:web",))}
    with tagged_host_and_peer(tmp_path, services=services) as (_net, host, peer):
        yield host, peer


def _login(head: bytes) -> bytes:
    """The app's answer to each proxied request: its Tailscale-User-Login header."""
    return ok_response(b"".join(header_values(head, b"tailscale-user-login")[:1]))


def _get(peer: ActorDevice, vip: str) -> bytes:
    with peer.connect_socket(vip, 80, timeout=20) as sock:
        s: socket.socket = sock
        s.settimeout(20)
        s.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.split(b"\r\n\r\n", 1)[1]


def test_killed_service_port_server_and_manager_are_survived(rig: tuple[ActorDevice, ActorDevice]) -> None:
    host, peer = rig
    assert host.system is not None
    system = host.system
    stop = threading.Event()
    with host.listen_service_blocking("svc:web", ServiceModeHTTP(port=80)) as lst:
        serve_app(lst, stop, _login)
        try:
            wait_until(lambda: bool(lst.vips()), 20, "VIP assigned")
            vip = lst.vips()[0]
            login = host.whois(peer.tailscale_ips()[0]).user.login_name.encode()
            assert login and _get(peer, vip) == login

            port_server = system.lookup("serve.svc.web.80")
            assert port_server is not None
            before = port_server.incarnation
            FaultInjector.kill_now(port_server, "chaos: a service port's Serve server")
            wait_until(lambda: port_server.incarnation > before and port_server.is_alive, 10,
                       "service port server restarted")
            assert _get(peer, vip) == login

            manager = system.lookup("serve")
            assert manager is not None
            before = manager.incarnation
            cfg = host.get_serve_config_blocking()
            FaultInjector.kill_now(manager, "chaos: the ServeManager")
            wait_until(lambda: manager.incarnation > before and manager.is_alive, 10, "serve restarted")
            assert host.get_serve_config_blocking() == cfg  # the Services entry read back from the store
            assert _get(peer, vip) == login
        finally:
            stop.set()
    after = host.get_serve_config_blocking()[0]
    assert after is not None and not after.Services  # closing took the entry out (Go leaves "{}")
