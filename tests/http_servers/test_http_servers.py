"""Web servers on a tailnet listener with no glue: http.server, wsgiref, uvicorn (ASGI, FastAPI),
aiohttp and asyncio, each reached from the other node, each answering with the caller's node name
(its WhoIs): the peer address the framework hands the app is the caller's tailnet address.

``alpha`` serves, ``beta`` calls with ``requests_session`` (real sockets through the bridge too) and
with 18a's httpx clients (``sync_http_client``; ``http_client`` in the aiohttp server's own loop).
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import socketserver
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import anyio
import fastapi
import httpx
import pytest
import requests
import uvicorn
from serving_rig import Pair

from pytsnet.device import ActorDevice
from pytsnet.errors import UnknownTailnetHost
from pytsnet.http.requests_adapter import ProxyRefused
from pytsnet.http.serve import AsgiStartupFailed
from pytsnet.localnet.derp_tls import ensure_certificate
from pytsnet.testing.whoami import stdlib_handler


class _Got:
    """What a test reads off a response, whichever client fetched it."""

    def __init__(self, status: int, text: str, data: Any) -> None:
        self.status_code, self.text, self._data = status, text, data

    def json(self) -> Any:
        return self._data


def _get(dev: ActorDevice, url: str, client: str = "requests") -> _Got:
    """GET ``url`` from ``dev`` with ``requests_session`` or ``sync_http_client`` (httpx)."""
    r: requests.Response | httpx.Response
    if client == "requests":
        with dev.requests_session() as s:
            r = s.get(url, timeout=10)
    else:
        with dev.sync_http_client(timeout=10) as c:
            r = c.get(url)
    r.raise_for_status()
    return _Got(r.status_code, r.text, r.json() if "json" in r.headers.get("content-type", "") else None)


@pytest.fixture(params=["requests", "httpx"])
def client(request: pytest.FixtureRequest) -> str:
    """Each server is reached with requests (``requests_session``) and httpx (``sync_http_client``)."""
    return str(request.param)


def _whois_handler(dev: ActorDevice) -> type[http.server.BaseHTTPRequestHandler]:
    def name(h: http.server.BaseHTTPRequestHandler) -> str:
        assert h.client_address == h.connection.getpeername()
        return dev.whois_connection(h.connection).node.name

    return stdlib_handler(dev, name)


def test_http_server(pair: Pair, client: str) -> None:
    a, b = pair.a, pair.b
    server = a.http_server(7201, _whois_handler(a))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        assert _get(b, "http://alpha:7201/", client).text == pair.name(b)
        assert _get(b, f"http://{pair.ip(a)}:7201/", client).text == pair.name(b)
    finally:
        server.shutdown()
        server.server_close()


def test_socketserver_takes_the_listen_socket_as_its_socket(pair: Pair) -> None:
    """The stdlib's documented way to give a server a socket: construct unbound, set ``socket``."""
    a, b = pair.a, pair.b

    class Echo(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.readline().upper())

    server = socketserver.ThreadingTCPServer(("", 0), Echo, bind_and_activate=False)
    server.socket.close()
    server.socket = a.listen_socket(7202)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        with b.connect_socket("alpha", 7202, timeout=10) as sock:
            sock.settimeout(10)
            sock.sendall(b"hello\n")
            assert sock.makefile("rb").readline() == b"HELLO\n"
    finally:
        server.shutdown()
        server.server_close()


def test_serve_wsgi_remote_addr_is_the_caller(pair: Pair, client: str) -> None:
    a, b = pair.a, pair.b

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = a.whois(environ["REMOTE_ADDR"]).node.name.encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            addr = await tg.start(a.serve_wsgi, app, 7203)
            assert addr == (pair.ip(a), 7203)
            r = await anyio.to_thread.run_sync(_get, b, "http://alpha:7203/", client)
            assert r.text == pair.name(b)
            tg.cancel_scope.cancel()

    anyio.run(main)
    with a.listen_socket(7203):  # cancelled: the port was given back
        pass


