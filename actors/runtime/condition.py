"""A condition variable whose waiter list exists only while someone waits.

``threading.Condition`` allocates a ~760-byte deque of waiters and binds five methods per instance
up front; every mailbox and every flow channel has one, so with 10,000 idle flows that was ~1.5 KiB
a flow spent on conditions nobody waits on. This one has the same ``wait``/``wait_for``/``notify``
semantics (FIFO wake-up, any lock with ``acquire``/``release``) and allocates the waiter list on the
first ``wait`` (dropping it again when it empties).

A waiter parks on its thread's eventfd, not on a fresh ``threading.Lock`` (issue 14): releasing a
lock wakes the waiter with the GIL held, and on a loaded machine the woken thread often preempts the
waker right there, so the whole process stalled with the GIL held for 65-110 µs per wake-up (2-3 µs
per data packet, measured in ``bench/profile_e2e.py`` runs). ``os.eventfd_write`` drops the GIL for
the syscall, so a waker preempted inside it leaves the GIL to the thread it woke.
"""

from __future__ import annotations

import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


class _Parker:
    """One per thread that ever waits (thread-local, reused): an eventfd the waiter blocks on."""

    __slots__ = ("fd", "poller")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC)
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)

    def __del__(self) -> None:  # the thread ended (its locals are cleared) or a forked child dropped it
        os.close(self.fd)

    def wake(self) -> None:
        os.eventfd_write(self.fd, 1)  # releases the GIL around the syscall

    def park(self, timeout: float | None) -> bool:
        """Block until woken (True) or ``timeout`` (False); consumes the wake."""
        if timeout is not None and not self.poller.poll(max(0, math.ceil(timeout * 1000))):
            return False
        os.eventfd_read(self.fd)
        return True

    def consume(self) -> None:
        """Take a wake known to be there (a notify that raced the timeout)."""
        os.eventfd_read(self.fd)


_parkers = threading.local()


def _reset_after_fork() -> None:
    global _parkers
    _parkers = threading.local()  # the child must not share its parent's eventfds


os.register_at_fork(after_in_child=_reset_after_fork)


def _parker() -> _Parker:
    try:
        return _parkers.p  # type: ignore[no-any-return]
    except AttributeError:
        p = _parkers.p = _Parker()
        return p


class LazyCondition:
    """``threading.Condition`` without per-instance preallocation (slots, waiter list made on demand)."""

    __slots__ = ("_lock", "_waiters")

    def __init__(self, lock: Any | None = None) -> None:
        self._lock: Any = threading.RLock() if lock is None else lock
        self._waiters: list[Any] | None = None

    def __enter__(self) -> bool:
        return bool(self._lock.__enter__())

    def __exit__(self, *args: object) -> None:
        self._lock.__exit__(*args)

    def _release_save(self) -> Any:
        rs = getattr(self._lock, "_release_save", None)
        if rs is not None:  # an RLock: release every level, remember them
            return rs()
        self._lock.release()
        return None

    def _acquire_restore(self, state: Any) -> None:
        ar = getattr(self._lock, "_acquire_restore", None)
        if ar is not None:
            ar(state)
        else:
            self._lock.acquire()

    def _is_owned(self) -> bool:
        io = getattr(self._lock, "_is_owned", None)
        if io is not None:
            return bool(io())
        if self._lock.acquire(False):  # same test threading.Condition uses for a plain Lock
            self._lock.release()
            return False
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, block until notified or ``timeout``, re-acquire; False on timeout."""
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = _parker()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        saved = self._release_save()
        got = False
        try:
            got = waiter.park(timeout)
            return got
        finally:
            self._acquire_restore(saved)
            if not got:
                waiters = self._waiters
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        self._waiters = None
                else:  # a notify took it as the timeout ran out: its wake was written under the
                    waiter.consume()  # lock we hold again; take it, or the next wait would see it

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Wait until ``predicate()`` is true (or ``timeout``); returns its last value."""
        end = None
        left = timeout
        result = predicate()
        while not result:
            if left is not None:
                if end is None:
                    end = time.monotonic() + left
                else:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
            self.wait(left)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters, oldest first (the lock must be held)."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        if not waiters:
            return
        woken, rest = waiters[:n], waiters[n:]
        self._waiters = rest or None
        for w in woken:
            w.wake()

    def notify_all(self) -> None:
        """Wake every waiter (the lock must be held)."""
        waiters = self._waiters
        if waiters is None:
            if not self._is_owned():
                raise RuntimeError("cannot notify on un-acquired lock")
            return
        self.notify(len(waiters))
