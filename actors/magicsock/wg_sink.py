"""Hand inbound WireGuard datagrams to the engine: a burst as one message where the sink takes it."""

from __future__ import annotations

from pytsnet.actors.runtime import ActorRef, ActorStopped, UnhandledMessage
from pytsnet.messages.magicsock import WgDatagramIn, WgDatagramsIn


class WgSinkDelivery:
    """Remembers whether the sink handles ``WgDatagramsIn`` (test rigs may take only single datagrams)."""

    def __init__(self) -> None:
        self.batches = True

    def deliver(self, ref: ActorRef | None, datagrams: list[WgDatagramIn]) -> None:
        """A sink that is gone or restarting loses these datagrams, as a wire would; not our failure."""
        if ref is None or not datagrams:
            return
        try:
            if len(datagrams) > 1 and self.batches:
                try:
                    ref.tell(WgDatagramsIn.model_construct(datagrams=tuple(datagrams)))
                    return
                except UnhandledMessage:
                    self.batches = False
            for d in datagrams:
                ref.tell(d)
        except ActorStopped:
            pass
