"""Where cells run: a pykka actor each, or tasks on a small shared worker pool.

``ThreadDispatcher``: each cell owns a pykka ``ThreadingActor`` (daemon thread) for its whole life,
restarts included, driven only through pykka's public API: it is started with ``start``, told one
``SERVE`` message (``ActorRef.tell``) whose ``on_receive`` serves the cell's mailbox until the cell
stops for good, and stopped with ``ActorRef.stop``. While nothing is runnable it sleeps on the
mailbox's condition, which a ``put`` notifies: the same loop, and cost, as when it overrode pykka's
private ``_actor_loop_running``. Simple, isolates blocking handlers, costs a thread.
``PoolDispatcher``: kameo-style, an actor is a task; mail for an idle cell sets its ``scheduled``
flag and queues it on N workers, which handle up to ``batch`` messages, clear the flag and requeue
it if it has more. One worker per cell at a time. Handlers must not block for long on a pooled actor.

Both keep per-actor order (one runner per cell at a time) and let a stop or kill go before the next
message: it raises ``cell.preempt``, ``Cell.process_one`` yields while it is set, and ``resume``
makes the cell runnable again when it is done.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any

import pykka

from pytsnet.actors.runtime import logs

if TYPE_CHECKING:
    from pytsnet.actors.runtime.cell import Cell

__all__ = ["Dispatcher", "PoolDispatcher", "ThreadDispatcher"]

log = logs.subsystem_logger("runtime")


class Dispatcher:
    def attach(self, cell: Cell) -> None:
        """A new incarnation is RUNNING: make it process its mailbox."""
        raise NotImplementedError

    def notify(self, cell: Cell) -> None:
        """Mail arrived for ``cell`` (``Mailbox.put`` already notified the mailbox's condition)."""
        raise NotImplementedError

    def resume(self, cell: Cell) -> None:
        """``cell`` may be runnable again (a stop or kill that preempted it is done)."""
        self.notify(cell)

    def detach(self, cell: Cell) -> None:
        """``cell`` stopped for good: release what runs it."""

    def close(self) -> None:
        pass


SERVE = "serve"
"""The one message a cell runner handles: serve the cell's mailbox until the cell stops."""


class _CellRunner(pykka.ThreadingActor):
    """The pykka actor running one cell, across its incarnations."""

    use_daemon_thread = True

    def __init__(self, cell: Cell) -> None:
        super().__init__()
        self.cell = cell

    def on_start(self) -> None:
        cell = self.cell  # name the thread after the actor (thread dumps, leak reports)
        threading.current_thread().name = f"actor:{cell.system.name}/{cell.name}"

    def on_receive(self, message: Any) -> None:
        if message == SERVE:
            self._serve()

    def _serve(self) -> None:
        from pytsnet.actors.runtime.cell import Status

        cell, mailbox = self.cell, self.cell.mailbox

        def runnable() -> bool:
            if cell.is_stopped:
                return True
            return len(mailbox) > 0 and cell.status is Status.RUNNING and not cell.preempt

        while True:
            # The condition is taken before every message, not only when idle: draining a burst
            # without it measured ~10% more CPU per MiB on the DERP path (bench/e2e.py), as the
            # runner then keeps the GIL from the threads feeding it.
            with mailbox.cond:
                mailbox.cond.wait_for(runnable)
            if cell.is_stopped:
                return
            try:
                cell.process_one(None)
            except Exception:  # handlers' errors are the cell's business: this is a runtime bug
                log.exception("runner of %s failed; it keeps serving the cell", cell.name)


class ThreadDispatcher(Dispatcher):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runners: dict[Cell, pykka.ActorRef[_CellRunner]] = {}

    def attach(self, cell: Cell) -> None:
        with self._lock:
            runner = self._runners.get(cell)
            if runner is None:
                runner = self._runners[cell] = _CellRunner.start(cell)
                runner.tell(SERVE)
                return
        self.resume(cell)  # a restart: the runner sleeps until the new incarnation is runnable

    def notify(self, cell: Cell) -> None:
        pass  # the runner sleeps on the mailbox condition, which put() notifies

    def resume(self, cell: Cell) -> None:
        with cell.mailbox.cond:
            cell.mailbox.cond.notify_all()

    def detach(self, cell: Cell) -> None:
        with self._lock:
            runner = self._runners.pop(cell, None)
        if runner is not None:
            self.resume(cell)  # wakes the runner, which sees the cell stopped and returns
            runner.stop(block=False)


def run_cell(dispatcher: Dispatcher, cell: Cell, batch: int) -> None:
    """Handle up to ``batch`` items of a scheduled cell, unschedule it, requeue it if it has more."""
    mailbox, n = cell.mailbox, 0
    try:
        while n < batch and len(mailbox) and cell.process_one(None):
            n += 1
    finally:
        with cell.sched_lock:
            cell.scheduled = False
    if len(mailbox):  # more mail, or mail that raced the flag (a sender after the clear sees it False)
        dispatcher.notify(cell)


class PoolDispatcher(Dispatcher):
    def __init__(self, workers: int = 4, batch: int = 32, name: str = "pool") -> None:
        self._queue: queue.SimpleQueue[Cell | None] = queue.SimpleQueue()
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
        if cell.scheduled:  # fast path, no lock: the worker re-checks the mailbox after clearing it
            return
        from pytsnet.actors.runtime.cell import Status

        with cell.sched_lock:
            if (cell.scheduled or cell.preempt or len(cell.mailbox) == 0
                    or cell.status is not Status.RUNNING):
                return
            cell.scheduled = True
        self._queue.put(cell)

    def _work(self) -> None:
        while True:
            cell = self._queue.get()
            if cell is None:
                return
            try:
                run_cell(self, cell, self._batch)  # requeued behind others if it has more mail
            except Exception:  # handlers' errors are the cell's business: this is a runtime bug
                log.exception("pool worker failed running %s", cell.name)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
