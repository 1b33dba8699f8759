"""HTTP/1.1 as pytsnet speaks it before a protocol switch: one implementation, on h11, sans-IO.

Both sides of the two upgrades the node uses — ``GET /derp`` with ``Upgrade: DERP`` and
``POST /ts2021`` with ``Upgrade: tailscale-control-protocol`` — and the localnet servers' plain
requests (``/key``, ``/generate_204``...). The client side builds the request and parses the answer
(a ``101`` with its headers and the bytes after the head, which belong to the upgraded protocol);
the server side parses one bounded request. Callers own the sockets and the timeouts; every bad
input ends in an ``Http1Error`` subclass, never an h11 exception or unbounded buffering.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import parse_qs, urlsplit

import h11

from pytsnet.wire.errors import ParseError, ProtocolError, WireError

__all__ = ["MAX_BODY", "MAX_HEAD", "BodyTooLarge", "HeadTooLarge", "Http1Error", "MalformedHttp",
           "Request", "RequestParser", "UpgradeClient", "UpgradeRefused", "UpgradeResponse"]

MAX_HEAD = 64 * 1024
"""Default cap on a request or response head; h11's own default is 16 KiB."""
MAX_BODY = 1 << 20
"""Default cap on a request body the server side buffers."""


class Http1Error(WireError):
    """The peer's HTTP/1.1 is unusable for what we asked; the connection should be closed."""


class MalformedHttp(Http1Error, ParseError):
    """Not valid HTTP/1.1 (garbage, a bad header line, a truncated head at EOF)."""


class HeadTooLarge(MalformedHttp):
    """The head grew past its cap before it ended."""


class BodyTooLarge(MalformedHttp):
    """A request announced a body over the cap."""


class UpgradeRefused(Http1Error, ProtocolError):
    """The server answered the upgrade request with a final status other than ``101``."""

    def __init__(self, status: int, reason: str, headers: dict[str, str]) -> None:
        super().__init__(f"upgrade refused: HTTP {status} {reason}".rstrip())
        self.status = status
        self.reason = reason
        self.headers = headers


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-cased names (h11 gives them so); repeated fields joined with ", " as RFC 9110 allows."""
    out: dict[str, str] = {}
    for name, value in raw:
        k, v = name.decode("latin-1"), value.decode("latin-1")
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def _next_event(conn: h11.Connection, max_head: int,
                what: str) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
    """h11's next event with its errors as ours (a 431 hint is the head cap)."""
    try:
        return conn.next_event()
    except h11.RemoteProtocolError as e:
        if e.error_status_hint == 431:
            raise HeadTooLarge(f"{what} head over {max_head} bytes") from None
        raise MalformedHttp(f"bad {what}: {e}") from None


@dataclass(frozen=True)
class UpgradeResponse:
    """A ``101`` answer: its headers and the upgraded protocol's first bytes (maybe empty)."""

    status: int
    headers: dict[str, str]
    leftover: bytes


class UpgradeClient:
    """One upgrade request and its answer: ``request()`` to send, then ``receive_data`` until a result."""

    def __init__(self, method: str, target: str, host: str, protocol: str,
                 headers: Iterable[tuple[str, str]] = (), max_head: int = MAX_HEAD) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)
        self._max_head = max_head
        self._request = self._h11.send(h11.Request(
            method=method, target=target,
            headers=[("Host", host), ("Upgrade", protocol), ("Connection", "Upgrade"), *headers]))
        self._request += self._h11.send(h11.EndOfMessage())
        self._result: UpgradeResponse | None = None

    def request(self) -> bytes:
        """The request bytes to write (no body)."""
        return self._request

    def receive_data(self, data: bytes) -> UpgradeResponse | None:
        """Feed bytes read from the server; the ``101`` once its head is complete, else ``None``.

        Raises ``UpgradeRefused`` for a final non-101 status, ``HeadTooLarge``/``MalformedHttp``
        for a head that is too long or not HTTP. Bytes after the head are ``leftover``."""
        if self._result is not None:
            raise ProtocolError("upgrade already answered: the bytes belong to the new protocol")
        if not data:
            self.receive_eof()
        self._h11.receive_data(data)
        return self._next()

    def receive_eof(self) -> NoReturn:
        """The server closed before a complete answer: always an error."""
        raise MalformedHttp("server closed the connection before answering the upgrade")

    def _next(self) -> UpgradeResponse | None:
        while True:
            ev = _next_event(self._h11, self._max_head, "response")
            if ev is h11.NEED_DATA:
                return None
            if isinstance(ev, h11.InformationalResponse):
                if ev.status_code != 101:
                    continue  # 1xx interim (100 Continue, 103 Early Hints): the answer is still to come
                leftover, _ = self._h11.trailing_data
                self._result = UpgradeResponse(101, _headers(ev.headers), bytes(leftover))
                return self._result
            if isinstance(ev, h11.Response):
                raise UpgradeRefused(ev.status_code, ev.reason.decode("latin-1"), _headers(ev.headers))
            raise MalformedHttp(f"unexpected {type(ev).__name__} before the upgrade answer")


@dataclass
class Request:
    """One parsed request: header names lower-cased, repeats joined by ", "."""

    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


class RequestParser:
    """Server side: one request with a bounded head and a bounded ``Content-Length`` body.

    Feed the head first; if ``receive_data`` returns ``None``, ``body_needed`` says how many body
    bytes to read next, so the caller never reads past the request (bytes after it belong to the
    handler, e.g. the upgraded protocol). Chunked bodies are refused: nothing here needs them."""

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._max_head = max_head
        self._max_body = max_body
        self._req: Request | None = None
        self._body = bytearray()
        self.body_needed = 0

    def receive_data(self, data: bytes) -> Request | None:
        """The complete request, or ``None`` while more is needed; raises a ``MalformedHttp``."""
        if not data:
            self.receive_eof()
        self._h11.receive_data(data)
        while True:
            ev = _next_event(self._h11, self._max_head, "request")
            if ev is h11.NEED_DATA:
                return None
            if isinstance(ev, h11.Request):
                self._req = self._start(ev)
            elif isinstance(ev, h11.Data):
                self._body += ev.data
                self.body_needed = max(0, self.body_needed - len(ev.data))
            elif isinstance(ev, h11.EndOfMessage) and self._req is not None:
                self._req.body = bytes(self._body)
                return self._req
            else:  # PAUSED is not reached: EndOfMessage comes first
                raise MalformedHttp(f"unexpected {ev!r}")

    @property
    def leftover(self) -> bytes:
        """Bytes fed past the complete request (an upgraded protocol's first bytes, or pipelining)."""
        return bytes(self._h11.trailing_data[0]) if self._req is not None else b""

    def receive_eof(self) -> NoReturn:
        """The client closed mid-request."""
        raise MalformedHttp("truncated request")

    def _start(self, ev: h11.Request) -> Request:
        req = Request(method=ev.method.decode("latin-1"), target=ev.target.decode("latin-1"),
                      version=f"HTTP/{ev.http_version.decode('latin-1')}", headers=_headers(ev.headers))
        if "transfer-encoding" in req.headers:
            raise MalformedHttp("chunked bodies are not supported here")
        length = int(req.headers.get("content-length", "0"))  # h11 checked it is digits and unique
        if length > self._max_body:
            raise BodyTooLarge(f"body of {length} bytes over {self._max_body}")
        self.body_needed = length
        return req
