"""``ActorSystem``: one per device. Owns the name registry, clock, timers, tracer, root supervisor.

Names are scoped to the system, so two devices in one process never clash. ``spawn`` starts an
actor (``on_start`` has run when it returns) under the root supervisor or under ``parent``;
``shutdown`` stops everything in reverse start order. If the root supervisor itself fails
(a budget escalated all the way up) the system shuts down and ``failed`` holds the reason.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

from pytsnet.actors.runtime import logs
from pytsnet.actors.runtime.actor import Actor
from pytsnet.actors.runtime.cell import Cell
from pytsnet.actors.runtime.clock import Clock, ManualClock, Scheduler, SystemClock, ThreadScheduler
from pytsnet.actors.runtime.dispatch import Dispatcher, PoolDispatcher, ThreadDispatcher
from pytsnet.actors.runtime.errors import ActorStartError, NameTaken
from pytsnet.actors.runtime.mailbox import Mailbox, MailboxConfig
from pytsnet.actors.runtime.ref import ActorRef
from pytsnet.actors.runtime.supervisor import ChildSpec, Restart, Supervisor, SupervisorConfig
from pytsnet.actors.runtime.trace import Tracer

log = logs.subsystem_logger("runtime")

__all__ = ["ActorSystem"]


class ActorSystem:
    def __init__(
        self,
        name: str,
        clock: Clock | None = None,
        tracer: Tracer | None = None,
        *,
        dispatcher: str = "thread",
        pool_workers: int = 4,
        mailbox: MailboxConfig | None = None,
        root: SupervisorConfig | None = None,
        log_route: logs.LogRoute | None = None,
    ) -> None:
        self.name = name
        self.log_route = log_route
        """Where this system's actors' ``pytsnet.<subsystem>`` records go (see ``runtime.logs``)."""
        self.clock: Clock = clock or SystemClock()
        manual = isinstance(self.clock, ManualClock)
        self.scheduler: Scheduler = self.clock if manual else ThreadScheduler(self.clock)  # type: ignore[assignment]
        if tracer is None and os.environ.get("PYTSNET_TRACE"):
            tracer = Tracer(os.environ["PYTSNET_TRACE"])
        self.tracer = tracer
        self.faults: Any = None  # a FaultInjector, when a chaos rig installs one
        self.default_mailbox = mailbox or MailboxConfig()
        self.default_dispatcher = dispatcher
        self._pool_workers = pool_workers
        self._dispatchers: dict[str, Dispatcher] = {"thread": ThreadDispatcher()}
        self._lock = threading.Lock()
        self._cells: dict[str, Cell] = {}
        self._auto = itertools.count(1)
        self.failed: BaseException | None = None
        self.stopped = threading.Event()
        spec = ChildSpec(Supervisor, "root", args=(root or SupervisorConfig(),), dispatcher="thread")
        self._root = Cell(self, spec, None, Mailbox(self.default_mailbox))
        self._register(self._root)
        self._root.start_incarnation()

    # -- spawning and lookup -------------------------------------------------------------------------
    def spawn(
        self,
        actor_cls: type[Actor],
        *args: Any,
        name: str | None = None,
        mailbox: MailboxConfig | None = None,
        restart: Restart = Restart.PERMANENT,
        dispatcher: str | None = None,
        parent: ActorRef | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Start ``actor_cls(*args, **kwargs)`` supervised by ``parent`` (a Supervisor; default root)."""
        spec = ChildSpec(actor_cls, name or f"{actor_cls.__name__}-{next(self._auto)}", args, kwargs,
                         restart, mailbox, dispatcher)
        return self.spawn_spec(spec, parent)

    def spawn_spec(self, spec: ChildSpec, parent: ActorRef | None = None) -> ActorRef:
        parent_cell = self._root if parent is None else parent._cell
        if not isinstance(parent_cell.actor, Supervisor):
            raise TypeError(f"parent {parent_cell.name} is not a running Supervisor")
        return self._start_child(parent_cell, spec).ref

    def _start_child(self, parent: Cell, spec: ChildSpec) -> Cell:
        cell = Cell(self, spec, parent, Mailbox(spec.mailbox or self.default_mailbox))
        self._register(cell)
        try:
            cell.start_incarnation()
        except Exception as e:
            cell.finalize()
            raise ActorStartError(f"{spec.name}: on_start raised {e!r}") from e
        with parent.children_lock:
            parent.children.append(cell)
        return cell

    def _register(self, cell: Cell) -> None:
        with self._lock:
            if cell.name in self._cells:
                raise NameTaken(f"{self.name}: an actor named {cell.name!r} exists")
            self._cells[cell.name] = cell

    def _forget(self, cell: Cell) -> None:
        with self._lock:
            if self._cells.get(cell.name) is cell:
                del self._cells[cell.name]

    def lookup(self, name: str) -> ActorRef | None:
        """The ref registered under ``name`` in this system, or None."""
        with self._lock:
            cell = self._cells.get(name)
        return None if cell is None else cell.ref

    def names(self) -> list[str]:
        with self._lock:
            return list(self._cells)

    @property
    def root(self) -> ActorRef:
        return self._root.ref

    def _dispatcher_for(self, kind: str | None) -> Dispatcher:
        kind = kind or self.default_dispatcher
        with self._lock:
            d = self._dispatchers.get(kind)
            if d is None:
                if kind != "pool":
                    raise ValueError(f"unknown dispatcher {kind!r} (thread|pool)")
                d = self._dispatchers[kind] = PoolDispatcher(self._pool_workers, name=f"{self.name}-pool")
            return d

    # -- stopping ----------------------------------------------------------------------------------
    def stop_actor(self, ref: ActorRef, timeout: float = 5.0) -> None:
        cell = ref._cell
        cell.finalize()
        parent = cell.parent
        if parent is not None and isinstance(parent.actor, Supervisor):
            parent.actor._remove(cell)

    def _root_exited(self, reason: BaseException | None) -> None:
        self.failed = reason
        log.error("system %s: root supervisor failed: %r; shutting down", self.name, reason)
        threading.Thread(target=self.shutdown, name=f"{self.name}-shutdown", daemon=True).start()

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop every actor, children before parents, last started first. True if done in time."""
        t = threading.Thread(target=self._shutdown, name=f"{self.name}-stop", daemon=True)
        t.start()
        t.join(timeout)
        return not t.is_alive()

    def _shutdown(self) -> None:
        self._root.finalize()
        for d in self._dispatchers.values():
            d.close()
        self.scheduler.close()
        if self.tracer is not None:
            self.tracer.close()
        self.stopped.set()

    def __enter__(self) -> ActorSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
