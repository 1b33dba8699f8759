"""WireGuard datagrams for a peer magicsock cannot reach yet, held briefly instead of dropped.

A peer can be known to the engine a moment before magicsock has a path to it: its netmap entry
arrived before control told us its home DERP region (a node that just joined), or the engine's
config overtook the path table. A handshake initiation dropped there costs WireGuard's 5 s retry
(``REKEY_TIMEOUT``), which is the first-dial stall. Held here for up to ``PARK_TTL`` seconds, it goes
out the moment a path appears; it is never sent anywhere else (fail closed). Bounded per peer and in
peers; what is pushed out or outlives its wait is dropped and counted by the caller.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

PARK_TTL = 2.0
"""Seconds a datagram waits for a path: well inside WireGuard's 5 s handshake retry, so a late
initiation still beats the retry and a stale one is not sent after it."""
PARK_PER_PEER = 8
"""Datagrams held per peer (an initiation and its retries, keepalives): the oldest go first."""
PARK_PEERS = 128
"""Peers with held datagrams at once; a datagram for one more is dropped at once."""


class ParkedSends:
    """Per-peer FIFOs of ``(parked_at, datagram)``; every method takes the time (sans-IO)."""

    def __init__(self, ttl: float = PARK_TTL, per_peer: int = PARK_PER_PEER, peers: int = PARK_PEERS) -> None:
        self.ttl = ttl
        self.per_peer = per_peer
        self.max_peers = peers
        self._held: dict[str, deque[tuple[float, bytes]]] = {}

    def __contains__(self, peer: object) -> bool:
        return peer in self._held

    def __len__(self) -> int:
        return sum(len(q) for q in self._held.values())

    def park(self, peer: str, datas: Iterable[bytes], now: float) -> int:
        """Hold ``datas`` for ``peer``; how many of its datagrams were dropped to make room (or
        refused: ``max_peers`` others hold some already). Call ``expire`` first to free room."""
        dropped = 0
        q = self._held.get(peer)
        if q is None:
            if len(self._held) >= self.max_peers:
                return sum(1 for _ in datas)
            q = self._held[peer] = deque()
        for d in datas:
            if len(q) >= self.per_peer:
                q.popleft()
                dropped += 1
            q.append((now, d))
        return dropped

    def take(self, peer: str, now: float) -> tuple[tuple[bytes, ...], int]:
        """The datagrams still fresh for ``peer``, in order (released), and how many had expired."""
        q = self._held.pop(peer, None)
        if q is None:
            return (), 0
        fresh = tuple(d for at, d in q if now - at <= self.ttl)
        return fresh, len(q) - len(fresh)

    def expire(self, now: float) -> dict[str, int]:
        """Drop what outlived ``ttl``: how many datagrams, per peer."""
        dropped: dict[str, int] = {}
        for peer in [p for p, q in self._held.items() if now - q[0][0] > self.ttl]:
            q = self._held[peer]
            while q and now - q[0][0] > self.ttl:
                q.popleft()
                dropped[peer] = dropped.get(peer, 0) + 1
            if not q:
                del self._held[peer]
        return dropped

    def forget(self, peer: str) -> int:
        """The peer is gone: drop what it had held; how many."""
        q = self._held.pop(peer, None)
        return len(q) if q else 0
