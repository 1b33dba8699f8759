"""Fuzzed DERP handshake JSON: a client's ClientInfo and a server's ServerInfo.

Parsers (``ClientInfo.from_json``/``ServerInfo.from_json``), the box openers and the sans-IO
connections raise only wire errors; an accepted info is well-typed and round-trips. Against a running
``DerpServer`` on loopback a bad ClientInfo closes that stream without ServerInfo, counts one
``stream_errors`` and logs one line (no traceback), and the server keeps admitting good clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pytsnet.actors.magicsock.node import spawn_magicsock
from pytsnet.actors.runtime import ActorSystem
from pytsnet.localnet.derp_server import DerpServer
from pytsnet.messages.magicsock import (
    DerpRegion,
    DerpStatus,
    DerpStatusRequest,
    MagicsockKeys,
    MagicsockSpawn,
)
from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.client_info import (
    MAX_CLIENT_INFO_LEN,
    ClientInfo,
    ServerInfo,
    open_client_info,
    open_server_info,
    seal,
)
from pytsnet.wire.derp.errors import DerpParseError
from pytsnet.wire.derp.handshake import (
    ClientAuthenticated,
    ClientConnection,
    ServerConnection,
    ServerInfoReceived,
    State,
)
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import DiscoPrivate, NodePrivate

NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SERVER, CLIENT = NodePrivate.generate(), NodePrivate.generate()

# -- strategies --------------------------------------------------------------------------------
_huge_ints = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**100, -1, 0])
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), _huge_ints,
                  st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=16),
                  st.sampled_from(["ab" * 32, "zz" * 32, "ab" * 31 + " a", "AB" * 32, "00" * 32]))
_json = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=10)


def _shaped(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the real field names in any letter case, holding a plausible value or anything."""
    spelled = {k: st.sampled_from([k, k.lower(), k.upper()]) for k in fields}
    return st.lists(st.sampled_from(sorted(fields)), max_size=6).flatmap(
        lambda names: st.tuples(*(st.tuples(spelled[n], st.one_of(fields[n], _json)) for n in names))
    ).map(dict)


_client_fields = {"version": st.integers(0, 3), "CanAckPings": st.booleans(), "IsProber": st.booleans(),
                  "AppName": st.text(max_size=20), "meshKey": st.sampled_from(["ab" * 32, "00" * 32])}
_server_fields = {"version": st.integers(0, 3), "TokenBucketBytesPerSecond": st.integers(0, 2**40),
                  "TokenBucketBytesBurst": st.integers(0, 2**40)}


