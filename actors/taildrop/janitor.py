"""``TaildropJanitor``: the supervised actor that keeps the Taildrop directory tidy (Go's ``fileDeleter``).

A cut upload leaves its partial file so the sender can resume it; Go deletes such files once nobody
touched them for ``deleteDelay`` (an hour), so a sender that never comes back does not fill the disk.
The janitor sweeps every ``interval`` seconds: partial files not being written (the store's active
uploads) whose last write is older than ``max_age`` are removed. Its state is the directory itself, so
a killed janitor's restart carries on from what is on disk.
"""

from __future__ import annotations

from pytsnet.actors.runtime import Actor, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.actors.taildrop.store import TaildropStore
from pytsnet.messages.taildrop import TaildropSweep, TaildropSweepNow, TaildropSwept

__all__ = ["DELETE_DELAY", "TAILDROP", "TaildropJanitor"]

log = subsystem_logger("taildrop")

TAILDROP = "taildrop"
DELETE_DELAY = 3600.0
"""Go's ``deleteDelay``: how long a partial file waits for its sender's resume."""


class TaildropJanitor(Actor):
    def __init__(self, store: TaildropStore, interval: float = 300.0, max_age: float = DELETE_DELAY) -> None:
        self.store, self.interval, self.max_age = store, interval, max_age

    def on_start(self) -> None:
        self._removed = 0
        self.send_after(self.interval, TaildropSweep())

    @handles(TaildropSweep)
    def on_sweep(self, msg: TaildropSweep) -> None:
        self._sweep(self.max_age)
        self.send_after(self.interval, TaildropSweep())

    @handles(TaildropSweepNow)
    def on_sweep_now(self, msg: TaildropSweepNow) -> TaildropSwept:
        return self._sweep(self.max_age if msg.max_age is None else msg.max_age)

    def _sweep(self, max_age: float) -> TaildropSwept:
        removed = self.store.sweep_partials(self.clock.time(), max_age)
        self._removed += len(removed)
        if removed:
            log.info("taildrop: removed %d partial file(s) nobody resumed within %.0f s", len(removed),
                     max_age)
        return TaildropSwept(removed=removed, total_removed=self._removed)
