"""Where cells run: a pykka actor each, or tasks on a small shared worker pool.

``ThreadDispatcher``: each cell owns a pykka ``ThreadingActor`` (daemon thread) for its whole life,
restarts included, driven only through pykka's public API: it is started with ``start``, told one
``SERVE`` message (``ActorRef.tell``) whose ``on_receive`` serves the cell's mailbox until the cell
stops for good, and stopped with ``ActorRef.stop``. While nothing is runnable it sleeps on the
mailbox's condition, which a ``put`` notifies: the same loop, and cost, as when it overrode pykka's
private ``_actor_loop_running``. Simple, isolates blocking handlers, costs a thread.
``PoolDispatcher``: kameo-style, an actor is a task; mail for an idle cell queues it (its
``scheduled`` state) for N workers, which handle up to ``batch`` messages, release it and requeue it
if it has more. A timer tick queues its cell in an urgent lane served first (issue 14: ticks waited
seconds behind 1,000 runnable flows). One worker per cell at a time. A parked worker is woken only
when no worker is awake (or, by a watchdog, when an awake one has started nothing for a while), so a
busy pool runs on one warm thread. Handlers must not block for long on a pooled actor.

Both keep per-actor order (one runner per cell at a time) and let a stop or kill go before the next
message: it raises ``cell.preempt``, ``Cell.process_one`` yields while it is set, and ``resume``
makes the cell runnable again when it is done.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
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

    def notify(self, cell: Cell, urgent: bool = False) -> None:
        """Mail arrived for ``cell`` (``Mailbox.put`` already notified the mailbox's condition);
        ``urgent``: it is a timer tick, which should not wait for every other runnable cell."""
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

    def notify(self, cell: Cell, urgent: bool = False) -> None:
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
    """N workers over two FIFO lanes of runnable cells (urgent and normal), woken only when needed.

    Why the lanes (issue 14): with 1,000 busy flow actors on two workers a FIFO round took 1.2-2.5 s,
    and a flow that waited only for its pacing or retransmission tick waited for all of it. A timer
    tick that makes an idle cell runnable queues it in the urgent lane, which workers serve first
    (but a normal cell after ``urgent_burst`` urgent ones, so ticks cannot starve data). A tick for a
    cell that is already queued does not move it: promoting those measured *less* fair (flows that
    tick often, the fast ones, were served more often: max/min 3.8-9.8 against main's 2.1-13.6).

    Why the wake rule: handlers hold the GIL, so a second awake worker adds no parallelism, only a
    wake-up and a GIL hand-over per runnable cell (on a VM whose idle CPUs halt, tens of µs of wall
    time each). A cell made runnable while some worker is awake is left in its lane for that worker
    (it takes the next cell before it parks); a parked worker is woken only when none is awake, the
    one that parked last first (its thread is the warmest). A handler that blocks would then hold up
    the cells queued behind it, so a watchdog wakes one more worker whenever cells wait and no
    worker has started a cell for ``stall`` seconds.
    """

    def __init__(self, workers: int = 4, batch: int = 32, name: str = "pool", urgent_burst: int = 4,
                 stall: float = 0.01) -> None:
        # Lanes are deques (append/popleft are atomic under the GIL).
        self._urgent: deque[Cell] = deque()
        self._normal: deque[Cell] = deque()
        self._batch = batch
        self._urgent_burst = urgent_burst
        self._stall = stall
        self._mu = threading.Lock()  # guards _parked and _awake
        self._parked: list[threading.Lock] = []  # held locks of parked workers, last parked last
        self._awake = workers
        self._started = 0  # cells started, for the watchdog's progress test
        self._closed = False
        self._watch = threading.Event()  # set while cells may be waiting on a busy worker
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        self._threads.append(threading.Thread(target=self._watchdog, name=f"{name}-watchdog", daemon=True))
        for t in self._threads:
            t.start()

    def attach(self, cell: Cell) -> None:
        self.notify(cell)

    def notify(self, cell: Cell, urgent: bool = False) -> None:
        if cell.scheduled:  # fast path, no lock: the worker re-checks the mailbox after clearing it
            return
        from pytsnet.actors.runtime.cell import Status

        with cell.sched_lock:
            if (cell.scheduled or cell.preempt or len(cell.mailbox) == 0
                    or cell.status is not Status.RUNNING):
                return
            cell.scheduled = True
        (self._urgent if urgent else self._normal).append(cell)
        if self._awake:
            # An awake worker takes it before parking: it looks at the lanes again after counting
            # itself out, so a stale read here loses nothing.
            if not self._watch.is_set():
                self._watch.set()
            return
        self._wake_one()

    def _wake_one(self) -> None:
        with self._mu:
            if self._parked:
                self._awake += 1
                self._parked.pop().release()

    def _next(self, burst: int) -> tuple[Cell, bool] | None:
        """The next cell (urgent lane first, a normal one after ``urgent_burst``) and its lane, or
        None when both lanes are empty."""
        first, second = ((self._normal, self._urgent) if burst >= self._urgent_burst
                         else (self._urgent, self._normal))
        for lane in (first, second):
            with contextlib.suppress(IndexError):
                return lane.popleft(), lane is self._urgent
        return None

    def _park(self, me: threading.Lock) -> None:
        """Count this worker out and sleep until woken, unless a cell came in meanwhile."""
        with self._mu:
            if self._closed:
                return
            self._awake -= 1
            self._parked.append(me)
        if self._urgent or self._normal:  # queued after our last look, by a notify that saw us awake
            with self._mu:
                if me in self._parked:
                    self._parked.remove(me)
                    self._awake += 1
                    return
        me.acquire()  # released by _wake_one (at once, if it popped us after the look above)

    def _work(self) -> None:
        me = threading.Lock()
        me.acquire()
        burst = 0
        while not self._closed:
            got = self._next(burst)
            if got is None:
                self._park(me)
                continue
            cell, urgent = got
            burst = burst + 1 if urgent else 0
            self._started += 1
            try:
                run_cell(self, cell, self._batch)  # requeued behind others if it has more mail
            except Exception:  # handlers' errors are the cell's business: this is a runtime bug
                log.exception("pool worker failed running %s", cell.name)

    def _watchdog(self) -> None:
        """While cells wait with workers awake, wake one more each ``stall`` without progress."""
        seen = -1
        while not self._closed:
            self._watch.wait()
            if self._closed:
                return
            time.sleep(self._stall)
            if not (self._urgent or self._normal):
                self._watch.clear()
                if self._urgent or self._normal:  # a notify between the look and the clear
                    self._watch.set()
                seen = -1
                continue
            if self._started == seen:
                self._wake_one()
            seen = self._started

    def close(self) -> None:
        self._closed = True
        self._watch.set()
        with self._mu:
            parked, self._parked = self._parked, []
            self._awake += len(parked)
        for lock in parked:
            lock.release()