def _docs(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """Info JSON as bytes: shaped objects (NaN/Infinity written as Go never would), any JSON, raw
    bytes, deep nesting, numbers beyond any float or int limit, duplicate keys, a trailing comma."""
    return st.one_of(
        _shaped(fields).map(lambda d: json.dumps(d).encode()),
        _json.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.integers(1, 4000).map(lambda n: b'{"version": ' + b"[" * n + b"]" * n + b"}"),
        st.sampled_from([b'{"version": 1e999}', b'{"version": -1e999}', b'{"version": ' + b"9" * 5000 + b"}",
                         b'{"version": 2, "VERSION": "x"}', b'{"version": 2,}', b"\xef\xbb\xbf{}",
                         b'{"AppName": "\\ud800"}', b'\x00{\x00}', b'{"meshKey": null, "version": null}']),
    )


def verdict(parse: Callable[[], Any]) -> Any | None:
    """Run a parse that may only succeed or raise a wire error; None for a refusal."""
    try:
        return parse()
    except WireError as e:
        assert "\n" not in str(e) and len(str(e)) < 200, str(e)[:300]
        return None


def _check_client_info(info: ClientInfo) -> None:
    v = info.version
    assert isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63
    assert isinstance(info.can_ack_pings, bool) and isinstance(info.is_prober, bool)
    assert isinstance(info.app_name, str) and (info.mesh_key is None or len(info.mesh_key) == 32)
    again = ClientInfo.from_json(info.to_json())
    assert again == info or (info.mesh_key == bytes(32) and again == ClientInfo(
        info.version, info.can_ack_pings, info.is_prober, info.app_name, None))  # omitempty drops a zero key


def _check_server_info(info: ServerInfo) -> None:
    for v in (info.version, info.token_bucket_bytes_per_second, info.token_bucket_bytes_burst):
        assert isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63
    assert ServerInfo.from_json(info.to_json()) == info


# -- parse level -------------------------------------------------------------------------------
def test_fuzz_client_info_json() -> None:
    outcomes: set[bool] = set()

    @FUZZ
    @given(doc=_docs(_client_fields))
    def probe(doc: bytes) -> None:
        info = verdict(lambda: ClientInfo.from_json(doc))
        outcomes.add(info is not None)
        if info is not None:
            _check_client_info(info)
        # the same JSON sealed into a ClientInfo frame: the server side's whole open path
        frame = f.ClientInfoFrame(CLIENT.public(), seal(CLIENT, SERVER.public(), doc))
        opened = verdict(lambda: open_client_info(SERVER, frame))
        assert opened == info

    probe()
    assert outcomes == {True, False}


def test_fuzz_server_info_json() -> None:
    outcomes: set[bool] = set()

    @FUZZ
    @given(doc=_docs(_server_fields))
    def probe(doc: bytes) -> None:
        info = verdict(lambda: ServerInfo.from_json(doc))
        outcomes.add(info is not None)
        if info is not None:
            _check_server_info(info)
        frame = f.ServerInfoFrame(seal(SERVER, CLIENT.public(), doc))
        assert verdict(lambda: open_server_info(CLIENT, SERVER.public(), frame)) == info

    probe()
    assert outcomes == {True, False}


@FUZZ
@given(sealed=st.binary(max_size=200), key=st.binary(min_size=32, max_size=32))
def test_fuzz_raw_sealed_bytes_are_crypto_or_parse_errors(sealed: bytes, key: bytes) -> None:
    """Boxes that are not boxes, from any claimed key (including low-order points)."""
    payload = key + sealed
    assert verdict(lambda: open_client_info(SERVER, f.ClientInfoFrame.parse(payload))) is None
    assert verdict(lambda: open_server_info(CLIENT, SERVER.public(), f.ServerInfoFrame.parse(sealed))) is None


def test_oversize_client_info_is_refused_before_opening() -> None:
    frame = f.ClientInfoFrame(CLIENT.public(), seal(CLIENT, SERVER.public(), b" " * MAX_CLIENT_INFO_LEN))
    with pytest.raises(DerpParseError):
        open_client_info(SERVER, frame)


# -- sans-IO connections ------------------------------------------------------------------------
@FUZZ
@given(doc=_docs(_client_fields), chunk=st.integers(1, 64))
def test_fuzz_server_connection_on_client_info(doc: bytes, chunk: int) -> None:
    """Fed in arbitrary pieces: ClientAuthenticated for a good info, else a wire error and CLOSED."""
    conn = ServerConnection(SERVER, 0.0, jitter=lambda: 0.0)
    wire = f.encode(f.ClientInfoFrame(CLIENT.public(), seal(CLIENT, SERVER.public(), doc)))
    want = verdict(lambda: ClientInfo.from_json(doc))
    events: list[Any] = []
    try:
        for i in range(0, len(wire), chunk):
            events += conn.receive_data(wire[i:i + chunk], 0.0)
    except WireError:
        assert want is None and conn.state is State.CLOSED
        return
    assert want is not None and len(events) == 1 and isinstance(events[0], ClientAuthenticated)
    assert events[0].info == want and conn.state is State.AWAIT_ACCEPT


@FUZZ
@given(doc=_docs(_server_fields))
def test_fuzz_client_connection_on_server_info(doc: bytes) -> None:
    """What our DERP client does with a server's ServerInfo: accept it, or fail closed."""
    conn = ClientConnection(CLIENT, 0.0, server_key=SERVER.public())
    want = verdict(lambda: ServerInfo.from_json(doc))
    try:
        events = conn.receive_data(f.encode(f.ServerInfoFrame(seal(SERVER, CLIENT.public(), doc))), 0.0)
    except WireError:
        assert want is None and conn.state is State.CLOSED
        return
    assert want is not None and events == [ServerInfoReceived(want)] and conn.state is State.CONNECTED


# -- end to end: a running DerpServer on loopback ----------------------------------------------
@pytest.fixture
def derp() -> Iterator[tuple[DerpServer, list[dict[str, Any]]]]:
    """A DerpServer on its own loop thread; loop-level errors (escaped exceptions) are collected."""
    loop = asyncio.new_event_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    server = DerpServer(SERVER, handshake_timeout=1.0)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
    try:
        yield server, errors
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)
        loop.close()


