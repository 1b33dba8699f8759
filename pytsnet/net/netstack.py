"""``Netstack``: the app's handle on a running NetstackActor (dial, listen, bind; async and blocking)."""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING

import anyio

from pytsnet.actors.netstack.channel import FlowChannel, FlowRegistry
from pytsnet.actors.netstack.subtree import netstack_spec
from pytsnet.actors.runtime import ActorRef, MailboxConfig, MailboxPolicy
from pytsnet.errors import AddressInUse
from pytsnet.messages.netstack import LinkPacketOut, NetstackReply, TcpConnect, TcpListen, UdpBind
from pytsnet.net.socket import SocketLike, SocketListener
from pytsnet.net.stream import TcpListener, TcpStream, UdpSocket
from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.tcp.connection import TcpConfig

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorSystem
    from pytsnet.messages.base import Message

__all__ = ["Netstack"]

_ERRNO = {"AddressInUse": errno.EADDRINUSE, "WouldBlock": errno.EAGAIN}


class Netstack:
    def __init__(self, ref: ActorRef, registry: FlowRegistry) -> None:
        self.ref = ref
        self.registry = registry

    @classmethod
    def start(cls, system: ActorSystem, config: StackConfig, sink: ActorRef, *, name: str = "netstack",
              out_message: type[Message] = LinkPacketOut, tcp_config: TcpConfig | None = None,
              mailbox: MailboxConfig | None = None, parent: ActorRef | None = None) -> Netstack:
        """Spawn the netstack subtree (``actors/netstack/subtree.py``) under ``parent`` (default root)."""
        registry = FlowRegistry()
        system.spawn_spec(netstack_spec(system, name, config, sink, registry, out_message=out_message,
                                        tcp_config=tcp_config,
                                        mailbox=mailbox or MailboxConfig(65536, MailboxPolicy.DROP_NEWEST)),
                          parent)
        ref = system.lookup(name)
        assert ref is not None
        return cls(ref, registry)

    @staticmethod
    def check(reply: NetstackReply) -> NetstackReply:
        if not reply.ok:
            code = _ERRNO.get(reply.error, errno.EINVAL)
            if reply.error == "AddressInUse":
                raise AddressInUse(code, f"{reply.detail}: that tailnet port is already bound on this node "
                                         "(close the other listener or socket, or pick another port)")
            raise OSError(code, f"{reply.error}: {reply.detail}")
        return reply

    def _flow(self, reply: NetstackReply) -> FlowChannel:
        ch = self.registry.claim_flow(self.check(reply).flow)
        if ch is None:
            raise ConnectionAbortedError("flow vanished before it was handed over")
        return ch

    # -- async ------------------------------------------------------------------------------------------
    async def connect_tcp(self, host: str, port: int) -> TcpStream:
        """Dial; returns once established, or raises the connection's typed error.

        Cancellation-safe: the actor answers at once, so that ask is shielded (a flow it made is
        never orphaned), and a dial cancelled during the handshake closes its flow."""
        with anyio.CancelScope(shield=True):
            reply = await self.ref.ask_async(TcpConnect(host=host, port=port))
        ch = self._flow(reply)
        try:
            await ch.wait_async(ch.connected_ready)
        except BaseException:
            ch.close()
            raise
        _raise_if_failed(ch)
        return TcpStream(ch)

    async def listen_tcp(self, port: int, backlog: int | None = None) -> TcpListener:
        self.check(await self.ref.ask_async(TcpListen(port=port, backlog=backlog)))
        lch = self.registry.listener(port)
        assert lch is not None
        return TcpListener(self, lch)

    async def bind_udp(self, port: int = 0) -> UdpSocket:
        reply = self.check(await self.ref.ask_async(UdpBind(port=port)))
        dch = self.registry.udp(reply.port)
        assert dch is not None
        return UdpSocket(self, dch)

    # -- blocking ---------------------------------------------------------------------------------------
    def create_connection(self, address: tuple[str, int], timeout: float | None = None) -> SocketLike:
        ch = self._flow(self.ref.ask(TcpConnect(host=address[0], port=address[1])))
        end = None if timeout is None else time.monotonic() + timeout
        try:
            connected = ch.wait(ch.connected_ready, None if end is None else end - time.monotonic())
        except BaseException:  # KeyboardInterrupt mid-handshake: do not orphan the flow
            ch.close()
            raise
        if not connected:
            ch.close()
            raise TimeoutError("connect timed out")
        _raise_if_failed(ch)
        return SocketLike(ch, timeout)

    def listen(self, port: int, backlog: int | None = None) -> SocketListener:
        self.check(self.ref.ask(TcpListen(port=port, backlog=backlog)))
        lch = self.registry.listener(port)
        assert lch is not None
        return SocketListener(TcpListener(self, lch))

    def bind_udp_blocking(self, port: int = 0) -> UdpSocket:
        reply = self.check(self.ref.ask(UdpBind(port=port)))
        dch = self.registry.udp(reply.port)
        assert dch is not None
        return UdpSocket(self, dch)


def _raise_if_failed(ch: FlowChannel) -> None:
    with ch.lock:
        if not ch.established:
            raise ch.error or ConnectionAbortedError("connection closed during the handshake")
