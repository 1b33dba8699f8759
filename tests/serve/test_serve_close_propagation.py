"""A Serve connection ends when its ends end: a close on one side reaches the other promptly.

Regression: a closed client left its ``ServeConnection`` (and its threads and sockets) alive for about
5 s, until the session's last-resort join bound gave up on the splice. Each case closes one side
and bounds, generously, how soon the other side sees the end and the connection actor is gone:
a TCP forward, a TLS-terminated forward, an HTTP and an HTTPS web handler, both ways.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pytsnet import ActorDevice
from pytsnet.serve import HTTPHandler, ServeConfig, TCPPortHandler, WebServerConfig
from pytsnet.testing.polling import wait_until
from pytsnet.testing.serve import TestCA
from pytsnet.testing.tailnet import Tailnet

pytestmark = pytest.mark.timeout(120)

PROMPT = 1.5
"""Seconds within which a close must be seen on the other side and the connection actor be gone
(the bug took ~5 s; a healthy end takes milliseconds)."""


def fqdn(dev: ActorDevice) -> str:
    return dev.state.name.rstrip(".")


class Backend:
    """A host TCP server with one connection at a time under the test's control."""

    def __init__(self) -> None:
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.lsock.settimeout(20)
        self.port = self.lsock.getsockname()[1]

    def accept(self) -> socket.socket:
        conn, _ = self.lsock.accept()
        conn.settimeout(20)
        return conn


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.lsock.close()


def _eof_within(sock: socket.socket, bound: float) -> float:
    """Read until EOF; the seconds it took (fails if more than ``bound``, or on data after EOF)."""
    t0 = time.monotonic()
    sock.settimeout(bound + 5)
    while sock.recv(65536):
        pass
    return time.monotonic() - t0


def _gone_within(srv: ActorDevice, bound: float) -> float:
    t0 = time.monotonic()
    wait_until(lambda: srv.serve_status().open == 0, bound, "the connection actor stops", interval=0.02)
    return time.monotonic() - t0


def _client(tn: Tailnet, port: int, tls_name: str | None, ca: TestCA) -> socket.socket:
    raw = tn["cli"].connect_socket("srv", port, timeout=20)
    raw.settimeout(20)
    if tls_name is None:
        return raw
    return ca.client_context().wrap_socket(raw, server_hostname=tls_name)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "terminate_tls"])
def test_client_close_reaches_the_backend_and_ends_the_connection(tn: Tailnet, srv: ActorDevice, ca: TestCA,
                                                                  backend: Backend, tls: bool) -> None:
    name = fqdn(srv)
    srv.set_serve_config_blocking(ServeConfig(TCP={7101: TCPPortHandler(
        TCPForward=f"127.0.0.1:{backend.port}", TerminateTLS=name if tls else "")}))
    cli = _client(tn, 7101, name if tls else None, ca)
    cli.sendall(b"ping")
    back = backend.accept()
    with back:
        assert back.recv(10) == b"ping"
        back.sendall(b"pong")
        assert cli.recv(10) == b"pong"
        wait_until(lambda: srv.serve_status().open == 1, 10, "the connection is open")
        cli.close()
        assert _eof_within(back, PROMPT) < PROMPT  # the client's FIN reached the backend
        back.close()  # the backend answers the FIN with its own, as any server does
        assert _gone_within(srv, PROMPT) < PROMPT


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "terminate_tls"])
def test_backend_close_reaches_the_client_and_ends_the_connection(tn: Tailnet, srv: ActorDevice, ca: TestCA,
                                                                  backend: Backend, tls: bool) -> None:
    name = fqdn(srv)
    srv.set_serve_config_blocking(ServeConfig(TCP={7102: TCPPortHandler(
        TCPForward=f"127.0.0.1:{backend.port}", TerminateTLS=name if tls else "")}))
    cli = _client(tn, 7102, name if tls else None, ca)
    with cli:
        cli.sendall(b"ping")
        back = backend.accept()
        assert back.recv(10) == b"ping"
        back.sendall(b"last words")
        back.close()
        got = b""
        t0 = time.monotonic()
        cli.settimeout(PROMPT + 5)
        while chunk := cli.recv(100):
            got += chunk
        assert got == b"last words" and time.monotonic() - t0 < PROMPT
    assert _gone_within(srv, PROMPT) < PROMPT


