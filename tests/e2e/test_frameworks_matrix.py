"""Issue 18's done-when as one matrix: four web frameworks served on a tailnet node, each reached from
another node with eight clients, and every answer names the caller.

On one LocalTailnet over loopback, ``web`` serves one app each with http.server (``dev.http_server``),
wsgiref (``dev.serve_wsgi``), uvicorn (``dev.serve_asgi``, a FastAPI app) and aiohttp (``SockSite`` on
``dev.listen_socket``), using nothing but the public API. Each app (``pytsnet.testing.whoami``)
answers ``NAME IP:PORT``: the WhoIs name of its caller and the tailnet address the framework handed
it. From ``app``, each is reached with ``dev.http_client()``, ``dev.requests_session()`` (two calls on
one connection), and through ``app``'s loopback proxies (SOCKS5 and HTTP) with httpx, requests and
curl (``--socks5-hostname``, ``--proxy``), so the answer must name ``app``: the proxied requests are
dialed by ``app``'s own device, not by the host. The devices and the four servers start once for the
module; each (server, client) pair is one test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import httpx
import pytest
import requests
from anyio.from_thread import start_blocking_portal

from pytsnet.device import ActorDevice
from pytsnet.net.bridge import TailnetListenSocket
from pytsnet.testing.tailnet import Tailnet, local_tailnet
from pytsnet.testing.whoami import aiohttp_app, fastapi_app, stdlib_handler, wsgi_app

PORTS = {"http.server": 8081, "wsgiref": 8082, "uvicorn": 8083, "aiohttp": 8084}
"""Each framework's tailnet port on ``web``."""

TIMEOUT = 20.0


async def _aiohttp_site(web: ActorDevice, sock: TailnetListenSocket) -> aiohttp.web.AppRunner:
    runner = aiohttp.web.AppRunner(aiohttp_app(web), access_log=None)
    await runner.setup()
    await aiohttp.web.SockSite(runner, sock).start()
    return runner