def handshake(port: int, client: NodePrivate, sealed_payload: bytes,
              frame_type: int = f.FrameType.CLIENT_INFO, announce: int | None = None) -> bool:
    """Upgrade, send one frame (a ClientInfo unless told otherwise, its header announcing ``announce``
    bytes if given); True if ServerInfo came back, False if the server closed the stream."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
        n = len(sealed_payload) if announce is None else announce
        s.sendall(f.encode_header(frame_type, n) + sealed_payload)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, buf
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 ")
        while True:  # frames: ServerKey, then ServerInfo (or the end of the stream)
            while len(buf) >= 5 and len(buf) >= 5 + struct.unpack_from(">I", buf, 1)[0]:
                t, n = buf[0], struct.unpack_from(">I", buf, 1)[0]
                if t == f.FrameType.SERVER_INFO:
                    open_server_info(client, SERVER.public(), f.ServerInfoFrame.parse(buf[5:5 + n]))
                    return True
                buf = buf[5 + n:]
            chunk = s.recv(65536)
            if not chunk:
                return False
            buf += chunk


def test_fuzz_running_derp_server_with_client_infos(derp: tuple[DerpServer, list[dict[str, Any]]],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    server, errors = derp
    counts = {"accepted": 0, "refused": 0}

    @settings(max_examples=60, deadline=None, derandomize=True,
              phases=NO_SHRINK)  # each failing case waits out a timeout: report the first
    @given(doc=_docs(_client_fields), mode=st.sampled_from(["sealed", "sealed", "unboxed", "other frame"]),
           ftype=st.integers(0, 255).filter(lambda t: t != f.FrameType.CLIENT_INFO))
    def probe(doc: bytes, mode: str, ftype: int) -> None:
        client = NodePrivate.generate()
        frame_type: int = f.FrameType.CLIENT_INFO
        if mode == "sealed":
            payload = client.public().raw + seal(client, SERVER.public(), doc)
            want = verdict(lambda: ClientInfo.from_json(doc))
        elif mode == "unboxed":  # not a box at all: the bytes after the key go straight to the opener
            payload, want = client.public().raw + bytes(24) + doc, None
        else:  # any other frame type first (raw bytes as its payload)
            payload, want, frame_type = doc, None, ftype
        before = server.stats.stream_errors
        got = handshake(server.port, client, payload, frame_type)
        assert got == (want is not None), (doc[:80], got)
        counts["accepted" if got else "refused"] += 1
        if not got:
            assert _wait(lambda: server.stats.stream_errors == before + 1), server.stats

    with caplog.at_level(logging.DEBUG, logger="pytsnet.localnet.derp_server"):
        probe()
    assert counts["accepted"] and counts["refused"]
    closing = [r for r in caplog.records if r.getMessage().startswith("derp: closing")]
    assert len(closing) == counts["refused"]  # one line per refused stream
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info], "a bad ClientInfo logged a traceback"
    assert not errors, errors[:3]
    # the server still admits a well-behaved client
    good = NodePrivate.generate()
    hello = good.public().raw + seal(good, SERVER.public(), ClientInfo().to_json())
    assert handshake(server.port, good, hello)


def test_a_stalled_client_info_times_out_with_one_line(derp: tuple[DerpServer, list[dict[str, Any]]],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A ClientInfo header announcing more than is ever sent: closed at the handshake deadline."""
    server, errors = derp
    client = NodePrivate.generate()
    with caplog.at_level(logging.DEBUG, logger="pytsnet.localnet.derp_server"):
        t0 = time.monotonic()
        assert not handshake(server.port, client, client.public().raw + bytes(10), announce=200)
        assert time.monotonic() - t0 < 4
        assert _wait(lambda: server.stats.stream_errors == 1), server.stats
    lines = [r for r in caplog.records if "ClientInfo" in r.getMessage()]
    assert len(lines) == 1 and not lines[0].exc_info and not errors


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


