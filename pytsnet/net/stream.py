"""The async app API: ``TcpStream`` (an anyio ``ByteStream``), ``TcpListener`` and ``UdpSocket``.

Each call works on the flow's bounded ``FlowChannel``: a send waits while the channel's send queue
is full (the connection's send buffer is full too), a receive waits for bytes, EOF or the
connection's typed error (``ConnectionResetError``, ``ConnectionRefusedError``, ``TimeoutError``
subclasses from ``pytsnet.netstack.tcp.errors``, or ``FlowCrashed`` if the flow's actor died).
Cancelling a waiting call loses nothing: bytes are taken only once they can be returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteStream

from pytsnet.actors.netstack.channel import DatagramChannel, FlowChannel, ListenerChannel
from pytsnet.messages.netstack import TcpUnlisten, UdpClose, UdpSendTo

if TYPE_CHECKING:
    from pytsnet.net.netstack import Netstack

__all__ = ["TcpListener", "TcpStream", "UdpSocket"]


class TcpStream(ByteStream):
    def __init__(self, channel: FlowChannel) -> None:
        self._ch = channel
        self._closed = False

    @property
    def local_address(self) -> tuple[str, int]:
        return self._ch.local

    @property
    def remote_address(self) -> tuple[str, int]:
        return self._ch.remote

    async def receive(self, max_bytes: int = 65536) -> bytes:
        ch = self._ch
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            data = ch.try_recv(max_bytes)
            if data is not None:
                if not data:
                    raise anyio.EndOfStream
                return data
            await ch.wait_async(ch.recv_ready)

    async def send(self, item: bytes) -> None:
        ch = self._ch
        view = memoryview(item)
        while view:
            if self._closed:
                raise anyio.ClosedResourceError
            n = ch.try_send(view)
            if n is None:
                await ch.wait_async(ch.send_ready)
            else:
                view = view[n:]

    async def send_eof(self) -> None:
        self._ch.send_eof()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._ch.close()

    async def drain(self) -> None:
        """Wait until the connection took everything written (the peer may not have ACKed yet)."""
        await self._ch.wait_async(self._ch.drained_ready)


class TcpListener:
    def __init__(self, netstack: Netstack, channel: ListenerChannel) -> None:
        self._ns = netstack
        self._ch = channel

    @property
    def port(self) -> int:
        return self._ch.port

    async def accept(self) -> TcpStream:
        ch = self._ch
        while True:
            got = ch.try_accept()
            if got is not None:
                return TcpStream(got)
            await ch.wait_async(ch.accept_ready)

    async def aclose(self) -> None:
        self._ns.ref.tell(TcpUnlisten(port=self._ch.port))

    async def __aenter__(self) -> TcpListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class UdpSocket:
    def __init__(self, netstack: Netstack, channel: DatagramChannel) -> None:
        self._ns = netstack
        self._ch = channel

    @property
    def port(self) -> int:
        return self._ch.port

    async def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        reply = await self._ns.ref.ask_async(UdpSendTo(port=self._ch.port, data=bytes(data),
                                                       host=address[0], remote_port=address[1]))
        self._ns.check(reply)

    async def recvfrom(self) -> tuple[bytes, tuple[str, int]]:
        ch = self._ch
        while True:
            got = ch.try_recvfrom()
            if got is not None:
                return got
            await ch.wait_async(ch.recv_ready)

    def sendto_blocking(self, data: bytes, address: tuple[str, int]) -> None:
        self._ns.check(self._ns.ref.ask(UdpSendTo(port=self._ch.port, data=bytes(data),
                                                  host=address[0], remote_port=address[1])))

    def recvfrom_blocking(self, timeout: float | None = None) -> tuple[bytes, tuple[str, int]]:
        ch = self._ch
        while True:
            got = ch.try_recvfrom()
            if got is not None:
                return got
            if not ch.wait(ch.recv_ready, timeout):
                raise TimeoutError("recvfrom timed out")

    def close(self) -> None:
        self._ns.ref.tell(UdpClose(port=self._ch.port))

    async def aclose(self) -> None:
        self.close()
