"""``QueueSignal``: the local congestion signal shared by every flow that feeds one link sink.

A flow that finds the sink's queue over ``TcpConfig.local_queue_limit`` after it emits, or whose
timer tick comes more than 0.2 s late (the pool is the queue), opens a congestion episode; every flow
of that sink reduces its window once for the episode when it next
runs (``TcpConnection.on_local_congestion``: once per window, nothing resent), not only the flows
that happened to emit while the queue was long. Issue 14: with the check alone, a flow that was not
emitting at those moments escaped every cut and kept a window 5-10x its neighbours', so a rate
5-10x theirs; a drop-tail queue shared by all the flows would have hit them all.
"""

from __future__ import annotations

__all__ = ["QueueSignal"]


class QueueSignal:
    """An episode counter; each flow remembers the last episode it answered."""

    __slots__ = ("episode",)

    def __init__(self) -> None:
        self.episode = 0

    def congested(self) -> None:
        """The queue is over its bound now: a new episode (GIL-atomic enough; a lost increment
        only merges two episodes)."""
        self.episode += 1
