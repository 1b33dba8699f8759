"""``FallbackChannel``: SYNs the fallback TCP handlers must decide on, netstack -> the app's dispatcher.

Go's tsnet calls its fallback handlers (``RegisterFallbackTCPHandler``) for a flow no listener takes.
Here the Stack holds such a SYN as it holds a forwarded one (bounded by
``StackConfig.max_forward_pending``), the NetstackActor pushes it on this channel, and the device's
dispatcher (``pytsnet/services/fallback.py``) runs the callbacks outside the actor (they are app code
and may block) and answers with ``ForwardTcpAccept`` or ``ForwardTcpRefuse``. The channel lives in the
``FlowRegistry`` so a restarted NetstackActor keeps the same one (the SYNs its Stack held are lost
with that Stack: the peer's retransmission asks again).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from pytsnet.actors.netstack.channel import Waitable

__all__ = ["FallbackChannel", "FallbackSyn"]


@dataclass(frozen=True, slots=True)
class FallbackSyn:
    """A peer's SYN to ``dst``:``dport`` on this node, from ``src``:``sport``; ``service``: the VIP
    service ``dst`` belongs to ("" for one of the node's own addresses)."""

    src: str
    sport: int
    dst: str
    dport: int
    service: str = ""


class FallbackChannel(Waitable):
    """Bounded (a full channel refuses the SYN: the netstack resets it, counted)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.queue: collections.deque[FallbackSyn] = collections.deque()
        self.closed = False
        self.dispatched = False
        """The device started its dispatcher on this channel (one per channel)."""

    def push(self, syn: FallbackSyn) -> bool:
        with self.lock:
            if self.closed or len(self.queue) >= self.limit:
                return False
            self.queue.append(syn)
        self.notify()
        return True

    def take(self) -> FallbackSyn | None:
        with self.lock:
            return self.queue.popleft() if self.queue else None

    def ready(self) -> bool:
        return bool(self.queue) or self.closed

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.queue.clear()
        self.notify()
