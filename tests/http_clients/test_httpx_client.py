"""``dev.http_client()`` / ``dev.sync_http_client()`` (issue 18, point 1's clients; Go tsnet's
``HTTPClient``): httpx over tailnet dials, between two devices on a LocalTailnet over loopback.

MagicDNS names, bodies of a few MiB both ways, keep-alive reuse (counted at the dialer and at the
server), HTTP/2 over TLS+ALPN with several requests multiplexed on one connection and HTTP/2 with
prior knowledge in cleartext, timeouts and dial failures as httpx errors caused by the typed pytsnet
error, fail closed (a host socket on 127.0.0.1 is never reached, env proxies never divert), and a
keep-alive connection the server killed is detected and replaced.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
import pytest
from http_rig import Pair
from web_peer import make_certs, pattern, serving

from pytsnet import (
    ActorDevice,
    ConnectionRefused,
    ConnectionReset,
    DialTimeout,
    TcpStream,
    UnknownTailnetHost,
)
from pytsnet.device import DIAL_TIMEOUT
from pytsnet.http.client import async_client
from pytsnet.testing.tailnet import new_device, wait_for_peers

MIB = 1 << 20


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _fqdn(dev: ActorDevice) -> str:
    return dev.state.name.rstrip(".")


@pytest.fixture
def host_listener() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A real listening socket on 127.0.0.1 and the connections it accepted (must stay empty)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.1)
    got: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                got.append(srv.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv, got
    stop.set()
    t.join(2)
    srv.close()
    for c in got:
        c.close()


# -- HTTP/1.1: names, bodies, reuse -------------------------------------------------------------------
@pytest.mark.anyio
async def test_get_post_by_name_with_mib_bodies_on_one_reused_connection(pair: Pair) -> None:
    dials: list[tuple[str, int]] = []

    async def dial(host: str, port: int, timeout: float) -> TcpStream:
        dials.append((host, port))
        return await pair.app.tcp_connect(host, port, timeout)

    async with serving(pair.web, 8080) as web:
        async with async_client(dial, DIAL_TIMEOUT, base_url="http://web:8080") as client:
            r = await client.get("/hello")
            assert (r.status_code, r.text, r.http_version) == (200, "hello from web", "HTTP/1.1")
            up = pattern(3 * MIB + 17)
            r = await client.post("/echo", content=up)
            assert r.status_code == 200 and r.content == up
            r = await client.get(f"/bytes/{4 * MIB + 3}")
            assert r.content == pattern(4 * MIB + 3)
            first, second = (await client.get("/conn")).text, (await client.get("/conn")).text
            stream = r.extensions["network_stream"]
            assert stream.get_extra_info("server_addr") == (pair.web.tailscale_ips()[0], 8080)
            assert stream.get_extra_info("client_addr")[0] == pair.app.tailscale_ips()[0]
            assert stream.get_extra_info("socket") is None  # no host socket anywhere
        # Five requests, one tailnet dial, one connection at the server.
        assert dials == [("web", 8080)]
        assert web.seen.connections == 1 and first == second and first.startswith("1 ")
        assert first.split()[1].split(":")[0] == pair.app.tailscale_ips()[0]
        assert [m for _, m, _, _ in web.seen.requests] == ["GET", "POST", "GET", "GET", "GET"]
        assert web.seen.requests[1][3] == 3 * MIB + 17

        # The device's own client: the FQDN and the tailnet IP reach the same server.
        async with pair.app.http_client(timeout=20) as client:
            r1 = await client.get(f"http://{_fqdn(pair.web)}:8080/hello")
            r2 = await client.get(f"http://{pair.web.tailscale_ips()[0]}:8080/hello")
            assert r1.text == r2.text == "hello from web"


# -- HTTP/2 -------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_http2_over_tls_alpn_multiplexes_concurrent_requests_on_one_connection(pair: Pair) -> None:
    certs = make_certs(["web", _fqdn(pair.web)], pair.web.tailscale_ips())
    async with serving(pair.web, 8443, tls=certs.server) as web:
        async with pair.app.http_client(http2=True, verify=certs.client_context(),
                                        base_url="https://web:8443", timeout=20) as client:
            got: list[httpx.Response] = []

            async def one() -> None:
                got.append(await client.get("/slow/0.5"))

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(one)
            assert [(r.status_code, r.text, r.http_version) for r in got] == [(200, "slow", "HTTP/2")] * 5
            up = pattern(2 * MIB + 5)
            r = await client.post("/echo", content=up)
            assert r.content == up and r.http_version == "HTTP/2"
            assert (await client.get(f"/bytes/{2 * MIB}")).content == pattern(2 * MIB)
        assert web.seen.protocols == ["h2"] and web.seen.connections == 1
        assert web.seen.max_streams[1] == 5  # all five in flight at once, on the one connection

        # A certificate we do not trust: refused during the handshake, as httpx does.
        async with pair.app.http_client(http2=True, base_url="https://web:8443") as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get("/hello")


@pytest.mark.anyio
async def test_http2_prior_knowledge_in_cleartext(pair: Pair) -> None:
    async with serving(pair.web, 8080) as web:
        async with pair.app.http_client(http1=False, http2=True, base_url="http://web:8080") as client:
            r = await client.post("/echo", content=b"h2c")
            assert (r.text, r.http_version) == ("h2c", "HTTP/2")
        assert web.seen.protocols == ["h2"]


# -- failures -----------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_timeouts_and_dial_failures_are_httpx_errors_caused_by_the_typed_error(
        pair: Pair, tmp_path: Path) -> None:
    async with serving(pair.web, 8080), pair.app.http_client(base_url="http://web:8080") as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/slow/5", timeout=httpx.Timeout(10, read=0.5))
        with pytest.raises(httpx.ConnectError) as refused:
            await client.get("http://web:9/")
        assert isinstance(refused.value.__cause__, ConnectionRefused)
        with pytest.raises(httpx.ReadError) as reset:
            await client.get("/reset")
        assert isinstance(reset.value.__cause__, ConnectionReset)
        assert (await client.get("/hello")).text == "hello from web"  # the client still works

    # A peer that went offline: its SYNs go unanswered, the connect timeout ends the dial.
    with new_device(pair.net, tmp_path, "gone") as gone:
        gone.up_blocking(30)
        await anyio.to_thread.run_sync(wait_for_peers, pair.app, ["gone"])
    async with pair.app.http_client() as client:
        t0 = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout) as slow:
            await client.get("http://gone:80/", timeout=httpx.Timeout(10, connect=1.0))
        assert isinstance(slow.value.__cause__, DialTimeout)
        assert time.monotonic() - t0 < 8


@pytest.mark.anyio
async def test_fails_closed_host_network_is_never_reached_and_env_proxies_never_divert(
        pair: Pair, host_listener: tuple[socket.socket, list[socket.socket]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    srv, accepted = host_listener
    port = srv.getsockname()[1]
    # Every proxy variable httpx reads points at the host listener: with trust_env on or off, no
    # request goes there.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with serving(pair.web, 8080) as web:
        for trust_env in (False, True):
            async with pair.app.http_client(trust_env=trust_env, timeout=10) as client:
                assert (await client.get("http://web:8080/hello")).text == "hello from web"
                for target in (f"http://127.0.0.1:{port}/", f"http://localhost:{port}/",
                               "http://nosuchhost.test/"):
                    with pytest.raises(httpx.ConnectError) as err:
                        await client.get(target)
                    assert isinstance(err.value.__cause__, UnknownTailnetHost), (target, err.value.__cause__)
        assert web.seen.connections == 2
    await anyio.sleep(0.3)
    assert accepted == []  # not one connection to the host network
    for refused in ({"proxy": f"http://127.0.0.1:{port}"}, {"transport": httpx.AsyncHTTPTransport()},
                    {"mounts": {"all://": httpx.AsyncHTTPTransport()}}):
        with pytest.raises(TypeError, match="past the tailnet"):
            pair.app.http_client(**refused)


@pytest.mark.anyio
async def test_a_keepalive_connection_the_server_killed_is_detected_and_replaced(pair: Pair) -> None:
    async with serving(pair.web, 8080) as web:
        async with pair.app.http_client(base_url="http://web:8080", timeout=10) as client:
            r = await client.get("/conn")
            assert r.text.startswith("1 ")
            stream = r.extensions["network_stream"]
            assert stream.get_extra_info("is_readable") is False  # idle and healthy
            await web.kill_connections()
            with anyio.fail_after(10):
                while not stream.get_extra_info("is_readable"):  # the FIN arrived; nothing consumed
                    await anyio.sleep(0.02)
            r = await client.get("/conn")
            assert r.status_code == 200 and r.text.startswith("2 ")
        assert web.seen.connections == 2


# -- the blocking client ------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_sync_client_http1_http2_tls_reuse_and_failures(pair: Pair) -> None:
    certs = make_certs(["web", _fqdn(pair.web)], pair.web.tailscale_ips())
    async with serving(pair.web, 8080) as web, serving(pair.web, 8443, tls=certs.server) as tls_web:

        def plain() -> list[str]:
            with pair.app.sync_http_client(base_url="http://web:8080", timeout=20) as client:
                assert client.get("/hello").text == "hello from web"
                up = pattern(3 * MIB + 1)
                assert client.post("/echo", content=up).content == up
                assert client.get(f"/bytes/{3 * MIB}").content == pattern(3 * MIB)
                ids = [client.get("/conn").text, client.get("/conn").text]
                with pytest.raises(httpx.ReadTimeout):
                    client.get("/slow/5", timeout=httpx.Timeout(10, read=0.5))
                with pytest.raises(httpx.ConnectError) as err:
                    client.get("http://127.0.0.1:1/")
                assert isinstance(err.value.__cause__, UnknownTailnetHost)
                return ids

        ids = await anyio.to_thread.run_sync(plain)
        assert ids[0] == ids[1] and ids[0].startswith("1 ")

        def killed_then_tls() -> tuple[str, list[str]]:
            with pair.app.sync_http_client(base_url="http://web:8080", timeout=20) as client:
                r = client.get("/conn")
                stream = r.extensions["network_stream"]
                assert stream.get_extra_info("is_readable") is False
                anyio.from_thread.run(web.kill_connections)
                end = time.monotonic() + 10
                while not stream.get_extra_info("is_readable"):
                    assert time.monotonic() < end
                    time.sleep(0.02)
                after = client.get("/conn").text
            with pair.app.sync_http_client(http2=True, verify=certs.client_context(),
                                           base_url="https://web:8443", timeout=20) as client:
                versions = [client.get("/hello").http_version]
                up = pattern(MIB + 9)
                r = client.post("/echo", content=up)
                assert r.content == up
                versions.append(r.http_version)
            with pair.app.sync_http_client(verify=certs.client_context(),
                                           base_url="https://web:8443") as client:
                versions.append(client.get("/hello").http_version)
            return after, versions

        after, versions = await anyio.to_thread.run_sync(killed_then_tls)
        assert after.startswith(f"{web.seen.connections} ") and web.seen.connections == 3
        assert versions == ["HTTP/2", "HTTP/2", "HTTP/1.1"]
        assert tls_web.seen.protocols == ["h2", "http/1.1"]
