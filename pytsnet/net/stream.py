"""The async app API: ``TcpStream`` (an anyio ``ByteStream``), ``TcpListener`` and ``UdpSocket``.

Each call works on the flow's bounded ``FlowChannel``, whose buffers are the connection's own (one
per direction): a send waits while the send buffer is full (unacknowledged plus unsent bytes), a
receive waits for bytes, EOF or the
connection's typed error (``ConnectionResetError``, ``ConnectionRefusedError``, ``TimeoutError``
subclasses, all in ``pytsnet.errors``, or ``FlowCrashed`` if the flow's actor died).
Cancelling a waiting call loses nothing: bytes are taken only once they can be returned.

A listener or UDP socket made by the device belongs to the device, not to one data-plane subtree:
it may exist before the node is Running (no channel yet), and when the subtree is rebuilt (new node
key, addresses or DERP map) the device binds it again on the new netstack (``_rebind``); a waiting
``accept``/``recvfrom`` just carries on with the new channel. Waits are native to the running
backend (asyncio or trio).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import ByteStream, SocketAttribute

from pytsnet.actors.netstack.channel import DatagramChannel, FlowChannel, ListenerChannel, Waitable
from pytsnet.actors.runtime import ActorStopped
from pytsnet.dial import is_ip_literal
from pytsnet.errors import DataplaneNotReady
from pytsnet.messages.base import Message
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

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """anyio's typed extras: ``stream.extra(SocketAttribute.remote_address)`` and friends (tailnet
        addresses; there is no ``raw_socket``: the stream lives in the userspace netstack)."""
        ch = self._ch
        family = socket.AF_INET6 if ipaddress.ip_address(ch.local[0]).version == 6 else socket.AF_INET
        return {
            SocketAttribute.family: lambda: family,
            SocketAttribute.local_address: lambda: ch.local,
            SocketAttribute.local_port: lambda: ch.local[1],
            SocketAttribute.remote_address: lambda: ch.remote,
            SocketAttribute.remote_port: lambda: ch.remote[1],
        }

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
        """Wait until the peer acknowledged every byte written (or the connection ended)."""
        await self._ch.wait_async(self._ch.drained_ready)


Ready = Callable[[], bool]
ChannelT = TypeVar("ChannelT", ListenerChannel, DatagramChannel)
ItemT = TypeVar("ItemT")


class _Rebindable(Generic[ChannelT, ItemT]):
    """What a device-owned listener or socket shares: the current netstack and channel, swappable,
    and the wait for the next item (a connection, a datagram) across rebinds.

    A subclass names its channel's non-blocking take and readiness (``_take``, ``_ready``), what it
    is called in errors (``_what``) and the message that unbinds its port (``_unbind``)."""

    _what = "handle"

    def __init__(self, netstack: Netstack | None, channel: ChannelT | None, port: int, *, owned: bool,
                 on_close: Callable[[Any], None] | None = None,
                 on_lost: Callable[[Any, Any], None] | None = None) -> None:
        self._ch: ChannelT | None = channel
        self._on_close = on_close
        self._ns = netstack
        self._port = port
        self._owned = owned
        self._on_lost = on_lost
        self._lost: Any = None
        """A channel its netstack closed under us (a crash restart or a rebuild): ask the owner to heal."""
        self._closed = False
        self._rebound = Waitable()
        """Wakes waiters when a channel arrives (or the handle closes) while they had none."""

    @property
    def port(self) -> int:
        """The tailnet port (for a UDP socket asked for port 0: 0 until the first bind)."""
        return self._port

    def _current(self) -> ChannelT | None:
        return self._ch

    def _swap(self, netstack: Netstack | None, channel: Any) -> None:
        old = self._current()
        with self._rebound.lock:
            self._ns = netstack
            self._set_channel(channel)
            if channel is not None:
                self._port = channel.port
        self._rebound.notify()
        if old is not None:
            old.notify()

    def _set_channel(self, channel: Any) -> None:
        self._ch = channel

    def _take(self, ch: ChannelT) -> ItemT | None:
        raise NotImplementedError

    def _ready(self, ch: ChannelT) -> Ready:
        raise NotImplementedError

    def _unbind(self, port: int) -> Message:
        raise NotImplementedError

    def _poll(self) -> tuple[ItemT | None, Waitable, Ready]:
        if self._closed:
            raise OSError(f"{self._what} closed")
        ch = self._ch
        if ch is None:
            return (None, *self._wait_for(None, lambda: False))
        return self._poll_channel(ch)

    def _poll_channel(self, ch: ChannelT) -> tuple[ItemT | None, Waitable, Ready]:
        try:
            got = self._take(ch)
        except OSError:
            if not self._owned:
                raise
            return (None, *self._gone(ch))
        if got is not None:
            return got, ch, lambda: True
        return (None, *self._wait_for(ch, self._ready(ch)))

    async def _next(self) -> ItemT:
        """The next item, waiting natively (asyncio or trio) across rebinds."""
        while True:
            got, waitable, ready = self._poll()
            if got is not None:
                return got
            if self._lost is not None:
                await anyio.to_thread.run_sync(self._heal)
            await waitable.wait_async(ready)

    def _next_blocking(self, timeout: float | None, call: str) -> ItemT:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            got, waitable, ready = self._poll()
            if got is not None:
                return got
            self._heal()
            if not waitable.wait(ready, None if end is None else max(0.0, end - time.monotonic())):
                raise TimeoutError(f"{call} timed out")

    def close(self) -> None:
        if self._closed:
            return
        ns, ch = self._ns, self._ch
        self._shutdown()
        if self._on_close is not None:
            self._on_close(self)
        if ns is not None and ch is not None:
            with contextlib.suppress(ActorStopped):  # that netstack is gone, and its handles with it
                ns.ref.tell(self._unbind(ch.port))

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _shutdown(self) -> None:
        """The device closed: every waiter ends (with the closed error)."""
        self._closed = True
        self._rebound.notify()
        ch = self._current()
        if ch is not None:
            ch.notify()

    def _wait_for(self, ch: Any, ready: Ready) -> tuple[Waitable, Ready]:
        """Wait on ``ch`` for ``ready``, or on a rebind/close when ``ch`` is gone."""
        if ch is None:
            return self._rebound, lambda: self._current() is not None or self._closed
        return ch, lambda: ready() or self._current() is not ch or self._closed

    def _gone(self, ch: Any) -> tuple[Waitable, Ready]:
        """``ch`` was closed by its netstack stopping: a device-owned handle waits for the next one
        (a rebuild brings it; for a restarted netstack the owner binds again, ``_heal``)."""
        self._lost = ch
        return self._rebound, lambda: self._current() is not ch or self._closed

    def _heal(self) -> None:
        """Blocking (one ask): have the owner bind this handle again on its netstack."""
        ch, self._lost = self._lost, None
        if ch is not None and self._on_lost is not None:
            self._on_lost(self, ch)


class TcpListener(_Rebindable[ListenerChannel, FlowChannel]):
    _what = "listener"

    def __init__(self, netstack: Netstack | None, channel: ListenerChannel | None, *, port: int | None = None,
                 on_close: Callable[[TcpListener], None] | None = None,
                 on_lost: Callable[[Any, Any], None] | None = None) -> None:
        super().__init__(netstack, channel, channel.port if channel is not None else int(port or 0),
                         owned=on_close is not None, on_close=on_close, on_lost=on_lost)

    def _take(self, ch: ListenerChannel) -> FlowChannel | None:
        return ch.try_accept()

    def _ready(self, ch: ListenerChannel) -> Ready:
        return ch.accept_ready

    def _unbind(self, port: int) -> Message:
        return TcpUnlisten(port=port)

    async def accept(self) -> TcpStream:
        """The next connection (waits across data-plane rebuilds, and before the node is Running)."""
        return TcpStream(await self._next())

    def accept_blocking(self, timeout: float | None = None) -> FlowChannel:
        return self._next_blocking(timeout, "accept")


class UdpSocket(_Rebindable[DatagramChannel, tuple[bytes, tuple[str, int]]]):
    _what = "UDP socket"

    def __init__(self, netstack: Netstack | None, channel: DatagramChannel | None, *, port: int | None = None,
                 resolve: Callable[[str], str] | None = None,
                 on_close: Callable[[UdpSocket], None] | None = None,
                 on_lost: Callable[[Any, Any], None] | None = None) -> None:
        super().__init__(netstack, channel, channel.port if channel is not None else int(port or 0),
                         owned=on_close is not None, on_close=on_close, on_lost=on_lost)
        self._resolve = resolve

    def _take(self, ch: DatagramChannel) -> tuple[bytes, tuple[str, int]] | None:
        return ch.try_recvfrom()

    def _ready(self, ch: DatagramChannel) -> Ready:
        return ch.recv_ready

    def _unbind(self, port: int) -> Message:
        return UdpClose(port=port)

    def _send_msg(self, data: bytes, address: tuple[str, int]) -> tuple[Netstack, UdpSendTo]:
        if self._closed:
            raise OSError("UDP socket closed")
        host = self._resolve(address[0]) if self._resolve is not None else address[0]
        ns, ch = self._ns, self._ch
        if ns is None or ch is None:
            raise DataplaneNotReady("the node is not Running yet: await dev.up() before sending")
        return ns, UdpSendTo(port=ch.port, data=bytes(data), host=host, remote_port=address[1])

    async def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        """Send one datagram to ``(host, port)``; ``host`` is a tailnet IP or a name the node resolves
        (a name may ask the MagicDNS resolver: that runs in a worker thread, never blocking the loop).
        ``DataplaneNotReady`` before Running, or while the data plane is being rebuilt."""
        if self._resolve is not None and not is_ip_literal(address[0]):
            address = (await anyio.to_thread.run_sync(self._resolve, address[0]), address[1])
        ns, msg = self._send_msg(data, address)
        try:
            ns.check(await ns.ref.ask_async(msg))
        except ActorStopped:
            raise DataplaneNotReady("the data plane is being rebuilt: send again in a moment") from None

    def sendto_blocking(self, data: bytes, address: tuple[str, int]) -> None:
        ns, msg = self._send_msg(data, address)
        try:
            ns.check(ns.ref.ask(msg))
        except ActorStopped:
            raise DataplaneNotReady("the data plane is being rebuilt: send again in a moment") from None

    async def recvfrom(self) -> tuple[bytes, tuple[str, int]]:
        """The next datagram and its ``(source IP, port)`` (waits across data-plane rebuilds)."""
        return await self._next()

    def recvfrom_blocking(self, timeout: float | None = None) -> tuple[bytes, tuple[str, int]]:
        return self._next_blocking(timeout, "recvfrom")


