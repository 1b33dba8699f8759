"""pytsnet/loopback/http_proxy.py without sockets: what a request asks, the credential check, and
fuzzed heads that end in ``BadHttp`` (a 4xx answer) and nothing else."""

from __future__ import annotations

import base64

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.loopback.http_proxy import BadHttp, Connect, Forward, HttpFront, Local, Refuse

AUTH = b"Proxy-Authorization: Basic " + base64.b64encode(b"tsnet:s3cret") + b"\r\n"


def head(raw: bytes) -> tuple[HttpFront, h11.Request]:
    f = HttpFront("s3cret", 16384)
    req = f.receive(raw)
    assert req is not None
    return f, req


def test_connect_and_forward_and_local() -> None:
    f, req = head(b"CONNECT [fd7a:115c::1]:443 HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n")
    assert f.classify(req) == Connect("fd7a:115c::1", 443) and f.authorized(req)
    f, req = head(b"GET http://web:8080/a?b=1 HTTP/1.1\r\nHost: web:8080\r\n"
                  b"Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Keep: 2\r\n"
                  b"Proxy-Connection: keep-alive\r\n" + AUTH + b"\r\n")
    fwd = f.classify(req)
    assert isinstance(fwd, Forward) and (fwd.host, fwd.port) == ("web", 8080)
    assert fwd.request.target == b"/a?b=1"
    assert list(fwd.request.headers) == [(b"host", b"web:8080"), (b"x-keep", b"2"), (b"connection", b"close")]
    f, req = head(b"GET http://web/ HTTP/1.1\r\nHost: web\r\n\r\n")
    assert f.classify(req) == Forward("web", 80, f.classify(req).request)  # type: ignore[union-attr]
    assert not f.authorized(req)
    f, req = head(b"GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\n\r\n")
    assert f.classify(req) == Local(0, "local_api")  # handed to the LocalAPI (19a)
    f, req = head(b"GET https://web/ HTTP/1.1\r\nHost: web\r\n\r\n")
    assert isinstance(f.classify(req), Refuse)


@pytest.mark.parametrize("value", [b"Basic " + base64.b64encode(b"tsnet:wrong"), b"Bearer s3cret",
                                   b"Basic !!!", b"Basic " + base64.b64encode(b"root:s3cret")])
def test_wrong_credentials(value: bytes) -> None:
    f, req = head(b"CONNECT web:80 HTTP/1.1\r\nHost: web\r\nProxy-Authorization: " + value + b"\r\n\r\n")
    assert not f.authorized(req)


@pytest.mark.parametrize("line", [b"CONNECT web", b"CONNECT web:", b"CONNECT web:99999", b"CONNECT [::1",
                                  b"CONNECT :80", b"CONNECT [::1]x", b"GET http://[web/", b"GET http://web:x/",
                                  b"GET http://web:0/"])
def test_bad_targets(line: bytes) -> None:
    f, req = head(line + b" HTTP/1.1\r\nHost: web\r\n\r\n")
    with pytest.raises(BadHttp):
        f.classify(req)


def test_head_bound() -> None:
    f = HttpFront("s3cret", 1024)
    f.receive(b"GET http://web/ HTTP/1.1\r\nHost: web\r\nX: " + b"a" * 500)
    with pytest.raises(BadHttp) as e:
        f.receive(b"a" * 2000)
    assert e.value.status == 431


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([b"GET", b"CONNECT", b"POST"]),
       st.text(alphabet=st.sampled_from("htp:/[]@%?#.webx0189-"), max_size=40),
       st.binary(max_size=200))
def test_fuzz_heads_only_bad_http(method: bytes, target: str, junk: bytes) -> None:
    f = HttpFront("s3cret", 4096)
    raw = method + b" " + target.encode() + b" HTTP/1.1\r\nHost: web\r\n" + junk + b"\r\n\r\n"
    try:
        req = f.receive(raw)
        if req is not None:
            f.classify(req)
            f.authorized(req)
    except BadHttp as e:
        assert 400 <= e.status < 500
