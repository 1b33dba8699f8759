"""Clocks and timer scheduling, injectable so tests and replay control time.

``Clock`` is what actors read (``monotonic``, ``time``). A ``Scheduler`` runs callbacks at a
monotonic deadline: ``ThreadScheduler`` uses one daemon thread per system for a real clock;
``ManualClock`` is its own scheduler and fires due callbacks synchronously in ``advance``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "Scheduler", "SystemClock", "ThreadScheduler", "TimerHandle"]


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


class TimerHandle:
    """Returned by ``send_after``/``send_interval``; ``cancel()`` is idempotent and thread-safe."""

    __slots__ = ("cancelled", "deadline", "on_cancel")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.cancelled = False
        self.on_cancel: Callable[[], None] | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.on_cancel is not None:
            self.on_cancel()


@runtime_checkable
class Scheduler(Protocol):
    def call_at(self, deadline: float, fn: Callable[[], None]) -> TimerHandle: ...
    def close(self) -> None: ...


class _Heap:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def push(self, deadline: float, fn: Callable[[], None]) -> TimerHandle:
        h = TimerHandle(deadline)
        heapq.heappush(self._heap, (deadline, next(self._seq), h, fn))
        return h

    def pop_due(self, now: float) -> list[tuple[TimerHandle, Callable[[], None]]]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            _, _, h, fn = heapq.heappop(self._heap)
            if not h.cancelled:
                due.append((h, fn))
        return due

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None


class ManualClock:
    """A clock that only moves when told to; also the scheduler of timers that use it."""

    def __init__(self, monotonic: float = 0.0, wall: float = 1_700_000_000.0) -> None:
        self._mono = monotonic
        self._wall = wall
        self._heap = _Heap()
        self._lock = threading.RLock()

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall

    def set(self, monotonic: float, wall: float | None = None) -> None:
        """Jump to a recorded instant (replay); fires timers that became due."""
        self.advance(max(0.0, monotonic - self._mono))
        if wall is not None:
            self._wall = wall

    def advance(self, seconds: float) -> None:
        """Move time forward, firing each due timer at its own deadline, in order."""
        target = self._mono + seconds
        while True:
            with self._lock:
                nd = self._heap.next_deadline()
                if nd is None or nd > target:
                    break
                self._wall += nd - self._mono
                self._mono = max(self._mono, nd)
                due = self._heap.pop_due(self._mono)
            for _, fn in due:
                fn()
        self._wall += target - self._mono
        self._mono = target

    def call_at(self, deadline: float, fn: Callable[[], None]) -> TimerHandle:
        with self._lock:
            return self._heap.push(deadline, fn)

    def close(self) -> None:
        pass


class ThreadScheduler:
    """One lazily started daemon thread per system runs due callbacks (they must be quick)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap = _Heap()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_at(self, deadline: float, fn: Callable[[], None]) -> TimerHandle:
        """Queue ``fn`` for ``deadline``; wakes the thread only if this is now the earliest deadline.

        Why (issue 14): TCP re-arms its timers on every burst, almost always later than the head, and
        a wake per re-arm cost the sender ~800 timer-thread wake-ups a second in a bulk transfer, each
        only to sleep again. The thread reads the heap under the lock before every wait and sleeps at
        most until the head it saw, and every entry still queued was in the heap or notified when it
        went in, so a deadline no earlier than the head's is served on time without a wake."""
        with self._cond:
            heap = self._heap._heap
            wake = not heap or deadline < heap[0][0]  # the head may be a cancelled entry: earlier still
            h = self._heap.push(deadline, fn)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="pytsnet-timers", daemon=True)
                self._thread.start()
            if wake:
                self._cond.notify()
        return h

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                nd = self._heap.next_deadline()
                now = self._clock.monotonic()
                if nd is None or nd > now:
                    self._cond.wait(None if nd is None else nd - now)
                    continue
                due = self._heap.pop_due(now)
            for _, fn in due:
                with contextlib.suppress(Exception):  # a timer must never kill the timer thread
                    fn()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
