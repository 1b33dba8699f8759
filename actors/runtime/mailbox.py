"""Bounded mailboxes with a per-actor overflow policy; control items bypass the bound.

The mailbox belongs to the actor's identity (its cell), not to an incarnation, so messages sent
while an actor restarts wait here and reach the next incarnation.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from pytsnet.actors.runtime.errors import ActorStopped, MailboxFull

__all__ = ["Mailbox", "MailboxConfig", "MailboxPolicy"]


class MailboxPolicy(enum.Enum):
    BLOCK = "block"  # wait up to block_timeout for room, then MailboxFull
    DROP_NEWEST = "drop_newest"  # drop the incoming tell and count it (asks get MailboxFull)
    FAIL = "fail"  # raise MailboxFull immediately


@dataclass(frozen=True)
class MailboxConfig:
    capacity: int = 1000
    policy: MailboxPolicy = MailboxPolicy.BLOCK
    block_timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("mailbox capacity must be >= 1 (nothing is unbounded)")


class Mailbox:
    def __init__(self, config: MailboxConfig) -> None:
        self.config = config
        self._user: deque[Any] = deque()
        self._control: deque[Any] = deque()
        self.cond = threading.Condition()
        self.dropped = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._user) + len(self._control)

    def put(self, item: Any, *, is_ask: bool) -> bool:
        """Enqueue a user message; returns False if dropped by policy. Raises ``MailboxFull``."""
        cfg = self.config
        with self.cond:
            if self.closed:
                raise ActorStopped("actor is stopped")
            if len(self._user) >= cfg.capacity:
                if cfg.policy is MailboxPolicy.FAIL:
                    raise MailboxFull(f"mailbox full ({cfg.capacity})")
                if cfg.policy is MailboxPolicy.DROP_NEWEST:
                    if is_ask:
                        raise MailboxFull(f"mailbox full ({cfg.capacity}), ask refused")
                    self.dropped += 1
                    return False
                def room() -> bool:
                    return self.closed or len(self._user) < cfg.capacity

                if not self.cond.wait_for(room, cfg.block_timeout):
                    raise MailboxFull(f"mailbox full ({cfg.capacity}) for {cfg.block_timeout}s")
                if self.closed:
                    raise ActorStopped("actor is stopped")
            self._user.append(item)
            self.cond.notify_all()
        return True

    def put_control(self, item: Any) -> None:
        with self.cond:
            if self.closed:
                return
            self._control.append(item)
            self.cond.notify_all()

    def pop(self) -> Any | None:
        """Next item, control first; None if empty. Wakes blocked senders."""
        with self.cond:
            if self._control:
                return self._control.popleft()
            if self._user:
                item = self._user.popleft()
                self.cond.notify_all()
                return item
            return None

    def drain(self, close: bool = False) -> list[Any]:
        """Take everything; with ``close`` every later ``put`` raises ``ActorStopped``."""
        with self.cond:
            self.closed = self.closed or close
            items = [*self._control, *self._user]
            self._control.clear()
            self._user.clear()
            self.cond.notify_all()
            return items
