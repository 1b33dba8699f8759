"""Serve's HTTP session (actors/serve/http.py) on a socketpair: keep-alive, HEAD, hostile input, and a
Proxy backend that fails before or during its answer. No tailnet: the session is what a connection
actor runs on its end of the spliced socketpair."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.actors.serve import http as serve_http
from pytsnet.actors.serve.http import Identity, WebSession
from pytsnet.wire.serve import HTTPHandler, ServeConfig, TCPPortHandler, WebServerConfig

HOST = "node.tail1.ts.net"


def _cfg(handlers: dict[str, HTTPHandler]) -> ServeConfig:
    web = {f"{HOST}:80": WebServerConfig(Handlers=handlers)}
    return ServeConfig(TCP={80: TCPPortHandler(HTTP=True)}, Web=web)


def _session(cfg: ServeConfig, request: bytes, counts: list[str] | None = None) -> bytes:
    """Run a session over a socketpair, send ``request`` and half-close; everything the session wrote."""
    ours, theirs = socket.socketpair()
    seen = counts if counts is not None else []
    s = WebSession(theirs, port=80, config=lambda: cfg, tailnet_domain="tail1.ts.net",
                   identity=Identity(src_ip="100.64.0.2"), sni=None, idle_timeout=5.0, backend_timeout=2.0,
                   count=seen.append)
    def run() -> None:
        s.run()
        theirs.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    ours.sendall(request)
    ours.shutdown(socket.SHUT_WR)
    ours.settimeout(10)
    out = b""
    while chunk := ours.recv(65536):
        out += chunk
    t.join(10)
    assert not t.is_alive()
    ours.close()
    return out


def test_keep_alive_head_and_404() -> None:
    cfg = _cfg({"/": HTTPHandler(Text="hi")})
    out = _session(cfg, b"GET / HTTP/1.1\r\nHost: node\r\n\r\nHEAD / HTTP/1.1\r\nHost: node\r\n\r\n"
                        b"GET / HTTP/1.1\r\nHost: other\r\n\r\n")
    answers = out.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"200", b"404"]
    assert answers[0].endswith(b"\r\n\r\nhi") and answers[1].endswith(b"\r\n\r\n")  # HEAD: no body


@pytest.mark.parametrize("request_bytes,status", [
    (b"garbage\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n", b"400"),  # head over 64 KiB
    (b"GET * HTTP/1.1\r\nHost: node\r\n\r\n", b"404"),                       # no mount, no endless walk
    (b"CONNECT node:80 HTTP/1.1\r\nHost: node\r\n\r\n", b"404"),
])
def test_hostile_requests_get_an_answer_and_the_end(request_bytes: bytes, status: bytes) -> None:
    out = _session(_cfg({"/": HTTPHandler(Text="hi")}), request_bytes)
    assert out.startswith(b"HTTP/1.1 " + status), out[:80]


def test_a_body_over_the_bound_is_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_http, "MAX_REQUEST_BODY", 1000)
    out = _session(_cfg({"/": HTTPHandler(Proxy="1")}),
                   b"POST / HTTP/1.1\r\nHost: node\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
    assert out.startswith(b"HTTP/1.1 413")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_end_the_session(data: bytes) -> None:
    _session(_cfg({"/": HTTPHandler(Text="hi")}), data)  # returns (bounded), never raises


@pytest.fixture
def bad_backend() -> Iterator[tuple[int, list[bytes]]]:
    """A backend on loopback that answers the n-th connection with the n-th canned reply, then closes."""
    replies: list[bytes] = []
    lst = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                if replies:
                    conn.sendall(replies.pop(0))
    threading.Thread(target=serve, daemon=True).start()
    yield lst.getsockname()[1], replies
    lst.close()


def test_backend_garbage_is_502_and_a_truncated_answer_drops_the_connection(
        bad_backend: tuple[int, list[bytes]]) -> None:
    port, replies = bad_backend
    cfg = _cfg({"/": HTTPHandler(Proxy=str(port))})
    replies.append(b"not http at all\r\n\r\n")
    counts: list[str] = []
    out = _session(cfg, b"GET / HTTP/1.1\r\nHost: node\r\n\r\nGET / HTTP/1.1\r\nHost: node\r\n\r\n", counts)
    assert out.startswith(b"HTTP/1.1 502") and out.count(b"HTTP/1.1 ") == 1  # then closed: no second answer
    assert "backend_error" in counts
    replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")  # then the backend closes
    out = _session(cfg, b"GET / HTTP/1.1\r\nHost: node\r\n\r\nGET / HTTP/1.1\r\nHost: node\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"only part")  # cut there, nothing after it