async def _asgi_whois(dev: ActorDevice, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                      send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]  # lifespan.startup, then lifespan.shutdown
            await send({"type": kind + ".complete"})
            if kind == "lifespan.shutdown":
                return
    body = dev.whois(scope["client"][0]).node.name.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def test_serve_asgi_scope_client_is_the_caller(pair: Pair, client: str) -> None:
    a, b = pair.a, pair.b

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _asgi_whois(a, scope, receive, send)

    def spoof() -> str:
        with b.requests_session() as s:  # a caller claiming to be alpha itself: ignored
            return s.get("http://alpha:7204/", headers={"X-Forwarded-For": pair.ip(a)}, timeout=10).text

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            # even told to trust every proxy, serve_asgi reads no proxy headers
            await tg.start(functools.partial(a.serve_asgi, app, 7204, forwarded_allow_ips="*"))
            r = await anyio.to_thread.run_sync(_get, b, "http://alpha:7204/", client)
            assert r.text == pair.name(b)
            assert await anyio.to_thread.run_sync(spoof) == pair.name(b)
            tg.cancel_scope.cancel()

    asyncio.run(main())
    with a.listen_socket(7204):  # cancelled: uvicorn shut down and the port was given back
        pass


def test_serve_asgi_startup_failure_is_an_error_not_an_exit(pair: Pair) -> None:
    a = pair.a

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    async def main() -> None:
        with pytest.raises(AsgiStartupFailed):
            await a.serve_asgi(app, 7211)

    asyncio.run(main())  # not a SystemExit out of the event loop
    with a.listen_socket(7211):  # and the port was given back
        pass


def test_https_requests_to_uvicorn_with_tls(pair: Pair, tmp_path: Path) -> None:
    """TLS on both ends of the bridge: uvicorn's own TLS over the listen socket (the caller's address
    kept), requests' https:// over a bridged dial, the certificate verified for the MagicDNS name."""
    a, b = pair.a, pair.b
    cert, key = ensure_certificate(tmp_path, "alpha")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _asgi_whois(a, scope, receive, send)

    def call() -> str:
        with b.requests_session() as s:
            return s.get("https://alpha:7212/", verify=str(cert), timeout=10).text

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(a.serve_asgi, app, 7212, ssl_certfile=str(cert),
                                             ssl_keyfile=str(key)))
            assert await anyio.to_thread.run_sync(call) == pair.name(b)
            tg.cancel_scope.cancel()

    asyncio.run(main())


def test_uvicorn_server_serves_fastapi_on_the_listen_socket(pair: Pair, client: str) -> None:
    a, b = pair.a, pair.b
    api = fastapi.FastAPI()

    @api.get("/whoami")
    def whoami(request: fastapi.Request) -> dict[str, str]:
        assert request.client is not None
        return {"name": a.whois(request.client.host).node.name, "client": request.client.host}

    async def main() -> None:
        server = uvicorn.Server(uvicorn.Config(api, log_level="warning"))
        task = asyncio.create_task(server.serve(sockets=[a.listen_socket(7205)]))
        try:
            r = await asyncio.to_thread(_get, b, "http://alpha:7205/whoami", client)
            assert r.json() == {"name": pair.name(b), "client": pair.ip(b)}
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_aiohttp_sock_site(pair: Pair, client: str) -> None:
    a, b = pair.a, pair.b

    async def whoami(request: aiohttp.web.Request) -> aiohttp.web.Response:
        assert request.remote is not None
        return aiohttp.web.Response(text=a.whois(request.remote).node.name)

    async def main() -> None:
        app = aiohttp.web.Application()
        app.router.add_get("/", whoami)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        site = aiohttp.web.SockSite(runner, a.listen_socket(7206))
        await site.start()
        try:
            assert site.name == f"http://{pair.ip(a)}:7206"
            r = await asyncio.to_thread(_get, b, "http://alpha:7206/", client)
            assert r.text == pair.name(b)
            async with b.http_client(timeout=10) as c:  # httpx async, in the server's own loop
                assert (await c.get("http://alpha:7206/")).text == pair.name(b)
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_asyncio_create_server(pair: Pair) -> None:
    a, b = pair.a, pair.b
    peers: list[tuple[str, int]] = []
    names: list[str] = []

    class Upper(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            peers.append(transport.get_extra_info("peername"))
            names.append(a.whois_connection(transport.get_extra_info("socket")).node.name)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data.upper())  # type: ignore[attr-defined]

    def call() -> bytes:
        with b.connect_socket("alpha", 7207, timeout=10) as sock:
            sock.settimeout(10)
            sock.sendall(b"quiet")
            return sock.recv(100)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upper, sock=a.listen_socket(7207))
        async with server:
            assert await asyncio.to_thread(call) == b"QUIET"
            assert await asyncio.to_thread(call) == b"QUIET"

    asyncio.run(main())
    assert [p[0] for p in peers] == [pair.ip(b)] * 2
    assert names == [pair.name(b)] * 2
    assert a.whois_connection(peers[0]).node.name == pair.name(b)


