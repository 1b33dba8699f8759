"""Control-server input limits: strict JSON, Hostinfo schema and size, 4xx (not tracebacks) for bad input."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from urllib.parse import urlsplit

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.control_server import MAX_HOSTINFO_BYTES
from pytsnet.localnet.testclient import ControlClient, _Stream

ROUTES = ("/machine/register", "/machine/map", "/machine/set-dns", "/machine/nowhere")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def post_raw(c: ControlClient, path: str, payload: bytes) -> tuple[int, bytes]:
    """POST arbitrary bytes, in frame-sized pieces (the test client sends one small JSON frame)."""
    sid = c.h2.get_next_available_stream_id()
    st = c._streams[sid] = _Stream()
    c.h2.send_headers(sid, [(":method", "POST"), (":scheme", "https"),
                            (":authority", urlsplit(c.url).netloc), (":path", path)])
    step = c.h2.max_outbound_frame_size
    for i in range(0, len(payload), step):
        c.h2.send_data(sid, payload[i:i + step])
    c.h2.end_stream(sid)
    await c._flush()
    out = bytearray()
    while (chunk := await st.data.get()) is not None:
        out += chunk
    return st.status, bytes(out)


async def post(c: ControlClient, path: str, body: dict) -> tuple[int, bytes]:
    """``json.dumps`` writes NaN/Infinity for non-finite floats, as a hostile client would."""
    return await post_raw(c, path, json.dumps(body).encode())


async def peer_hostinfos(c: ControlClient) -> dict[str, dict]:
    """A full (non-streaming) map for ``c``: each peer's node key → its Hostinfo."""
    status, frame = await post(c, "/machine/map", c.map_request(Stream=False))
    assert status == 200
    (n,) = struct.unpack_from("<I", frame)
    msg = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(frame[4:4 + n]))
    return {p["Key"]: p.get("Hostinfo", {}) for p in msg.get("Peers", [])}


def test_nan_and_oversize_hostinfo_refused_and_never_reach_a_peer(net, caplog):
    key = net.create_authkey(reusable=True)

    async def main():
        a, b = await ControlClient.connected(net.control_url), await ControlClient.connected(net.control_url)
        await a.register(key, hostname="alice")
        await b.register(key, hostname="bob")
        bk = b.node.public().to_text()
        nan_hi = {"Hostname": "bob", "NetInfo": {"DERPLatency": {"1-v4": float("nan")}}}
        big_hi = {"Hostname": "bob", "OSVersion": "x" * (MAX_HOSTINFO_BYTES + 1)}
        inf_hi = {"Hostname": "bob", "NetInfo": {"DERPLatency": {"1-v4": float("inf")}}}
        for hi in (nan_hi, big_hi, inf_hi):
            st, body = await post(b, "/machine/map", b.map_request(Stream=False, Hostinfo=hi))
            assert 400 <= st < 500, (st, body)
            st, body = await post(b, "/machine/register", {"NodeKey": bk, "Hostinfo": hi})
            assert 400 <= st < 500, (st, body)
        bad_type = {"Hostname": "bob", "OSVersion": ["not", "a", "string"]}
        st, _ = await post(b, "/machine/map", b.map_request(Stream=False, Hostinfo=bad_type))
        assert st == 400
        # unknown fields are dropped before storage and relay; known ones kept
        ok = {"Hostname": "bob2", "OS": "linux", "Smuggled": "y" * 100}
        st, _ = await post(b, "/machine/map", b.map_request(Stream=False, Hostinfo=ok))
        assert st == 200
        seen = (await peer_hostinfos(a))[bk]
        assert seen.get("Hostname") == "bob2" and seen.get("OS") == "linux"
        text = json.dumps(seen)
        assert "Smuggled" not in text and "NaN" not in text and "Infinity" not in text
        assert "x" * 1000 not in text
        await a.close()
        await b.close()

    with caplog.at_level(logging.INFO):
        run(main())
    stored = {n.hostname: n for n in net.nodes()}
    for n in stored.values():
        raw = json.dumps(n.hostinfo)
        assert "NaN" not in raw and "Infinity" not in raw and "Smuggled" not in raw and len(raw) < 1000
    assert net.control.stats["bad_requests"] == 7
    assert not [r for r in caplog.records if r.exc_info], "a refused request logged a traceback"


GARBAGE = (b"", b"{", b"[]", b"null", b"1e999999", b"NaN", b'{"NodeKey": 5}', b'{"NodeKey": "nodekey:zz"}',
           b'{"Version": "abc", "NodeKey": "x"}', b'{"Hostinfo": 7}', b'{"Hostinfo": {"NetInfo": 1}}',
           b"\xff\xfe\x00", b'{"a": ' * 5000 + b"1" + b"}" * 5000, b'{"Auth": {"AuthKey": Infinity}}')


