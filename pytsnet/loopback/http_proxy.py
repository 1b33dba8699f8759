"""The HTTP side of the loopback listener: CONNECT tunnels and absolute-URI forwarding, on h11.

Go's tsnet leaves its HTTP proxy a TODO (the listener's HTTP side is the LocalAPI only); this is the
proxy every HTTP client speaks: ``CONNECT host:port`` (then a tunnel: what ``curl -p`` and any client
does for ``https://``) and ``GET http://host:port/path`` (what ``curl --proxy``, httpx, requests and
git do for ``http://`` URLs). Both need ``Proxy-Authorization: Basic`` with user ``tsnet`` and the
proxy credential (constant-time compare); without it ``407`` and ``Proxy-Authenticate``.

A forwarded request is one exchange per proxy connection: hop-by-hop headers go (RFC 9110 §7.6.1),
``Host`` becomes the URI's authority, ``Connection: close`` goes both ways, and both messages pass
through h11 on each side (its framing, bounded heads). An origin-form request (``GET /x``) is for the
listener itself: ``/localapi/`` goes to the LocalAPI (``Local(0, "local_api")``: the connection
hands the request to ``pytsnet.localapi.http``, which checks Go's header and credential); anything
else ``404``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import h11

__all__ = ["PROXY_USER", "BadHttp", "Connect", "Forward", "HttpFront", "Local", "Refuse", "forward"]

PROXY_USER = "tsnet"
"""Go's SOCKS5 user name; the HTTP proxy takes the same."""

_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authorization", b"proxy-authenticate",
                  b"proxy-connection", b"te", b"trailer", b"upgrade", b"expect"})
_REASONS = {400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found", 407: b"Proxy Authentication Required",
            431: b"Request Header Fields Too Large", 501: b"Not Implemented", 502: b"Bad Gateway",
            503: b"Service Unavailable", 504: b"Gateway Timeout"}


