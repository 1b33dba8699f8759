"""The upstream proxy hop of an egress worker (the seed's ``ProxyExitDialer``): every flow's target is
reached through a SOCKS5 or HTTP CONNECT proxy that is itself dialed *through the tailnet*.

The caller dials the proxy with the device (``tcp_connect_blocking``: tailnet or exit node, never a
host socket) and hands the connected stream to ``handshake``, which asks the proxy for the target and
returns the tunnel bytes that came with its answer. The codecs are sans-IO: SOCKS5 is
``wire.socks5.Socks5Client``, HTTP CONNECT is h11 as a client. A refusal by the proxy is an
``UpstreamRefused`` carrying what the worker's own client should hear (the proxy's SOCKS5 REP, or an
HTTP 502 with the proxy's reason). The URL's credentials never reach a log or a repr.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit

import h11

from pytsnet.wire.socks5 import (
    Rep,
    Socks5AuthFailed,
    Socks5Client,
    Socks5Error,
    Socks5NoMethod,
    Socks5Refused,
)

__all__ = ["UpstreamProxy", "UpstreamRefused", "handshake"]

_READ = 4096
MAX_HEAD = 16 * 1024
"""The proxy's answer head is bounded (a hostile proxy cannot grow our memory)."""


class Stream(Protocol):
    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...


class UpstreamRefused(ConnectionError):
    """The upstream proxy did not connect us: what to tell our client (``rep`` / ``status``, ``reason``)."""

    def __init__(self, reason: str, rep: Rep | int = Rep.GENERAL_FAILURE, status: int = 502) -> None:
        super().__init__(reason)
        self.reason, self.rep, self.status = reason, _rep(rep), status


def _rep(code: int) -> Rep:
    """A REP a client understands: the proxy's own, or general failure for a code RFC 1928 lacks."""
    try:
        return Rep(code)
    except ValueError:
        return Rep.GENERAL_FAILURE


@dataclass(frozen=True)
class UpstreamProxy:
    scheme: Literal["socks5", "http"]
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> UpstreamProxy:
        """``socks5://[user:pass@]host:port`` (``socks5h`` too: names always go to the proxy) or
        ``http://[user:pass@]host:port``; ``ValueError`` (without the URL: it may hold a password)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError("upstream proxy URL is not a URL") from None
        scheme = parts.scheme.lower()
        if scheme not in ("socks5", "socks5h", "http"):
            raise ValueError(f"upstream proxy scheme {scheme!r}: want socks5:// or http://")
        if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
            raise ValueError("upstream proxy URL needs host:port and nothing after it")
        user = unquote(parts.username) if parts.username is not None else None
        pw = unquote(parts.password) if parts.password is not None else None
        return cls("http" if scheme == "http" else "socks5", parts.hostname, port, user, pw)

    def __str__(self) -> str:
        """For logs: no credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def handshake(proxy: UpstreamProxy, stream: Stream, host: str, port: int) -> bytes:
    """Ask ``proxy`` (``stream`` is connected to it; its timeout bounds each read) for ``host:port``;
    the tunnel bytes that came with the answer. ``UpstreamRefused`` if it says no or is not a proxy;
    ``TimeoutError``/``OSError`` from the stream as they happen."""
    if proxy.scheme == "socks5":
        return _socks5(proxy, stream, host, port)
    return _http_connect(proxy, stream, host, port)


def _socks5(proxy: UpstreamProxy, stream: Stream, host: str, port: int) -> bytes:
    try:
        c = Socks5Client(host, port, proxy.username, proxy.password)
    except ValueError as e:
        raise UpstreamRefused(f"upstream proxy: {e}", Rep.ADDRESS_TYPE_NOT_SUPPORTED, 400) from None
    try:
        while True:
            out = c.data_to_send()
            if out:
                stream.sendall(out)
            if c.receive(stream.recv(_READ)) is not None:
                return c.trailing()
    except Socks5Refused as e:
        rep = _rep(e.rep)
        raise UpstreamRefused(f"upstream proxy refused: {rep.name.lower().replace('_', ' ')}", rep) from None
    except (Socks5AuthFailed, Socks5NoMethod):
        raise UpstreamRefused("upstream proxy refused our credentials") from None
    except Socks5Error as e:
        raise UpstreamRefused(f"upstream proxy: {e}") from None


def _authority(host: str, port: int) -> bytes:
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode("ascii")


def _http_connect(proxy: UpstreamProxy, stream: Stream, host: str, port: int) -> bytes:
    try:
        target = _authority(host, port)
    except UnicodeEncodeError:
        raise UpstreamRefused("upstream proxy: target is not ASCII", Rep.ADDRESS_TYPE_NOT_SUPPORTED,
                              400) from None
    headers = [(b"host", target)]
    if proxy.username is not None or proxy.password is not None:
        cred = base64.b64encode(f"{proxy.username or ''}:{proxy.password or ''}".encode()).decode()
        headers.append((b"proxy-authorization", f"Basic {cred}".encode()))
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    try:
        stream.sendall((conn.send(h11.Request(method=b"CONNECT", target=target, headers=headers)) or b"")
                       + (conn.send(h11.EndOfMessage()) or b""))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(stream.recv(_READ))
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                break
            raise UpstreamRefused("upstream proxy closed before its answer")
    except h11.ProtocolError as e:
        raise UpstreamRefused(f"upstream proxy: not an HTTP answer ({e})") from None
    status = event.status_code
    if 200 <= status < 300:
        return bytes(conn.trailing_data[0])
    reason = event.reason.decode("latin-1", "replace")[:80]
    if status == 407:
        raise UpstreamRefused("upstream proxy refused our credentials (407)")
    rep = {403: Rep.NOT_ALLOWED, 502: Rep.HOST_UNREACHABLE, 504: Rep.HOST_UNREACHABLE}.get(status,
                                                                                        Rep.GENERAL_FAILURE)
    raise UpstreamRefused(f"upstream proxy: {status} {reason}".rstrip(), rep)
