"""``ActorRef``: the stable handle to an actor identity (it survives restarts).

``tell`` enqueues and returns; ``ask`` blocks for the typed reply; ``ask_async`` awaits it
without blocking the event loop, on asyncio or trio (a ``ThreadWaker`` carries the reply's wake-up).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio

from pytsnet.actors.runtime.errors import AskTimeout
from pytsnet.actors.runtime.waker import ThreadWaker

if TYPE_CHECKING:
    from pytsnet.actors.runtime.cell import Cell
    from pytsnet.actors.runtime.mailbox import Backlog
    from pytsnet.messages.base import Message, Request

__all__ = ["ActorRef", "Reply", "current"]

_R = TypeVar("_R")


class _Current(threading.local):
    """Which actor (name) and which envelope (seq) the current thread is handling, if any."""

    name: str | None = None
    seq: int | None = None
    sink: Callable[[ActorRef, Message, bool], Any] | None = None  # replay intercepts sends here


current = _Current()


class Reply:
    """A one-shot reply slot, settable once from the actor thread, awaitable from anywhere."""

    __slots__ = ("_callbacks", "_error", "_event", "_lock", "_value")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._value: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = []

    def set(self, value: Any) -> None:
        self._settle(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._value, self._error = value, error
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()

    def done(self) -> bool:
        return self._event.is_set()

    def add_done_callback(self, cb: Callable[[], None]) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(cb)
                return
        cb()

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self, timeout: float | None) -> Any:
        if not self._event.wait(timeout):
            raise AskTimeout(f"no reply within {timeout}s")
        return self.result()


class ActorRef:
    __slots__ = ("_cell",)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def incarnation(self) -> int:
        """Starts at 1; +1 on every restart."""
        return self._cell.incarnation

    @property
    def is_alive(self) -> bool:
        return not self._cell.is_stopped

    @property
    def dropped(self) -> int:
        """Tells dropped by a DROP_NEWEST mailbox."""
        return self._cell.mailbox.dropped

    @property
    def dropped_bytes(self) -> int:
        """Summed ``payload_size()`` of the tells a DROP_NEWEST mailbox dropped."""
        return self._cell.mailbox.dropped_bytes

    def backlog(self) -> Backlog:
        """Messages and payload bytes waiting in the mailbox now, read without asking the actor
        (an ask would queue behind that very backlog)."""
        return self._cell.mailbox.backlog()

    def tell(self, msg: Message) -> bool:
        """Enqueue; raises ``UnhandledMessage``, ``ActorStopped`` or ``MailboxFull`` (per policy).
        Returns False when a DROP_NEWEST mailbox dropped the message (it is counted there)."""
        if current.sink is not None:
            current.sink(self, msg, False)
            return True
        return self._cell.send(msg, None)

    def ask(self, msg: Request[_R], timeout: float = 5.0) -> _R:
        """Send and wait for the reply (typed by the request: ``ask(GetPeers())`` is a ``PeerTable``);
        raises ``HandlerError``, ``AskTimeout``, ``ActorStopped``..."""
        if current.sink is not None:
            return cast("_R", current.sink(self, msg, True))
        reply = Reply()
        self._cell.send(msg, reply)
        return cast("_R", reply.wait(timeout))

    def ask_then(self, msg: Request[_R], then: Callable[[Reply], None]) -> None:
        """Send an ask without waiting: ``then(reply)`` runs once the reply is settled, on the thread
        that settles it (tell yourself a message from it; do no work there). For an actor that must
        keep answering its own mailbox while another actor works on a deferred reply. There is no
        timeout: arm one with ``send_after``. Under replay the ask is recorded as a send (its answer is
        the message ``then`` told, which the recorded inbox holds). Raises as ``tell``."""
        if current.sink is not None:
            current.sink(self, msg, False)
            return
        reply = Reply()
        self._cell.send(msg, reply)

        def settled() -> None:
            # What ``then`` tells is the runtime handing the answer over, not a send of the actor whose
            # handler settled the reply: keep it out of that actor's trace (its replay has no slots).
            prev = (current.name, current.seq)
            current.name = current.seq = None
            try:
                then(reply)
            finally:
                current.name, current.seq = prev

        reply.add_done_callback(settled)

    async def ask_async(self, msg: Request[_R], timeout: float = 5.0) -> _R:
        """Like ``ask`` but awaits (asyncio or trio); the event loop keeps running while the actor works."""
        waker = ThreadWaker()
        reply = Reply()
        self._cell.send(msg, reply)
        reply.add_done_callback(waker.set)
        try:
            with anyio.fail_after(timeout):
                await waker.wait()
        except TimeoutError:
            raise AskTimeout(f"no reply within {timeout}s") from None
        return cast("_R", reply.result())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop this actor for good (no restart); waits for ``on_stop``. Idempotent."""
        self._cell.system.stop_actor(self, timeout)

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.system.name}/{self.name}#{self.incarnation}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._cell is self._cell

    def __hash__(self) -> int:
        return id(self._cell)
