"""The server side of a SOCKS5 handshake on a test's own "upstream proxy" connection.

Egress tests stand up SOCKS5 proxies on tailnet nodes (the upstream hop a worker dials through);
each reads the client's greeting, auth and request with ``Socks5Server`` in the same loop, which
lives here once.
"""

from __future__ import annotations

from typing import Protocol

from pytsnet.wire.socks5 import Socks5Error, Socks5Request, Socks5Server

__all__ = ["read_socks5_request"]


class _Conn(Protocol):
    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...


def read_socks5_request(conn: _Conn, server: Socks5Server) -> Socks5Request | None:
    """Run the handshake up to the request, answering as it goes; None when the client left or was
    refused (the refusal already written). The caller answers the request with ``server.reply``."""
    while True:
        data = conn.recv(4096)
        if not data:
            return None
        try:
            req = server.receive(data)
        except Socks5Error as e:
            conn.sendall(server.data_to_send() + e.reply)
            return None
        conn.sendall(server.data_to_send())
        if req is not None:
            return req
