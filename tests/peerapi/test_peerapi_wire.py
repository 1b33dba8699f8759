"""The peerAPI's sans-IO HTTP/1.1 and DoH framing (``wire/peerapi.py``): bounds, keep-alive, Go's rules."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytsnet.wire.errors import ParseError
from pytsnet.wire.peerapi import (
    MAX_HEAD,
    BadPeerApiRequest,
    PeerApiHttp,
    PeerApiRequest,
    dns_query_of,
    route,
)

OURS = ("100.64.0.1", "fd7a:115c:a1e0::1")


def _req(method: str, target: str, headers: dict[str, str] | None = None,
         body: bytes = b"") -> PeerApiRequest:
    return PeerApiRequest(method, target, {"host": "100.64.0.1:40000", **(headers or {})}, body)


def _route(req: PeerApiRequest, allowed: bool = True) -> tuple[int, bytes, list[bytes]]:
    asked: list[bytes] = []

    def resolve(q: bytes) -> bytes:
        asked.append(q)
        return b"answer:" + q

    r = route(req, our_addresses=OURS, dns_allowed=allowed, resolve=resolve)
    return r.status, r.body, asked


def test_doh_get_and_post() -> None:
    q = b"\x12\x34\x01\x00\x00\x01" + b"\xff" * 20
    q64 = base64.urlsafe_b64encode(q).decode().rstrip("=")
    assert _route(_req("GET", f"/dns-query?dns={q64}")) == (200, b"answer:" + q, [q])
    post = _req("POST", "/dns-query", {"content-type": "application/dns-message"}, q)
    assert _route(post) == (200, b"answer:" + q, [q])
    r = route(post, our_addresses=OURS, dns_allowed=True, resolve=lambda q: q)
    assert r.content_type == "application/dns-message"


@pytest.mark.parametrize(("req", "status"), [
    (_req("GET", "/dns-query"), 400),  # no dns=
    (_req("GET", "/dns-query?dns=***"), 400),  # not base64url
    (_req("GET", "/dns-query?dns=AAAA%3D"), 400),  # padded: RFC 8484 says no padding
    (_req("PUT", "/dns-query"), 400),
    (_req("POST", "/dns-query", {"content-type": "text/plain"}, b"x"), 400),
    (_req("GET", "/dns-query?dns=AAAA", {"referer": "http://x/"}), 403),
    (_req("GET", "/dns-query?dns=AAAA", {"origin": "http://x"}), 403),
    (PeerApiRequest("GET", "/dns-query?dns=AAAA", {"host": "100.64.0.9:1"}), 403),  # not our address
    (PeerApiRequest("GET", "/dns-query?dns=AAAA", {}), 403),  # no Host
    (_req("GET", "/v0/goroutines"), 404),
    (_req("GET", "/"), 404),
])
def test_bad_requests_never_reach_the_resolver(req: PeerApiRequest, status: int) -> None:
    got, _, asked = _route(req)
    assert (got, asked) == (status, [])


def test_host_forms_go_accepts() -> None:
    for host in ("peer", "100.64.0.1:8080", "[fd7a:115c:a1e0::1]:8080"):
        assert _route(PeerApiRequest("GET", "/nope", {"host": host}))[0] == 404
    for host in ("100.64.0.1", "peer:80", "[fd7a:115c:a1e0::2]:1", "fd7a:115c:a1e0::1:80", "[100.64.0.1]:80",
                 "100.64.0.1:", "100.64.0.1:x"):
        assert _route(PeerApiRequest("GET", "/nope", {"host": host}))[0] == 403


def test_dns_denied_for_a_caller_the_node_does_not_serve() -> None:
    status, body, asked = _route(_req("GET", "/dns-query?dns=AAAA"), allowed=False)
    assert (status, asked) == (403, []) and b"DNS access denied" in body


def test_resolver_failure_is_500() -> None:
    r = route(_req("GET", "/dns-query?dns=AAAA"), our_addresses=OURS, dns_allowed=True,
              resolve=lambda q: None)
    assert r.status == 500


def test_keep_alive_and_pipelining() -> None:
    h = PeerApiHttp()
    two = (b"GET /a HTTP/1.1\r\nHost: peer\r\n\r\n"
           b"POST /b HTTP/1.1\r\nHost: peer\r\nContent-Length: 3\r\n\r\nxyz")
    first = h.receive(two)
    assert first is not None and first.path == "/a" and h.next() is None  # waits for our answer
    out = h.respond(route(first, our_addresses=OURS, dns_allowed=True, resolve=lambda q: q))
    assert out.startswith(b"HTTP/1.1 404 ")
    second = h.next()
    assert second is not None and (second.method, second.path, second.body) == ("POST", "/b", b"xyz")
    h.respond(route(second, our_addresses=OURS, dns_allowed=True, resolve=lambda q: q))
    assert h.receive(b"") is None and h.closed


def test_head_and_body_bounds() -> None:
    h = PeerApiHttp()
    with pytest.raises(BadPeerApiRequest):
        h.receive(b"GET / HTTP/1.1\r\nHost: peer\r\nX: " + b"a" * (MAX_HEAD + 1))
    assert h.error_bytes(400, "bad request").startswith(b"HTTP/1.1 400 ")
    with pytest.raises(BadPeerApiRequest, match="over"):
        PeerApiHttp().receive(b"POST / HTTP/1.1\r\nHost: peer\r\nContent-Length: 999999\r\n\r\n")
    chunked = PeerApiHttp()
    with pytest.raises(BadPeerApiRequest, match="over"):
        chunked.receive(b"POST / HTTP/1.1\r\nHost: peer\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):
            chunked.receive(b"1000\r\n" + b"a" * 0x1000 + b"\r\n")
    trunc = PeerApiHttp()
    trunc.receive(b"GET / HTTP/1.1\r\nHost: pe")
    with pytest.raises(BadPeerApiRequest):
        trunc.receive(b"")


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_only_raise_the_typed_error(data: bytes) -> None:
    h = PeerApiHttp()
    try:
        req = h.receive(data)
        while req is not None:
            h.respond(route(req, our_addresses=OURS, dns_allowed=True, resolve=lambda q: q))
            req = h.next()
        h.receive(b"")
    except ParseError:
        pass


@given(st.text(max_size=200))
def test_any_query_string_is_a_query_or_a_public_error(target: str) -> None:
    assert isinstance(dns_query_of(_req("GET", "/dns-query?" + target)), bytes | str)
