"""Bounded send buffer (unacknowledged + unsent bytes) and the SACK scoreboard (RFC 2018 §5).

The buffer holds stream bytes from SND.UNA to what the app wrote; retransmission slices it
again, so there is no separate per-segment retransmit queue to keep in sync. Deleting from the
front of a ``bytearray`` is amortised O(1) in CPython.

It is the flow's only send buffer (issue 14): the app writes straight into it. A driver whose app
writes from another thread hands the connection a subclass whose connection-side methods (``read``,
``ack_to``, ``release``) take its lock, and calls ``write`` with that lock held
(``actors/netstack/channel.py``); no lock lives here.
"""

from __future__ import annotations

import bisect


class SendBuffer:
    """Stream bytes at offsets [``start``, ``end``) awaiting acknowledgment; capacity-bounded."""

    __slots__ = ("_buf", "capacity", "start")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = bytearray()
        self.start = 0

    @property
    def end(self) -> int:
        return self.start + len(self._buf)

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def free(self) -> int:
        return self.capacity - len(self._buf)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append as much of ``data`` as fits; return how many bytes were taken."""
        n = min(len(data), self.capacity - len(self._buf))
        if n > 0:
            self._buf += data[:n] if n < len(data) else data
        return max(n, 0)

    def read(self, offset: int, length: int) -> bytes:
        """Copy up to ``length`` bytes starting at stream ``offset`` (must be >= start)."""
        i = offset - self.start
        # Two copies (slice, bytes) but faster than one through a memoryview at segment sizes: 0.22
        # against 0.40 µs for 1,228 bytes.
        return bytes(self._buf[i:i + length])

    def peek(self) -> bytes:
        """A copy of every byte held, nothing consumed (tests, diagnostics)."""
        return bytes(self._buf)

    def release(self) -> None:
        """The connection will send nothing more (closed, or in TIME_WAIT): drop the bytes and take
        no more writes (capacity 0), keeping the object its writer may still hold."""
        self._buf.clear()
        self.capacity = 0

    def ack_to(self, offset: int) -> int:
        """Drop bytes before ``offset``; return how many were dropped."""
        n = min(offset - self.start, len(self._buf))
        if n > 0:
            del self._buf[:n]
            self.start += n
            return n
        return 0


class SackScoreboard:
    """Ranges above SND.UNA that the peer has SACKed, as sorted disjoint [start, end) offsets."""

    __slots__ = ("_ranges", "sacked_bytes")

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []
        self.sacked_bytes = 0

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def clear(self) -> None:
        self._ranges.clear()
        self.sacked_bytes = 0

    @property
    def highest(self) -> int | None:
        return self._ranges[-1][1] if self._ranges else None

    def add(self, start: int, end: int) -> bool:
        """Record a SACK block; return True if it covered anything new."""
        if end <= start:
            return False
        r = self._ranges
        i = bisect.bisect_left(r, [start, start])
        if i > 0 and r[i - 1][1] >= start:
            i -= 1
        j = i
        new_start, new_end = start, end
        covered = 0
        while j < len(r) and r[j][0] <= end:
            new_start = min(new_start, r[j][0])
            new_end = max(new_end, r[j][1])
            covered += r[j][1] - r[j][0]
            j += 1
        r[i:j] = [[new_start, new_end]]
        grown = (new_end - new_start) - covered
        self.sacked_bytes += grown
        return grown > 0

    def advance(self, una: int) -> None:
        """Forget everything below the new SND.UNA."""
        r = self._ranges
        while r and r[0][0] < una:
            if r[0][1] <= una:
                self.sacked_bytes -= r[0][1] - r[0][0]
                r.pop(0)
            else:
                self.sacked_bytes -= una - r[0][0]
                r[0][0] = una
                break

    def next_unsacked(self, pos: int) -> tuple[int, int | None]:
        """The first offset >= ``pos`` not SACKed, and where the next SACKed range begins (or None)."""
        for s, e in self._ranges:
            if e <= pos:
                continue
            if s <= pos:
                pos = e
                continue
            return pos, s
        return pos, None

    def lost_edge(self, threshold: int) -> int | None:
        """RFC 6675 IsLost boundary: unSACKed bytes below it have >= ``threshold`` SACKed bytes above.

        Returns the start of the SACKed range at which the bytes SACKed above reach ``threshold``
        (None when fewer than ``threshold`` bytes are SACKed at all).
        """
        above = 0
        for s, e in reversed(self._ranges):
            above += e - s
            if above >= threshold:
                return s
        return None

    def sacked_below(self, limit: int) -> int:
        """SACKed bytes below ``limit``."""
        total = 0
        for s, e in self._ranges:
            if s >= limit:
                break
            total += min(e, limit) - s
        return total
