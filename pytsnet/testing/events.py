"""``PeerEvents``: a named subscriber that keeps every ``PeersChanged`` it is told (tests).

The PeerTracker tells its subscribers by name (``PeerTrackerSpawn``); a test spawns this under a
name, lists it there, and calls ``settled(ref)`` before reading the list: every change told before
that call has then been kept."""

from __future__ import annotations

from pytsnet.actors.runtime import Actor, ActorRef, handles
from pytsnet.messages.base import Message
from pytsnet.messages.peers import PeersChanged
from pytsnet.messages.runtime import Count, Total

__all__ = ["PeerEvents", "settled"]


class PeerEvents(Actor):
    def __init__(self, got: list[Message]) -> None:
        self.got = got

    @handles(PeersChanged)
    def on_changed(self, msg: PeersChanged) -> None:
        self.got.append(msg)

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=len(self.got))


def settled(ref: ActorRef) -> None:
    """Wait until the collector at ``ref`` handled everything told to it before this call."""
    ref.ask(Count(), timeout=5)
