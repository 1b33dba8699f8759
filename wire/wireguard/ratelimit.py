"""Handshake budget per source (device/ratelimiter.go): a token bucket per key, sans-IO.

Under load, a handshake initiation that carries a valid cookie (so its source address is real) may
still cost a DH only within its source's budget: ``PACKETS_PER_SECOND`` per key with a burst of
``PACKETS_BURSTABLE``, as wireguard-go. Idle entries are forgotten after ``GC_INTERVAL``; the table
holds at most ``max_entries`` keys and refuses new ones beyond that (fail closed, bounded memory).
"""

from __future__ import annotations

PACKETS_PER_SECOND = 20
PACKETS_BURSTABLE = 5
GC_INTERVAL = 1.0
PACKET_COST = 1.0 / PACKETS_PER_SECOND  # seconds of tokens one handshake costs
MAX_TOKENS = PACKET_COST * PACKETS_BURSTABLE


class RateLimiter:
    """``allow(key, now)``: True while ``key`` (a source IP, as bytes) is within its budget."""

    def __init__(self, max_entries: int = 1 << 16) -> None:
        self._max = max_entries
        self._table: dict[bytes, list[float]] = {}  # key -> [last seen, tokens (seconds)]
        self._last_gc = float("-inf")

    def __len__(self) -> int:
        return len(self._table)

    def allow(self, key: bytes, now: float) -> bool:
        if now - self._last_gc >= GC_INTERVAL:
            self._gc(now)
        entry = self._table.get(key)
        if entry is None:
            if len(self._table) >= self._max:
                return False
            self._table[key] = [now, MAX_TOKENS - PACKET_COST]
            return True
        tokens = min(MAX_TOKENS, entry[1] + max(0.0, now - entry[0]))
        entry[0] = now
        if tokens >= PACKET_COST:
            entry[1] = tokens - PACKET_COST
            return True
        entry[1] = tokens
        return False

    def _gc(self, now: float) -> None:
        self._last_gc = now
        stale = [k for k, (seen, _) in self._table.items() if now - seen > GC_INTERVAL]
        for k in stale:
            del self._table[k]


class TokenBucket:
    """One budget of ``rate`` per second with a burst of ``burst``: ``allow(now)`` spends a token."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._last = float("-inf")

    def allow(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
