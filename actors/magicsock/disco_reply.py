"""Disco pings answered on the UDP reader thread.

A pong is the second half of the peer's RTT sample. Told to the DiscoPinger, a ping waited for that
actor's thread to get the GIL behind bulk data (issue 14: single pongs of 10-15 ms under a transfer
on loopback); Go answers in its read loop. The DiscoPinger publishes, per UDP router, the keys that
open its peers' boxes (``PongKeys``, replaced whole, never mutated); the reader opens a ping from a
known disco key, seals the pong and sends it on the router's socket, then tells the pinger with
``DiscoIn.answered`` set: the pinger keeps the path bookkeeping and sends no second pong.

Nothing is trusted more for being answered here: the same keys open the box, an unknown key or a box
that does not open is left to the pinger (which drops and counts it, as before). A token bucket caps
the boxes the reader opens, so boxes forged under a known key cost the pinger's thread past it, not
the data plane's, and a TxID repeated from one source gets no second pong, as the pinger's endpoint
rule (``Endpoint.on_ping``) has it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from pytsnet.actors.magicsock import udp_lane
from pytsnet.actors.runtime import ActorRef
from pytsnet.wire import disco
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import DiscoPrivate, DiscoPublic
from pytsnet.wire.magicsock.addr import AddrParseError, parse_addr
from pytsnet.wire.wireguard.ratelimit import TokenBucket

__all__ = ["ANSWERS_PER_SECOND", "PingAnswerer", "PongKeys", "publish", "withdraw"]

ANSWERS_PER_SECOND = 200.0
"""Pings the reader opens per second (Go's heartbeat is one per endpoint every 3 s); more go to the
DiscoPinger, which answers them as it always did."""
_REMEMBERED = 64  # sources whose last TxID the reader keeps (Go's endpoint limit, MAX_ENDPOINTS)


@dataclass(frozen=True)
class PongKeys:
    """Our disco key and the shared box keys of the peers we know, by their disco key."""

    me: DiscoPrivate
    shared: Mapping[DiscoPublic, disco.DiscoShared]


_lock = threading.Lock()
_keys: dict[ActorRef, PongKeys] = {}


def publish(owner: ActorRef, keys: PongKeys) -> None:
    """The DiscoPinger's peer set changed: ``owner``'s (the UDP router's) reader answers with these."""
    with _lock:
        _keys[owner] = keys


def withdraw(owner: ActorRef) -> None:
    """The DiscoPinger stops: its pings go unanswered by the reader until it publishes again."""
    with _lock:
        _keys.pop(owner, None)


class PingAnswerer:
    """The reader thread's half: ``answer`` a datagram if it is a ping it can open."""

    def __init__(self, owner: ActorRef) -> None:
        self._owner = owner
        self._budget = TokenBucket(ANSWERS_PER_SECOND, ANSWERS_PER_SECOND / 4)
        self._last_tx: dict[str, bytes] = {}  # source -> TxID of its last ping answered
        self.answered = 0

    def answer(self, data: bytes, src: str, now: float) -> bool:
        """True when the ping in ``data`` from ``src`` (``ip:port``) is answered (a repeated TxID:
        needs none); False leaves it to the DiscoPinger."""
        keys = _keys.get(self._owner)
        if keys is None:
            return False
        try:
            shared = keys.shared.get(disco.source(data))
        except WireError:
            return False
        if shared is None or not self._budget.allow(now):
            return False
        try:
            _, msg = disco.open_packet(keys.me, data, shared)
            ap = parse_addr(src)
        except (WireError, AddrParseError):
            return False
        if not isinstance(msg, disco.Ping):
            return False
        last = self._last_tx
        if last.get(src) == msg.tx_id:
            return True
        if len(last) >= _REMEMBERED and src not in last:
            del last[next(iter(last))]
        last[src] = msg.tx_id
        pong = disco.seal_packet(keys.me, shared, disco.Pong(msg.tx_id, ap))
        if not udp_lane.send(self._owner, pong, (str(ap[0]), ap[1])):
            del last[src]
            return False
        self.answered += 1
        return True
