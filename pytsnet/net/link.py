"""A link actor over a TUN fd: the netstack's packet source and sink in tests and benchmarks.

Reads block in an IO loop (select with a short timeout) and go straight to the netstack actor as
``LinkPacketIn``; ``LinkPacketOut`` is written to the fd. In the device the WireGuard engine plays
this role instead.
"""

from __future__ import annotations

import contextlib
import os
import select

from pytsnet.actors.runtime import Actor, ActorRef, handles
from pytsnet.actors.runtime.errors import ActorStopped, MailboxFull
from pytsnet.messages.netstack import LinkPacketIn, LinkPacketOut

__all__ = ["TunLinkActor"]


class TunLinkActor(Actor):
    def __init__(self, fd: int, target_name: str) -> None:
        self.fd = fd
        self.target_name = target_name
        self._target: ActorRef | None = None
        self.written = 0
        self.read = 0

    def on_start(self) -> None:
        self.start_io_loop(self._read_some)

    def _read_some(self) -> None:
        ready, _, _ = select.select([self.fd], [], [], 0.2)
        if not ready:
            return None
        target = self._target or self.lookup(self.target_name)
        self._target = target
        for _ in range(64):
            try:
                pkt = os.read(self.fd, 65535)
            except (BlockingIOError, InterruptedError):
                break
            self.read += 1
            if target is not None:
                with contextlib.suppress(ActorStopped, MailboxFull):
                    target.tell(LinkPacketIn(data=pkt))
        return None

    @handles(LinkPacketOut)
    def on_out(self, msg: LinkPacketOut) -> None:
        with contextlib.suppress(OSError):  # a refused write is a drop, as on a full link
            os.write(self.fd, msg.data)
            self.written += 1