def _web(srv: ActorDevice, port: int, *, https: bool) -> None:
    name = fqdn(srv)
    srv.set_serve_config_blocking(ServeConfig(
        TCP={port: TCPPortHandler(HTTPS=https, HTTP=not https)},
        Web={f"{name}:{port}": WebServerConfig(Handlers={"/": HTTPHandler(Text="served")})}))


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_web_client_close_ends_the_connection(tn: Tailnet, srv: ActorDevice, ca: TestCA, https: bool) -> None:
    name = fqdn(srv)
    _web(srv, 7103, https=https)
    cli = _client(tn, 7103, name if https else None, ca)
    cli.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())  # keep-alive: the server waits
    got = b""
    while not got.endswith(b"served"):
        got += cli.recv(4096)
    assert got.startswith(b"HTTP/1.1 200 ")
    cli.close()
    assert _gone_within(srv, PROMPT) < PROMPT


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_web_server_close_reaches_the_client(tn: Tailnet, srv: ActorDevice, ca: TestCA, https: bool) -> None:
    name = fqdn(srv)
    _web(srv, 7104, https=https)
    cli = _client(tn, 7104, name if https else None, ca)
    with cli:
        cli.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        got = b""
        t0 = time.monotonic()
        cli.settimeout(PROMPT + 5)
        while chunk := cli.recv(4096):
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"served")
        assert time.monotonic() - t0 < PROMPT  # the server's end reached us: EOF, not a timeout
    assert _gone_within(srv, PROMPT) < PROMPT


def test_many_connections_end_promptly(tn: Tailnet, srv: ActorDevice, ca: TestCA) -> None:
    """Several web connections closed at once all end within the bound (no per-connection stall)."""
    name = fqdn(srv)
    _web(srv, 7105, https=False)
    clis = [_client(tn, 7105, None, ca) for _ in range(6)]
    for c in clis:
        c.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
        got = b""
        while not got.endswith(b"served"):
            got += c.recv(4096)
    wait_until(lambda: srv.serve_status().open == len(clis), 10, "all open")
    barrier = threading.Barrier(len(clis))

    def close(c: socket.socket) -> None:
        barrier.wait()
        c.close()
    ts = [threading.Thread(target=close, args=(c,)) for c in clis]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert _gone_within(srv, PROMPT) < PROMPT




@pytest.mark.parametrize("handler", ["forward", "terminate_tls", "https"])
def test_client_reset_ends_the_session_at_once(tn: Tailnet, srv: ActorDevice, ca: TestCA, backend: Backend,
                                               handler: str) -> None:
    """The client resets (closes with bytes unread): the flow's RST ends the session now, the backend
    reads its end; regression: with TLS terminated the session's reads waited on, the actor stayed."""
    name = fqdn(srv)
    if handler == "https":
        _web(srv, 7106, https=True)
    else:
        tls = name if handler == "terminate_tls" else ""
        srv.set_serve_config_blocking(ServeConfig(TCP={7106: TCPPortHandler(
            TCPForward=f"127.0.0.1:{backend.port}", TerminateTLS=tls)}))
    cli = _client(tn, 7106, None if handler == "forward" else name, ca)
    back: socket.socket | None = None
    if handler == "https":
        cli.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
    else:
        cli.sendall(b"ping")
        back = backend.accept()
        assert back.recv(10) == b"ping"
        back.sendall(b"left unread")
    assert select.select([cli], [], [], 10)[0]  # the answer arrived; the client will not read it
    wait_until(lambda: srv.serve_status().open == 1, 10, "the connection is open")
    time.sleep(0.1)  # the whole answer is in the client's socket buffer
    cli.close()  # with unread bytes: a reset of the flow
    t0 = time.monotonic()
    if back is not None:
        with back:
            back.settimeout(PROMPT + 5)
            with contextlib.suppress(ConnectionResetError):
                assert back.recv(10) == b""
            assert time.monotonic() - t0 < PROMPT
    assert _gone_within(srv, PROMPT) < PROMPT


def test_backend_close_ends_terminated_tls_with_close_notify(tn: Tailnet, srv: ActorDevice, ca: TestCA,
                                                             backend: Backend) -> None:
    """The backend's end is a TLS close (close_notify) to the client, as Go's ``tls.Conn.Close``, not a
    bare TCP EOF (which strict clients, Go's among them, read as a truncation attack)."""
    name = fqdn(srv)
    srv.set_serve_config_blocking(ServeConfig(TCP={7107: TCPPortHandler(
        TCPForward=f"127.0.0.1:{backend.port}", TerminateTLS=name)}))
    raw = tn["cli"].connect_socket("srv", 7107, timeout=20)
    raw.settimeout(PROMPT + 5)
    with ca.client_context().wrap_socket(raw, server_hostname=name, suppress_ragged_eofs=False) as cli:
        cli.sendall(b"ping")
        back = backend.accept()
        with back:
            assert back.recv(10) == b"ping"
            back.sendall(b"bye")
        got = b""
        while chunk := cli.recv(100):  # a ragged EOF raises SSLEOFError here
            got += chunk
        assert got == b"bye"
    assert _gone_within(srv, PROMPT) < PROMPT
