"""docs/frameworks.md, "Serving" and the requests part of "Clients": every snippet run as written.

``web`` runs each server snippet on tailnet port 8080 (one after the other: each must give the port
back when it ends); ``app`` calls it and must be greeted by its own node name (the WhoIs each
snippet shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from serving_rig import Pair, tailnet_pair

from pytsnet.device import ActorDevice
from pytsnet.testing.snippets import run_snippet, snippets

DOC = Path(__file__).resolve().parents[2] / "docs" / "frameworks.md"
SNIPPETS = snippets(DOC)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """``web`` serves (the page's peer name), ``app`` calls."""
    with tailnet_pair(tmp_path_factory.mktemp("docs"), names=("web", "app")) as p:
        yield p


def _get(dev: ActorDevice, url: str, timeout: float = 10.0) -> requests.Response:
    """GET, retried while the server is still starting (the port refuses until it listens)."""
    deadline = time.monotonic() + timeout
    with dev.requests_session() as s:
        while True:
            try:
                r = s.get(url, timeout=5)
                r.raise_for_status()
                return r
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _run(name: str, dev: ActorDevice, ns: dict[str, Any] | None = None) -> Any:
    ns = ns if ns is not None else {}
    ns["dev"] = dev
    return run_snippet(SNIPPETS[name], ns, name)


async def _serve_then_cancel(coro: Any, dev: ActorDevice, url: str) -> requests.Response:
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.to_thread(_get, dev, url)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def test_every_snippet_is_tested() -> None:
    mine = {"serve-http-server", "serve-socketserver", "serve-wsgi", "fastapi-app", "serve-asgi",
            "serve-uvicorn", "serve-aiohttp", "client-requests"}
    assert mine <= set(SNIPPETS)


def test_http_server_snippet(pair: Pair) -> None:
    ns: dict[str, Any] = {}
    assert _run("serve-http-server", pair.a, ns) is None
    try:
        assert _get(pair.b, "http://web:8080/").text == f"hello, {pair.name(pair.b)}\n"
    finally:
        ns["server"].shutdown()
        ns["server"].server_close()


def test_socketserver_snippet(pair: Pair) -> None:
    ns: dict[str, Any] = {}
    _run("serve-socketserver", pair.a, ns)
    try:
        with pair.b.connect_socket("web", 7000, timeout=10) as sock:
            sock.settimeout(10)
            sock.sendall(b"echo me\n")
            assert sock.makefile("rb").readline() == b"echo me\n"
    finally:
        ns["server"].shutdown()
        ns["server"].server_close()


def test_wsgi_snippet(pair: Pair) -> None:
    r = asyncio.run(_serve_then_cancel(_run("serve-wsgi", pair.a), pair.b, "http://web:8080/"))
    assert r.text == f"hello, {pair.name(pair.b)}\n"


def test_asgi_snippets(pair: Pair) -> None:
    ns: dict[str, Any] = {}
    _run("fastapi-app", pair.a, ns)
    r = asyncio.run(_serve_then_cancel(_run("serve-asgi", pair.a, ns), pair.b, "http://web:8080/"))
    assert r.json() == {"hello": pair.name(pair.b)}


def test_uvicorn_snippet(pair: Pair) -> None:
    ns: dict[str, Any] = {}
    _run("fastapi-app", pair.a, ns)

    async def main() -> requests.Response:
        task = asyncio.ensure_future(_run("serve-uvicorn", pair.a, ns))
        try:
            return await asyncio.to_thread(_get, pair.b, "http://web:8080/")
        finally:
            ns["server"].should_exit = True
            await asyncio.wait_for(task, 10)

    assert asyncio.run(main()).json() == {"hello": pair.name(pair.b)}


def test_aiohttp_snippet(pair: Pair) -> None:
    async def main() -> requests.Response:
        ns: dict[str, Any] = {}
        await _run("serve-aiohttp", pair.a, ns)
        try:
            return await asyncio.to_thread(_get, pair.b, "http://web:8080/")
        finally:
            await ns["runner"].cleanup()

    assert asyncio.run(main()).text == f"hello, {pair.name(pair.b)}\n"


def test_requests_snippet(pair: Pair) -> None:
    served: dict[str, Any] = {}
    _run("serve-http-server", pair.a, served)
    try:
        _get(pair.b, "http://web:8080/")  # listening
        ns: dict[str, Any] = {}
        assert _run("client-requests", pair.b, ns) is None
        want = f"hello, {pair.name(pair.b)}\n"
        assert ns["first"].text == want and ns["second"].text == want
    finally:
        served["server"].shutdown()
        served["server"].server_close()
