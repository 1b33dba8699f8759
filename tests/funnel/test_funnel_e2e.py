"""Funnel end to end on one machine: ``curl`` on the host → ``localnet --funnel`` (the ingress, itself
a tailnet node) → the node's peerAPI ``/v0/ingress`` over the tailnet → its Funnel listener, TLS
terminated by the node with a certificate a test CA (trustme) issued for its MagicDNS name.

Also: who may call ``/v0/ingress`` (only a peer the filter grants the ingress capability), Go's
answers to hostile or wrong requests (the node keeps serving), and the typed errors of
``listen_funnel`` (no ingress, no attribute, a port that is not a Funnel port).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import trustme
from anyio.streams.tls import TLSStream
from funnel_rig import curl, fqdn, funnel_tailnet, ingress_req, provider_for, raw_peerapi

from pytsnet.device import ActorDevice
from pytsnet.errors import FunnelPortNotAllowed, FunnelUnavailable
from pytsnet.funnel import FunnelListener, FunnelStream
from pytsnet.localnet.funnel_policy import FunnelPolicy
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import Tailnet, local_tailnet

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def tn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tailnet]:
    with funnel_tailnet(tmp_path_factory.mktemp("funnel")) as net:
        yield net


async def serve_http(ln: FunnelListener, n: int, seen: list[FunnelStream]) -> None:
    """Answer ``n`` HTTP/1.1 requests (one per connection) with who the listener says is calling."""
    for _ in range(n):
        s = await ln.accept()
        seen.append(s)
        await serve_one(s)


async def serve_one(s: FunnelStream) -> None:
    req = b""
    while b"\r\n\r\n" not in req:
        req += await s.receive()
    body = f"src={s.src[0]}:{s.src[1]} funnel={s.funnel} target={s.target} " \
           f"path={req.split()[1].decode()}".encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    await s.send(head + body)
    await s.aclose()


def test_curl_reaches_a_funnel_listener_over_the_tailnet(tn: Tailnet, ca: trustme.CA, ca_file: Path) -> None:
    web = tn["web"]
    ingress = tn.net.funnel
    assert ingress is not None
    pub_port = ingress.address[1]
    asked: list[str] = []
    seen: list[FunnelStream] = []

    async def main() -> list[tuple[str, int]]:
        ln = await web.listen_funnel(443, cert_provider=provider_for(ca, asked))
        async with ln, anyio.create_task_group() as tg:
            tg.start_soon(serve_http, ln, 2, seen)
            results = [await anyio.to_thread.run_sync(curl, ca_file, fqdn(web), pub_port, f"/p{i}")
                       for i in range(2)]
        return results

    results = anyio.run(main)
    assert asked and set(asked) == {fqdn(web)}  # the certificate is for the node's MagicDNS name
    for i, (body, local_port) in enumerate(results):
        # the app sees the public client (curl's own address), as Go's FunnelConn.Src
        assert body == f"src=127.0.0.1:{local_port} funnel=True target={fqdn(web)}:443 path=/p{i}"
    assert ingress.stats["spliced"] >= 2
    counters = web.status().counters
    assert counters.get("peerapi_ingress", 0) >= 2


def test_funnel_listener_also_serves_the_tailnet_unless_funnel_only(tn: Tailnet, ca: trustme.CA) -> None:
    web, peer = tn["web"], tn["peer"]
    ctx = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    seen: list[FunnelStream] = []

    async def main() -> None:
        own = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # Go's FunnelTLSConfig: the app's own
        ca.issue_cert(fqdn(web)).configure_cert(own)
        ln = await web.listen_funnel(8443, ssl_context=own)
        async with ln, anyio.create_task_group() as tg:
            tg.start_soon(serve_http, ln, 1, seen)
            stream = await peer.tcp_connect(tn.ip(web), 8443)
            tls = await TLSStream.wrap(stream, hostname=fqdn(web), ssl_context=ctx,
                                       standard_compatible=False)
            await tls.send(b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            with anyio.fail_after(20):
                while b"path=/t" not in got:
                    got += await tls.receive()
            await tls.aclose()
        only = await web.listen_funnel(8443, funnel_only=True, cert_provider=provider_for(ca, []))
        async with only:
            with pytest.raises(ConnectionRefusedError):
                await peer.tcp_connect(tn.ip(web), 8443, timeout=10)

    anyio.run(main)
    assert seen[0].funnel is False and seen[0].src[0] == tn.ip(peer)


def test_a_peer_without_the_ingress_capability_is_refused(tn: Tailnet) -> None:
    web, peer = tn["web"], tn["peer"]
    before = web.status().counters.get("peerapi_forbidden", 0)
    out = raw_peerapi(peer, web, ingress_req(web))
    assert out.startswith(b"HTTP/1.1 403 ") and out.endswith(b"denied; no ingress cap\n")
    assert web.status().counters.get("peerapi_forbidden", 0) == before + 1


@pytest.mark.parametrize(("kw", "status", "text"), [
    ({"method": "GET"}, 405, b"only POST allowed"),
    ({"src": "not-an-addr"}, 400, b"Tailscale-Ingress-Src header invalid; want ip:port"),
    ({"src": ""}, 400, b"Tailscale-Ingress-Src header not set"),
    ({"tgt": "no-port"}, 400, b"Tailscale-Ingress-Target header invalid; want host:port"),
    ({"tgt": "web.elsewhere.test:443"}, 403, b"denied"),  # not our name
    ({"tgt": None, "src": "[2001:db8::1]:1"}, 403, b"denied"),  # well-formed, but nothing listens on 443
])
def test_hostile_or_wrong_ingress_requests_get_gos_answers(tn: Tailnet, kw: dict[str, str], status: int,
                                                           text: bytes) -> None:
    ingress, web = tn.net.funnel, tn["web"]
    assert ingress is not None and ingress.device is not None
    # twice on one connection: a refusal is an answer, the connection (and the node) go on
    req = ingress_req(web, **kw)
    out = raw_peerapi(ingress.device, web, req + req, reads=2)
    assert out.count(b"HTTP/1.1 %d " % status) == 2, out
    assert out.endswith(text + b"\n")


def test_funnel_refusals_are_typed(tn: Tailnet, ca: trustme.CA) -> None:
    async def main() -> None:
        with pytest.raises(FunnelPortNotAllowed, match="port 8080 is not allowed for funnel; allowed ports "
                           "are: 443,8443,10000"):
            await tn["web"].listen_funnel(8080, cert_provider=provider_for(ca, []))
        with pytest.raises(FunnelUnavailable, match='"funnel" node attribute not set'):
            await tn["nofunnel"].listen_funnel(443, cert_provider=provider_for(ca, []))

    anyio.run(main)


def self_caps(dev: ActorDevice) -> list[str]:
    nm = dev.dataplane_info().netmap
    return [] if nm is None else nm.capabilities.get(nm.self_node.node_id, [])


def test_without_https_or_an_ingress_listen_funnel_is_unavailable(tmp_path: Path, ca: trustme.CA) -> None:
    with local_tailnet(tmp_path, ["solo"]) as net:
        dev = net["solo"]
        control = net.net.control
        assert control is not None

        async def attempt() -> None:
            await dev.listen_funnel(443, cert_provider=provider_for(ca, []))

        def change(**attrs: object) -> None:  # the tailnet's admin turns things on, one at a time
            def apply() -> None:
                for k, v in attrs.items():
                    setattr(control, k, v)
                control.notify()
            net.net._call(apply)

        with pytest.raises(FunnelUnavailable, match="HTTPS must be enabled"):
            anyio.run(attempt)
        change(https=True)
        wait_until(lambda: "https" in self_caps(dev), 20, "the https capability arrives")
        with pytest.raises(FunnelUnavailable, match='"funnel" node attribute not set'):
            anyio.run(attempt)
        change(funnel=FunnelPolicy())  # the attributes, but no ingress node in the tailnet
        wait_until(lambda: "funnel" in self_caps(dev), 20, "the funnel attribute arrives")
        with pytest.raises(FunnelUnavailable, match="no ingress node"):
            anyio.run(attempt)


def tls_over(sock: object, name: str, ca: trustme.CA, first: bytes) -> bytes:
    """Drive a TLS client by hand over a tailnet socket whose first write was ``first`` + the
    ClientHello (the ingress request and the hello pipelined, before our 101); the server's reply to
    ``GET /pipelined``."""
    ctx = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    sock.sendall(first + out.read())  # type: ignore[attr-defined]
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)  # type: ignore[attr-defined]
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head == b"HTTP/1.1 101 Switching Protocols"
    inc.write(rest)
    sent_request = False
    answer = b""
    while True:
        try:
            if not sent_request:
                tls.do_handshake()
                tls.write(b"GET /pipelined HTTP/1.1\r\nHost: x\r\n\r\n")
                sent_request = True
            answer += tls.read(4096)
            if b"path=/pipelined" in answer:
                return answer
        except ssl.SSLWantReadError:
            pass
        if out.pending:
            sock.sendall(out.read())  # type: ignore[attr-defined]
        chunk = sock.recv(4096)  # type: ignore[attr-defined]
        if not chunk:
            raise AssertionError(f"closed; got {answer!r}")
        inc.write(chunk)


def test_hello_pipelined_with_the_ingress_request_reaches_the_listener(tn: Tailnet, ca: trustme.CA) -> None:
    ingress, web = tn.net.funnel, tn["web"]
    assert ingress is not None and ingress.device is not None
    seen: list[FunnelStream] = []
    dev = ingress.device

    async def main() -> bytes:
        ln = await web.listen_funnel(10000, cert_provider=provider_for(ca, []))
        async with ln, anyio.create_task_group() as tg:
            tg.start_soon(serve_http, ln, 1, seen)
            sock = dev.tcp_connect_blocking(tn.ip(web), web.peerapi_port, timeout=10)
            sock.settimeout(10)
            try:
                req = ingress_req(web, src="192.0.2.9:5555", tgt=f"{fqdn(web)}:10000")
                answer = await anyio.to_thread.run_sync(tls_over, sock, fqdn(web), ca, req)
            finally:
                sock.close()
        return answer

    answer = anyio.run(main)
    assert f"src=192.0.2.9:5555 funnel=True target={fqdn(web)}:10000".encode() in answer


def test_a_full_backlog_refuses_and_close_drops_the_queued(tn: Tailnet, ca: trustme.CA) -> None:
    ingress, web = tn.net.funnel, tn["web"]
    assert ingress is not None and ingress.device is not None
    dev = ingress.device

    async def main() -> None:
        ln = await web.listen_funnel(443, funnel_only=True, backlog=1, cert_provider=provider_for(ca, []))
        socks = []
        for i in range(2):
            taken = web.status().counters.get("peerapi_ingress", 0)
            s = dev.tcp_connect_blocking(tn.ip(web), web.peerapi_port, timeout=10)
            s.settimeout(10)
            s.sendall(ingress_req(web))
            socks.append(s)
            if i == 0:  # queued before the second arrives (the two are handled concurrently)
                await anyio.to_thread.run_sync(lambda n=taken: wait_until(  # type: ignore[misc]
                    lambda: web.status().counters.get("peerapi_ingress", 0) > n, 10, "the first is queued"))
        heads = [await anyio.to_thread.run_sync(s.recv, 4096) for s in socks]
        assert heads == [b"HTTP/1.1 101 Switching Protocols\r\n\r\n"] * 2
        # the second found the backlog full: closed (as Go's listener that is not accepting)
        assert await anyio.to_thread.run_sync(socks[1].recv, 4096) == b""
        ln.close()  # the queued one is closed with it, and the port has no Funnel listener again
        assert await anyio.to_thread.run_sync(socks[0].recv, 4096) == b""
        for s in socks:
            s.close()

    anyio.run(main)
    out = raw_peerapi(dev, web, ingress_req(web))
    assert out.startswith(b"HTTP/1.1 403 ") and out.endswith(b"denied\n")


def test_a_stalled_handshake_holds_up_only_its_own_connection(tn: Tailnet, ca: trustme.CA,
                                                              ca_file: Path) -> None:
    ingress, web = tn.net.funnel, tn["web"]
    assert ingress is not None and ingress.device is not None
    dev = ingress.device
    failed: list[tuple[str, int]] = []

    async def handle(s: FunnelStream) -> None:
        try:
            await serve_one(s)
        except anyio.BrokenResourceError:
            failed.append(s.src)

    async def main() -> str:
        ln = await web.listen_funnel(443, funnel_only=True, handshake_timeout=8.0,
                                     cert_provider=provider_for(ca, []))
        async with ln, anyio.create_task_group() as tg:
            async def server() -> None:
                while True:
                    tg.start_soon(handle, await ln.accept())

            tg.start_soon(server)
            taken = web.status().counters.get("peerapi_ingress", 0)
            stalled = dev.tcp_connect_blocking(tn.ip(web), web.peerapi_port, timeout=10)
            # the ingress request, then the start of a TLS record that never completes
            stalled.sendall(ingress_req(web, src="192.0.2.77:7") + b"\x16\x03\x01\x00\x40\x01")
            await anyio.to_thread.run_sync(lambda: wait_until(  # handed over (accepted) before curl's
                lambda: web.status().counters.get("peerapi_ingress", 0) > taken, 10, "the stalled one is in"))
            body, _ = await anyio.to_thread.run_sync(curl, ca_file, fqdn(web), ingress.address[1], "/next")
            assert ln.dropped == 0 and not failed  # served while the stalled one still waits
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: bool(failed), 15, "the stalled is cut"))
            stalled.close()
            tg.cancel_scope.cancel()
        assert ln.dropped == 1
        return body

    body = anyio.run(main)
    assert body.startswith("src=127.0.0.1:") and body.endswith("path=/next")
    assert failed == [("192.0.2.77", 7)]
