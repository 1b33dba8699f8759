"""A small blocking HTTP/1.1 client (h11) over any socket-like object: the DoH requests the device
sends to an exit node's peerAPI over its own netstack, and the peerAPI tests' client.

The answer's body is bounded (``max_body``): a peer cannot make us buffer without limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import h11

__all__ = ["HttpAnswer", "HttpAnswerTooLarge", "http_request"]


class HttpAnswerTooLarge(ValueError):
    """The answer's body passed ``max_body``."""


class _Sock(Protocol):
    def sendall(self, data: bytes) -> None: ...
    def recv(self, bufsize: int) -> bytes: ...


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def http_request(sock: _Sock, method: str, target: str, *, host: str = "peer",
                 headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                 max_body: int | None = None) -> HttpAnswer | None:
    """One request on ``sock`` (keep-alive: call again for the next); None if the server closed first.
    ``HttpAnswerTooLarge`` once the answer's body passes ``max_body`` bytes."""
    client = h11.Connection(h11.CLIENT)
    hdrs = [("Host", host), *(headers or [])]
    if body or method == "POST":
        hdrs.append(("Content-Length", str(len(body))))
    out = client.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
    if body:
        out += client.send(h11.Data(data=body)) or b""
    out += client.send(h11.EndOfMessage()) or b""
    sock.sendall(out)
    answer: HttpAnswer | None = None
    while True:
        try:
            ev = client.next_event()
        except h11.RemoteProtocolError:  # closed with no (or half an) answer
            return None
        if ev is h11.NEED_DATA:
            client.receive_data(sock.recv(65536))
            continue
        if isinstance(ev, h11.Response):
            answer = HttpAnswer(ev.status_code, {k.decode().lower(): v.decode() for k, v in ev.headers})
        elif isinstance(ev, h11.Data) and answer is not None:
            answer.body += bytes(ev.data)
            if max_body is not None and len(answer.body) > max_body:
                raise HttpAnswerTooLarge(f"HTTP answer body over {max_body} bytes")
        elif isinstance(ev, h11.EndOfMessage):
            return answer
        elif isinstance(ev, h11.ConnectionClosed):
            return None
