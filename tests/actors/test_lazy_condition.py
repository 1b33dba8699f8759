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
