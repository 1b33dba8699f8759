"""The plain-HTTP/1.1 front door: read one bounded request head (and small body) from a stream.

Only what the control plane needs: ``GET /key``, the ``/ts2021`` upgrade, the auth page and the
DERP hooks. Heads over 64 KiB or bodies over 1 MiB are refused, so a garbage client cannot make the
server allocate without bound.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 1 << 20
REASONS = {101: "Switching Protocols", 200: "OK", 204: "No Content", 400: "Bad Request",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
           500: "Internal Server Error"}


class BadRequest(Exception):
    """The bytes are not an acceptable HTTP/1.1 request; answer 400 and close."""


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names; repeats joined by ", "
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


def parse_head(head: bytes) -> Request:
    """Parse a request line and headers (without the final blank line)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as e:  # pragma: no cover - latin-1 decodes everything
        raise BadRequest("undecodable head") from e
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise BadRequest("malformed request line")
    req = Request(method=parts[0], target=parts[1], version=parts[2])
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header line")
        k, v = name.lower(), value.strip()
        req.headers[k] = f"{req.headers[k]}, {v}" if k in req.headers else v
    return req


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one request; None on a clean EOF before any byte. Raises BadRequest."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise BadRequest("truncated head") from e
    except asyncio.LimitOverrunError as e:
        raise BadRequest("request head too large") from e
    req = parse_head(head[:-4])
    if "transfer-encoding" in req.headers:
        raise BadRequest("chunked bodies are not supported here")
    try:
        length = int(req.headers.get("content-length", "0"))
    except ValueError as e:
        raise BadRequest("bad content-length") from e
    if not 0 <= length <= MAX_BODY:
        raise BadRequest("body too large")
    if length:
        req.body = await reader.readexactly(length)
    return req


async def accept_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         tasks: set[asyncio.Task[None]], timeout: float = 30) -> Request | None:
    """The front door both servers share: track the connection task in ``tasks`` (so shutdown can
    cancel it), read one request within ``timeout`` and answer 400 to a bad one; None = nothing to
    serve."""
    me = asyncio.current_task()
    if me is not None:
        tasks.add(me)
        me.add_done_callback(tasks.discard)
    try:
        return await asyncio.wait_for(read_request(reader), timeout)
    except (BadRequest, asyncio.IncompleteReadError, TimeoutError) as e:
        writer.write(response(400, f"bad request: {e}\n".encode()))
        return None


def response(status: int, body: bytes = b"", headers: dict[str, str] | None = None,
             content_type: str = "text/plain; charset=utf-8") -> bytes:
    """A complete ``Connection: close`` response."""
    hdrs = {"Content-Type": content_type, "Content-Length": str(len(body)), "Connection": "close"}
    if status in (101, 204):
        hdrs = {}
    hdrs.update(headers or {})
    head = f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    return head.encode("latin-1") + b"\r\n" + body
