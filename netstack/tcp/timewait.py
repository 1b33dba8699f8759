"""A bounded TIME_WAIT table (RFC 9293 §3.6.1) so closed connections need no full state machine.

The stack moves a connection that reached TIME_WAIT here (a few ints per entry instead of
buffers and timers); segments for that 4-tuple are answered with an ACK until 2*MSL passes.
When the table is full the entry closest to expiry is dropped, like Linux's tw_bucket limit.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from dataclasses import dataclass

from pytsnet.netstack.tcp.segment import ACK, FIN, RST, SYN, TcpSegment


@dataclass(slots=True)
class TimeWaitEntry:
    """What an ACK for a TIME_WAIT connection needs: our SND.NXT, our RCV.NXT, local/remote ports."""

    local_port: int
    remote_port: int
    snd_nxt: int
    rcv_nxt: int
    expires_at: float


class TimeWaitTable:
    """Maps a flow key to its TIME_WAIT entry; at most ``capacity`` entries."""

    def __init__(self, capacity: int = 4096, duration: float = 60.0) -> None:
        self.capacity = capacity
        self.duration = duration
        self._entries: dict[Hashable, TimeWaitEntry] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def add(self, key: Hashable, local_port: int, remote_port: int, snd_nxt: int, rcv_nxt: int,
            now: float) -> None:
        self.expire(now)
        while len(self._entries) >= self.capacity and self._heap:
            at, _, old = heapq.heappop(self._heap)
            e = self._entries.get(old)
            if e is not None and e.expires_at == at:  # skip slots superseded by forget() or a FIN
                del self._entries[old]
        entry = TimeWaitEntry(local_port, remote_port, snd_nxt, rcv_nxt, now + self.duration)
        self._entries[key] = entry
        self._counter += 1
        heapq.heappush(self._heap, (entry.expires_at, self._counter, key))

    def forget(self, key: Hashable) -> bool:
        """Drop ``key``'s entry (a new incarnation took the 4-tuple); True if there was one.

        Its heap slot stays behind and is skipped by ``expire`` like any superseded slot.
        """
        found = self._entries.pop(key, None) is not None
        if len(self._heap) > 2 * max(self.capacity, len(self._entries)) + 16:
            self._heap = [(at, n, k) for at, n, k in self._heap
                          if (e := self._entries.get(k)) is not None and e.expires_at == at]
            heapq.heapify(self._heap)
        return found

    def expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, _, key = heapq.heappop(self._heap)
            e = self._entries.get(key)
            if e is not None and e.expires_at <= now:
                del self._entries[key]

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def on_segment(self, key: Hashable, seg: TcpSegment, now: float) -> TcpSegment | None:
        """Answer a segment for a TIME_WAIT flow: ACK it (restarting 2*MSL on a FIN); RST ends it."""
        self.expire(now)
        e = self._entries.get(key)
        if e is None:
            return None
        if seg.flags & RST:
            if seg.seq == e.rcv_nxt:  # RFC 1337 would ignore; RFC 9293 closes on an exact RST
                del self._entries[key]
            return None
        if seg.flags & SYN:
            # A new incarnation may reuse the tuple; the stack decides, we just stop answering.
            return None
        if seg.flags & FIN:
            e.expires_at = now + self.duration
            self._counter += 1
            heapq.heappush(self._heap, (e.expires_at, self._counter, key))
        return TcpSegment(e.local_port, e.remote_port, e.snd_nxt, e.rcv_nxt, ACK, 0)
