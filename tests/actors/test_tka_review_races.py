"""Review of issue 21 (r1): the PeerTracker must not admit an unsigned peer before the TKA actor has told it
whether this node holds a verified authority. A restarted tracker asks the TKA actor and control at once;
if control's netmap (saying the lock is off) is handled before the TKA actor's answer, the tracker holds
no authority and admits every peer until the answer arrives (fail open for that window).

Fixed by 21i: a tracker with a TKA actor admits no one until that actor has told it (an update, also
"no authority"); the TKA actor tells its subscribers at every start and answers every
``TkaAuthorityWanted``."""

from __future__ import annotations

import pytest

from pytsnet.actors.peers import PeerTracker
from pytsnet.actors.runtime import ActorSystem
from pytsnet.messages.base import Message
from pytsnet.messages.peers import GetPeers, NetmapUpdate, PeerInfo, PeersChanged, PeerTrackerSpawn
from pytsnet.messages.tka import TkaAuthorityUpdate
from pytsnet.testing.events import PeerEvents, settled
from pytsnet.wire.keys import DiscoPrivate, NLPrivate, NodePrivate
from pytsnet.wire.tka import Key, KeyKind, State, sign_direct

pytestmark = pytest.mark.timeout(30)
HEAD = "A" * 52


def _node(i: int, nl: NLPrivate | None) -> PeerInfo:
    key = NodePrivate.generate().public()
    return PeerInfo(node_id=i, stable_id=f"n{i}", node_key=key.to_text(),
                    disco_key=DiscoPrivate.generate().public().to_text(), addresses=[f"100.64.0.{i}/32"],
                    key_signature=sign_direct(key, nl).serialize() if nl is not None else b"")


def test_no_peer_admitted_before_the_tka_actor_answers() -> None:
    nl = NLPrivate.generate()
    state = State(last_aum_hash=None, disablement_secrets=(b"\x01" * 32,),
                  keys=(Key(kind=KeyKind.KEY25519, votes=1, public=nl.public().raw),))
    update = TkaAuthorityUpdate(enabled=True, head=HEAD, state=state.to_cbor(), seq=1)
    events: list[Message] = []
    with ActorSystem("tka-review-race") as system:
        sub = system.spawn(PeerEvents, events, name="events")
        # A TKA actor is configured, but its answer (it holds a verified authority) is still on its way.
        ref = system.spawn(PeerTracker, PeerTrackerSpawn(subscribers=("events",), tka="tka"), name="peers")
        unsigned = _node(3, None)
        # Control (hostile, or simply a netmap naming no lock) is answered first.
        ref.ask(NetmapUpdate(self_node=_node(1, nl), peers=[unsigned], tka_enabled=False))
        ref.tell(update)
        ref.ask(GetPeers())
        settled(sub)
    added = [p.node_id for e in events if isinstance(e, PeersChanged) for p in e.added]
    assert 3 not in added
