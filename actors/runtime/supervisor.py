"""Supervisors: child specs, restart policy, strategy, restart budget, escalation.

A supervisor is an actor; crash reports from its children arrive in its mailbox as control items,
so restarts happen one at a time in the supervisor's context. Children start in spec order and stop
in reverse order. Restarting a child keeps its cell (name, ref, mailbox): only the Python object
behind it is rebuilt. Past the budget (``max_restarts`` within ``within`` seconds of the system
clock) the supervisor stops its children and fails with ``RestartBudgetExceeded``: its own
parent then decides (the root supervisor's failure shuts the system down).
"""

from __future__ import annotations

import enum
import functools
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytsnet.actors.runtime import logs
from pytsnet.actors.runtime.actor import Actor
from pytsnet.actors.runtime.cell import Cell, _Control
from pytsnet.actors.runtime.errors import RestartBudgetExceeded

if TYPE_CHECKING:
    from pytsnet.actors.runtime.mailbox import MailboxConfig

log = logs.subsystem_logger("runtime")

__all__ = ["ChildSpec", "Restart", "Strategy", "Supervisor", "SupervisorConfig", "supervisor_spec"]


class Restart(enum.Enum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after an abnormal exit
    NEVER = "never"  # never restarted


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


@dataclass(frozen=True)
class ChildSpec:
    actor_cls: type[Actor]
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    restart: Restart = Restart.PERMANENT
    mailbox: MailboxConfig | None = None  # None: the system default
    dispatcher: str | None = None  # "thread" | "pool"; None: the system default


@dataclass(frozen=True)
class SupervisorConfig:
    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = 3
    within: float = 5.0


def supervisor_spec(
    name: str,
    children: list[ChildSpec],
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = 3,
    within: float = 5.0,
    restart: Restart = Restart.PERMANENT,
) -> ChildSpec:
    """A child spec for a nested supervisor: declare a device's tree in one expression."""
    return ChildSpec(
        Supervisor, name, args=(SupervisorConfig(strategy, max_restarts, within), tuple(children)),
        restart=restart,
    )


class Supervisor(Actor):
    def __init__(self, config: SupervisorConfig | None = None, children: tuple[ChildSpec, ...] = ()) -> None:
        self.config = config or SupervisorConfig()
        self.initial = children
        self._restarts: deque[float] = deque()

    @property
    def _cell(self) -> Cell:
        cell = self.ctx
        if not isinstance(cell, Cell):
            raise TypeError(f"{self.name}: a supervisor runs in a live cell (not a replay)")
        return cell

    def on_start(self) -> None:
        cell = self._cell
        existing = self._children()
        if existing:  # restarted supervisor: the same child identities start again, in order
            for child in existing:
                if not child.is_stopped:
                    child.start_incarnation()
            return
        for spec in self.initial:
            cell.system._start_child(cell, spec)

    def _before_stop(self, final: bool) -> None:
        for child in reversed(self._children()):
            child.finalize() if final else child.suspend()

    def _children(self) -> list[Cell]:
        cell = self._cell
        with cell.children_lock:
            return list(cell.children)

    def _remove(self, child: Cell) -> None:
        cell = self._cell
        with cell.children_lock:
            if child in cell.children:
                cell.children.remove(child)

    def _child_exited(self, child: Cell, reason: BaseException | None) -> None:
        children = self._children()
        if child not in children or child.is_stopped:
            return
        policy = child.spec.restart
        if policy is Restart.NEVER or (policy is Restart.TRANSIENT and reason is None):
            child.finalize()
            self._remove(child)
            return
        now = self.clock.monotonic()
        cfg = self.config
        while self._restarts and now - self._restarts[0] > cfg.within:
            self._restarts.popleft()
        self._restarts.append(now)
        if len(self._restarts) > cfg.max_restarts:
            raise RestartBudgetExceeded(
                f"{self.name}: more than {cfg.max_restarts} restarts within {cfg.within}s "
                f"(last: {child.name}: {reason!r})"
            )
        i = children.index(child)
        if cfg.strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        elif cfg.strategy is Strategy.ONE_FOR_ALL:
            group = children
        else:
            group = children[i:]
        for c in reversed(group):
            if c is not child:
                c.suspend()
        for c in group:
            if c.is_stopped:
                continue
            try:
                log.info("%s restarts %s (%r)", self.name, c.name, reason)
                c.start_incarnation()
            except Exception as e:  # a failing on_start is another crash: it counts against the budget
                log.info("%s: restart of %s failed: %r", self.name, c.name, e)
                sup = self._cell
                sup.mailbox.put_control(_Control(functools.partial(sup._child_exited, c, e)))
                sup.dispatcher.notify(sup)
