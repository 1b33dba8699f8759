"""A netmap peer whose ``KeyExpiry`` has passed is refused even when control leaves ``Expired`` unset
(Go's client flags it itself: ``ipnlocal.flagExpiredPeers``). Found by the hostile control test.
And a control server that never says a key expired cannot keep the peer alive: the tracker's own
timer drops it at ``KeyExpiry`` (simulated time here; real nodes in
tests/device/test_device_key_expiry.py)."""

from __future__ import annotations

import time

from pytsnet.actors.peers import PeerTracker, admit
from pytsnet.actors.runtime import ActorRef, ActorSystem, ManualClock
from pytsnet.messages.base import Message
from pytsnet.messages.peers import GetPeers, NetmapUpdate, PeerInfo, PeersChanged, PeerTrackerSpawn
from pytsnet.testing.events import PeerEvents, settled
from pytsnet.wire.keys import DiscoPrivate, NodePrivate


def _peer(**kw: object) -> PeerInfo:
    kw.setdefault("node_id", 2)
    return PeerInfo(node_key=NodePrivate.generate().public().to_text(),  # type: ignore[arg-type]
                    disco_key=DiscoPrivate.generate().public().to_text(),
                    addresses=[f"100.64.0.{kw['node_id']}/32"], **kw)


def test_past_key_expiry_is_refused_without_the_expired_flag() -> None:
    now = time.time()
    me = NodePrivate.generate().public().to_text()
    assert admit(_peer(key_expiry=now - 1), me, now) == "node key expired"
    assert admit(_peer(key_expiry=now + 3600), me, now) is None
    assert admit(_peer(key_expiry=None), me, now) is None  # never expires


def _table(ref: ActorRef) -> tuple[list[int], dict[int, str]]:
    t = ref.ask(GetPeers())
    return [p.node_id for p in t.peers], {r.node_id: r.reason for r in t.rejected}


def test_tracker_drops_a_peer_at_its_key_expiry_with_no_netmap_in_simulated_time() -> None:
    """Control says nothing when a key runs out; the tracker's own timer (actor clock) removes the peer
    at its ``KeyExpiry`` — a second before, it is still there (Go's ``nmExpiryTimer``)."""
    clock = ManualClock(wall=1_800_000_000.0)
    events: list[Message] = []
    with ActorSystem("t", clock=clock) as system:
        sub = system.spawn(PeerEvents, events, name="events")
        ref = system.spawn(PeerTracker, PeerTrackerSpawn(subscribers=("events",)), name="peers")
        me = _peer(node_id=1, key_expiry=clock.time() + 3600)
        soon, later = _peer(node_id=2, key_expiry=clock.time() + 60), _peer(node_id=3, key_expiry=None)
        ref.ask(NetmapUpdate(self_node=me, peers=[soon, later]))
        assert _table(ref) == ([2, 3], {})
        clock.advance(59.5)
        assert _table(ref) == ([2, 3], {})
        clock.advance(1.0)
        assert _table(ref) == ([3], {2: "node key expired"})
        settled(sub)
        gone = [e for e in events if isinstance(e, PeersChanged)][-1]
        assert gone.removed == [2] and [p.node_id for p in gone.peers] == [3]
        # Extended by control: the next netmap brings it back, and the timer is armed again.
        ref.ask(NetmapUpdate(self_node=me, peers=[soon.model_copy(update={"key_expiry": clock.time() + 30}),
                                                  later]))
        assert _table(ref) == ([2, 3], {})
        clock.advance(31)
        assert _table(ref) == ([3], {2: "node key expired"})
        # Our own key running out admits no one (the node must be extended or log in again).
        clock.advance(3600)
        assert _table(ref) == ([], {2: "our node key expired", 3: "our node key expired"})


def test_tracker_refuses_every_peer_while_our_own_key_is_expired() -> None:
    now = time.time()
    with ActorSystem("t") as system:
        ref = system.spawn(PeerTracker, name="peers")
        ref.ask(NetmapUpdate(self_node=_peer(node_id=1, expired=True), peers=[_peer(node_id=2)]))
        assert _table(ref) == ([], {2: "our node key expired"})
        ref.ask(NetmapUpdate(self_node=_peer(node_id=1, key_expiry=now + 60), peers=[_peer(node_id=2)]))
        assert _table(ref) == ([2], {})
