"""The PeerTracker enforcing Tailnet Lock as an actor: fail closed while the netmap says the lock is on
and no verified authority covers it, admit signed peers once it arrives, keep enforcing a held
authority when a netmap stops naming the lock, and hold nothing across a restart (ask the TKA actor)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytsnet.actors.peers import PeerTracker
from pytsnet.actors.peers.tka_filter import MISSING_SIGNATURE, NO_AUTHORITY
from pytsnet.actors.runtime import Actor, ActorSystem, handles
from pytsnet.actors.runtime.faults import FaultInjector
from pytsnet.messages.base import Message
from pytsnet.messages.peers import GetPeers, NetmapUpdate, PeerInfo, PeersChanged, PeerTable, PeerTrackerSpawn
from pytsnet.messages.tka import TkaAuthorityUpdate, TkaAuthorityWanted
from pytsnet.testing.events import PeerEvents, settled
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import DiscoPrivate, NLPrivate, NodePrivate
from pytsnet.wire.tka import Key, KeyKind, State, sign_direct

pytestmark = pytest.mark.timeout(30)

HEAD = "A" * 52
NEWER = "B" * 52


def _node(i: int, nl: NLPrivate | None) -> PeerInfo:
    key = NodePrivate.generate().public()
    return PeerInfo(node_id=i, stable_id=f"n{i}", node_key=key.to_text(),
                    disco_key=DiscoPrivate.generate().public().to_text(), addresses=[f"100.64.0.{i}/32"],
                    key_signature=sign_direct(key, nl).serialize() if nl is not None else b"")


class TkaStub(Actor):
    """Stands in for the TKA actor: counts ``TkaAuthorityWanted`` and answers with what it holds."""

    def __init__(self, asked: list[str], current: list[TkaAuthorityUpdate]) -> None:
        self.asked, self.current = asked, current

    @handles(TkaAuthorityWanted)
    def on_wanted(self, msg: TkaAuthorityWanted) -> None:
        self.asked.append(msg.reply_to)
        if self.current:
            self.tell_named(msg.reply_to, self.current[-1])


@pytest.fixture
def lock() -> Iterator[tuple[NLPrivate, TkaAuthorityUpdate]]:
    nl = NLPrivate.generate()
    state = State(last_aum_hash=None, disablement_secrets=(b"\x01" * 32,),
                  keys=(Key(kind=KeyKind.KEY25519, votes=1, public=nl.public().raw),))
    yield nl, TkaAuthorityUpdate(enabled=True, head=HEAD, state=state.to_cbor(), seq=1)


def _ids(t: PeerTable) -> list[int]:
    return [p.node_id for p in t.peers]


def _reasons(t: PeerTable) -> dict[int, str]:
    return {r.node_id: r.reason for r in t.rejected}


def test_fail_closed_until_the_authority_then_admits_signed(
        lock: tuple[NLPrivate, TkaAuthorityUpdate]) -> None:
    nl, update = lock
    me, signed, unsigned = _node(1, nl), _node(2, nl), _node(3, None)
    events: list[Message] = []
    with ActorSystem("tka-tracker") as system:
        sub = system.spawn(PeerEvents, events, name="events")
        ref = system.spawn(PeerTracker, PeerTrackerSpawn(subscribers=("events",)), name="peers")
        nm = NetmapUpdate(self_node=me, peers=[signed, unsigned], tka_enabled=True, tka_head=HEAD)
        ref.ask(nm)
        t = ref.ask(GetPeers())
        assert _ids(t) == [] and _reasons(t) == {2: NO_AUTHORITY, 3: NO_AUTHORITY}
        # An authority for an older head than the netmap's does not admit anyone new either.
        ref.tell(update.model_copy(update={"head": "C" * 52}))
        assert _ids(ref.ask(GetPeers())) == []
        ref.tell(update)
        t = ref.ask(GetPeers())
        assert _ids(t) == [2] and _reasons(t) == {3: MISSING_SIGNATURE} and not t.locked_out
        # The netmap moves to a head the authority has not reached: the admitted peer stays (it still
        # verifies), a newly signed peer waits for the authority.
        late = _node(4, nl)
        ref.ask(nm.model_copy(update={"peers": [signed, unsigned, late], "tka_head": NEWER}))
        t = ref.ask(GetPeers())
        assert _ids(t) == [2] and _reasons(t)[4] == NO_AUTHORITY
        ref.tell(update.model_copy(update={"head": NEWER, "ancestors": [HEAD], "seq": 2}))
        assert _ids(ref.ask(GetPeers())) == [2, 4]
        # A netmap that stops naming the lock does not switch it off: the held authority still filters.
        ref.ask(nm.model_copy(update={"tka_enabled": False, "tka_head": "",
                                      "peers": [signed, unsigned, late]}))
        assert _ids(ref.ask(GetPeers())) == [2, 4]
        # Only the TKA actor turns it off (after verifying a disablement secret).
        ref.tell(TkaAuthorityUpdate(enabled=False, seq=3))
        assert _ids(ref.ask(GetPeers())) == [2, 3, 4]
        settled(sub)
    added = [p.node_id for e in events if isinstance(e, PeersChanged) for p in e.added]
    assert added == [2, 4, 3]  # the unsigned peer never entered while the lock was on


def test_self_lockout_is_reported(lock: tuple[NLPrivate, TkaAuthorityUpdate]) -> None:
    nl, update = lock
    with ActorSystem("tka-lockout") as system:
        ref = system.spawn(PeerTracker, PeerTrackerSpawn(), name="peers")
        ref.tell(update)
        ref.ask(NetmapUpdate(self_node=_node(1, None), peers=[_node(2, nl)], tka_enabled=True, tka_head=HEAD))
        t = ref.ask(GetPeers())
        assert t.locked_out and _ids(t) == [2]  # peers stay: they will not talk to us until we are signed
        ref.ask(NetmapUpdate(self_node=_node(1, nl), peers=[_node(2, nl)], tka_enabled=True, tka_head=HEAD))
        assert not ref.ask(GetPeers()).locked_out


def test_unusable_authority_update_fails_closed(lock: tuple[NLPrivate, TkaAuthorityUpdate]) -> None:
    nl, update = lock
    with ActorSystem("tka-bad-update") as system:
        ref = system.spawn(PeerTracker, PeerTrackerSpawn(), name="peers")
        ref.tell(update.model_copy(update={"state": b"\xff\x00 not cbor"}))
        ref.ask(NetmapUpdate(self_node=_node(1, nl), peers=[_node(2, nl)]))  # even with the netmap silent
        t = ref.ask(GetPeers())
        assert _ids(t) == [] and _reasons(t) == {2: NO_AUTHORITY}


def test_restarted_tracker_holds_nothing_and_asks(lock: tuple[NLPrivate, TkaAuthorityUpdate]) -> None:
    nl, update = lock
    asked: list[str] = []
    current: list[TkaAuthorityUpdate] = []
    nm = NetmapUpdate(self_node=_node(1, nl), peers=[_node(2, nl), _node(3, None)], tka_enabled=True,
                      tka_head=HEAD)
    with ActorSystem("tka-restart") as system:
        system.spawn(TkaStub, asked, current, name="tka")
        ref = system.spawn(PeerTracker, PeerTrackerSpawn(tka="tka"), name="peers")
        wait_until(lambda: asked == ["peers"], 5, "the tracker asked for the authority at start")
        ref.ask(nm)
        assert _ids(ref.ask(GetPeers())) == []  # the TKA actor has nothing yet: fail closed
        current.append(update)
        ref.tell(update)
        ref.ask(nm)
        assert _ids(ref.ask(GetPeers())) == [2]
        current.clear()  # the TKA actor is itself still syncing when the tracker restarts
        FaultInjector.kill_now(ref, "chaos: the tracker")
        wait_until(lambda: ref.incarnation > 1 and len(asked) == 2, 5, "restarted and asked again")
        ref.tell(nm)  # control re-sends the netmap: nothing signature-needing is admitted meanwhile
        t = ref.ask(GetPeers())
        assert _ids(t) == [] and _reasons(t) == {2: NO_AUTHORITY, 3: NO_AUTHORITY}
        current.append(update)
        FaultInjector.kill_now(ref, "chaos: the tracker again")
        wait_until(lambda: ref.incarnation > 2 and len(asked) == 3, 5, "restarted and asked again")
        ref.tell(nm)
        wait_until(lambda: _ids(ref.ask(GetPeers())) == [2], 5, "admitted once the authority is told")
