"""Sliding replay window over transport counters (replay/replay.go, RFC 6479 semantics).

A counter is accepted once if it is newer than everything seen, or at most ``WINDOW_SIZE`` behind
the newest and not seen before. Like wireguard-go, the window is a ring of 128 64-bit blocks, so an
in-order packet touches one small int (a single 8 Kib bitmap int would be shifted and reallocated
on every packet).
"""

from __future__ import annotations

from pytsnet.wire.wireguard.constants import REJECT_AFTER_MESSAGES

BLOCK_BITS = 64
RING_BLOCKS = 128
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS  # 8128
_BLOCK_SHIFT = 6
_BIT_MASK = BLOCK_BITS - 1
_RING_MASK = RING_BLOCKS - 1


class ReplayFilter:
    __slots__ = ("_last", "_ring")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._last = 0
        self._ring = [0] * RING_BLOCKS

    def validate_counter(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        """Record ``counter`` and return True if it is fresh; False for a replay, stale or over-limit one."""
        if counter >= limit:
            return False
        ring = self._ring
        block = counter >> _BLOCK_SHIFT
        last = self._last
        if counter > last:
            current = last >> _BLOCK_SHIFT
            if block != current:  # in order within a block (63 of 64 packets) clears nothing
                diff = block - current
                if diff > RING_BLOCKS:
                    diff = RING_BLOCKS
                for i in range(current + 1, current + diff + 1):
                    ring[i & _RING_MASK] = 0
            self._last = counter
        elif last - counter > WINDOW_SIZE:
            return False
        idx = block & _RING_MASK
        bit = 1 << (counter & _BIT_MASK)
        word = ring[idx]
        if word & bit:
            return False
        ring[idx] = word | bit
        return True
