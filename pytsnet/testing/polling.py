"""Poll a condition in tests and rigs: actors, relays and Go nodes change state on their own threads,
so tests wait for the state they need (bounded) instead of sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_until"]


def wait_until(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.01) -> None:
    """Return once ``pred()`` is true; ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(interval)
