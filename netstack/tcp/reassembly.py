"""Bounded out-of-order receive queue and SACK block generation (RFC 2018 §4).

Blocks are kept as lists of chunks so that a run of in-order arrivals behind a hole costs an
append, not a copy; positions are unbounded stream offsets, never 32-bit sequence numbers.
"""

from __future__ import annotations

import bisect

MAX_CHUNKS_PER_BLOCK = 256


class _Block:
    __slots__ = ("chunks", "end", "start")

    def __init__(self, start: int, data: bytes) -> None:
        self.start = start
        self.end = start + len(data)
        self.chunks = [data]


class Reassembler:
    """Holds data above RCV.NXT until the hole before it is filled; at most ``limit`` bytes."""

    __slots__ = ("_blocks", "_buffered", "_recent", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._blocks: list[_Block] = []
        self._buffered = 0
        self._recent: list[int] = []  # start offsets of most recently touched blocks, newest first

    @property
    def buffered(self) -> int:
        return self._buffered

    def __bool__(self) -> bool:
        return bool(self._blocks)

    def insert(self, start: int, data: bytes) -> None:
        """Store the parts of ``data`` (at stream offset ``start``) not already held, within the limit."""
        end = start + len(data)
        if end <= start:
            return
        blocks = self._blocks
        starts = [b.start for b in blocks]
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        pieces: list[tuple[int, bytes]] = []
        pos = start
        while i < len(blocks) and pos < end:
            b = blocks[i]
            if b.end <= pos:
                i += 1
                continue
            if b.start > pos:
                stop = min(b.start, end)
                pieces.append((pos, data[pos - start:stop - start]))
            pos = max(pos, b.end)
            i += 1
        if pos < end:
            pieces.append((pos, data[pos - start:]))
        touched = start
        for pstart, pdata in pieces:
            room = self.limit - self._buffered
            if room <= 0:
                break
            if len(pdata) > room:
                pdata = pdata[:room]
            self._buffered += len(pdata)
            self._add(pstart, pdata)
        self._note_recent(touched)

    def _add(self, start: int, data: bytes) -> None:
        blocks = self._blocks
        starts = [b.start for b in blocks]
        i = bisect.bisect_right(starts, start)
        end = start + len(data)
        prev = blocks[i - 1] if i > 0 else None
        nxt = blocks[i] if i < len(blocks) else None
        if prev is not None and prev.end == start:
            prev.chunks.append(data)
            prev.end = end
            if nxt is not None and nxt.start == end:
                prev.chunks.extend(nxt.chunks)
                prev.end = nxt.end
                del blocks[i]
            if len(prev.chunks) > MAX_CHUNKS_PER_BLOCK:
                prev.chunks = [b"".join(prev.chunks)]
        elif nxt is not None and nxt.start == end:
            nxt.chunks.insert(0, data)
            nxt.start = start
        else:
            blocks.insert(i, _Block(start, data))

    def _note_recent(self, pos: int) -> None:
        r = self._recent
        if pos in r:
            r.remove(pos)
        r.insert(0, pos)
        del r[4:]

    def pop_ready(self, rcv_nxt: int) -> tuple[list[bytes], int]:
        """Remove data now contiguous with ``rcv_nxt``; return its chunks and the new RCV.NXT."""
        out: list[bytes] = []
        blocks = self._blocks
        while blocks and blocks[0].start <= rcv_nxt:
            b = blocks.pop(0)
            self._buffered -= b.end - b.start
            if b.end > rcv_nxt:
                skip = rcv_nxt - b.start
                for c in b.chunks:
                    if skip >= len(c):
                        skip -= len(c)
                        continue
                    out.append(c[skip:] if skip else c)
                    skip = 0
                rcv_nxt = b.end
        return out, rcv_nxt

    def sack_blocks(self, max_blocks: int = 4) -> list[tuple[int, int]]:
        """Held ranges as (left, right) offsets, the most recently changed first (RFC 2018 §4)."""
        out: list[tuple[int, int]] = []
        for pos in self._recent:
            for b in self._blocks:
                if b.start <= pos <= b.end:
                    rng = (b.start, b.end)
                    if rng not in out:
                        out.append(rng)
                    break
        for b in reversed(self._blocks):
            if len(out) >= max_blocks:
                break
            rng = (b.start, b.end)
            if rng not in out:
                out.append(rng)
        return out[:max_blocks]
