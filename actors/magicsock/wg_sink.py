"""Hand inbound WireGuard datagrams to the engine: a burst as one message where the sink takes it."""

from __future__ import annotations

from typing import Literal

from pytsnet.actors.runtime import ActorRef, ActorStopped, MailboxFull, UnhandledMessage
from pytsnet.messages.magicsock import WgDatagramIn, WgDatagramsIn


class WgSinkDelivery:
    """Remembers whether the sink handles ``WgDatagramsIn`` (test rigs may take only single datagrams).

    Called from the UDP reader thread and the DERP clients; each caller owns its own instance."""

    def __init__(self) -> None:
        self.batches = True
        self.dropped = 0  # datagrams the sink's full mailbox refused (past its block timeout)

    def deliver(self, ref: ActorRef | None, via: Literal["udp", "derp"], datas: list[bytes], srcs: list[str],
                peers: list[str | None]) -> None:
        """A sink that is gone or restarting loses these datagrams, as a wire would; not our failure."""
        if ref is None or not datas:
            return
        try:
            if len(datas) > 1 and self.batches:
                try:
                    ref.tell(WgDatagramsIn.model_construct(via=via, datas=tuple(datas), srcs=tuple(srcs),
                                                           peers=tuple(peers)))
                    return
                except UnhandledMessage:
                    self.batches = False
            for data, src, peer in zip(datas, srcs, peers, strict=True):
                ref.tell(WgDatagramIn.model_construct(peer=peer, data=data, via=via, src=src))
        except ActorStopped:
            pass
        except MailboxFull:
            self.dropped += len(datas)
