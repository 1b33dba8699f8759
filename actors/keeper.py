"""``MemoryKeeper``: holds the restart memory of the actors of one tree, by message only.

It never asks anyone, so a restarting actor's ``Recall`` in ``on_start`` cannot deadlock; it holds
immutable snapshots (messages), one per owner name, so nothing it hands out can be changed by the
actor that gets it. See ``messages.memory``.
"""

from __future__ import annotations

import contextlib

from pytsnet.actors.runtime import Actor, ActorRef, ActorStopped, AskTimeout, handles
from pytsnet.messages.memory import Forget, Recall, Recalled, Remember, Snapshot

__all__ = ["MEMORY", "MemoryKeeper", "recall", "remember"]

MEMORY = "memory"
"""The keeper's name in a device's tree."""


class MemoryKeeper(Actor):
    def __init__(self) -> None:
        self.snapshots: dict[str, Snapshot] = {}

    @handles(Remember)
    def on_remember(self, msg: Remember) -> None:
        self.snapshots[msg.owner] = msg.snapshot

    @handles(Recall)
    def on_recall(self, msg: Recall) -> Recalled:
        return Recalled(snapshot=self.snapshots.get(msg.owner))

    @handles(Forget)
    def on_forget(self, msg: Forget) -> None:
        for owner in msg.owners:
            self.snapshots.pop(owner, None)


def remember(actor: Actor, keeper: str | None, snapshot: Snapshot) -> None:
    """Tell ``keeper`` (if the tree has one) ``actor``'s new snapshot."""
    ref = actor.lookup(keeper) if keeper else None
    if ref is not None:
        with contextlib.suppress(ActorStopped):
            ref.tell(Remember(owner=actor.name, snapshot=snapshot))


def recall(actor: Actor, keeper: str | None) -> Snapshot | None:
    """``actor``'s last snapshot, or None (no keeper, a first start, or the keeper did not answer)."""
    ref: ActorRef | None = actor.lookup(keeper) if keeper else None
    if ref is None:
        return None
    try:
        got = ref.ask(Recall(owner=actor.name), timeout=2.0)
    except (AskTimeout, ActorStopped):
        return None
    return got.snapshot if isinstance(got, Recalled) else None
