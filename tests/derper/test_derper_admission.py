"""The standalone derper's client admission: open by default, or by an admission-controller URL
(localnet's ``/derp/admit``, or a hostile one) — fail closed, typed counters, no crash."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytsnet.derper.admit import AdmitFormatError, parse_request, parse_response, request_body
from pytsnet.derper.server import Derper
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.testclient import ControlClient
from pytsnet.testing.derpclient import DerpTestClient, insecure_tls
from pytsnet.wire.derp import frames as f
from pytsnet.wire.keys import NodePrivate


def run(coro: Awaitable[None], timeout: float = 60) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro, timeout)
    asyncio.run(main())


async def register(net: LocalTailnet, hostname: str) -> NodePrivate:
    """A node registered (and so authorized) with an auth key; its node key is what DERP sees."""
    cc = await ControlClient.connected(net.control_url)
    try:
        await cc.register(await asyncio.to_thread(net.create_authkey), hostname=hostname)
    finally:
        await cc.close()
    return cc.node


def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalTailnet]:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0", relay=False) as n:
        yield n


def test_admit_codec() -> None:
    key = NodePrivate.generate().public()
    assert parse_request(request_body(key, "192.0.2.7")) == (key, "192.0.2.7")
    assert parse_request(b'{"NodePublic": "%s"}' % key.to_text().encode()) == (key, "")
    for bad in (b"", b"[]", b"{}", b'{"NodePublic": "nodekey:zz"}', b'{"NodePublic": 5}',
                b'{"NodePublic": "%s", "Source": "not an ip"}' % key.to_text().encode(),
                b'{"NodePublic": "%s", "Source": 7}' % key.to_text().encode()):
        with pytest.raises(AdmitFormatError):
            parse_request(bad)
    assert parse_response(b'{"Allow": true}') is True
    for no in (b'{"Allow": false}', b"{}", b'{"Allow": "true"}', b'{"Allow": 1}'):
        assert parse_response(no) is False
    for bad in (b"", b"[true]", b"true", b"{"):
        with pytest.raises(AdmitFormatError):
            parse_response(bad)


def test_localnet_admits_registered_refuses_unknown_and_expired(net: LocalTailnet) -> None:
    """derper --verify-client-url at localnet's /derp/admit: registered nodes relay to each other, an
    unknown node key is refused (stream closed before ServerInfo, counted), an expired one too."""
    with Derper("127.0.0.1:0", tls="self-signed", stun_port=None,
                verify_client_url=f"{net.control_url}/derp/admit") as d:
        async def body() -> None:
            ka, kb = await register(net, "alpha"), await register(net, "beta")
            a = await DerpTestClient.connect(d.port, ka, tls=insecure_tls(), host=d.host)
            b = await DerpTestClient.connect(d.port, kb, tls=insecure_tls(), host=d.host)
            a.send(b.key, b"through the standalone relay")
            got = await b.recv_packet()
            assert (got.src, got.packet) == (a.key, b"through the standalone relay")
            stranger = await DerpTestClient.connect(d.port, tls=insecure_tls(), handshake=False, host=d.host)
            assert await stranger.refused()
            await asyncio.to_thread(net.expire_node, "alpha")
            again = await DerpTestClient.connect(d.port, ka, tls=insecure_tls(), handshake=False, host=d.host)
            assert await again.refused()
            for c in (a, b, stranger, again):
                await c.aclose()

        run(body())
        s = d.stats()
        assert s["accepted"] == 2 and s["rejected_verify"] == 2 and s["verify_errors"] == 0, s
        assert s["admission"] == {"allowed": 2, "denied": 2, "errors": 0, "failed_open": 0}, s
        assert s["packets_forwarded"] == 1, s
    assert net.admit is not None and (net.admit.allowed, net.admit.denied, net.admit.bad) == (2, 2, 0)


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_verify_url_down(fail_open: bool) -> None:
    """An unreachable admission controller refuses every client (our default), or, with Go's
    fail-open flag, admits them; both are counted."""
    url = f"http://127.0.0.1:{closed_port()}/derp/admit"
    with Derper("127.0.0.1:0", stun_port=None, verify_client_url=url, verify_fail_open=fail_open) as d:
        async def body() -> None:
            c = await DerpTestClient.connect(d.port, handshake=False, host=d.host)
            assert await c.refused() is not fail_open
            await c.aclose()

        run(body())
        s = d.stats()
        assert s["admission"]["errors"] == 1 and s["admission"]["failed_open"] == int(fail_open), s
        assert s["accepted"] == int(fail_open) and s["rejected_verify"] == int(not fail_open), s


Answer = Callable[[bytes], Awaitable[bytes]]


async def fake_controller(answers: list[Answer], seen: list[dict[str, Any]]) -> tuple[asyncio.Server, str]:
    """An admission controller answering each request with the next of ``answers`` (raw HTTP)."""
    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        body = await reader.readexactly(length)
        seen.append(json.loads(body))
        try:
            writer.write(await answers.pop(0)(body))
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(conn, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/admit"


def http(status: str, body: bytes) -> Answer:
    async def answer(_req: bytes) -> bytes:
        return b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
            status.encode(), len(body), body)
    return answer


def slow(seconds: float) -> Answer:
    async def answer(_req: bytes) -> bytes:
        await asyncio.sleep(seconds)
        return await http("200 OK", b'{"Allow": true}')(_req)
    return answer


def test_bad_admission_answers_refuse_without_crashing() -> None:
    """Every answer but a 200 with ``{"Allow": true}`` (in its first 4 KiB, within the timeout)
    refuses; after all of them a good answer still admits (the relay kept serving)."""
    answers: list[Answer] = [
        http("500 Internal Server Error", b'{"Allow": true}'), http("200 OK", b"not json"),
        http("200 OK", b'{"Allow": "yes"}'), http("200 OK", b"[true]"),
        http("200 OK", b" " * (64 << 10) + b'{"Allow": true}'),  # past Go's 4 KiB read limit
        http("302 Found", b""), slow(5.0), http("200 OK", b'{"Allow": true}')]
    refusals = len(answers) - 1
    seen: list[dict[str, Any]] = []

    async def body() -> None:
        server, url = await fake_controller(answers, seen)
        d = await asyncio.to_thread(Derper("127.0.0.1:0", stun_port=None, verify_client_url=url,
                                           verify_timeout=1.0).start)
        try:
            keys = []
            for _ in range(refusals):
                c = await DerpTestClient.connect(d.port, handshake=False, host=d.host)
                keys.append(c.key)
                assert await c.refused()
                await c.aclose()
            ok = await DerpTestClient.connect(d.port, host=d.host)  # the ServerInfo came: admitted
            keys.append(ok.key)
            await ok.aclose()
            s = await asyncio.to_thread(d.stats)
            assert s["rejected_verify"] == refusals and s["accepted"] == 1, s
            assert s["admission"]["allowed"] == 1 and s["admission"]["denied"] == 1, s  # "yes"
            assert s["admission"]["errors"] == refusals - 1 and s["admission"]["failed_open"] == 0, s
            assert [r["NodePublic"] for r in seen] == [k.to_text() for k in keys]
            assert {r["Source"] for r in seen} == {"127.0.0.1"}
        finally:
            await asyncio.to_thread(d.close)
            server.close()

    run(body(), timeout=90)


def test_open_relay_bounds_connections_and_frames() -> None:
    """Without a verify URL every key is admitted; connections per source address are capped (the
    extra one is closed unread, counted) and an oversize frame closes only its own stream."""
    with Derper("127.0.0.1:0", stun_port=None, max_connections_per_ip=3) as d:
        async def body() -> None:
            a = await DerpTestClient.connect(d.port, host=d.host)
            b = await DerpTestClient.connect(d.port, host=d.host)
            bad = await DerpTestClient.connect(d.port, host=d.host)
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError, AssertionError)):
                extra = await DerpTestClient.connect(d.port, handshake=False, host=d.host)
                await extra.aclose()
            bad.writer.write(f.encode_header(f.FrameType.SEND_PACKET, 2 << 20))
            assert await bad.refused(5.0)
            a.send(b.key, b"still relaying")
            assert (await b.recv_packet()).packet == b"still relaying"
            await bad.aclose()
            await asyncio.sleep(0.2)
            c = await DerpTestClient.connect(d.port, host=d.host)  # the freed slot is usable again
            b.send(c.key, b"to the newcomer")
            assert (await c.recv_packet()).packet == b"to the newcomer"
            for x in (a, b, c):
                await x.aclose()

        run(body())
        s = d.stats()
        assert s["accepted"] == 4 and s["conns_refused"] == 1 and s["stream_errors"] == 1, s
        assert "admission" not in s
