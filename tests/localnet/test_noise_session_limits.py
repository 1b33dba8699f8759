"""Connection and Noise-session limits of a running localnet: idle timeout, streams, buffered bytes,
connections. Each test drives the real server on loopback with the ts2021 test client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import h2.errors
import h2.settings
import pytest

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.limits import ConnectionGate, ConnectionLimits
from pytsnet.localnet.noise_h2 import MAX_HEADER_LIST_SIZE
from pytsnet.localnet.testclient import CAPVER, ControlClient, _Stream, fetch_key

SERVED = 403
"""What set-dns answers an empty request on a tailnet without HTTPS: a cheap request the session
serves to the end (these tests only need one that is answered, not refused by a limit)."""


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _client(net: LocalTailnet) -> ControlClient:
    c = ControlClient(net.control_url)
    await c.connect()
    await asyncio.wait_for(c.settings_received.wait(), 5)
    return c


async def on_server(net: LocalTailnet, fn: Callable[[], Any]) -> Any:
    """Evaluate ``fn`` on the server's loop (its state is only consistent there)."""
    async def call() -> Any:
        return fn()
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), net.loop))


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def finish(c: ControlClient, sid: int, body: bytes = b"{}") -> tuple[int, int | None]:
    """End a request opened with ``open_partial``: ``(status, reset code)`` of its answer."""
    c.h2.send_data(sid, body, end_stream=True)
    await c._flush()
    st = c.stream(sid)
    while await asyncio.wait_for(st.data.get(), 5) is not None:
        pass
    return st.status, st.reset_code


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a limit logged a traceback"


def test_idle_session_closes_at_the_timeout_and_a_live_map_poll_keeps_its_session(tmp_path, caplog):
    """Idle = no request being served and nothing but PINGs received: a session that never asked,
    one whose request was answered, one that only PINGs and one that left a request half-sent are
    all closed (GOAWAY NO_ERROR) about ``idle_timeout`` after their last activity; a session holding
    a map long poll (keep-alives every 30 s, so no traffic at all) outlives three timeouts."""
    timeout = 1.0
    with LocalTailnet(tmp_path, relay=False, keepalive_interval=30,
                      limits=ConnectionLimits(idle_timeout=timeout)) as net:
        key = net.create_authkey(reusable=True)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            poller = await _client(net)
            await poller.register(key, hostname="poller")
            frames = poller.map_stream()
            first = await anext(frames)
            assert "Node" in first
            t_poll = loop.time()

            # Each "since" is taken before the session's last activity (the server's loop reads the
            # same monotonic clock), so closing at ``since + timeout`` or later is never early.
            t_quiet = loop.time()
            quiet = await _client(net)
            used = await _client(net)
            t_used = loop.time()
            assert (await used.post("/machine/set-dns", {}))[0] == SERVED
            half = await _client(net)
            t_half = loop.time()
            await half.open_partial("/machine/set-dns", 10)  # never finished
            t_ping = loop.time()
            pinger = await _client(net)

            async def ping() -> None:
                while not pinger.closed.is_set():
                    pinger.h2.ping(b"12345678")
                    await pinger._flush()
                    await asyncio.sleep(0.2)
            pinging = asyncio.ensure_future(ping())

            for c, since in ((quiet, t_quiet), (used, t_used), (half, t_half), (pinger, t_ping)):
                await asyncio.wait_for(c.closed.wait(), 10 * timeout)
                assert loop.time() - since >= timeout - 0.01, "closed before the idle timeout"
                assert c.goaway_code == h2.errors.ErrorCodes.NO_ERROR
            await pinging

            await asyncio.sleep(max(0.0, t_poll + 3 * timeout - loop.time()))
            assert not poller.closed.is_set(), "the session with a live map poll was closed as idle"
            assert (await poller.post("/machine/set-dns", {}))[0] == SERVED
            await frames.aclose()
            for c in (poller, quiet, used, half, pinger):
                await c.close()

        with caplog.at_level(logging.INFO):
            run(main())
        assert net.control.stats["noise_idle_closed"] == 4
    no_tracebacks(caplog)


