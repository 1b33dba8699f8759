"""A link actor over a TUN fd: the netstack's packet source and sink in tests and benchmarks.

Reads block in an IO loop (select with a short timeout) and go straight to the netstack actor, what
one wakeup finds as one ``IpPacketsIn`` (a lone packet as ``LinkPacketIn``); ``LinkPacketOut`` is
written to the fd. In the device the WireGuard engine plays this role instead.

It also takes the engine's packet messages (``IpPacketOut`` and the burst ``IpPacketsOut``): a
netstack started with ``out_message=IpPacketOut`` hands each flow's output to the link as one message
per emit instead of one per packet (issue 14: 1,000 flows on two workers convoyed on this actor's
mailbox lock when every packet took it).
"""

from __future__ import annotations

import contextlib
import os
import select

from pytsnet.actors.runtime import Actor, ActorRef, handles
from pytsnet.actors.runtime.errors import ActorStopped, MailboxFull
from pytsnet.messages.netstack import LinkPacketIn, LinkPacketOut
from pytsnet.messages.wgengine import IpPacketOut, IpPacketsIn, IpPacketsOut

__all__ = ["TunLinkActor"]


class TunLinkActor(Actor):
    def __init__(self, fd: int, target_name: str) -> None:
        self.fd = fd
        self.target_name = target_name
        self._target: ActorRef | None = None
        self.written = 0
        self.read = 0
        self.bursts_read = 0  # IpPacketsIn told to the netstack
        self.bursts_written = 0  # IpPacketsOut taken from flows

    def on_start(self) -> None:
        self.start_io_loop(self._read_some)

    def _read_some(self) -> None:
        ready, _, _ = select.select([self.fd], [], [], 0.2)
        if not ready:
            return None
        target = self._target or self.lookup(self.target_name)
        self._target = target
        burst: list[bytes] = []
        for _ in range(64):
            try:
                burst.append(os.read(self.fd, 65535))
            except (BlockingIOError, InterruptedError):
                break
        self.read += len(burst)
        if target is not None and burst:
            # One message per burst: the netstack demultiplexes it in one turn, one message per flow.
            msg: LinkPacketIn | IpPacketsIn
            if len(burst) == 1:
                msg = LinkPacketIn(data=burst[0])
            else:
                msg = IpPacketsIn(packets=tuple(burst))
                self.bursts_read += 1
            with contextlib.suppress(ActorStopped, MailboxFull):
                target.tell(msg)
        return None

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a refused write is a drop, as on a full link
            os.write(self.fd, data)
            self.written += 1

    @handles(LinkPacketOut, IpPacketOut)
    def on_out(self, msg: LinkPacketOut | IpPacketOut) -> None:
        self._write(msg.data)

    @handles(IpPacketsOut)
    def on_out_batch(self, msg: IpPacketsOut) -> None:
        self.bursts_written += 1
        for pkt in msg.packets:
            self._write(pkt)
