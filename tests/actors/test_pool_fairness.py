"""The pool dispatcher under many busy actors: timer ticks arrive on time, no busy actor starves.

Issue 14: 1,000 flow actors on two pool workers got their pacing ticks 1.5-3.2 s late, because a
tick waited in the run queue behind every other runnable actor (a FIFO round), and a busy actor
kept its worker for a whole batch. Here 100 actors keep themselves busy (each handler spins 1 ms
and re-tells itself), so a round of the run queue is seconds of handler time; a timer actor's ticks
must still come within a generous bound of their deadlines, and every busy actor must progress.

The bound is on what the run queue adds: a plain thread ticking at the same period alongside (no
actor, no run queue; the same process, GIL and machine) measures how late the OS and the GIL make
any wake-up at that moment, and a tick may be that much later on top of the bound. On a quiet
machine that control is a few ms; on one shared with other loads it was 300 ms.
"""

from __future__ import annotations

import statistics
import threading
import time

from pytsnet.actors.runtime import Actor, ActorSystem, handles
from pytsnet.messages.runtime import Count, Ping, Total, Work

BUSY = 100
SPIN = 0.001  # seconds of CPU per busy message
PERIOD = 0.02  # the timer actor's tick period
LATE_BOUND = 0.25  # generous: a FIFO round here is ~100 actors x 32 messages x 1 ms / 2 workers


class Busy(Actor):
    def __init__(self, stop: threading.Event) -> None:
        self.stop_flag = stop
        self.handled = 0

    def on_start(self) -> None:
        self.ref.tell(Work(seq=0))

    @handles(Work)
    def work(self, msg: Work) -> None:
        end = time.perf_counter() + SPIN
        while time.perf_counter() < end:
            pass
        self.handled += 1
        if not self.stop_flag.is_set():
            self.ref.tell(Work(seq=msg.seq + 1))

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=self.handled)


class Pacer(Actor):
    """Re-arms a one-shot timer on every tick (as a flow's pacing does) and records its lateness."""

    def __init__(self, late: list[float]) -> None:
        self.late = late
        self.due = 0.0

    def on_start(self) -> None:
        self._arm()

    def _arm(self) -> None:
        self.due = self.clock.monotonic() + PERIOD
        self.send_after(PERIOD, Ping())

    @handles(Ping)
    def tick(self, msg: Ping) -> None:
        self.late.append(self.clock.monotonic() - self.due)
        self._arm()


def _control_ticks(stop: threading.Event, late: list[float]) -> None:
    """A bare thread's wake-ups at ``PERIOD``: how late the OS and the GIL alone make one."""
    while not stop.is_set():
        due = time.monotonic() + PERIOD
        time.sleep(PERIOD)
        late.append(time.monotonic() - due)


def test_timer_ticks_are_not_queued_behind_busy_actors() -> None:
    s = ActorSystem("fair", dispatcher="pool", pool_workers=2)
    stop, control_stop = threading.Event(), threading.Event()
    late: list[float] = []
    control: list[float] = []
    try:
        busy = [s.spawn(Busy, stop, name=f"busy-{i}") for i in range(BUSY)]
        time.sleep(0.5)  # every busy actor is in the run queue
        control_thread = threading.Thread(target=_control_ticks, args=(control_stop, control), daemon=True)
        control_thread.start()
        pacers = [s.spawn(Pacer, late, name=f"pacer-{i}") for i in range(3)]
        time.sleep(3.0)
        for p in pacers:
            p.stop()
        control_stop.set()
        ticks = list(late)
        stop.set()
        counts = [b.ask(Count(), timeout=30).value for b in busy]
    finally:
        stop.set()
        control_stop.set()
        s.shutdown(30)
    assert len(ticks) >= 3, f"only {len(ticks)} ticks in 3 s (period {PERIOD * 1e3:.0f} ms, 3 timer actors)"
    worst, machine = max(ticks), max(control, default=0.0)
    assert worst < LATE_BOUND + machine, (
        f"a tick came {worst * 1e3:.0f} ms late (median {statistics.median(ticks) * 1e3:.0f} ms, "
        f"{len(ticks)} ticks); a bare thread's worst wake-up meanwhile: {machine * 1e3:.0f} ms")
    assert min(counts) > 0, f"a busy actor starved: handled {sorted(counts)[:5]}"
