"""A Funnel connection through Serve ends when its public client does (and the reverse).

Regression: a public client's close left the node's ``ServeConnection`` alive for about 5 s (the
HTTPS session's end never reached its splice, which waited out the session's last-resort join bound).
Through ``localnet --funnel``: an HTTPS web handler and a TLS-terminated TCP forward, each side's close
seen by the other side and the connection actor gone within a generous bound.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Iterator

import anyio
import pytest
import trustme
from funnel_rig import fqdn, funnel_tailnet, provider_for

from pytsnet.device import ActorDevice
from pytsnet.funnel import FunnelListener, FunnelStream
from pytsnet.serve import ServeConfig
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import Tailnet

pytestmark = pytest.mark.timeout(180)

PROMPT = 1.5
"""Seconds within which a close must be seen on the other side and the connection actor be gone."""


@pytest.fixture(scope="module")
def tn(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[Tailnet]:
    with funnel_tailnet(tmp_path_factory.mktemp("funnelclose")) as net:
        net["web"].serve_cert_provider = provider_for(ca, [])
        yield net


@pytest.fixture
def web(tn: Tailnet) -> Iterator[ActorDevice]:
    dev = tn["web"]
    yield dev
    dev.set_serve_config_blocking(None)


@pytest.fixture
def backend() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.settimeout(20)
        yield lsock


def _public_client(tn: Tailnet, ca: trustme.CA) -> ssl.SSLSocket:
    """A public TLS client of the ingress for ``web``'s name (the ingress routes by its SNI)."""
    ingress = tn.net.funnel
    assert ingress is not None
    raw = socket.create_connection(("127.0.0.1", ingress.address[1]), timeout=20)
    ctx = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    return ctx.wrap_socket(raw, server_hostname=fqdn(tn["web"]))


def _gone_within(dev: ActorDevice, bound: float) -> float:
    t0 = time.monotonic()
    wait_until(lambda: dev.serve_status().open == 0, bound, "the connection actor stops", interval=0.02)
    return time.monotonic() - t0


def _web_config(dev: ActorDevice) -> ServeConfig:
    name = fqdn(dev)
    return ServeConfig.model_validate({
        "TCP": {"443": {"HTTPS": True}},
        "Web": {f"{name}:443": {"Handlers": {"/": {"Text": "public"}}}},
        "AllowFunnel": {f"{name}:443": True}})


def _forward_config(dev: ActorDevice, port: int) -> ServeConfig:
    name = fqdn(dev)
    return ServeConfig.model_validate({
        "TCP": {"443": {"TCPForward": f"127.0.0.1:{port}", "TerminateTLS": name}},
        "AllowFunnel": {f"{name}:443": True}})


def test_public_client_close_ends_a_funnel_web_connection(tn: Tailnet, web: ActorDevice,
                                                          ca: trustme.CA) -> None:
    web.set_serve_config_blocking(_web_config(web))
    cli = _public_client(tn, ca)
    cli.sendall(f"GET / HTTP/1.1\r\nHost: {fqdn(web)}\r\n\r\n".encode())  # keep-alive: the server waits
    got = b""
    while not got.endswith(b"public"):
        got += cli.recv(4096)
    assert web.serve_status().open == 1
    cli.close()
    assert _gone_within(web, PROMPT) < PROMPT


def test_funnel_web_server_close_reaches_the_public_client(tn: Tailnet, web: ActorDevice,
                                                           ca: trustme.CA) -> None:
    web.set_serve_config_blocking(_web_config(web))
    with _public_client(tn, ca) as cli:
        cli.sendall(f"GET / HTTP/1.1\r\nHost: {fqdn(web)}\r\nConnection: close\r\n\r\n".encode())
        got = b""
        t0 = time.monotonic()
        cli.settimeout(PROMPT + 5)
        while chunk := cli.recv(4096):
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"public")
        assert time.monotonic() - t0 < PROMPT  # EOF, not a read timeout
    assert _gone_within(web, PROMPT) < PROMPT


