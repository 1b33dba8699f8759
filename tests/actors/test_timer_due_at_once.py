"""A timer whose deadline is already due may fire before ``call_at`` returns to the cell: the tick
still arrives, and the handle is not left behind in the cell's timers.

Found by bench/flows.py (issue 14): the timer thread ran the tick's callback before the cell had
stored the handle the callback looks up; the IndexError was swallowed by the scheduler, the tick was
lost, and a flow whose last ACK had been dropped waited for that tick for the rest of the run (its
timer deadline 20 s in the past, the handle never cancelled, never fired).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pytsnet.actors.runtime import Actor, ActorSystem, handles
from pytsnet.actors.runtime.clock import Scheduler, TimerHandle
from pytsnet.messages.runtime import Ping


class RacingScheduler:
    """Runs each callback on another thread at once, before ``call_at`` returns (as the timer
    thread does for a deadline already due when the caller loses the GIL right after the push)."""

    def __init__(self, real: Scheduler) -> None:
        self.real = real
        self.errors: list[BaseException] = []

    def call_at(self, deadline: float, fn: Callable[[], None]) -> TimerHandle:
        def run() -> None:
            try:
                fn()
            except Exception as e:  # the real scheduler swallows these; record them here
                self.errors.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(0.05)  # the callback gets there first
        return TimerHandle(deadline)

    def close(self) -> None:
        self.real.close()


class Ticker(Actor):
    def __init__(self, got: threading.Event) -> None:
        self.got = got

    def on_start(self) -> None:
        self.send_after(0.0, Ping())

    @handles(Ping)
    def tick(self, msg: Ping) -> None:
        self.got.set()


def test_a_tick_that_fires_before_call_at_returns_is_delivered() -> None:
    got = threading.Event()
    with ActorSystem("timer-race", dispatcher="pool") as system:
        racing = RacingScheduler(system.scheduler)
        system.scheduler = racing
        ref = system.spawn(Ticker, got)
        assert got.wait(5), f"tick lost: {racing.errors!r}"
        assert racing.errors == []
        deadline = time.monotonic() + 5
        while ref._cell.timers:  # the fired one-shot is discarded, not kept
            assert time.monotonic() < deadline, ref._cell.timers
            time.sleep(0.01)
