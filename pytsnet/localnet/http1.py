"""The plain-HTTP/1.1 front door: read one bounded request head (and small body) from a stream.

Only what the control plane needs: ``GET /key``, the ``/ts2021`` upgrade, the auth page and the
DERP hooks. Heads over 64 KiB or bodies over 1 MiB are refused, so a garbage client cannot make the
server allocate without bound. The parsing is ``wire.http1_upgrade`` (h11), the one HTTP/1.1
implementation the node's DERP and control clients use too; this module is its asyncio side.
"""

from __future__ import annotations

import asyncio

from pytsnet.wire.http1_upgrade import MAX_BODY, MAX_HEAD, Http1Error, Request, RequestParser

__all__ = ["MAX_BODY", "MAX_HEAD", "BadRequest", "Request", "accept_request", "read_request", "response"]

REASONS = {101: "Switching Protocols", 200: "OK", 204: "No Content", 400: "Bad Request",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
           500: "Internal Server Error"}

BadRequest = Http1Error
"""The bytes are not an acceptable HTTP/1.1 request; answer 400 and close."""


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one request; None on a clean EOF before any byte. Raises BadRequest.

    The head is read up to its blank line (the reader's limit caps it) and the body by its length,
    so nothing past the request leaves the reader: an upgraded protocol's first bytes stay there."""
    parser = RequestParser(MAX_HEAD, MAX_BODY)
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        parser.receive_eof()
    except asyncio.LimitOverrunError as e:
        raise BadRequest("request head too large") from e
    req = parser.receive_data(head)
    while req is None:
        req = parser.receive_data(await reader.readexactly(parser.body_needed))
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
    if status == 101:
        hdrs = {}
    elif status == 204:  # no body, no length; still closed: a client must not reuse the connection
        hdrs = {"Connection": "close"}
    hdrs.update(headers or {})
    head = f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    return head.encode("latin-1") + b"\r\n" + body