# -- end to end: our DERP client actor against a rogue server on loopback ----------------------
BAD_SERVER_INFOS = (b'{"version": NaN}', b'{"version": ' + b"[" * 3000 + b"]" * 3000 + b"}",
                    b'{"TokenBucketBytesBurst": true}', b"\xff not json")


class RogueDerp:
    """Upgrades, sends ServerKey, then seals ``infos[i]`` (else a good ServerInfo) as connection i's
    ServerInfo; records how each connection ended."""

    def __init__(self, infos: tuple[bytes, ...]) -> None:
        self.infos = infos
        self.ends: list[str] = []
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self._open.append(s)
            threading.Thread(target=self._one, args=(s, len(self._open) - 1), daemon=True).start()

    def _one(self, s: socket.socket, i: int) -> None:
        with contextlib.suppress(OSError):
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(4096)
            s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
                      + f.encode(f.ServerKey(SERVER.public())))
            buf = buf.split(b"\r\n\r\n", 1)[1]
            while len(buf) < 5 + 32:
                buf += s.recv(4096)
            assert buf[0] == f.FrameType.CLIENT_INFO
            client = f.ClientInfoFrame.parse(buf[5:5 + struct.unpack_from(">I", buf, 1)[0]]).client_key
            doc = self.infos[i] if i < len(self.infos) else ServerInfo().to_json()
            s.sendall(f.encode(f.ServerInfoFrame(seal(SERVER, client, doc))))
            s.settimeout(10)
            while s.recv(65536):  # until the client closes (or the test ends)
                pass
            self.ends.append("client closed")

    def close(self) -> None:
        self.lsock.close()
        for s in self._open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_derp_client_actor_fails_closed_on_bad_server_info_and_reconnects(
        caplog: pytest.LogCaptureFixture) -> None:
    rogue = RogueDerp(BAD_SERVER_INFOS)
    system = ActorSystem("fuzzclient")
    cfg = MagicsockSpawn(node_public=CLIENT.public().to_text(), wg_sink="w",
                         regions=(DerpRegion(region_id=900, host="127.0.0.1", port=rogue.port, stun_port=9),),
                         home_region=900, bind_host="127.0.0.1", advertise_endpoints=False)
    keys = MagicsockKeys(node_private=CLIENT.to_text(), disco_private=DiscoPrivate.generate().to_text())

    def status() -> DerpStatus:
        ref = system.lookup(cfg.derp_name(900))
        assert ref is not None
        return ref.ask(DerpStatusRequest(), timeout=5)

    try:
        with caplog.at_level(logging.DEBUG):
            spawn_magicsock(system, cfg, keys)
            # each bad ServerInfo: the client closes that stream and dials again (with backoff)
            assert _wait(lambda: len(rogue.ends) == len(BAD_SERVER_INFOS), timeout=20), rogue.ends
            assert _wait(lambda: status().connected and status().connects == len(BAD_SERVER_INFOS) + 1,
                         timeout=20), status()
    finally:
        system.shutdown(10)
        rogue.close()
    failed = [r for r in caplog.records if "protocol error, closing" in r.getMessage()]
    assert len(failed) == len(BAD_SERVER_INFOS), [r.getMessage() for r in failed]
    assert not [r for r in caplog.records if r.exc_info], "a bad ServerInfo logged a traceback"
