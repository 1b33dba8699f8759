"""Fault injection for chaos tests and users' chaos rigs.

``FaultInjector(seed).kill_after(n, name=..., actor_type=...)`` kills matching actors just before
they would handle their (n+1)-th message (counted across incarnations, so a restarted actor is not
killed again by the same rule unless ``repeat``); ``kill_before(MessageType, ...)`` kills them just
before they would handle a message of that type (exact where counting messages races with other
senders); ``kill_randomly(p, ...)`` kills with probability ``p`` per message from a seeded RNG
(reproducible). A kill is an abnormal exit with ``Killed``: the
message that would have been handled stays queued for the next incarnation.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytsnet.actors.runtime.errors import Killed

if TYPE_CHECKING:
    from pytsnet.actors.runtime.actor import Actor
    from pytsnet.actors.runtime.cell import Cell
    from pytsnet.actors.runtime.ref import ActorRef
    from pytsnet.actors.runtime.system import ActorSystem

__all__ = ["FaultInjector", "Kill"]


@dataclass
class Kill:
    name: str | None
    actor_type: type[Actor] | None
    after: int | None
    probability: float
    repeat: bool
    message_type: type | None = None
    fired: int = 0
    base: dict[str, int] = field(default_factory=dict)  # handled count at this rule's last kill

    def matches(self, cell: Cell) -> bool:
        if self.name is not None and cell.name != self.name:
            return False
        return self.actor_type is None or issubclass(cell.spec.actor_cls, self.actor_type)


class FaultInjector:
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rngs: dict[str, random.Random] = {}
        self.rules: list[Kill] = []
        self.kills: list[tuple[str, int]] = []  # (name, handled count) of every kill, in order
        self._lock = threading.Lock()
        self.killed = threading.Event()

    def install(self, system: ActorSystem) -> FaultInjector:
        system.faults = self
        return self

    def kill_after(self, n: int, *, name: str | None = None, actor_type: type[Actor] | None = None,
                   repeat: bool = False) -> Kill:
        rule = Kill(name, actor_type, n, 0.0, repeat)
        self.rules.append(rule)
        return rule

    def kill_before(self, message_type: type, *, name: str | None = None,
                    actor_type: type[Actor] | None = None, repeat: bool = False) -> Kill:
        rule = Kill(name, actor_type, None, 0.0, repeat, message_type=message_type)
        self.rules.append(rule)
        return rule

    def kill_randomly(self, probability: float, *, name: str | None = None,
                      actor_type: type[Actor] | None = None, repeat: bool = True) -> Kill:
        rule = Kill(name, actor_type, None, probability, repeat)
        self.rules.append(rule)
        return rule

    def should_kill(self, cell: Cell, upcoming: object = None) -> bool:
        """Called by the runtime before each message (``upcoming``: the queued item it would handle
        next); True means: kill this incarnation now."""
        with self._lock:
            for rule in self.rules:
                if (rule.fired and not rule.repeat) or not rule.matches(cell):
                    continue
                if rule.message_type is not None:  # an envelope's message; runtime control items never
                    hit = isinstance(getattr(upcoming, "msg", None), rule.message_type)
                elif rule.after is not None:
                    hit = cell.handled - rule.base.get(cell.name, 0) >= rule.after
                else:  # one RNG per actor name: reproducible whatever the thread interleaving
                    rng = self._rngs.setdefault(cell.name, random.Random(f"{self.seed}:{cell.name}"))
                    hit = rng.random() < rule.probability
                if hit:
                    rule.fired += 1
                    rule.base[cell.name] = cell.handled
                    self.kills.append((cell.name, cell.handled))
                    self.killed.set()
                    return True
        return False

    @staticmethod
    def kill_now(ref: ActorRef, reason: str = "killed") -> None:
        """Kill an actor immediately (after its current message), as a crash."""
        ref._cell.kill(Killed(reason))
