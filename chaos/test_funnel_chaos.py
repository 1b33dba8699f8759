"""Chaos: an open Funnel connection outlives the peerAPI that handed it over.

Once ``/v0/ingress`` hands a flow to the Funnel listener, the peerAPI connection actor has stopped
and the flow belongs to the app: killing the peerAPI server (which restarts) must not touch it, and
the restarted server takes new ingress requests.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import anyio
import pytest
import trustme

from pytsnet.actors.runtime import FaultInjector
from pytsnet.funnel import FunnelStream
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import local_tailnet

pytestmark = pytest.mark.timeout(120)


class TlsClient:
    """A TLS client driven by hand over a blocking tailnet socket (the ingress's side of a flow)."""

    def __init__(self, sock: object, name: str, ca: trustme.CA, first: bytes) -> None:
        self.sock = sock
        ctx = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname=name)
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        sock.sendall(first + self.out.read())  # type: ignore[attr-defined]
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)  # type: ignore[attr-defined]
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head == b"HTTP/1.1 101 Switching Protocols"
        self.inc.write(rest)
        self._pump(self.tls.do_handshake)

    def _pump(self, step: object) -> object:
        while True:
            try:
                return step()  # type: ignore[operator]
            except ssl.SSLWantReadError:
                pass
            if self.out.pending:
                self.sock.sendall(self.out.read())  # type: ignore[attr-defined]
            chunk = self.sock.recv(4096)  # type: ignore[attr-defined]
            if not chunk:
                raise ConnectionError("closed")
            self.inc.write(chunk)

    def echo(self, data: bytes) -> bytes:
        self.tls.write(data)
        self.sock.sendall(self.out.read())  # type: ignore[attr-defined]
        got = b""
        while len(got) < len(data):
            got += self._pump(lambda: self.tls.read(4096))  # type: ignore[operator]
        return got


def test_killing_the_peerapi_server_leaves_open_funnel_connections(tmp_path: Path) -> None:
    ca = trustme.CA()

    def provide(domain: str) -> tuple[bytes, bytes]:
        cert = ca.issue_cert(domain)
        return b"".join(c.bytes() for c in cert.cert_chain_pems), cert.private_key_pem.bytes()

    with local_tailnet(tmp_path, ["web"], net_options={"https": True, "funnel": "127.0.0.1:0"}) as tn:
        web, ingress = tn["web"], tn.net.funnel
        assert ingress is not None and ingress.device is not None and web.system is not None
        dev, name = ingress.device, web.state.name.rstrip(".")
        wait_until(lambda: ingress.sees(name), 30, "the ingress sees web")
        host = f"{tn.ip(web)}:{web.peerapi_port}"

        def request(src: str) -> bytes:
            return (f"POST /v0/ingress HTTP/1.1\r\nHost: {host}\r\nTailscale-Ingress-Src: {src}\r\n"
                    f"Tailscale-Ingress-Target: {name}:443\r\nContent-Length: 0\r\n\r\n").encode()

        async def echo(s: FunnelStream) -> None:
            try:
                while True:
                    await s.send(await s.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

        def chaos() -> tuple[bytes, bytes]:
            sock = dev.tcp_connect_blocking(tn.ip(web), web.peerapi_port, timeout=10)
            sock.settimeout(10)
            client = TlsClient(sock, name, ca, request("198.51.100.3:3"))
            before = client.echo(b"before")
            server = web.system.lookup("peerapi")  # type: ignore[union-attr]
            assert server is not None
            FaultInjector.kill_now(server, "chaos: the peerAPI server with a Funnel connection open")
            wait_until(lambda: server.incarnation == 2 and server.is_alive, 10, "peerapi restarted")
            after = client.echo(b"after the kill")
            # the restarted server hands over a new one
            sock2 = dev.tcp_connect_blocking(tn.ip(web), web.peerapi_port, timeout=10)
            sock2.settimeout(10)
            assert TlsClient(sock2, name, ca, request("198.51.100.4:4")).echo(b"new") == b"new"
            sock.close()
            sock2.close()
            return before, after

        async def main() -> tuple[bytes, bytes]:
            ln = await web.listen_funnel(443, funnel_only=True, cert_provider=provide)
            async with ln, anyio.create_task_group() as tg:
                async def server() -> None:
                    while True:
                        tg.start_soon(echo, await ln.accept())

                tg.start_soon(server)
                result = await anyio.to_thread.run_sync(chaos)
                tg.cancel_scope.cancel()
            return result

        assert anyio.run(main) == (b"before", b"after the kill")
