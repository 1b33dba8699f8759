"""A condition variable whose waiter list exists only while someone waits.

``threading.Condition`` allocates a ~760-byte deque of waiters and binds five methods per instance
up front; every mailbox and every flow channel has one, so with 10,000 idle flows that was ~1.5 KiB
a flow spent on conditions nobody waits on. This one has the same ``wait``/``wait_for``/``notify``
semantics (FIFO wake-up, any lock with ``acquire``/``release``) and allocates the waiter list on the
first ``wait`` (dropping it again when it empties).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


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
        waiter = threading.Lock()
        waiter.acquire()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        saved = self._release_save()
        got = False
        try:
            if timeout is None:
                waiter.acquire()
                got = True
            elif timeout > 0:
                got = waiter.acquire(True, timeout)
            else:
                got = waiter.acquire(False)
            return got
        finally:
            self._acquire_restore(saved)
            if not got:
                waiters = self._waiters
                if waiters is not None:
                    if waiter in waiters:  # not already taken by a notify racing the timeout
                        waiters.remove(waiter)
                    if not waiters:
                        self._waiters = None

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
            w.release()

    def notify_all(self) -> None:
        """Wake every waiter (the lock must be held)."""
        waiters = self._waiters
        if waiters is None:
            if not self._is_owned():
                raise RuntimeError("cannot notify on un-acquired lock")
            return
        self.notify(len(waiters))
