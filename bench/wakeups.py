"""What a runtime wake-up costs: ``.venv/bin/python bench/wakeups.py [--rounds 2000]`` (no root, ~5 s).

Issue 14's profiles put 1-5 µs per data packet on ``LazyCondition.notify`` and
``PoolDispatcher.notify``. This separates the waker's CPU (``time.thread_time``: user + kernel) from
its wall time with the GIL held, for the primitives the data path wakes through:

- ``LazyCondition.notify_all`` with nobody waiting (every ``Mailbox.put``/``pop`` makes one);
- waking a thread parked in ``LazyCondition.wait`` (an idle ``ThreadDispatcher`` runner);
- ``queue.SimpleQueue.put`` to a parked getter (the ``PoolDispatcher`` doorbell);
- ``ThreadScheduler.call_at``: how often its thread woke for 1,000 re-arms later than the head.

Run it with another tree's interpreter (``/path/to/base/.venv/bin/python bench/wakeups.py``) to
compare runtimes: it imports whichever ``pytsnet`` that interpreter has installed.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable

from pytsnet.actors.runtime.clock import SystemClock, ThreadScheduler
from pytsnet.actors.runtime.condition import LazyCondition


def _parked_wakes(rounds: int, park: Callable[[], None], wake: Callable[[], None],
                  parked: Callable[[], bool]) -> tuple[float, float]:
    """Median waker CPU and wall µs of ``wake()`` with the other thread parked in ``park()``."""
    stop = threading.Event()

    def sleeper() -> None:
        while not stop.is_set():
            park()

    t = threading.Thread(target=sleeper, daemon=True)
    t.start()
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(rounds):
        end = time.monotonic() + 1
        while not parked() and time.monotonic() < end:
            time.sleep(0.0002)
        c0, w0 = time.thread_time(), time.perf_counter()
        wake()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    stop.set()
    wake()
    t.join(2)
    return statistics.median(cpu) * 1e6, statistics.median(wall) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds each; medians")

    cond = LazyCondition()
    n = 200_000
    with cond:
        t0 = time.perf_counter()
        for _ in range(n):
            cond.notify_all()
        dt = time.perf_counter() - t0
    print(f"LazyCondition.notify_all, nobody waiting: {dt / n * 1e9:.0f} ns")

    lc = LazyCondition()
    box: list[int] = []

    def lc_park() -> None:
        with lc:
            lc.wait_for(lambda: bool(box))
            box.clear()

    def lc_wake() -> None:
        with lc:
            box.append(1)
            lc.notify_all()

    def lc_parked() -> bool:
        with lc:
            return lc._waiters is not None

    cpu, wall = _parked_wakes(args.rounds, lc_park, lc_wake, lc_parked)
    print(f"LazyCondition wake of a parked thread: waker CPU {cpu:.1f} µs, wall {wall:.1f} µs")

    q: queue.SimpleQueue[int] = queue.SimpleQueue()
    getting = threading.Event()

    def q_park() -> None:
        getting.set()
        q.get()
        getting.clear()

    def q_parked() -> bool:
        time.sleep(0.0002)  # SimpleQueue does not say whether someone waits: give the getter time
        return getting.is_set()

    cpu, wall = _parked_wakes(args.rounds, q_park, lambda: q.put(1), q_parked)
    print(f"SimpleQueue.put to a parked getter:    waker CPU {cpu:.1f} µs, wall {wall:.1f} µs")

    sched = ThreadScheduler(SystemClock())
    waits = [0]
    inner = sched._cond.wait

    def counted(timeout: float | None = None) -> bool:
        waits[0] += 1
        return inner(timeout)

    sched._cond.wait = counted  # type: ignore[method-assign]
    now = time.monotonic()
    sched.call_at(now + 60, lambda: None)
    time.sleep(0.05)
    before = waits[0]
    for i in range(1000):
        sched.call_at(now + 61 + i * 0.001, lambda: None)
        time.sleep(0.0003)  # let a woken thread go back to sleep, as between bursts
    time.sleep(0.05)
    print(f"ThreadScheduler: 1,000 re-arms later than the head woke its thread {waits[0] - before} times")
    sched.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
