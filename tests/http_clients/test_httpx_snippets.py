"""docs/frameworks.md's httpx snippets, run as written against a peer named ``web`` serving on 8080."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
import pytest
from http_rig import Pair
from web_peer import serving

from pytsnet.testing.snippets import run_snippet, snippets

PAGE = Path(__file__).resolve().parents[2] / "docs" / "frameworks.md"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)  # a snippet's top-level await runs under either


@pytest.mark.anyio
async def test_httpx_async_snippet(pair: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    ns = {"dev": pair.app}
    async with serving(pair.web, 8080) as web:
        coro = run_snippet(snippets(PAGE)["httpx-async"], ns, "httpx-async")
        assert coro is not None
        await coro
    assert capsys.readouterr().out == "hello from web ping\n"
    assert ns["r"].status_code == 200 and ns["posted"].text == "ping"
    assert [(m, p) for _, m, p, _ in web.seen.requests] == [("GET", "/hello"), ("POST", "/echo")]
    assert web.seen.connections == 1


@pytest.mark.anyio
async def test_httpx_sync_snippet(pair: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    ns = {"dev": pair.app}
    async with serving(pair.web, 8080) as web:
        code = snippets(PAGE)["httpx-sync"]
        assert await anyio.to_thread.run_sync(run_snippet, code, ns, "httpx-sync") is None
    assert capsys.readouterr().out == "200 hello from web\n"
    assert web.seen.requests and web.seen.requests[0][1:3] == ("GET", "/hello")