def test_one_session_cannot_buffer_more_than_the_session_cap(tmp_path, caplog):
    """40 streams each trying to send 64 KiB of a body they never finish (2.5 MiB): the session's
    flow-control window holds the server to the 256 KiB cap (its buffered bytes, and the bodies it
    holds, counted on the server), other clients are served meanwhile, and the bytes come back when
    the streams are reset."""
    cap = 256 << 10
    with LocalTailnet(tmp_path, relay=False,
                      limits=ConnectionLimits(max_session_buffer=cap, max_streams=64)) as net:
        key = net.create_authkey(reusable=True)

        async def main() -> None:
            hog = await _client(net)
            sids, sent_total = [], 0
            for _ in range(40):
                sid, sent = await hog.open_partial("/machine/register", 64 << 10)
                sids.append(sid)
                sent_total += sent
                await asyncio.sleep(0.02)  # let any window update the server sends come back
            (session,) = await on_server(net, lambda: list(net.control.sessions))

            def held() -> tuple[int, int, int]:
                return (session.buffered, session.peak_buffered,
                        sum(len(r.body) for r in session._requests.values()))
            await wait_until(lambda: session.buffered >= sent_total)  # all that was sent has arrived
            buffered, peak, bodies = await on_server(net, held)
            assert bodies == sent_total and buffered == sent_total  # all that was sent arrived
            assert peak <= cap and bodies <= cap, (peak, bodies, cap)
            assert sent_total > cap // 2  # the hog really filled its share
            assert net.control.stats["h2_buffered_peak"] <= cap

            other = await _client(net)  # another client is served meanwhile
            await other.register(key, hostname="other")
            assert (await other.post("/machine/map", other.map_request(Stream=False)))[0] == 200
            await other.close()

            for sid in sids:
                await hog.reset(sid)
            await wait_until(lambda: session.buffered == 0)
            await wait_until(lambda: hog.h2.outbound_flow_control_window == cap)  # all of it came back
            assert (await hog.post("/machine/set-dns", {}))[0] == SERVED
            assert hog.goaway_code is None
            await hog.close()

        with caplog.at_level(logging.INFO):
            run(main())
    no_tracebacks(caplog)


def test_a_client_ignoring_flow_control_is_closed_with_goaway(tmp_path, caplog):
    """A client that keeps sending past the session window (here: 512 KiB in 16 KiB frames, paced so
    a server that reopened its window at once would keep up) is closed with GOAWAY FLOW_CONTROL_ERROR,
    having made the server hold no more than the cap."""
    cap = 128 << 10
    with LocalTailnet(tmp_path, relay=False, limits=ConnectionLimits(max_session_buffer=cap)) as net:
        async def main() -> None:
            c = await _client(net)
            sent = 0
            for _ in range(8):
                if c.goaway_code is not None or c.closed.is_set():
                    break
                sid, _ = await c.open_partial("/machine/register", 0)
                for _ in range(4):
                    if c.goaway_code is not None or c.closed.is_set():
                        break
                    c.h2.outbound_flow_control_window = 1 << 30  # lie to our own h2 about the windows
                    c.h2.streams[sid].outbound_flow_control_window = 1 << 30
                    c.h2.send_data(sid, b"x" * (16 << 10))
                    with contextlib.suppress(ConnectionError):
                        await c._flush()
                    sent += 16 << 10
                    await asyncio.sleep(0.02)
            await asyncio.wait_for(c.closed.wait(), 5)
            assert c.goaway_code == h2.errors.ErrorCodes.FLOW_CONTROL_ERROR
            assert sent > cap
            await c.close()

        with caplog.at_level(logging.INFO):
            run(main())
        assert 0 < net.control.stats["h2_buffered_peak"] <= cap
        assert net.control.stats["h2_protocol_errors"] == 1
    no_tracebacks(caplog)


def test_streams_beyond_the_concurrent_cap_are_refused_and_the_session_lives(tmp_path, caplog):
    """The server advertises SETTINGS_MAX_CONCURRENT_STREAMS; a client opening more (its own h2 told
    to ignore the setting) gets RST_STREAM REFUSED_STREAM for the excess only: the open streams are
    answered and the session keeps serving."""
    with LocalTailnet(tmp_path, relay=False, limits=ConnectionLimits(max_streams=4)) as net:
        async def main() -> None:
            c = await _client(net)
            assert c.h2.remote_settings.max_concurrent_streams == 4
            held = [(await c.open_partial("/machine/set-dns", 0))[0] for _ in range(4)]
            c.h2.remote_settings.update({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
            c.h2.remote_settings.acknowledge()
            extra = [(await c.open_partial("/machine/set-dns", 100))[0] for _ in range(3)]  # DATA in flight
            for sid in extra:
                st = c.stream(sid)
                assert await asyncio.wait_for(st.data.get(), 5) is None
                assert st.reset_code == h2.errors.ErrorCodes.REFUSED_STREAM
            for sid in held:
                assert await finish(c, sid) == (SERVED, None)
            assert (await c.post("/machine/set-dns", {}))[0] == SERVED
            assert c.goaway_code is None and not c.closed.is_set()
            await c.close()

        with caplog.at_level(logging.INFO):
            run(main())
        assert net.control.stats["h2_streams_refused"] == 3
    lines = [r for r in caplog.records if "refused a stream" in r.getMessage()]
    assert len(lines) == 1
    no_tracebacks(caplog)


def test_an_oversized_header_block_closes_only_its_session(tmp_path, caplog):
    """Headers are not flow-controlled, so each block is capped (``MAX_HEADER_LIST_SIZE``): a request
    with a bigger one ends its session with GOAWAY; another client is served."""
    with LocalTailnet(tmp_path, relay=False) as net:
        async def main() -> None:
            c = await _client(net)
            assert c.h2.remote_settings.max_header_list_size == MAX_HEADER_LIST_SIZE
            sid = c.h2.get_next_available_stream_id()
            c._streams[sid] = _Stream()
            c.h2.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":authority", "x"),
                                    (":path", "/machine/set-dns"), ("x-pad", "a" * MAX_HEADER_LIST_SIZE)],
                              end_stream=True)
            await c._flush()
            await asyncio.wait_for(c.closed.wait(), 5)
            assert c.goaway_code is not None and c.goaway_code != h2.errors.ErrorCodes.NO_ERROR
            other = await _client(net)
            assert (await other.post("/machine/set-dns", {}))[0] == SERVED
            await c.close()
            await other.close()

        with caplog.at_level(logging.INFO):
            run(main())
        assert net.control.stats["h2_protocol_errors"] == 1
    no_tracebacks(caplog)