@dataclass
class Matrix:
    web: ActorDevice
    app: ActorDevice
    proxy_addr: str
    """``app``'s loopback proxies (SOCKS5 and HTTP on one port), ``127.0.0.1:PORT``."""
    proxy_cred: str


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    with local_tailnet(tmp_path_factory.mktemp("matrix"), ["web", "app"]) as tn, \
            start_blocking_portal("asyncio") as portal, ExitStack() as stack:
        web, app = tn["web"], tn["app"]
        stdlib = web.http_server(PORTS["http.server"], stdlib_handler(web))
        stack.callback(stdlib.server_close)
        threading.Thread(target=stdlib.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        stack.callback(stdlib.shutdown)
        for serve, wsgi_or_asgi, port in ((web.serve_wsgi, wsgi_app(web), PORTS["wsgiref"]),
                                         (web.serve_asgi, fastapi_app(web), PORTS["uvicorn"])):
            task, _ = portal.start_task(serve, wsgi_or_asgi, port)  # returns once listening
            stack.callback(task.cancel)
        runner = portal.call(_aiohttp_site, web, web.listen_socket(PORTS["aiohttp"]))
        stack.callback(portal.call, runner.cleanup)
        addr, cred, _ = app.loopback()
        yield Matrix(web, app, addr, cred)


# -- the six clients: each returns the answers it got ----------------------------------------------------
def _http_client(m: Matrix, url: str) -> list[str]:
    async def get() -> str:
        async with m.app.http_client(timeout=TIMEOUT) as client:
            r = await client.get(url)
            r.raise_for_status()
            return r.text

    return [asyncio.run(get())]


def _httpx_via(scheme: str) -> Callable[[Matrix, str], list[str]]:
    def get(m: Matrix, url: str) -> list[str]:
        with httpx.Client(proxy=f"{scheme}://tsnet:{m.proxy_cred}@{m.proxy_addr}", timeout=TIMEOUT,
                          trust_env=False) as client:
            r = client.get(url)
            r.raise_for_status()
            return [r.text]

    return get


def _requests(m: Matrix, url: str) -> list[str]:
    """Two calls on one session; one tailnet dial must carry both, unless the server closed the
    connection (wsgiref speaks HTTP/1.0 and closes after every response: no client can reuse it)."""
    dials: list[tuple[str, int]] = []
    dial = m.app.connect_socket  # what the session's connections are made with: count its calls

    def counting(host: str, port: int, timeout: float = TIMEOUT) -> Any:
        dials.append((host, port))
        return dial(host, port, timeout)

    m.app.connect_socket = counting  # type: ignore[method-assign]
    try:
        with m.app.requests_session() as s:
            first, second = s.get(url, timeout=TIMEOUT), s.get(url, timeout=TIMEOUT)
    finally:
        del m.app.connect_socket
    for r in (first, second):
        r.raise_for_status()
    if first.raw.version == 10:
        assert len(dials) == 2, f"an HTTP/1.0 server closes each connection: {dials}"
    else:
        assert len(dials) == 1, f"two calls, one connection: {dials}"
        assert first.text.rsplit(":", 1)[1] == second.text.rsplit(":", 1)[1], \
            f"the server saw two client ports: {first.text!r}, {second.text!r}"
    return [first.text, second.text]


def _requests_via(scheme: str) -> Callable[[Matrix, str], list[str]]:
    """A plain ``requests.Session`` through ``app``'s loopback proxy (``socks5h``: names resolved by
    the proxy, needs PySocks), two calls."""
    def get(m: Matrix, url: str) -> list[str]:
        proxy = f"{scheme}://tsnet:{m.proxy_cred}@{m.proxy_addr}"
        with requests.Session() as s:
            s.trust_env = False
            answers = [s.get(url, proxies={"http": proxy}, timeout=TIMEOUT) for _ in range(2)]
        for r in answers:
            r.raise_for_status()
        return [r.text for r in answers]

    return get


def _curl(*proxy_args: str) -> Callable[[Matrix, str], list[str]]:
    def get(m: Matrix, url: str) -> list[str]:
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")  # a failure under CI (pytsnet.testing.ci)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # only the proxy named here
        args = [a.format(addr=m.proxy_addr, cred=m.proxy_cred) for a in proxy_args]
        r = subprocess.run(["curl", "-sS", "--fail", "--max-time", str(TIMEOUT), *args, url],
                           capture_output=True, text=True, env=env, timeout=TIMEOUT + 10)
        assert r.returncode == 0, r.stderr
        return [r.stdout]

    return get


CLIENTS: dict[str, Callable[[Matrix, str], list[str]]] = {
    "http_client": _http_client,
    "httpx-socks5": _httpx_via("socks5"),
    "httpx-http-proxy": _httpx_via("http"),
    "requests_session": _requests,
    "requests-socks5h": _requests_via("socks5h"),
    "requests-http-proxy": _requests_via("http"),
    "curl-socks5-hostname": _curl("--socks5-hostname", "{addr}", "--proxy-user", "tsnet:{cred}"),
    "curl-proxy": _curl("--proxy", "http://tsnet:{cred}@{addr}"),
}


@pytest.mark.parametrize("client", list(CLIENTS))
@pytest.mark.parametrize("server", list(PORTS))
def test_framework_answers_with_the_callers_whois(matrix: Matrix, server: str, client: str) -> None:
    answers = CLIENTS[client](matrix, f"http://web:{PORTS[server]}/")
    app_name, app_ip = Tailnet.name(matrix.app), Tailnet.ip(matrix.app)
    assert app_name.startswith("app.")
    for text in answers:
        name, addr = text.split(" ")
        ip, port = addr.rsplit(":", 1)
        assert (name, ip) == (app_name, app_ip), f"{server} saw {text!r}, not the caller app"
        assert port == "-" if server == "wsgiref" else int(port) > 0
