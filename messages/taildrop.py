"""Messages of the Taildrop directory's janitor (``actors/taildrop/janitor.py``; issue 22, 22a)."""

from __future__ import annotations

from pytsnet.messages.base import Message, Request

__all__ = ["TaildropSweep", "TaildropSweepNow", "TaildropSwept"]


class TaildropSweep(Message, tag="taildrop.sweep"):
    """The janitor's own timer: look for partial files nobody resumed within the delay."""


class TaildropSwept(Message, tag="taildrop.swept"):
    removed: list[str] = []
    """The partial files this sweep deleted (their on-disk names)."""
    total_removed: int = 0
    """Partial files deleted since the janitor (this incarnation) started."""


class TaildropSweepNow(Request[TaildropSwept], tag="taildrop.sweep_now"):
    """Sweep at once (the device's and the tests' ask); ``max_age`` overrides the delay for this one."""

    max_age: float | None = None
