"""A link actor over a TUN fd: the netstack's packet source and sink in tests and benchmarks.

Reads block in an IO loop (select with a short timeout) and go straight to the netstack actor, what
one wakeup finds as one ``IpPacketsIn`` (a lone packet as ``LinkPacketIn``); ``LinkPacketOut`` is
written to the fd. In the device the WireGuard engine plays this role instead.

The wakeup drains the TUN's queue (up to ``MAX_BURST`` packets) under one GIL hold (``PacketFd``):
with ``os.read`` per packet the reader waited for the GIL after each one and could not keep the
kernel's 500-packet TUN queue from overflowing while the pool workers were busy (issue 14: ACKs to
1,000 flows dropped there, and a flow whose window is one segment waits an RTO for a lost ACK).

It also takes the engine's packet messages (``IpPacketOut`` and the burst ``IpPacketsOut``): a
netstack started with ``out_message=IpPacketOut`` hands each flow's output to the link as one message
per emit instead of one per packet (issue 14: 1,000 flows on two workers convoyed on this actor's
mailbox lock when every packet took it).
"""

from __future__ import annotations

import contextlib
import select

from pytsnet.actors.runtime import Actor, ActorRef, handles
from pytsnet.actors.runtime.errors import ActorStopped, MailboxFull
from pytsnet.messages.netstack import LinkPacketIn, LinkPacketOut
from pytsnet.messages.wgengine import IpPacketOut, IpPacketsIn, IpPacketsOut
from pytsnet.net.packetfd import PacketFd

__all__ = ["TunLinkActor"]


MAX_BURST = 1024  # packets per wakeup: at a few µs each, the GIL is held for a few ms at most


class TunLinkActor(Actor):
    def __init__(self, fd: int, target_name: str, *, hold_gil: bool = True) -> None:
        """``fd``: a non-blocking TUN fd; ``hold_gil=False`` reads with ``os.read`` (for comparison)."""
        self.fd = fd
        self._io = PacketFd(fd, hold_gil=hold_gil)
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
        burst = self._io.read_burst(MAX_BURST)
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

    @handles(LinkPacketOut, IpPacketOut)
    def on_out(self, msg: LinkPacketOut | IpPacketOut) -> None:
        self.written += self._io.write_burst((msg.data,))  # a refused write is a drop, as on a full link

    @handles(IpPacketsOut)
    def on_out_batch(self, msg: IpPacketsOut) -> None:
        self.bursts_written += 1
        self.written += self._io.write_burst(msg.packets)
