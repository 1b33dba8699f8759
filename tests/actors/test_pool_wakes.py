"""The pool wakes a parked worker only when no worker is awake, and never lets a blocked one stall it.

Issue 14: every cell made runnable used to wake a parked worker, although under the GIL a second
awake worker adds no parallelism, only a wake-up and a GIL hand-over (tens of µs of wall time each
on a VM whose idle CPUs halt). Now a cell queued while a worker is awake waits for that worker,
which takes it before it parks; a watchdog wakes one more worker when cells wait and no cell has
started for ``stall`` seconds, so a handler that blocks holds up nobody for long.

The cells here are stand-ins with the few fields the dispatcher reads, so each test decides exactly
what is runnable when; the last test runs real actors.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import pytest

from pytsnet.actors.runtime import Actor, ActorSystem, handles
from pytsnet.actors.runtime.cell import Status
from pytsnet.actors.runtime.dispatch import PoolDispatcher
from pytsnet.messages.runtime import Ping, Pong, Work
from pytsnet.testing.polling import wait_until


class StandInCell:
    """What ``PoolDispatcher`` and ``run_cell`` touch on a cell: its mailbox holds callables."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scheduled = False
        self.sched_lock = threading.Lock()
        self.preempt = 0
        self.status = Status.RUNNING
        self.mailbox: deque[Callable[[], None]] = deque()
        self.ran_on: list[int] = []

    def process_one(self, incarnation: int | None) -> bool:
        try:
            item = self.mailbox.popleft()
        except IndexError:
            return False
        self.ran_on.append(threading.get_ident())
        item()
        return True


def _post(pool: PoolDispatcher, cell: StandInCell, item: Callable[[], None] = lambda: None) -> None:
    cell.mailbox.append(item)
    pool.notify(cell)  # type: ignore[arg-type]


@pytest.fixture
def pool() -> Iterator[PoolDispatcher]:
    p = PoolDispatcher(workers=4, name="wakes", stall=60.0)  # no watchdog wake in these tests
    wait_until(lambda: p._awake == 0)  # every worker parked: who wakes now is the rule's doing
    yield p
    p.close()


def test_cells_made_runnable_by_a_running_handler_run_on_its_worker(pool: PoolDispatcher) -> None:
    cells = [StandInCell(f"c{i}") for i in range(6)]
    done = threading.Event()

    def fan_out() -> None:
        for c in cells[1:]:
            _post(pool, c)
        _post(pool, cells[-1], done.set)

    _post(pool, cells[0], fan_out)
    assert done.wait(10)
    threads = {t for c in cells for t in c.ran_on}
    assert len(threads) == 1, "a parked worker was woken while one was awake"
    assert pool._awake <= 1


def test_a_cell_made_runnable_with_every_worker_parked_wakes_one(pool: PoolDispatcher) -> None:
    done = threading.Event()
    _post(pool, StandInCell("lone"), done.set)
    assert done.wait(10)


def test_the_worker_that_parked_last_is_woken_first(pool: PoolDispatcher) -> None:
    first = StandInCell("first")
    done = threading.Event()
    _post(pool, first, done.set)
    assert done.wait(10)
    wait_until(lambda: pool._awake == 0)
    for _ in range(5):  # FIFO wake-ups would rotate over the four workers
        again = threading.Event()
        _post(pool, first, again.set)
        assert again.wait(10)
        wait_until(lambda: pool._awake == 0)
    assert set(first.ran_on) == {first.ran_on[0]}


def test_a_blocked_handler_does_not_hold_up_the_cells_queued_behind_it() -> None:
    pool = PoolDispatcher(workers=4, name="stall", stall=0.01)
    try:
        wait_until(lambda: pool._awake == 0)
        gate, blocked, other_ran = threading.Event(), threading.Event(), threading.Event()

        def block() -> None:
            blocked.set()
            gate.wait(30)

        def queue_another_and_block() -> None:
            _post(pool, StandInCell("behind"), other_ran.set)  # a worker is awake: no wake for it
            block()

        _post(pool, StandInCell("blocker"), queue_another_and_block)
        assert blocked.wait(10)
        assert other_ran.wait(5), "the watchdog did not wake a worker for the queued cell"
        assert not gate.is_set()
    finally:
        gate.set()
        pool.close()


def test_no_item_is_lost_while_workers_park_and_wake(pool: PoolDispatcher) -> None:
    cells = [StandInCell(f"s{i}") for i in range(16)]
    counted = [0]
    lock = threading.Lock()

    def count() -> None:
        with lock:
            counted[0] += 1

    def produce(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(500):
            _post(pool, rng.choice(cells), count)
            if rng.random() < 0.05:
                time.sleep(rng.random() * 0.001)  # let the workers go idle and park in between

    producers = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
    for t in producers:
        t.start()
    for t in producers:
        t.join(30)
    wait_until(lambda: counted[0] == 2000, timeout=30)


def test_close_ends_every_worker() -> None:
    pool = PoolDispatcher(workers=3, name="closing", stall=0.01)
    wait_until(lambda: pool._awake == 0)
    pool.close()
    for t in pool._threads:
        t.join(5)
        assert not t.is_alive(), t.name


class Waiter(Actor):
    """Blocks its worker until the gate opens (what a pooled handler must not do, but may)."""

    def __init__(self, gate: threading.Event, entered: threading.Event) -> None:
        self.gate = gate
        self.entered = entered

    @handles(Work)
    def work(self, msg: Work) -> None:
        self.entered.set()
        self.gate.wait(30)


class Answerer(Actor):
    @handles(Ping)
    def ping(self, msg: Ping) -> Pong:
        return Pong(seq=msg.seq)


def test_an_actor_blocking_its_worker_leaves_the_other_pooled_actors_answering() -> None:
    gate, entered = threading.Event(), threading.Event()
    with ActorSystem("stall", dispatcher="pool") as system:
        try:
            waiter = system.spawn(Waiter, gate, entered, name="waiter")
            answerer = system.spawn(Answerer, name="answerer")
            waiter.tell(Work(seq=1))
            assert entered.wait(10)
            for seq in range(20):
                assert answerer.ask(Ping(seq=seq), timeout=5).seq == seq
        finally:
            gate.set()