def test_garbage_bodies_get_4xx_and_no_traceback(net, caplog):
    async def main():
        c = await ControlClient.connected(net.control_url)
        for path in ROUTES:
            for body in GARBAGE:
                st, resp = await post_raw(c, path, body)
                assert st is not None and st < 500, (path, body[:40], st, resp)
        # a registered node's map with a bad Version is a 400 too, and the session still serves
        key = net.create_authkey()
        await c.register(key)
        st, _ = await post(c, "/machine/map", c.map_request(Stream=False, Version="x"))
        assert st == 400
        st, _ = await post(c, "/machine/map", c.map_request(Stream=False))
        assert st == 200
        await c.close()

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert not [r for r in caplog.records if r.exc_info], "bad input logged a traceback"


def test_untyped_exception_in_handler_is_500_with_one_log_line(net, caplog, monkeypatch):
    async def boom(req, machine):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(net.control, "register", boom)

    async def main():
        c = await ControlClient.connected(net.control_url)
        st, body = await post(c, "/machine/register", {"NodeKey": c.node.public().to_text()})
        assert st == 500 and b"simulated" not in body
        st, _ = await post(c, "/machine/set-dns", {})  # the session keeps serving: an empty SetDNS is
        assert st == 403  # answered, refused as set-dns refuses it (HTTPS is off), not a 500
        await c.close()

    with caplog.at_level(logging.DEBUG):
        run(main())
    lines = [r for r in caplog.records if "simulated bug" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None and "\n" not in lines[0].getMessage()


def _raw_http(net: LocalTailnet, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", net.port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


PLAIN_GARBAGE = (b"\x00\x01\x02\r\n\r\n", b"GET\r\n\r\n", b"GET /key HTTP/9\r\n\r\n",
                 b"GET /auth/%ff%00 HTTP/1.1\r\n\r\n", b"POST /ts2021 HTTP/1.1\r\nUpgrade: x\r\n\r\n",
                 b"GET /key HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n",
                 b"POST /ts2021 HTTP/1.1\r\nUpgrade: tailscale-control-protocol\r\n"
                 b"X-Tailscale-Handshake: %%%%\r\n\r\n", b"GET /derp HTTP/1.1\r\n\r\n")


def test_plain_http_garbage_gets_4xx_and_no_traceback(net, caplog):
    with caplog.at_level(logging.DEBUG):
        for req in PLAIN_GARBAGE:
            out = _raw_http(net, req)
            status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.1 ") else None
            assert status is None or 400 <= status < 500, (req[:40], out[:80])
        assert _raw_http(net, b"GET /generate_204 HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 204")
        # HTTP/1.1 without Host is refused, as Go's net/http does (RFC 9112 §3.2)
        assert _raw_http(net, b"GET /generate_204 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert not [r for r in caplog.records if r.exc_info], "bad input logged a traceback"


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                       st.text(max_size=20))
_json = st.recursive(_json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
_FIELDS = ("NodeKey", "OldNodeKey", "DiscoKey", "Hostinfo", "Endpoints", "Version", "Stream", "OmitPeers",
           "Expiry", "Auth", "Followup", "Ephemeral", "Compress", "KeepAlive")


def test_fuzz_every_noise_handler_only_4xx_and_no_traceback(net, caplog):
    """Random bodies (raw bytes, arbitrary JSON with NaN/Infinity, request-shaped objects whose fields
    hold anything, around a registered node's real key) to every route: a status below 500 each time."""
    loop = asyncio.new_event_loop()
    c = loop.run_until_complete(ControlClient.connected(net.control_url))
    loop.run_until_complete(c.register(net.create_authkey()))
    nk = c.node.public().to_text()
    # With the real key a map request never streams (a long poll has no end to wait for).
    shaped = st.fixed_dictionaries({}, optional={k: _json for k in _FIELDS}).flatmap(
        lambda d: st.sampled_from([d, {**d, "NodeKey": nk, "Stream": False}]))
    bodies = st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode()),
                       shaped.map(lambda d: json.dumps(d).encode()))
    statuses: list[int] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(ROUTES), body=bodies)
    def probe(path: str, body: bytes) -> None:
        status, resp = loop.run_until_complete(asyncio.wait_for(post_raw(c, path, body), 10))
        assert status is not None and status < 500, (path, body, status, resp)
        statuses.append(status)

    try:
        with caplog.at_level(logging.DEBUG):
            probe()
    finally:
        loop.run_until_complete(c.close())
        loop.close()
    assert not [r for r in caplog.records if r.exc_info], "a fuzzed request logged a traceback"
    assert 400 in statuses and 200 in statuses  # both refusals and well-formed bodies were exercised
