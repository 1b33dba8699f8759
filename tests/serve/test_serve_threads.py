"""What a Serve connection costs in threads: a bound on ``threading.active_count()`` with N open.

A web connection holds its actor's thread, its I/O thread (the HTTP session) and its splice (one
thread: a selector over the socket and the flow channel's wake-up; it was two, one per direction); a
TCP forward runs its splice on the I/O thread. The runtime's shared threads are counted after a
warm-up round. The client side
uses the flow directly (no bridged socket), so only the server's threads are counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pytsnet import ActorDevice, SocketLike
from pytsnet.serve import HTTPHandler, ServeConfig, TCPPortHandler, WebServerConfig
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import TestCA, echo_server
from pytsnet.testing.tailnet import Tailnet, local_tailnet

pytestmark = pytest.mark.timeout(120)

N = 12


@pytest.fixture(scope="module")
def tn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tailnet]:
    with local_tailnet(tmp_path_factory.mktemp("servethreads"), ["srv", "cli"]) as t:
        ca = TestCA()
        t["srv"].serve_cert_provider = ca.provider
        yield t


def _conn_threads(port: int) -> int:
    return sum(f"serve.port.{port}-c" in t.name for t in threading.enumerate())


def _open_n(tn: Tailnet, srv: ActorDevice, port: int, first: bytes, want: bytes) -> float:
    """Threads added per open connection (N of them, each past ``first`` → ``want``); all the
    connections' own threads gone once they are closed."""
    wait_until(lambda: srv.serve_status().open == 0, 10, "no connection open")
    before = threading.active_count()
    socks: list[SocketLike] = []
    try:
        for _ in range(N):
            s = tn["cli"].tcp_connect_blocking("srv", port, timeout=20)
            s.settimeout(20)
            s.sendall(first)
            got = b""
            while want not in got:
                got += s.recv(4096)
            socks.append(s)
        wait_until(lambda: srv.serve_status().open == N, 10, "all open")
        per = (threading.active_count() - before) / N
        print(f"threads per connection on port {port}: {per:.2f}")
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: _conn_threads(port) == 0, 10, "the connections' threads end")
    return per


def _per_connection(tn: Tailnet, srv: ActorDevice, port: int, first: bytes, want: bytes) -> float:
    """``_open_n`` twice, the first a warm-up (the runtime's shared pools grow to their size)."""
    _open_n(tn, srv, port, first, want)
    return _open_n(tn, srv, port, first, want)


def test_threads_per_web_connection(tn: Tailnet) -> None:
    srv = tn["srv"]
    name = srv.state.name.rstrip(".")
    srv.set_serve_config_blocking(ServeConfig(
        TCP={7201: TCPPortHandler(HTTP=True)},
        Web={f"{name}:7201": WebServerConfig(Handlers={"/": HTTPHandler(Text="served")})}))
    try:
        per = _per_connection(tn, srv, 7201, f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode(), b"served")
    finally:
        srv.set_serve_config_blocking(None)
    assert per <= 3.5  # actor, I/O and one splice thread (was 4: two splice threads)


def test_threads_per_forward_connection(tn: Tailnet) -> None:
    srv = tn["srv"]
    with echo_server() as port:
        srv.set_serve_config_blocking(ServeConfig(TCP={7202: TCPPortHandler(TCPForward=f"127.0.0.1:{port}")}))
        try:
            per = _per_connection(tn, srv, 7202, b"echo me", b"echo me")
        finally:
            srv.set_serve_config_blocking(None)
    # the echo server's own thread per connection counts too (it is in this process)
    assert per <= 3.5  # actor, I/O (the splice on it) and the echo server's (was 4: + the splice's up)
