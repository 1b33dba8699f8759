"""Where cells run: a pykka actor each, or tasks on a small shared worker pool.

Both dispatchers schedule a cell the same way (kameo's task model): mail arriving for an idle cell
sets its ``scheduled`` flag and hands the cell to one runner, which handles messages until the
mailbox is empty (or a batch is done), clears the flag and re-checks. One runner per cell at a time,
so per-actor ordering holds; a stop or kill raises ``cell.preempt``, which makes the runner yield
before the next message (``Cell.process_one``) and keeps the cell unscheduled until it is done.

``ThreadDispatcher``: each cell owns a pykka ``ThreadingActor`` (daemon thread) for its whole life,
restarts included; mail is a ``RUN`` poke told through pykka's public ``ActorRef.tell`` and handled
in ``on_receive``. The cell's own bounded mailbox holds the messages, pykka's inbox only the pokes
(at most one outstanding). The runner is stopped (``ActorRef.stop``) when the cell stops for good.
Simple, isolates blocking handlers, costs a thread.
``PoolDispatcher``: an actor is a task; a scheduled cell is queued on N workers which handle up to
``batch`` messages then requeue it. Handlers must not block for long on a pooled actor.
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

RUN = "run"
"""The poke a cell runner receives: handle the cell's mailbox."""


class Dispatcher:
    def attach(self, cell: Cell) -> None:
        """A new incarnation is RUNNING: make it process its mailbox."""
        raise NotImplementedError

    def notify(self, cell: Cell) -> None:
        """Mail arrived for ``cell`` (or a preemption ended): schedule it unless it already is."""
        if cell.scheduled:  # fast path, no lock: the runner re-checks the mailbox after clearing it
            return
        from pytsnet.actors.runtime.cell import Status

        with cell.sched_lock:
            if (cell.scheduled or cell.preempt or len(cell.mailbox) == 0
                    or cell.status is not Status.RUNNING):
                return
            cell.scheduled = True
        if not self._schedule(cell):
            with cell.sched_lock:
                cell.scheduled = False

    def _schedule(self, cell: Cell) -> bool:
        """Hand the scheduled ``cell`` to a runner; False if there is none any more."""
        raise NotImplementedError

    def detach(self, cell: Cell) -> None:
        """``cell`` stopped for good: release what runs it."""

    def close(self) -> None:
        pass


def run_cell(dispatcher: Dispatcher, cell: Cell, batch: int | None) -> None:
    """Handle up to ``batch`` (None: all) items of a scheduled cell, unschedule it, re-check."""
    n = 0
    try:
        while (batch is None or n < batch) and cell.process_one(None):
            n += 1
    finally:
        with cell.sched_lock:
            cell.scheduled = False
    dispatcher.notify(cell)  # more mail (or mail that raced the flag): schedule again


class _CellRunner(pykka.ThreadingActor):
    """The pykka actor that runs one cell: each ``RUN`` poke handles the cell's mailbox."""

    use_daemon_thread = True

    def __init__(self, dispatcher: ThreadDispatcher, cell: Cell) -> None:
        super().__init__()
        self.dispatcher = dispatcher
        self.cell = cell

    def on_start(self) -> None:
        cell = self.cell  # name the thread after the actor (thread dumps, leak reports)
        threading.current_thread().name = f"actor:{cell.system.name}/{cell.name}"

    def on_receive(self, message: Any) -> None:
        if message != RUN:
            return
        try:
            run_cell(self.dispatcher, self.cell, None)
        except Exception:  # handlers' errors are the cell's business: this is a runtime bug
            log.exception("runner of %s failed; it keeps serving the cell", self.cell.name)


class ThreadDispatcher(Dispatcher):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runners: dict[Cell, pykka.ActorRef[_CellRunner]] = {}

    def attach(self, cell: Cell) -> None:
        with self._lock:
            if cell not in self._runners:
                self._runners[cell] = _CellRunner.start(self, cell)
        self.notify(cell)

    def _schedule(self, cell: Cell) -> bool:
        runner = self._runners.get(cell)
        if runner is None:
            return False
        try:
            runner.tell(RUN)
        except pykka.ActorDeadError:
            return False
        return True

    def detach(self, cell: Cell) -> None:
        with self._lock:
            runner = self._runners.pop(cell, None)
        if runner is not None:
            runner.stop(block=False)


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

    def _schedule(self, cell: Cell) -> bool:
        self._queue.put(cell)
        return True

    def _work(self) -> None:
        while True:
            cell = self._queue.get()
            if cell is None:
                return
            try:
                run_cell(self, cell, self._batch)  # then requeued behind others if it has more mail
            except Exception:  # handlers' errors are the cell's business: this is a runtime bug
                log.exception("pool worker failed running %s", cell.name)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
