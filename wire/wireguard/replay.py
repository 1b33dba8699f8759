"""Sliding replay window over transport counters (replay/replay.go, RFC 6479 semantics).

A counter is accepted once if it is newer than everything seen, or at most ``WINDOW_SIZE`` behind
the newest and not seen before. The window is one Python int used as a bitmap (bit i = newest - i),
which accepts exactly what wireguard-go's 128 x 64-bit ring accepts.
"""

from __future__ import annotations

from pytsnet.wire.wireguard.constants import REJECT_AFTER_MESSAGES

BLOCK_BITS = 64
RING_BLOCKS = 128
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS  # 8128
_MASK = (1 << (WINDOW_SIZE + 1)) - 1


class ReplayFilter:
    __slots__ = ("_bits", "_last")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._last = 0
        self._bits = 0

    def validate_counter(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        """Record ``counter`` and return True if it is fresh; False for a replay, stale or over-limit one."""
        if counter >= limit:
            return False
        last = self._last
        if counter > last:
            shift = counter - last
            self._bits = ((self._bits << shift) | 1) & _MASK if shift <= WINDOW_SIZE else 1
            self._last = counter
            return True
        back = last - counter
        if back > WINDOW_SIZE:
            return False
        bit = 1 << back
        if self._bits & bit:
            return False
        self._bits |= bit
        return True
