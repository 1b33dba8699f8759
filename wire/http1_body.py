"""One HTTP/1.1 request body off an h11 server connection, bounded, sans-IO.

Serve's Web sessions (``actors/serve/http``) and the LocalAPI listeners (``pytsnet.localapi.http``)
take a request head from h11 and must then buffer its body (``Content-Length`` or chunked) before
they answer — with a cap, since the body is held in memory. ``BodyReader`` is that step once: the
caller feeds the bytes it reads (``b""`` at EOF) and gets the body when h11 has the whole message.
Every bad input is a typed error: ``BodyTooLarge`` past the cap (the caller answers 413),
``BodyTruncated`` when the client ends mid-body, ``MalformedHttp`` for broken framing (a bad chunk).
"""

from __future__ import annotations

import h11

from pytsnet.wire.http1_upgrade import BodyTooLarge, MalformedHttp

__all__ = ["BodyReader", "BodyTooLarge", "BodyTruncated", "MalformedHttp"]


class BodyTruncated(MalformedHttp):
    """The client closed (or its stream ended) before the body's end."""


class BodyReader:
    """The body of the request whose head ``conn`` just gave; at most ``max_body`` bytes are kept.

    ``poll()`` first (h11 may already hold body bytes read with the head), then ``receive_data``
    with each read until one returns the body. The connection is left after the request's
    ``EndOfMessage``, ready for the answer."""

    def __init__(self, conn: h11.Connection, max_body: int) -> None:
        self._conn = conn
        self._max = max_body
        self._parts: list[bytes] = []
        self._size = 0
        self._body: bytes | None = None
        self._eof = False

    def receive_data(self, data: bytes) -> bytes | None:
        """Feed bytes read from the client (``b""``: it closed); the body once complete, else None."""
        if self._body is None:
            self._eof = self._eof or not data
            self._conn.receive_data(data)
        return self.poll()

    def poll(self) -> bytes | None:
        """Take the events h11 holds; the body once complete, None while more bytes are needed."""
        while self._body is None:
            try:
                ev = self._conn.next_event()
            except h11.RemoteProtocolError as e:
                if self._eof:  # h11's complaint about the close: the body was cut
                    raise BodyTruncated(f"request body truncated: {e}") from None
                raise MalformedHttp(f"bad request body: {e}") from None
            if ev is h11.NEED_DATA:
                return None
            if isinstance(ev, h11.Data):
                self._size += len(ev.data)
                if self._size > self._max:
                    raise BodyTooLarge(f"request body over {self._max} bytes")
                self._parts.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                self._body = b"".join(self._parts)
                self._parts = []
            else:  # ConnectionClosed (or PAUSED, which h11 gives only after EndOfMessage)
                raise BodyTruncated(f"request ended inside its body: {type(ev).__name__}")
        return self._body