# -- requests -------------------------------------------------------------------------------------------
def test_requests_reuses_one_connection(pair: Pair) -> None:
    """Two calls on one session: one tailnet connection (one accept, one client port) carries both."""
    a, b = pair.a, pair.b
    seen: list[tuple[str, int]] = []
    accepted: list[object] = []

    def answer(h: http.server.BaseHTTPRequestHandler) -> str:
        seen.append(h.client_address)
        return "ok " + h.path

    class Handler(stdlib_handler(a, answer)):  # type: ignore[misc]  # HTTP/1.1: keep-alive
        def setup(self) -> None:
            accepted.append(self.request)
            super().setup()

    server = a.http_server(7208, Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    dials: list[tuple[str, int]] = []
    real_connect = b.connect_socket

    def counting_connect(host: str, port: int, timeout: float = 30.0) -> Any:
        dials.append((host, port))
        return real_connect(host, port, timeout)

    try:
        b.connect_socket = counting_connect  # type: ignore[method-assign]
        with b.requests_session() as s:
            assert s.get("http://alpha:7208/one", timeout=10).text == "ok /one"
            assert s.get("http://alpha:7208/two", timeout=10).text == "ok /two"
            assert s.post("http://alpha:7208/three", data=b"x", timeout=10).status_code == 501
        assert dials == [("alpha", 7208)], "one dial for all three requests"
        assert len(accepted) == 1 and len(seen) == 2 and seen[0] == seen[1], seen
        assert seen[0][0] == pair.ip(b)
    finally:
        del b.connect_socket
        server.shutdown()
        server.server_close()


def _causes(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    stack: list[BaseException | None] = [e]
    while stack:
        x = stack.pop()
        if x is None or x in out:
            continue
        out.append(x)
        stack += [x.__cause__, x.__context__, getattr(x, "reason", None)]
        stack += [a for a in x.args if isinstance(a, BaseException)]
    return out


@pytest.mark.parametrize("url", ["http://web.example.test/", "http://127.0.0.1:7209/", "https://nosuchpeer/"])
def test_requests_never_leaves_the_tailnet(pair: Pair, url: str) -> None:
    with pair.b.requests_session() as s, pytest.raises(requests.ConnectionError) as ei:
        s.get(url, timeout=5)
    assert any(isinstance(c, UnknownTailnetHost) for c in _causes(ei.value)), _causes(ei.value)


def test_requests_refuses_proxies(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment proxy is ignored (the call goes through the tailnet); an explicit one refused."""
    a, b = pair.a, pair.b
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    server = a.http_server(7210, _whois_handler(a))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        with b.requests_session() as s:
            assert s.get("http://alpha:7210/", timeout=10).text == pair.name(b)
            with pytest.raises(ProxyRefused):
                s.get("http://alpha:7210/", proxies={"http": "http://127.0.0.1:9"}, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
