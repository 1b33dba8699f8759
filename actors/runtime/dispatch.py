"""Where incarnations run: a pykka thread each, or tasks on a small shared worker pool.

``ThreadDispatcher``: every incarnation runs on its own pykka ``ThreadingActor`` thread (daemon),
whose loop waits on the cell's bounded mailbox. Simple, isolates blocking handlers, ~costs a thread.
``PoolDispatcher``: kameo-style, an actor is a task; a cell with mail is queued on N workers which
handle up to ``batch`` messages then requeue it. One worker per cell at a time (``scheduled``
flag), so per-actor ordering holds. Handlers must not block for long on a pooled actor.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any

import pykka

if TYPE_CHECKING:
    from pytsnet.actors.runtime.cell import Cell

__all__ = ["Dispatcher", "PoolDispatcher", "ThreadDispatcher"]


class Dispatcher:
    def attach(self, cell: Cell) -> None:
        """A new incarnation is RUNNING: make it process its mailbox."""
        raise NotImplementedError

    def notify(self, cell: Cell) -> None:
        """Mail arrived for ``cell``."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _IncarnationThread(pykka.ThreadingActor):
    """A pykka thread running one incarnation; the mailbox is the cell's, not pykka's inbox."""

    use_daemon_thread = True

    def __init__(self, cell: Cell, incarnation: int) -> None:
        super().__init__()
        self._cell = cell
        self._incarnation = incarnation

    def _alive(self) -> bool:
        from pytsnet.actors.runtime.cell import Status

        c = self._cell
        return c.incarnation == self._incarnation and c.status is Status.RUNNING

    def _actor_loop_running(self) -> None:
        cell, inc, cond = self._cell, self._incarnation, self._cell.mailbox.cond
        while True:
            with cond:
                cond.wait_for(lambda: len(cell.mailbox) > 0 or not self._alive())
            if not self._alive():
                break
            cell.process_one(inc)
        self.actor_stopped.set()
        pykka.ActorRegistry.unregister(self.actor_ref)

    def _actor_loop_teardown(self) -> None:
        pass  # the mailbox outlives the incarnation: nothing to drain here


class ThreadDispatcher(Dispatcher):
    def attach(self, cell: Cell) -> None:
        _IncarnationThread.start(cell, cell.incarnation)

    def notify(self, cell: Cell) -> None:
        pass  # the incarnation thread waits on the mailbox condition, which put() notifies


class PoolDispatcher(Dispatcher):
    def __init__(self, workers: int = 4, batch: int = 32, name: str = "pool") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._batch = batch
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def attach(self, cell: Cell) -> None:
        self.notify(cell)

    def notify(self, cell: Cell) -> None:
        from pytsnet.actors.runtime.cell import Status

        with cell.sched_lock:
            if cell.scheduled or len(cell.mailbox) == 0 or cell.status is not Status.RUNNING:
                return
            cell.scheduled = True
        self._queue.put(cell)

    def _work(self) -> None:
        while True:
            cell = self._queue.get()
            if cell is None:
                return
            for _ in range(self._batch):
                if not cell.process_one(None):
                    break
            with cell.sched_lock:
                cell.scheduled = False
            self.notify(cell)  # more mail (or mail that raced the flag): requeue, behind others

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
