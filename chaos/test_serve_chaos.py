"""Chaos: Serve's actors killed under live connections, on a local tailnet.

``srv`` forwards a port to a host echo server and ``cli`` holds two connections through it. Killing
one connection's actor resets that connection only (the client sees it end, the other keeps echoing).
Killing the ServeManager is survived: its supervisor restarts it, it reads the config back from the
state store, the port keeps serving (open connections untouched, new ones accepted) and the config can
be changed again. Killing a port server is survived the same way: the restarted one asks the manager
for its slice before it serves anything.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pytsnet import ActorDevice
from pytsnet.actors.runtime import FaultInjector
from pytsnet.serve import HTTPHandler, ServeConfig, TCPPortHandler, WebServerConfig
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import echo_server
from pytsnet.testing.tailnet import Tailnet, local_tailnet


@pytest.fixture(scope="module")
def tn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tailnet]:
    with local_tailnet(tmp_path_factory.mktemp("serve-chaos"), ["srv", "cli"]) as t:
        yield t


def _echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(len(data) - len(got))
        if not chunk:
            break
        got += chunk
    return got


def _ended(sock: socket.socket) -> bool:
    """The connection was reset or closed by the other side."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except OSError:
        return True


def _forward(srv: ActorDevice, port: int, target: int) -> None:
    srv.set_serve_config_blocking(ServeConfig(TCP={port: TCPPortHandler(TCPForward=f"127.0.0.1:{target}")}))


def test_killing_one_connection_actor_drops_only_that_connection(tn: Tailnet) -> None:
    srv, cli = tn["srv"], tn["cli"]
    assert srv.system is not None
    with echo_server() as target:
        _forward(srv, 7101, target)
        with cli.tcp_connect_blocking("srv", 7101, timeout=20) as a, \
                cli.tcp_connect_blocking("srv", 7101, timeout=20) as b:
            a.settimeout(20)
            b.settimeout(20)
            assert _echo(a, b"a1") == b"a1" and _echo(b, b"b1") == b"b1"
            system = srv.system
            names = sorted(n for n in system.names() if n.startswith("serve.port.7101-c"))
            assert len(names) == 2, names
            victim = system.lookup(names[0])
            assert victim is not None
            FaultInjector.kill_now(victim, "chaos: one Serve connection")
            wait_until(lambda: system.lookup(names[0]) is None, 10, "the killed connection's actor is gone")
            ended = [s for s in (a, b) if _ended(s)]
            assert len(ended) == 1  # exactly one of the two (which one is the first accepted)
            alive = b if ended[0] is a else a
            assert _echo(alive, b"still here") == b"still here"
    srv.set_serve_config_blocking(None)


def test_killing_the_serve_manager_and_a_port_server_is_survived(tn: Tailnet) -> None:
    srv, cli = tn["srv"], tn["cli"]
    assert srv.system is not None
    system = srv.system
    with echo_server() as target:
        _forward(srv, 7102, target)
        cfg, tag = srv.get_serve_config_blocking()
        with cli.tcp_connect_blocking("srv", 7102, timeout=20) as open_conn:
            open_conn.settimeout(20)
            assert _echo(open_conn, b"before") == b"before"
            manager = system.lookup("serve")
            assert manager is not None and manager.incarnation == 1
            FaultInjector.kill_now(manager, "chaos: the ServeManager")
            wait_until(lambda: manager.incarnation == 2 and manager.is_alive, 10, "serve restarted")
            assert _echo(open_conn, b"after the manager") == b"after the manager"
            assert srv.get_serve_config_blocking() == (cfg, tag)  # read back from the state store
            with cli.tcp_connect_blocking("srv", 7102, timeout=20) as fresh:  # the listener is back
                fresh.settimeout(20)
                assert _echo(fresh, b"new") == b"new"

            port_server = system.lookup("serve.port.7102")
            assert port_server is not None
            before = port_server.incarnation
            FaultInjector.kill_now(port_server, "chaos: a Serve port server")
            wait_until(lambda: port_server.incarnation > before and port_server.is_alive, 10,
                       "port server restarted")
            with cli.tcp_connect_blocking("srv", 7102, timeout=20) as fresh:
                fresh.settimeout(20)
                assert _echo(fresh, b"again") == b"again"
            assert _echo(open_conn, b"through it all") == b"through it all"

        # and the restarted manager still takes changes
        handlers = {"/": HTTPHandler(Text="changed")}
        web = {f"{srv.state.name.rstrip('.')}:80": WebServerConfig(Handlers=handlers)}
        srv.set_serve_config_blocking(ServeConfig(TCP={80: TCPPortHandler(HTTP=True)}, Web=web))
        with cli.sync_http_client(timeout=20) as c:
            assert c.get("http://srv/").text == "changed"
        with pytest.raises(OSError):  # 7102 is no longer served
            cli.tcp_connect_blocking("srv", 7102, timeout=5).close()
    srv.set_serve_config_blocking(None)


def test_killing_the_port_servers_supervisor_is_survived(tn: Tailnet) -> None:
    """``serve.ports`` comes back empty; rest-for-one restarts the manager after it, which spawns the
    port servers again: the port is served again and the open connection (under serve.conns) lives on."""
    srv, cli = tn["srv"], tn["cli"]
    assert srv.system is not None
    system = srv.system
    with echo_server() as target:
        _forward(srv, 7103, target)
        with cli.tcp_connect_blocking("srv", 7103, timeout=20) as open_conn:
            open_conn.settimeout(20)
            assert _echo(open_conn, b"before") == b"before"
            ports, manager = system.lookup("serve.ports"), system.lookup("serve")
            assert ports is not None and manager is not None
            before = manager.incarnation
            FaultInjector.kill_now(ports, "chaos: the port servers' supervisor")
            wait_until(lambda: manager.incarnation > before and manager.is_alive, 10, "the manager restarted")
            wait_until(lambda: (p := system.lookup("serve.port.7103")) is not None and p.is_alive, 10,
                       "the port server spawned again")
            with cli.tcp_connect_blocking("srv", 7103, timeout=20) as fresh:
                fresh.settimeout(20)
                assert _echo(fresh, b"served again") == b"served again"
            assert _echo(open_conn, b"untouched") == b"untouched"
    srv.set_serve_config_blocking(None)
