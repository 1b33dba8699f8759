"""A netmap peer whose ``KeyExpiry`` has passed is refused even when control leaves ``Expired`` unset
(Go's client flags it itself: ``ipnlocal.flagExpiredPeers``). Found by the hostile control test."""

from __future__ import annotations

import time

from pytsnet.actors.peers import admit
from pytsnet.messages.peers import PeerInfo
from pytsnet.wire.keys import DiscoPrivate, NodePrivate


def _peer(**kw: object) -> PeerInfo:
    return PeerInfo(node_id=2, node_key=NodePrivate.generate().public().to_text(),  # type: ignore[arg-type]
                    disco_key=DiscoPrivate.generate().public().to_text(), addresses=["100.64.0.2/32"], **kw)


def test_past_key_expiry_is_refused_without_the_expired_flag() -> None:
    now = time.time()
    me = NodePrivate.generate().public().to_text()
    assert admit(_peer(key_expiry=now - 1), me, now) == "node key expired"
    assert admit(_peer(key_expiry=now + 3600), me, now) is None
    assert admit(_peer(key_expiry=None), me, now) is None  # never expires
