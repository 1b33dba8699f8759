"""Blocking I/O next to an actor: a daemon thread calls ``fn`` in a loop and tells the results.

The data plane uses it for UDP/TUN reads: the socket is owned by the actor, the read blocks here,
each datagram arrives in the actor's mailbox as an ordinary message (so the bound applies: a
BLOCK mailbox gives back-pressure, DROP_NEWEST sheds load like a NIC ring).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pytsnet.actors.runtime import logs
from pytsnet.actors.runtime.errors import ActorStopped, MailboxFull

if TYPE_CHECKING:
    from pytsnet.actors.runtime.cell import Cell
    from pytsnet.messages.base import Message

log = logs.subsystem_logger("runtime")

__all__ = ["IoLoop"]


class IoLoop:
    def __init__(
        self, cell: Cell, incarnation: int, fn: Callable[[], Message | None], close: Callable[[], None] | None
    ) -> None:
        self._cell = cell
        self._incarnation = incarnation
        self._fn = fn
        self._close = close
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"io-{cell.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from pytsnet.actors.runtime.cell import _Control

        cell = self._cell
        logs.enter(cell.system.log_route)
        while not self.stopped.is_set():
            try:
                result = self._fn()
            except Exception as e:
                if self.stopped.is_set():
                    return  # the close() that stopped us made fn fail: expected

                def fail(e: Exception = e) -> None:
                    raise e

                cell.mailbox.put_control(_Control(fail, self._incarnation))
                cell.dispatcher.notify(cell)
                return
            if result is None or self.stopped.is_set():
                continue
            try:
                cell._send_from(f"io:{cell.name}", result, None)
            except ActorStopped:
                return
            except MailboxFull:
                log.debug("io loop of %s: mailbox full, result dropped", cell.name)

    @property
    def finished(self) -> bool:
        """Stopped and its thread gone: nothing left to stop or join."""
        return self.stopped.is_set() and not self._thread.is_alive()

    def stop(self, join_timeout: float = 1.0) -> None:
        """Stop the loop: set the flag, call ``close`` to unblock ``fn``, join unless called from it."""
        self.stopped.set()
        if self._close is not None:
            try:
                self._close()
            except Exception:
                log.exception("io loop close of %s failed", self._cell.name)
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(join_timeout)