class BadHttp(ValueError):
    """Not a request we can serve: answer ``status`` and close."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Connect:
    host: str
    port: int


@dataclass(frozen=True)
class Forward:
    host: str
    port: int
    request: h11.Request
    """Rewritten for the origin: origin-form target, its ``Host``, no hop-by-hop headers."""


@dataclass(frozen=True)
class Local:
    """For the listener itself (the LocalAPI's seam)."""

    status: int
    kind: str


@dataclass(frozen=True)
class Refuse:
    status: int
    reason: str


def _split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    if authority.startswith("["):
        host, sep, rest = authority[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadHttp(f"bad authority {authority[:80]!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = authority.rpartition(":")
        if not sep:
            host, port_text = authority, ""
    if not port_text:
        if default_port is None:
            raise BadHttp(f"no port in {authority[:80]!r}")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) <= 0xFFFF or not host:
        raise BadHttp(f"bad authority {authority[:80]!r}")
    return host, int(port_text)


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Headers the ``Connection`` header names: hop-by-hop for this message (RFC 9110 §7.6.1)."""
    return {token.strip().lower().encode() for name, value in headers if name == b"connection"
            for token in value.decode("latin-1").split(",")}


class HttpFront:
    """The client's side: h11 as server, a bounded head; ``classify`` says what the request asks."""

    def __init__(self, password: str, max_head: int) -> None:
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._want = f"{PROXY_USER}:{password}".encode()

    def receive(self, data: bytes) -> h11.Request | None:
        """Feed client bytes (b"" at its EOF); the request head once complete. ``BadHttp`` (400, or
        431 for a head past the bound) for anything h11 refuses."""
        self.conn.receive_data(data)
        try:
            event = self.conn.next_event()
        except h11.RemoteProtocolError as e:
            raise BadHttp(str(e), e.error_status_hint) from None
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.Request):
            return event
        raise BadHttp(f"no request: {type(event).__name__}")

    def authorized(self, req: h11.Request) -> bool:
        for name, value in req.headers:
            if name != b"proxy-authorization":
                continue
            scheme, _, b64 = value.partition(b" ")
            if scheme.lower() != b"basic":
                return False
            try:
                got = base64.b64decode(b64.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(got, self._want)
        return False

    def classify(self, req: h11.Request) -> Connect | Forward | Local | Refuse:
        target = req.target.decode("ascii", "replace")
        if req.method == b"CONNECT":
            return Connect(*_split_authority(target, None))
        if target.startswith("/"):
            if target.startswith("/localapi/"):
                return Local(0, "local_api")  # served by the LocalAPI (its own checks)
            return Local(404, "not_found")
        try:
            parts = urlsplit(target)
        except ValueError as e:  # "Invalid IPv6 URL"
            raise BadHttp(f"bad URI: {e}") from None
        if parts.scheme.lower() != "http" or not parts.netloc or "@" in parts.netloc:
            return Refuse(400, "only http:// URIs are forwarded (CONNECT for anything else)")
        host, port = _split_authority(parts.netloc, 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        named = _connection_named(req.headers)
        headers = [(n, v) for n, v in req.headers if n not in _HOP and n not in named and n != b"host"]
        headers = [(b"host", parts.netloc.encode()), *headers, (b"connection", b"close")]
        return Forward(host, port, h11.Request(method=req.method, target=path.encode(), headers=headers))

    def error(self, status: int, text: str, *, headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
        """A complete small answer (``Connection: close``); b"" if h11 can no longer send one."""
        body = (text + "\n").encode()
        hs = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
              (b"connection", b"close"), *(headers or [])]
        try:
            out = self.conn.send(h11.Response(status_code=status, headers=hs,
                                              reason=_REASONS.get(status, b"Error")))
            return (out or b"") + (self.conn.send(h11.Data(data=body)) or b"") + (
                self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return f"HTTP/1.1 {status} Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode()

    def established(self) -> tuple[bytes, bytes]:
        """The CONNECT ``200`` and the bytes the client already sent into the tunnel."""
        out = self.conn.send(h11.Response(status_code=200, headers=[], reason=b"Connection established"))
        return out or b"", self.conn.trailing_data[0]


class Stream(Protocol):
    """One side of the exchange: ``recv`` (b"" at EOF, ``TimeoutError`` when nothing came in time)."""

    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...


def forward(front: HttpFront, fwd: Forward, client: Stream, origin: Stream, *, max_head: int,
            chunk: int) -> None:
    """Send the client's request (head, then its body as it comes) to ``origin``; its answer back to
    the client with ``Connection: close``. ``BadHttp`` (502) for an origin that is not HTTP."""
    up = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)
    origin.sendall(up.send(fwd.request) or b"")
    if front.conn.they_are_waiting_for_100_continue:  # we dropped Expect: answer it ourselves
        client.sendall(front.conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
    while True:  # the request body
        event = front.conn.next_event()
        if event is h11.NEED_DATA:
            front.conn.receive_data(client.recv(chunk))
            continue
        if isinstance(event, h11.Data):
            origin.sendall(up.send(h11.Data(data=event.data)) or b"")
        elif isinstance(event, h11.EndOfMessage):
            origin.sendall(up.send(h11.EndOfMessage()) or b"")
            break
        else:
            raise BadHttp(f"client ended its request early: {type(event).__name__}")
    while True:  # the answer
        try:
            event = up.next_event()
        except h11.RemoteProtocolError as e:
            raise BadHttp(f"origin: {e}", 502) from None
        if event is h11.NEED_DATA:
            up.receive_data(origin.recv(chunk))
            continue
        if isinstance(event, h11.InformationalResponse):
            if event.status_code == 100:
                client.sendall(front.conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            continue
        if isinstance(event, h11.Response):
            named = _connection_named(event.headers)
            hs = [(n, v) for n, v in event.headers if n not in _HOP and n not in named]
            client.sendall(front.conn.send(h11.Response(status_code=event.status_code, reason=event.reason,
                                                        headers=[*hs, (b"connection", b"close")])) or b"")
        elif isinstance(event, h11.Data):
            client.sendall(front.conn.send(h11.Data(data=event.data)) or b"")
        elif isinstance(event, h11.EndOfMessage):
            client.sendall(front.conn.send(h11.EndOfMessage()) or b"")
            return
        else:
            raise BadHttp("origin closed before its answer was complete", 502)
