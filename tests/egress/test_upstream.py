"""The upstream proxy hop's client side, against proxies on a socketpair: SOCKS5 (our server codec)
and HTTP CONNECT (h11), success with tunnel bytes, and every refusal as an ``UpstreamRefused`` with
what our own client must hear. URLs: parsed strictly, credentials never in ``str``/``repr``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import h11
import pytest

from pytsnet.egress.upstream import UpstreamProxy, UpstreamRefused, handshake
from pytsnet.wire.socks5 import Rep, Socks5Error, Socks5Server


def test_parse_socks5_and_http_urls_without_leaking_credentials() -> None:
    p = UpstreamProxy.parse("socks5://us%40er:pa%3Ass@192.0.2.1:1080")
    assert (p.scheme, p.host, p.port) == ("socks5", "192.0.2.1", 1080)
    assert (p.username, p.password) == ("us@er", "pa:ss")
    assert "pa:ss" not in repr(p) and "pa:ss" not in str(p) and str(p) == "socks5://192.0.2.1:1080"
    assert UpstreamProxy.parse("socks5h://proxy.test:1").scheme == "socks5"
    h = UpstreamProxy.parse("http://[2001:db8::1]:3128")
    assert (h.scheme, h.host, h.port, h.username) == ("http", "2001:db8::1", 3128, None)
    assert str(h) == "http://[2001:db8::1]:3128"


@pytest.mark.parametrize("url", ["https://192.0.2.1:443", "socks5://192.0.2.1", "socks5://u:secretpw@:80",
                                 "http://192.0.2.1:99999", "http://192.0.2.1:80/path", "not a url"])
def test_bad_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError) as e:
        UpstreamProxy.parse(url)
    assert "secretpw" not in str(e.value)


@contextmanager
def _proxy(serve: Callable[[socket.socket], None]) -> Iterator[socket.socket]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    theirs.settimeout(5)
    t = threading.Thread(target=serve, args=(theirs,), daemon=True)
    t.start()
    yield ours
    t.join(5)
    ours.close()


def _socks(rep: Rep, creds: tuple[str, str] | None = ("u", "p")) -> Callable[[socket.socket], None]:
    def serve(s: socket.socket) -> None:
        srv = Socks5Server(*(creds or (None, None)))
        try:
            while srv.receive(s.recv(4096)) is None:
                s.sendall(srv.data_to_send())
            s.sendall(srv.data_to_send() + srv.reply(rep, "192.0.2.77", 7777) + (b"hi" if rep == 0 else b""))
        except Socks5Error as e:
            s.sendall(srv.data_to_send() + e.reply)
        s.close()
    return serve


def test_socks5_success_returns_the_tunnels_first_bytes() -> None:
    with _proxy(_socks(Rep.SUCCEEDED)) as s:
        assert handshake(UpstreamProxy.parse("socks5://u:p@192.0.2.1:1080"), s, "example.com", 443) == b"hi"


@pytest.mark.parametrize("rep", [Rep.CONNECTION_REFUSED, Rep.NOT_ALLOWED, Rep.HOST_UNREACHABLE])
def test_socks5_refusal_keeps_the_proxys_rep(rep: Rep) -> None:
    with _proxy(_socks(rep)) as s, pytest.raises(UpstreamRefused) as e:
        handshake(UpstreamProxy.parse("socks5://u:p@192.0.2.1:1080"), s, "example.com", 443)
    assert e.value.rep == rep and e.value.status == 502 and "upstream proxy refused" in e.value.reason


def test_socks5_wrong_credentials() -> None:
    with _proxy(_socks(Rep.SUCCEEDED)) as s, pytest.raises(UpstreamRefused) as e:
        handshake(UpstreamProxy.parse("socks5://u:wrong@192.0.2.1:1080"), s, "example.com", 443)
    assert "credentials" in e.value.reason and "wrong" not in e.value.reason


def test_not_a_proxy_at_all() -> None:
    def serve(s: socket.socket) -> None:
        s.recv(100)
        s.sendall(b"SSH-2.0-OpenSSH\r\n")
        s.close()
    with _proxy(serve) as s, pytest.raises(UpstreamRefused):
        handshake(UpstreamProxy.parse("socks5://192.0.2.1:1080"), s, "example.com", 443)
    with _proxy(serve) as s, pytest.raises(UpstreamRefused):
        handshake(UpstreamProxy.parse("http://192.0.2.1:1080"), s, "example.com", 443)


def _http(status: int, seen: list[h11.Request]) -> Callable[[socket.socket], None]:
    def serve(s: socket.socket) -> None:
        h = h11.Connection(h11.SERVER)
        while (ev := h.next_event()) is h11.NEED_DATA:
            h.receive_data(s.recv(4096))
        assert isinstance(ev, h11.Request)
        seen.append(ev)
        headers = [] if status == 200 else [(b"content-length", b"0")]
        s.sendall((h.send(h11.Response(status_code=status, reason=b"Says Proxy", headers=headers)) or b"")
                  + (b"tunnel!" if status == 200 else b""))
        s.close()
    return serve


def test_http_connect_success_with_basic_auth() -> None:
    seen: list[h11.Request] = []
    with _proxy(_http(200, seen)) as s:
        got = handshake(UpstreamProxy.parse("http://u:p@192.0.2.1:3128"), s, "2001:db8::5", 443)
    assert got == b"tunnel!"
    assert seen[0].method == b"CONNECT" and seen[0].target == b"[2001:db8::5]:443"
    assert (b"proxy-authorization", b"Basic dTpw") in seen[0].headers


@pytest.mark.parametrize(("status", "rep", "words"), [(403, Rep.NOT_ALLOWED, "403 Says Proxy"),
                                                      (502, Rep.HOST_UNREACHABLE, "502 Says Proxy"),
                                                      (407, Rep.GENERAL_FAILURE, "credentials")])
def test_http_connect_refusals(status: int, rep: Rep, words: str) -> None:
    with _proxy(_http(status, [])) as s, pytest.raises(UpstreamRefused) as e:
        handshake(UpstreamProxy.parse("http://192.0.2.1:3128"), s, "example.com", 443)
    assert e.value.rep == rep and e.value.status == 502 and words in e.value.reason
