"""The LocalAPI over HTTP/1.1 (h11): Go's request checks in Go's order, then ``LocalApi.handle``.

Two listeners serve it, with Go's two configurations:

* the unix socket (tailscaled's): no password; the ``Host`` must be empty or
  ``local-tailscaled.sock`` (``apitype.LocalAPIHost``) — a browser cannot reach it by DNS rebinding;
  read and write allowed (the socket is mode 0600: only its owner and root connect).
* the loopback listener (tsnet's ``Loopback``): ``Sec-Tailscale: localapi`` first
  (``localSecHandler``: 403 "missing 'Sec-Tailscale: localapi' header"), then Basic auth with the
  ``local_api_cred`` as password (any user; none → 401 "auth required", wrong → 403 "bad password",
  compared in constant time), ``Host`` may also be ``localhost``/a loopback IP with a port.

Either way a request with a ``Referer`` or ``Origin`` is refused (403 "invalid localapi request"),
as a browser's would be. One request per connection (``Connection: close``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import io
import ipaddress
from collections.abc import Callable
from typing import BinaryIO
from urllib.parse import parse_qsl, urlsplit

import h11

from pytsnet import __version__
from pytsnet.localapi.server import MAX_BODY, LocalApi, LocalRequest, LocalResponse
from pytsnet.wire.http1_body import BodyReader, BodyTruncated, MalformedHttp

__all__ = ["LOCAL_API_HOST", "BodyStream", "check_and_handle", "read_body", "response_bytes", "send_response"]

LOCAL_API_HOST = "local-tailscaled.sock"
"""Go ``apitype.LocalAPIHost``: the Host header the LocalAPI clients send."""

_REASONS = {200: b"OK", 204: b"No Content", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
            404: b"Not Found", 405: b"Method Not Allowed", 413: b"Request Entity Too Large",
            500: b"Internal Server Error", 501: b"Not Implemented"}  # 501: 21f (tka/*)


def _header(req: h11.Request, name: bytes) -> str | None:
    for n, v in req.headers:
        if n == name:
            return v.decode("latin-1")
    return None


def _basic_password(req: h11.Request) -> str | None:
    """Go ``Request.BasicAuth``'s password, or None when there is no usable Basic header."""
    value = _header(req, b"authorization")
    if value is None:
        return None
    scheme, _, b64 = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user_pass = base64.b64decode(b64.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _, sep, password = user_pass.partition(":")
    return password if sep else None


def _valid_host(host: str, with_password: bool) -> bool:
    """Go ``Handler.validHost``."""
    if host in ("", LOCAL_API_HOST):
        return True
    if not with_password:
        return False
    name, sep, port = host.rpartition(":")
    if not sep or not port.isdigit():
        return False
    name = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_and_handle(api: LocalApi, req: h11.Request, body: bytes, *, password: str | None,
                     sec_header: bool, stream: BinaryIO | None = None) -> LocalResponse:
    """Go's checks (see the module doc) then the route table; ``password`` None: the unix socket."""
    if sec_header and _header(req, b"sec-tailscale") != "localapi":
        return LocalResponse(403, b"missing 'Sec-Tailscale: localapi' header")
    if (_header(req, b"referer") or _header(req, b"origin")
            or not _valid_host(_header(req, b"host") or "", password is not None)):
        return LocalResponse.error(403, "invalid localapi request")
    if password is not None:
        got = _basic_password(req)
        if got is None:
            return LocalResponse.error(401, "auth required")
        if not hmac.compare_digest(got.encode(), password.encode()):
            return LocalResponse.error(403, "bad password")
    target = req.target.decode("ascii", "replace")
    parts = urlsplit(target)
    query: dict[str, str] = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(k, v)
    method = req.method.decode("ascii", "replace")
    headers: dict[str, str] = {}
    for name, value in req.headers:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    local = LocalRequest(method=method, path=parts.path, query=query, body=body, headers=headers,
                         stream=stream)
    return api.handle(local, permit_read=True, permit_write=True)


def read_body(conn: h11.Connection, recv: Callable[[], bytes]) -> bytes:
    """The request body (after the head was taken from ``conn``), ``recv`` giving each read:
    ``BodyTooLarge`` past ``MAX_BODY``, ``MalformedHttp`` for a cut or broken one (``wire.http1_body``)."""
    reader = BodyReader(conn, MAX_BODY)
    body = reader.poll()
    while body is None:
        body = reader.receive_data(recv())
    return body


def response_bytes(conn: h11.Connection, resp: LocalResponse) -> bytes:
    """The answer with Go's LocalAPI headers (``Tailscale-Version``, CSP, nosniff) and
    ``Connection: close``."""
    headers = [(b"content-type", resp.content_type.encode()),
               (b"content-length", str(len(resp.body)).encode()),
               (b"tailscale-version", __version__.encode()), (b"x-content-type-options", b"nosniff"),
               (b"x-frame-options", b"DENY"), (b"content-security-policy", b"default-src 'none'"),
               (b"connection", b"close"), *((k.encode(), v.encode("latin-1")) for k, v in resp.headers)]
    if resp.status == 204:
        headers = [h for h in headers if h[0] != b"content-length"]
    out = conn.send(h11.Response(status_code=resp.status, headers=headers,
                                 reason=_REASONS.get(resp.status, b"Error"))) or b""
    if resp.body and resp.status != 204:
        out += conn.send(h11.Data(data=resp.body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


STREAM_CHUNK = 256 * 1024


class BodyStream(io.RawIOBase):
    """A request body read as it arrives (a streaming route's ``LocalRequest.stream``): h11's
    ``Data`` events off ``conn`` (whose head was taken), ``recv`` giving each read (``b""`` at EOF;
    it bounds its own wait). ``b""`` at the body's end; a body cut or broken is ``MalformedHttp``
    (``BodyTruncated``), raised to the handler like any read error."""

    def __init__(self, conn: h11.Connection, recv: Callable[[], bytes]) -> None:
        self._conn = conn
        self._recv = recv
        self._pending = b""
        self._done = False
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            self._pending = self._next()
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _next(self) -> bytes:
        try:
            ev = self._conn.next_event()
        except h11.RemoteProtocolError as e:
            if self._eof:
                raise BodyTruncated(f"request body truncated: {e}") from None
            raise MalformedHttp(f"bad request body: {e}") from None
        if ev is h11.NEED_DATA:
            data = self._recv()
            self._eof = self._eof or not data
            self._conn.receive_data(data)
            return b""
        if isinstance(ev, h11.Data):
            return bytes(ev.data)
        if isinstance(ev, h11.EndOfMessage):
            self._done = True
            return b""
        raise BodyTruncated(f"request ended inside its body: {type(ev).__name__}")


def send_response(sendall: Callable[[bytes], object], conn: h11.Connection, resp: LocalResponse) -> None:
    """``response_bytes``, then a streaming answer's body in ``STREAM_CHUNK`` pieces (closed after,
    whatever happens); a stream shorter than its declared size is an ``OSError`` (h11 refuses to end
    the message), so the client sees a cut body, never a short one that looks whole."""
    try:
        if resp.stream is None:
            sendall(response_bytes(conn, resp))
            return
        sendall(_head_bytes(conn, resp))
        while chunk := resp.stream.read(STREAM_CHUNK):
            sendall(conn.send(h11.Data(data=chunk)) or b"")
        try:
            sendall(conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as e:
            raise OSError(f"LocalAPI answer body shorter than its length: {e}") from None
    finally:
        if resp.stream is not None:
            with contextlib.suppress(OSError):
                resp.stream.close()


def _head_bytes(conn: h11.Connection, resp: LocalResponse) -> bytes:
    """The head alone of a streaming answer (``response_bytes`` of an empty body, its length the
    stream's, without the end of message)."""
    headers = [(b"content-type", resp.content_type.encode()),
               (b"content-length", str(resp.stream_size).encode()),
               (b"tailscale-version", __version__.encode()), (b"x-content-type-options", b"nosniff"),
               (b"x-frame-options", b"DENY"), (b"content-security-policy", b"default-src 'none'"),
               (b"connection", b"close"), *((k.encode(), v.encode("latin-1")) for k, v in resp.headers)]
    return conn.send(h11.Response(status_code=resp.status, headers=headers,
                                  reason=_REASONS.get(resp.status, b"Error"))) or b""