def test_public_client_close_reaches_a_funnel_forwards_backend(tn: Tailnet, web: ActorDevice, ca: trustme.CA,
                                                                backend: socket.socket) -> None:
    """The public client closes: the backend reads EOF, answers with its close, the connection ends."""
    web.set_serve_config_blocking(_forward_config(web, backend.getsockname()[1]))
    cli = _public_client(tn, ca)
    cli.sendall(b"ping")
    back, _ = backend.accept()
    with back:
        back.settimeout(PROMPT + 5)
        assert back.recv(10) == b"ping"
        back.sendall(b"pong")
        assert cli.recv(10) == b"pong"  # read all that came (TLS 1.3 tickets too): the close is a FIN
        cli.close()
        t0 = time.monotonic()
        assert back.recv(10) == b""
        assert time.monotonic() - t0 < PROMPT
    assert _gone_within(web, PROMPT) < PROMPT


def test_funnel_forwards_backend_close_reaches_the_public_client(
        tn: Tailnet, web: ActorDevice, ca: trustme.CA, backend: socket.socket) -> None:
    """The backend closes: the public client reads what it sent, then EOF."""
    web.set_serve_config_blocking(_forward_config(web, backend.getsockname()[1]))
    with _public_client(tn, ca) as cli:
        cli.sendall(b"ping")
        back, _ = backend.accept()
        with back:
            assert back.recv(10) == b"ping"
            back.sendall(b"bye")
        got = b""
        t0 = time.monotonic()
        cli.settimeout(PROMPT + 5)
        while chunk := cli.recv(100):
            got += chunk
        assert got == b"bye" and time.monotonic() - t0 < PROMPT
    assert _gone_within(web, PROMPT) < PROMPT


@pytest.mark.parametrize("handler", ["web", "forward"])
def test_public_client_reset_ends_the_funnel_connection(tn: Tailnet, web: ActorDevice, ca: trustme.CA,
                                                        backend: socket.socket, handler: str) -> None:
    """A public client that resets (what a close with unread bytes is): the reset crosses the ingress
    as the flow's RST, which ends the session at once (the backend reads its end), not a stuck read."""
    cfg = _web_config(web) if handler == "web" else _forward_config(web, backend.getsockname()[1])
    web.set_serve_config_blocking(cfg)
    cli = _public_client(tn, ca)
    back: socket.socket | None = None
    if handler == "forward":
        cli.sendall(b"ping")
        back, _ = backend.accept()
        back.settimeout(PROMPT + 5)
        assert back.recv(10) == b"ping"
    wait_until(lambda: web.serve_status().open == 1, 10, "the connection is open")
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    cli.close()  # an RST
    t0 = time.monotonic()
    if back is not None:
        with back:
            with contextlib.suppress(ConnectionResetError):
                assert back.recv(10) == b""
            assert time.monotonic() - t0 < PROMPT
    assert _gone_within(web, PROMPT) < PROMPT


def test_closes_carried_both_ways_for_a_funnel_listener(tn: Tailnet, web: ActorDevice,
                                                       ca: trustme.CA) -> None:
    """``listen_funnel``'s streams: the public client's close is the app's end of stream, the app's
    close the public client's EOF, each within the bound."""
    async def connect(ln: FunnelListener, first: bytes) -> tuple[ssl.SSLSocket, FunnelStream]:
        """A public client sending ``first`` (its handshake needs the app's first receive, at once)."""
        def client() -> ssl.SSLSocket:
            cli = _public_client(tn, ca)
            cli.sendall(first)
            return cli
        got: list[ssl.SSLSocket] = []

        async def run_client() -> None:
            got.append(await anyio.to_thread.run_sync(client))
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_client)
                stream = await ln.accept()
                assert await stream.receive() == first
        return got[0], stream

    async def main() -> None:
        ln = await web.listen_funnel(443, cert_provider=provider_for(ca, []))
        async with ln:
            # the public client closes: the app's next receive ends
            cli, stream = await connect(ln, b"ping")
            await stream.send(b"pong")
            assert await anyio.to_thread.run_sync(cli.recv, 10) == b"pong"
            cli.close()
            with anyio.fail_after(PROMPT), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()
            await stream.aclose()
            # the app closes: the public client reads EOF
            cli, stream = await connect(ln, b"hi")
            await stream.aclose()
            cli.settimeout(PROMPT)
            with cli:
                assert await anyio.to_thread.run_sync(cli.recv, 10) == b""

    anyio.run(main)
