"""A bare DERP client on asyncio streams for the derper tests: HTTP upgrade, then ``ClientConnection``."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from typing import Any

from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.handshake import ClientConnection, FrameReceived, ServerInfoReceived
from pytsnet.wire.keys import NodePrivate, NodePublic


def insecure_tls() -> ssl.SSLContext:
    """What a node does for an ``InsecureForTests`` DERP node: TLS without certificate checks."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class DerpTestClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: ClientConnection):
        self.reader, self.writer, self.conn = reader, writer, conn
        self.key: NodePublic = conn.public

    @classmethod
    async def connect(cls, host: str, port: int, priv: NodePrivate | None = None, *, tls: bool = False,
                      handshake: bool = True) -> DerpTestClient:
        priv = priv or NodePrivate.generate()
        reader, writer = await asyncio.open_connection(host, port, ssl=insecure_tls() if tls else None,
                                                       server_hostname=host if tls else None)
        writer.write(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 "), head
        c = cls(reader, writer, ClientConnection(priv, time.monotonic()))
        c.flush()
        if handshake:
            await c.until(lambda ev: isinstance(ev, ServerInfoReceived))
        return c

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)

    async def until(self, pred: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """Read until an event matches ``pred``; EOFError when the server closes first."""
        end = time.monotonic() + timeout
        while True:
            data = await asyncio.wait_for(self.reader.read(1 << 16), max(0.01, end - time.monotonic()))
            if not data:
                raise EOFError("server closed the stream")
            match = None
            for ev in self.conn.receive_data(data, time.monotonic()):
                if match is None and pred(ev):
                    match = ev
            self.flush()
            if match is not None:
                return match

    async def recv_packet(self, timeout: float = 10.0) -> f.RecvPacket:
        ev = await self.until(lambda ev: isinstance(ev, FrameReceived) and isinstance(ev.frame, f.RecvPacket),
                              timeout)
        return ev.frame  # type: ignore[no-any-return]

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

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
