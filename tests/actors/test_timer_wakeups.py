"""ThreadScheduler wakes its thread only for a new earliest deadline, and never loses a timer.

Issue 14: every TCP timer re-arm (almost always later than the head) woke the timer thread, which
only went back to sleep. The first test fails on a scheduler that notifies on every ``call_at``; the
others would catch a wake-up the change lost: each timer, pushed from several threads in any order
with cancellations in between, fires no earlier than its deadline and within a generous bound.
"""

from __future__ import annotations

import threading
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytsnet.actors.runtime.clock import SystemClock, ThreadScheduler

LATE = 0.5  # a functional bound on lateness (a loaded 2-CPU machine), not a timing benchmark


class _CountingCondition(threading.Condition):
    """Counts the scheduler thread's waits: one per time it went (back) to sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def _sleeping(sched: ThreadScheduler, cond: _CountingCondition, waits: int) -> None:
    end = time.monotonic() + 10
    while True:
        with cond:
            if cond.waits >= waits and len(cond._waiters) == 1:  # type: ignore[attr-defined]
                return
        assert time.monotonic() < end, "the timer thread never went to sleep"
        time.sleep(0.005)


def test_a_later_deadline_does_not_wake_the_thread_an_earlier_one_does() -> None:
    sched = ThreadScheduler(SystemClock())
    cond = sched._cond = _CountingCondition()
    try:
        now = time.monotonic()
        sched.call_at(now + 60, lambda: None)
        _sleeping(sched, cond, 1)
        for i in range(200):  # TCP re-arming its RTO on every burst: all later than the head
            sched.call_at(now + 61 + i, lambda: None)
        time.sleep(0.05)
        assert cond.waits == 1  # still the first sleep: none of the 200 woke it
        fired = threading.Event()
        sched.call_at(time.monotonic() + 0.01, fired.set)  # a new head: must wake it
        assert fired.wait(LATE + 0.01)
    finally:
        sched.close()


def test_a_cancelled_head_does_not_hide_a_later_timer() -> None:
    sched = ThreadScheduler(SystemClock())
    try:
        head = sched.call_at(time.monotonic() + 0.05, lambda: None)
        fired = threading.Event()
        sched.call_at(time.monotonic() + 0.1, fired.set)  # later than the head: no wake
        head.cancel()
        assert fired.wait(0.1 + LATE)
    finally:
        sched.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 60), st.booleans()), min_size=1, max_size=40),
)
def test_every_timer_fires_on_time_whatever_the_push_order(plan: list[tuple[int, int, bool]]) -> None:
    """``plan``: (pushing thread, delay in ms, cancel it at once) per timer; three threads push."""
    clock = SystemClock()
    sched = ThreadScheduler(clock)
    fired: dict[int, float] = {}
    deadlines: dict[int, float] = {}
    lock = threading.Lock()
    cancelled: set[int] = set()
    start = threading.Barrier(3)

    def push(who: int) -> None:
        start.wait()
        for i, (t, delay_ms, cancel) in enumerate(plan):
            if t != who:
                continue
            deadline = clock.monotonic() + delay_ms / 1000

            def fire(i: int = i) -> None:
                with lock:
                    fired[i] = clock.monotonic()

            with lock:
                deadlines[i] = deadline
            h = sched.call_at(deadline, fire)
            if cancel:
                h.cancel()
                with lock:
                    cancelled.add(i)

    # A far head first: a lost wake-up then shows as a timer seconds late, not a few ms.
    anchor = sched.call_at(clock.monotonic() + 10 * LATE, lambda: None)
    try:
        threads = [threading.Thread(target=push, args=(w,)) for w in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
        end = time.monotonic() + 0.06 + LATE
        want = set(range(len(plan))) - cancelled
        while time.monotonic() < end:
            with lock:
                if want <= fired.keys():
                    break
            time.sleep(0.005)
        with lock:
            assert want <= fired.keys(), f"lost timers: {sorted(want - fired.keys())}"
            for i in want:
                assert deadlines[i] <= fired[i] <= deadlines[i] + LATE
    finally:
        anchor.cancel()
        sched.close()