async def _raw(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _closed_at_once(reader: asyncio.StreamReader) -> bool:
    """True if the server closed the connection without a word within 3 s (a connection it keeps
    waits up to 30 s for a request head)."""
    try:
        return await asyncio.wait_for(reader.read(), 3.0) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def _get_key(port: int, source: str = "127.0.0.1") -> bytes:
    r, w = await _raw(port, source)
    w.write(f"GET /key?v={CAPVER} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await asyncio.wait_for(r.read(), 5)
    w.close()
    return data


@pytest.mark.parametrize("which", ["total", "per_ip"])
def test_connections_beyond_the_cap_are_closed_while_a_client_works(tmp_path, caplog, which):
    """With 3 connections allowed (in total, or from one address), a Noise session and two idle raw
    sockets fill the cap: a fourth is closed at once and counted, the session still serves, and once
    a socket leaves a new connection is served. The per-address cap does not touch another address."""
    limits = (ConnectionLimits(max_connections=3) if which == "total"
              else ConnectionLimits(max_connections_per_ip=3))
    with LocalTailnet(tmp_path, relay=False, limits=limits) as net:
        async def main() -> None:
            c = await _client(net)
            await wait_until(lambda: net.control.gate.total == 1)  # the /key fetch has gone
            raws = [await _raw(net.port) for _ in range(2)]
            await wait_until(lambda: net.control.gate.total == 3)
            r, w = await _raw(net.port)
            assert await _closed_at_once(r), "a connection beyond the cap was kept"
            w.close()
            assert net.control.stats["conns_refused"] >= 1
            assert (await c.post("/machine/set-dns", {}))[0] == SERVED
            if which == "per_ip":
                assert (await _get_key(net.port, "127.0.0.2")).startswith(b"HTTP/1.1 200")
            raws[0][1].close()
            await wait_until(lambda: net.control.gate.total == 2)
            assert (await _get_key(net.port)).startswith(b"HTTP/1.1 200")
            assert await fetch_key(net.control_url)
            for _, rw in raws[1:]:
                rw.close()
            await c.close()

        with caplog.at_level(logging.INFO):
            run(main())
    lines = [r for r in caplog.records if "connection from" in r.getMessage()]
    assert 1 <= len(lines) <= 2  # one line a second at most
    no_tracebacks(caplog)


def test_limits_refuse_values_that_cannot_work_and_the_gate_counts_per_address():
    for bad in ({"idle_timeout": 0}, {"max_streams": 0}, {"max_connections": 0},
                {"max_connections_per_ip": 0}, {"max_stream_buffer": 0}, {"max_session_buffer": 1000},
                {"max_session_buffer": 1 << 31}):
        with pytest.raises(ValueError):
            ConnectionLimits(**bad)
    assert ConnectionLimits(idle_timeout=None).idle_timeout is None
    gate = ConnectionGate(ConnectionLimits(max_connections=3, max_connections_per_ip=2))
    assert gate.admit("a") is None and gate.admit("a") is None
    assert "per-address" in str(gate.admit("a"))
    assert gate.admit("b") is None
    assert "total" in str(gate.admit("c"))
    gate.release("a")
    assert gate.admit("c") is None and gate.total == 3 and gate.per_ip == {"a": 1, "b": 1, "c": 1}


def test_cli_idle_timeout_flag_reaches_the_server(tmp_path):
    """``localnet --idle-timeout 1s`` serves with that timeout: an idle session is closed in seconds."""
    p = subprocess.Popen([sys.executable, "-m", "pytsnet", "localnet", "--state", str(tmp_path),
                          "--no-relay", "--idle-timeout", "1s"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip().rsplit(" ", 1)[-1]  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:"), url

        async def main() -> None:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            c = ControlClient(url)
            await c.connect()
            await asyncio.wait_for(c.closed.wait(), 15)
            assert loop.time() - t0 >= 0.99 and c.goaway_code == h2.errors.ErrorCodes.NO_ERROR
            await c.close()

        run(main())
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=15)
