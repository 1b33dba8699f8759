"""A bare DERP client on asyncio streams, for tests of DERP servers (localnet's relay, the derper).

The HTTP upgrade by hand, then the sans-IO ``ClientConnection`` does the protocol; every frame
received is kept in ``frames``, so a test can both wait for one event and look back at all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Self

from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.handshake import ClientConnection, FrameReceived, ServerInfoReceived
from pytsnet.wire.keys import NodePrivate, NodePublic

__all__ = ["DerpTestClient", "insecure_tls"]

UPGRADE = b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"


def insecure_tls() -> ssl.SSLContext:
    """What a node does for an ``InsecureForTests`` DERP node: TLS without certificate checks."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class DerpTestClient:
    """One client connection; ``timeout`` is how long a read waits by default (seconds)."""

    timeout = 10.0

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: ClientConnection):
        self.reader, self.writer, self.conn = reader, writer, conn
        self.frames: list[f.Frame] = []
        self.key: NodePublic = conn.public

    @classmethod
    async def connect(cls, port: int, priv: NodePrivate | None = None, *, host: str = "127.0.0.1",
                      tls: ssl.SSLContext | None = None, fast_start: NodePublic | None = None,
                      rcvbuf: int | None = None, handshake: bool = True) -> Self:
        """Upgrade to DERP (over ``tls`` when given) and, with ``handshake``, wait for the ServerInfo.

        ``fast_start``: the server's key, known beforehand (``Derp-Fast-Start``: no 101 to wait for);
        ``rcvbuf``: a small socket receive buffer, for a client that falls behind."""
        priv = priv or NodePrivate.generate()
        if rcvbuf is not None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_connection(host, port, ssl=tls,
                                                           server_hostname=host if tls is not None else None)
        writer.write(UPGRADE + (b"Derp-Fast-Start: 1\r\n" if fast_start else b"") + b"\r\n")
        if not fast_start:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101 "), head
        c = cls(reader, writer, ClientConnection(priv, time.monotonic(), server_key=fast_start))
        c.flush()
        if handshake:
            await c.until(lambda ev: isinstance(ev, ServerInfoReceived))
        return c

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)

    async def until(self, pred: Callable[[Any], bool], timeout: float | None = None) -> Any:
        """Read until an event matches ``pred``; EOFError when the server closes first."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            data = await asyncio.wait_for(self.reader.read(1 << 16), max(0.01, end - time.monotonic()))
            if not data:
                raise EOFError("server closed the stream")
            match = None
            for ev in self.conn.receive_data(data, time.monotonic()):
                if isinstance(ev, FrameReceived):
                    self.frames.append(ev.frame)
                if match is None and pred(ev):
                    match = ev
            self.flush()
            if match is not None:
                return match

    async def recv_frame(self, cls: type, timeout: float | None = None) -> Any:
        ev = await self.until(lambda ev: isinstance(ev, FrameReceived) and isinstance(ev.frame, cls), timeout)
        return ev.frame

    async def recv_packet(self, timeout: float | None = None) -> f.RecvPacket:
        return await self.recv_frame(f.RecvPacket, timeout)  # type: ignore[no-any-return]

    def send(self, dst: NodePublic, packet: bytes) -> None:
        self.conn.send_packet(dst, packet)
        self.flush()

    async def refused(self, timeout: float = 15.0) -> bool:
        """True if the server ends the stream before any ServerInfo (a refused client)."""
        try:
            await self.until(lambda ev: isinstance(ev, ServerInfoReceived), timeout)
        except (EOFError, ConnectionError):
            return True
        return False

    async def closed_by_server(self, timeout: float | None = None) -> bool:
        """True if the server ends the stream within ``timeout`` (whatever it sent before)."""
        try:
            await self.until(lambda ev: False, timeout)
        except (EOFError, ConnectionError):
            return True
        return False

    def close(self) -> None:
        self.writer.close()

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
