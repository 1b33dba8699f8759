"""``ThreadWaker``: an anyio event that any thread may set, on asyncio and trio alike.

Actors and app code meet across threads: an actor thread settles a reply or fills a channel, and an
async caller waits for it without blocking its event loop. The waker is made in the caller's loop
and remembers how to schedule work there from another thread (asyncio's ``call_soon_threadsafe`` or
trio's ``TrioToken.run_sync_soon``, found through ``anyio.lowlevel.current_token``), so waiting is
native to whichever backend runs: cancellable and with no worker thread or polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import anyio
import anyio.lowlevel

__all__ = ["ThreadWaker"]


def _threadsafe_scheduler() -> Callable[[Callable[[], object]], object]:
    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        return native.call_soon_threadsafe
    return native.run_sync_soon  # type: ignore[attr-defined,no-any-return]  # trio.lowlevel.TrioToken


class ThreadWaker:
    """Create in async code; ``set()`` from any thread; ``await wait()`` in the creating loop."""

    __slots__ = ("_event", "_schedule")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._schedule = _threadsafe_scheduler()

    def set(self) -> None:
        """Wake the waiter (idempotent; a no-op once its loop has ended)."""
        with contextlib.suppress(RuntimeError):  # asyncio: loop closed; trio: RunFinishedError
            self._schedule(self._event.set)

    async def wait(self) -> None:
        await self._event.wait()
