"""Bounded mailboxes with a per-actor overflow policy; control items bypass the bound.

The bound is in messages and, for actors that carry payloads, in bytes: a message that defines
``payload_size()`` (the data-plane bursts) is weighed by it, so a queue of 64 KiB datagrams cannot
hold what a queue of 64-byte ones may. A message that is larger than the byte bound on its own is
still admitted into an empty mailbox (it could never be delivered otherwise).

The mailbox belongs to the actor's identity (its cell), not to an incarnation, so messages sent
while an actor restarts wait here and reach the next incarnation.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

from pytsnet.actors.runtime.condition import LazyCondition
from pytsnet.actors.runtime.errors import ActorStopped, MailboxFull

__all__ = ["Backlog", "Mailbox", "MailboxConfig", "MailboxPolicy", "payload_size"]


class MailboxPolicy(enum.Enum):
    BLOCK = "block"  # wait up to block_timeout for room, then MailboxFull
    DROP_NEWEST = "drop_newest"  # drop the incoming tell and count it (asks get MailboxFull)
    FAIL = "fail"  # raise MailboxFull immediately


@dataclass(frozen=True)
class MailboxConfig:
    capacity: int = 1000
    policy: MailboxPolicy = MailboxPolicy.BLOCK
    block_timeout: float = 1.0
    max_bytes: int | None = None
    """Bound on the summed ``payload_size()`` of queued messages; None: messages only."""

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("mailbox capacity must be >= 1 (nothing is unbounded)")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError("mailbox max_bytes must be >= 1 (or None)")


class Backlog(NamedTuple):
    """What waits in a mailbox now: user messages and their summed ``payload_size()``."""

    messages: int
    bytes: int


def payload_size(msg: Any) -> int:
    """``msg.payload_size()`` if the message defines it (payload-carrying messages do), else 0."""
    fn = getattr(msg, "payload_size", None)
    return int(fn()) if fn is not None else 0


class Mailbox:
    __slots__ = (
        "_control", "_sizes", "_user", "bytes", "closed", "cond", "config", "dropped", "dropped_bytes",
    )

    def __init__(self, config: MailboxConfig) -> None:
        self.config = config
        # Queues exist only while they hold something (a deque preallocates ~760 bytes, and most of
        # 10,000 idle flows' mailboxes are empty): made on the first put, dropped when emptied.
        self._user: deque[Any] | None = None
        self._sizes: deque[int] | None = None  # payload size of each queued user item, in order
        self._control: deque[Any] | None = None
        self.cond = LazyCondition()
        self.dropped = 0
        self.dropped_bytes = 0
        self.bytes = 0  # summed payload size of the queued user items
        self.closed = False

    def __len__(self) -> int:
        return (len(self._user) if self._user else 0) + (len(self._control) if self._control else 0)

    def backlog(self) -> Backlog:
        """Queued user messages and bytes (a snapshot; safe from any thread).

        Without the lock: every flow asks its sink after each emit, and taking the sink's lock for
        it made the flows queue behind the link's own puts and pops (issue 14). Each read is atomic
        under the GIL; the two may be a put apart, which a congestion heuristic does not mind."""
        user = self._user
        return Backlog(len(user) if user else 0, self.bytes)

    def _full(self, size: int) -> bool:
        cfg = self.config
        if self._user is not None and len(self._user) >= cfg.capacity:
            return True
        cap = cfg.max_bytes
        return cap is not None and self.bytes > 0 and self.bytes + size > cap

    def put(self, item: Any, *, is_ask: bool, size: int = 0) -> bool:
        """Enqueue a user message weighing ``size`` bytes; returns False if dropped by policy.
        Raises ``MailboxFull``."""
        cfg = self.config
        with self.cond:
            if self.closed:
                raise ActorStopped("actor is stopped")
            if self._full(size):
                if cfg.policy is MailboxPolicy.FAIL:
                    raise MailboxFull(f"mailbox full ({len(self._user or ())} messages, {self.bytes} bytes)")
                if cfg.policy is MailboxPolicy.DROP_NEWEST:
                    if is_ask:
                        raise MailboxFull(f"mailbox full ({len(self._user or ())} messages), ask refused")
                    self.dropped += 1
                    self.dropped_bytes += size
                    return False

                def room() -> bool:
                    return self.closed or not self._full(size)

                if not self.cond.wait_for(room, cfg.block_timeout):
                    raise MailboxFull(f"mailbox full ({len(self._user or ())} messages, {self.bytes} bytes) "
                                      f"for {cfg.block_timeout}s")
                if self.closed:
                    raise ActorStopped("actor is stopped")
            if self._user is None or self._sizes is None:
                self._user, self._sizes = deque(), deque()
            self._user.append(item)
            self._sizes.append(size)
            self.bytes += size
            self.cond.notify_all()
        return True

    def put_control(self, item: Any) -> None:
        with self.cond:
            if self.closed:
                return
            if self._control is None:
                self._control = deque()
            self._control.append(item)
            self.cond.notify_all()

    def peek(self) -> Any | None:
        """The item ``pop`` would return next, left queued (a fault rule that kills by message type)."""
        with self.cond:
            if self._control:
                return self._control[0]
            return self._user[0] if self._user else None

    def pop(self) -> Any | None:
        """Next item, control first; None if empty. Wakes blocked senders."""
        with self.cond:
            ctl = self._control
            if ctl:
                item = ctl.popleft()
                if not ctl:
                    self._control = None
                return item
            user, sizes = self._user, self._sizes
            if user and sizes:
                item = user.popleft()
                self.bytes -= sizes.popleft()
                if not user:
                    self._user = self._sizes = None
                self.cond.notify_all()
                return item
            return None

    def drain(self, close: bool = False) -> list[Any]:
        """Take everything; with ``close`` every later ``put`` raises ``ActorStopped``."""
        with self.cond:
            self.closed = self.closed or close
            items = [*(self._control or ()), *(self._user or ())]
            self._control = self._user = self._sizes = None
            self.bytes = 0
            self.cond.notify_all()
            return items
