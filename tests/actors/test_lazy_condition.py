"""LazyCondition: threading.Condition's semantics, with nothing allocated while nobody waits."""

from __future__ import annotations

import threading
import time

import pytest

from pytsnet.actors.runtime import MailboxConfig
from pytsnet.actors.runtime.condition import LazyCondition
from pytsnet.actors.runtime.mailbox import Mailbox


def test_wait_is_woken_by_notify_all_and_the_waiter_list_is_dropped() -> None:
    cond = LazyCondition(threading.Lock())
    flag: list[bool] = []
    got: list[bool] = []

    def waiter() -> None:
        with cond:
            got.append(cond.wait_for(lambda: bool(flag), 10))

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while True:
        with cond:
            if cond._waiters is not None and len(cond._waiters) == 3:
                break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with cond:
        flag.append(True)
        cond.notify_all()
    for t in threads:
        t.join(10)
    assert got == [True, True, True]
    assert cond._waiters is None  # nothing kept once nobody waits


def test_notify_wakes_one_waiter_in_fifo_order_and_timeouts_clean_up() -> None:
    cond = LazyCondition()  # default: an RLock, re-entrant like threading.Condition's
    with cond, cond:
        assert cond.wait(0.01) is False  # nobody notifies: times out, re-acquires both levels
        assert cond._waiters is None
    order: list[int] = []

    def waiter(i: int) -> None:
        with cond:
            if cond.wait(10):
                order.append(i)

    for i in range(2):
        threading.Thread(target=waiter, args=(i,), daemon=True).start()
        deadline = time.monotonic() + 10
        while True:
            with cond:
                if cond._waiters is not None and len(cond._waiters) == i + 1:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.01)
    for want in ([0], [0, 1]):
        with cond:
            cond.notify()
        deadline = time.monotonic() + 10
        while order != want:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_notify_without_the_lock_is_an_error() -> None:
    cond = LazyCondition(threading.Lock())
    with pytest.raises(RuntimeError):
        cond.notify()
    with pytest.raises(RuntimeError):
        cond.wait(0)


def test_idle_mailbox_holds_no_queues() -> None:
    mb = Mailbox(MailboxConfig(16))
    assert mb._user is None and mb._control is None and mb._sizes is None
    assert mb.put(1, is_ask=False, size=5)
    mb.put_control(2)
    assert len(mb) == 2 and mb.backlog() == (1, 5)
    assert mb.pop() == 2 and mb.pop() == 1 and mb.pop() is None
    assert mb._user is None and mb._control is None and mb._sizes is None  # dropped once empty
    assert mb.backlog() == (0, 0)


def test_stress_no_lost_or_left_over_wake_ups() -> None:
    """Issue 14 (waiters park on an eventfd): four consumers, four producers, tiny timeouts racing
    the notifies; every item is taken, and afterwards no consumer thread holds a wake it was not owed
    (a notify racing a timeout must not leave one behind for the thread's next wait)."""
    cond = LazyCondition(threading.Lock())
    items: list[int] = []
    taken: list[int] = []
    done: list[bool] = []
    leftover: list[bool] = []
    n_per, producers, consumers = 500, 4, 4
    total = n_per * producers

    def consume() -> None:
        with cond:
            while True:
                # Tiny timeouts: they race the notifies (the path that takes a wake a notify wrote
                # as the timeout ran out).
                cond.wait_for(lambda: bool(items) or bool(done), 0.0005)
                if items:
                    taken.append(items.pop())
                elif done:
                    break
            leftover.append(cond.wait(0.02))  # nobody notifies any more: must time out

    def produce(base: int) -> None:
        for i in range(n_per):
            with cond:
                items.append(base + i)
                cond.notify()
            if i % 50 == 0:
                time.sleep(0.001)

    threads = [threading.Thread(target=consume) for _ in range(consumers)]
    threads += [threading.Thread(target=produce, args=(p * n_per,)) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads[consumers:]:
        t.join(30)
    deadline = time.monotonic() + 30
    while True:
        with cond:
            if not items:
                done.append(True)
                break
        assert time.monotonic() < deadline, "items left untaken"
        time.sleep(0.01)
    for t in threads[:consumers]:
        t.join(30)
        assert not t.is_alive(), "a consumer never woke"
    assert sorted(taken) == list(range(total))
    assert leftover == [False] * consumers
    assert cond._waiters is None


def test_a_waiter_blocked_without_timeout_wakes_within_a_bound() -> None:
    """Many rounds of: a waiter parks with no timeout, another thread notifies; it must wake."""
    cond = LazyCondition()
    for _ in range(200):
        flag: list[bool] = []
        woke = threading.Event()

        def waiter(flag: list[bool], woke: threading.Event) -> None:
            with cond:
                cond.wait_for(lambda: bool(flag))
            woke.set()

        t = threading.Thread(target=waiter, args=(flag, woke))
        t.start()
        with cond:
            flag.append(True)
            cond.notify_all()
        assert woke.wait(5), "lost wake-up"
        t.join(5)


def test_a_notify_racing_the_timeout_leaves_no_wake_behind() -> None:
    """The waiter's timeout runs out while the notifier holds the lock; the notifier then takes it
    from the list (its wake is written). The waiter must take that wake: its next wait, with nobody
    notifying, times out instead of returning at once."""
    lock = threading.Lock()
    cond = LazyCondition(lock)
    results: list[bool] = []
    parked = threading.Event()

    def waiter() -> None:
        with cond:
            parked.set()
            results.append(cond.wait(0.05))
            results.append(cond.wait(0.05))

    t = threading.Thread(target=waiter)
    t.start()
    assert parked.wait(5)
    with cond:  # the waiter released the lock to park; hold it past its timeout
        time.sleep(0.2)
        assert cond._waiters is not None and len(cond._waiters) == 1
        cond.notify()
    t.join(5)
    assert results == [False, False]
