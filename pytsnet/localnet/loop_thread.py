"""``LoopThreadServer``: what localnet's coordination server and the standalone derper share as
servers whose sockets live on one background thread's event loop.

Each subclass starts its own thread (sockets are made there, in the namespace of the thread that
called ``start``) and stops it its own way; this base gives them the rest the same way: a context
manager, ``serve_forever`` for the CLIs, and ``_call`` to run code on the loop from another thread
(the servers' state is touched only there).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Self, TypeVar

__all__ = ["LoopThreadServer"]

_T = TypeVar("_T")
CALL_TIMEOUT = 30.0


class LoopThreadServer:
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serve_forever(self) -> None:
        """Block until the server's thread ends (the CLIs; KeyboardInterrupt propagates)."""
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(1)

    def _call(self, coro_or_fn: Coroutine[Any, Any, _T] | Callable[[], _T]) -> _T:
        """Run a callable (or coroutine) on the server loop and wait for its result."""
        assert self._loop is not None

        async def wrap() -> _T:
            return await coro_or_fn if isinstance(coro_or_fn, Coroutine) else coro_or_fn()

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout=CALL_TIMEOUT)
