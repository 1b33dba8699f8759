"""wire.http1_upgrade: the one HTTP/1.1 upgrade implementation, driven with bytes only."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.errors import WireError
from pytsnet.wire.http1_upgrade import (
    BodyTooLarge,
    HeadTooLarge,
    Http1Error,
    MalformedHttp,
    RequestParser,
    UpgradeClient,
    UpgradeRefused,
)

OK_101 = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"


def _derp(max_head: int = 8192) -> UpgradeClient:
    return UpgradeClient("GET", "/derp", "relay.example:443", "DERP", max_head=max_head)


# -- client -------------------------------------------------------------------------------------
def test_request_bytes_carry_host_upgrade_and_extra_headers() -> None:
    up = UpgradeClient("POST", "/ts2021", "ctl:8080", "tailscale-control-protocol",
                       [("X-Tailscale-Handshake", "AAAA")])
    assert up.request() == (b"POST /ts2021 HTTP/1.1\r\nHost: ctl:8080\r\n"
                            b"Upgrade: tailscale-control-protocol\r\nConnection: Upgrade\r\n"
                            b"X-Tailscale-Handshake: AAAA\r\n\r\n")


def test_101_with_leftover_bytes() -> None:
    reply = _derp().receive_data(OK_101 + b"\x01\x00\x00\x00\x2cDERP")
    assert reply is not None
    assert reply.status == 101 and reply.headers["upgrade"] == "DERP"
    assert reply.leftover == b"\x01\x00\x00\x00\x2cDERP"


def test_101_without_leftover() -> None:
    reply = _derp().receive_data(OK_101)
    assert reply is not None and reply.leftover == b""


@pytest.mark.parametrize("step", [1, 2, 7, 64])
def test_split_reads_give_the_same_answer(step: int) -> None:
    data = OK_101 + b"early payload"
    up = _derp()
    for end in range(step, len(data) + step, step):
        reply = up.receive_data(data[end - step:end])
        if reply is not None:
            break
        assert end < len(OK_101)  # no answer before the head is complete
    assert reply is not None and end >= len(OK_101)
    assert reply.headers == {"upgrade": "DERP", "connection": "Upgrade"}
    assert reply.leftover == data[len(OK_101):end]  # exactly the bytes read past the head


def test_interim_1xx_is_skipped() -> None:
    reply = _derp().receive_data(b"HTTP/1.1 100 Continue\r\n\r\n" + OK_101 + b"x")
    assert reply is not None and reply.leftover == b"x"


def test_repeated_headers_are_joined() -> None:
    reply = _derp().receive_data(b"HTTP/1.1 101 OK\r\nUpgrade: DERP\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    assert reply is not None and reply.headers["x-a"] == "1, 2"


@pytest.mark.parametrize(("status", "reason"), [(200, "OK"), (403, "Forbidden"), (426, "Upgrade Required"),
                                                (502, "Bad Gateway")])
def test_non_101_is_refused_with_its_status(status: int, reason: str) -> None:
    up = _derp()
    with pytest.raises(UpgradeRefused) as e:
        up.receive_data(f"HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\nX-Why: no\r\n\r\nno".encode())
    assert e.value.status == status and e.value.reason == reason and e.value.headers["x-why"] == "no"
    assert isinstance(e.value, WireError)


def test_oversize_head_is_refused_before_it_ends() -> None:
    up = _derp(max_head=1024)
    assert up.receive_data(b"HTTP/1.1 101 OK\r\n") is None
    with pytest.raises(HeadTooLarge):
        for _ in range(100):  # never a blank line: the cap, not the end, stops it
            up.receive_data(b"X-Pad: " + b"a" * 100 + b"\r\n")


@pytest.mark.parametrize("garbage", [b"\x00\x01\x02\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
                                     b"HTTP/1.1 abc Nope\r\n\r\n", b"HTTP/1.1 101 OK\r\nno colon\r\n\r\n",
                                     b"HTTP/1.1 101 OK\r\n : x\r\n\r\n"])
def test_garbage_is_malformed(garbage: bytes) -> None:
    with pytest.raises(MalformedHttp):
        _derp().receive_data(garbage)


def test_eof_before_the_answer_is_an_error() -> None:
    up = _derp()
    assert up.receive_data(b"HTTP/1.1 101 Swi") is None
    with pytest.raises(MalformedHttp):
        up.receive_data(b"")
    with pytest.raises(MalformedHttp):
        _derp().receive_eof()


def test_bytes_after_the_answer_are_not_http() -> None:
    up = _derp()
    assert up.receive_data(OK_101) is not None
    with pytest.raises(WireError):
        up.receive_data(b"more")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.integers(min_value=1, max_value=64))
def test_fuzzed_answers_end_in_a_result_or_a_typed_error(data: bytes, step: int) -> None:
    up = _derp(max_head=512)
    try:
        for i in range(0, len(data), step):
            if up.receive_data(data[i:i + step]) is not None:
                break
    except Http1Error:
        pass


# -- server -------------------------------------------------------------------------------------
def test_server_parses_an_upgrade_request() -> None:
    up = UpgradeClient("GET", "/derp", "x", "DERP")
    req = RequestParser().receive_data(up.request())
    assert req is not None
    assert (req.method, req.path, req.version) == ("GET", "/derp", "HTTP/1.1")
    assert req.headers["upgrade"] == "DERP" and req.headers["host"] == "x" and req.body == b""


def test_server_keeps_the_bytes_after_an_upgrade_request() -> None:
    p = RequestParser()
    req = p.receive_data(UpgradeClient("GET", "/derp", "x", "DERP").request() + b"\x02frames")
    assert req is not None and req.headers["upgrade"] == "DERP" and p.leftover == b"\x02frames"


def test_server_reads_a_body_in_pieces_and_says_how_much_is_left() -> None:
    p = RequestParser()
    assert p.receive_data(b"POST /a?b=1&b=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n") is None
    assert p.body_needed == 5
    assert p.receive_data(b"he") is None and p.body_needed == 3
    req = p.receive_data(b"llo")
    assert req is not None and req.body == b"hello" and req.query == {"b": ["1", "2"]}


def test_server_accepts_http_1_0_without_host() -> None:
    req = RequestParser().receive_data(b"GET /key HTTP/1.0\r\n\r\n")
    assert req is not None and req.version == "HTTP/1.0"


@pytest.mark.parametrize("raw", [
    b"GET /key HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host (RFC 9112 3.2; Go net/http: 400)
    b"GET /key HTTP/9\r\nHost: x\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /k HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    b"POST /k HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    b"POST /k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"POST /k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    os.urandom(300) + b"\r\n\r\n",
])
def test_server_refuses_malformed_requests(raw: bytes) -> None:
    with pytest.raises(MalformedHttp):
        RequestParser().receive_data(raw)


def test_server_size_limits() -> None:
    with pytest.raises(BodyTooLarge):
        RequestParser(max_body=100).receive_data(
            b"POST /k HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
    p = RequestParser(max_head=1024)
    with pytest.raises(HeadTooLarge):
        p.receive_data(b"GET /k HTTP/1.1\r\nX: " + b"a" * 2000)


def test_server_eof_mid_request() -> None:
    p = RequestParser()
    assert p.receive_data(b"POST /k HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc") is None
    with pytest.raises(MalformedHttp):
        p.receive_data(b"")
