"""How late the actor runtime delivers timer ticks, and how it shares the pool, under ``bench/flows.py``.

Run as root: ``.venv/bin/python bench/flows_sched.py --idle 0 --active 1000 --seconds 20`` (any
``bench/flows.py`` arguments). It wraps the runtime's ``Cell`` and ``PoolDispatcher`` (for this
process only; the wrappers cost some CPU, so compare its numbers with each other, not with a bare
``bench/flows.py`` run) and prints, after the bench:

* timer thread lag: a timer's deadline to the moment the timer thread puts its tick in the mailbox;
* tick delivery lateness: the deadline to the moment the flow's handler starts on the tick;
* pool queue wait: a cell queued to a worker taking it; turn length (messages, seconds);
* worker time in turns, and each flow actor's handled messages and handler time.
"""

from __future__ import annotations

import atexit
import collections
import runpy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pytsnet.actors.runtime import cell as cellmod
from pytsnet.actors.runtime import dispatch

Cell = cellmod.Cell
_deadline: dict[int, float] = {}
fire_lag: list[float] = []
tick_late: list[float] = []
tick_late_by_flow: dict[str, list[float]] = collections.defaultdict(list)
service: collections.Counter[str] = collections.Counter()
handled: collections.Counter[str] = collections.Counter()
queued_at: dict[int, float] = {}
queue_wait: list[float] = []
turn_msgs: list[int] = []
turn_secs: list[float] = []

_timer, _send_from, _deliver = Cell._timer, Cell._send_from, Cell._deliver
_notify, _run_cell = dispatch.PoolDispatcher.notify, dispatch.run_cell


def timer(self: Any, deadline: float, period: float | None, msg: Any) -> Any:
    _deadline[id(msg)] = deadline
    return _timer(self, deadline, period, msg)


def send_from(self: Any, sender: str | None, msg: Any, reply: Any, **kw: Any) -> bool:
    if sender == "timer" and id(msg) in _deadline:
        fire_lag.append(time.monotonic() - _deadline[id(msg)])
    return _send_from(self, sender, msg, reply, **kw)


def deliver(self: Any, env: Any) -> None:
    t0 = time.monotonic()
    if env.sender == "timer":
        d = _deadline.pop(id(env.msg), None)
        if d is not None and "-tcp-" in self.name:
            tick_late.append(t0 - d)
            tick_late_by_flow[self.name].append(t0 - d)
    try:
        _deliver(self, env)
    finally:
        service[self.name] += time.monotonic() - t0
        handled[self.name] += 1


def notify(self: Any, cell: Any, *a: Any, **kw: Any) -> None:
    was = cell.scheduled
    _notify(self, cell, *a, **kw)
    if not was and cell.scheduled:
        queued_at.setdefault(id(cell), time.monotonic())


def run_cell(dispatcher: Any, cell: Any, batch: int) -> None:
    t0 = time.monotonic()
    t = queued_at.pop(id(cell), None)
    if t is not None:
        queue_wait.append(t0 - t)
    h0 = cell.handled
    try:
        _run_cell(dispatcher, cell, batch)
    finally:
        turn_msgs.append(cell.handled - h0)
        turn_secs.append(time.monotonic() - t0)


def pct(xs: list[float] | list[int], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return float(s[min(len(s) - 1, int(p * len(s)))])


def dist(name: str, xs: list[float]) -> None:
    print(f"{name}: n={len(xs)} p50 {pct(xs, .5) * 1e3:.1f} ms, p90 {pct(xs, .9) * 1e3:.1f}, "
          f"p99 {pct(xs, .99) * 1e3:.1f}, max {max(xs or [0]) * 1e3:.1f}")


def report() -> None:
    dist("timer thread lag", fire_lag)
    dist("tick delivery lateness (flows)", tick_late)
    dist("pool queue wait", queue_wait)
    print(f"turns: {len(turn_msgs)}, messages p50 {pct(turn_msgs, .5):.0f} p90 {pct(turn_msgs, .9):.0f} "
          f"max {max(turn_msgs or [0])}; seconds p50 {pct(turn_secs, .5) * 1e3:.2f} ms p90 "
          f"{pct(turn_secs, .9) * 1e3:.2f} p99 {pct(turn_secs, .99) * 1e3:.2f} max "
          f"{max(turn_secs or [0]) * 1e3:.1f}; worker time in turns {sum(turn_secs):.1f} s")
    flows = [k for k in service if "-tcp-" in k]
    if flows:
        h = [handled[k] for k in flows]
        print(f"flow actors: {len(flows)}, messages handled min {min(h)} median {pct(h, .5):.0f} "
              f"max {max(h)}")
        med = [statistics.median(v) for v in tick_late_by_flow.values()]
        print(f"per-flow median tick lateness: min {pct(med, 0) * 1e3:.0f} median {pct(med, .5) * 1e3:.0f} "
              f"max {max(med or [0]) * 1e3:.0f} ms")


def main() -> None:
    Cell._timer = timer  # type: ignore[method-assign]
    Cell._send_from = send_from  # type: ignore[assignment,method-assign]
    Cell._deliver = deliver  # type: ignore[method-assign]
    dispatch.PoolDispatcher.notify = notify  # type: ignore[method-assign]
    dispatch.run_cell = run_cell
    atexit.register(report)
    flows = Path(__file__).with_name("flows.py")
    sys.argv = [str(flows), *sys.argv[1:]]
    runpy.run_path(str(flows), run_name="__main__")


if __name__ == "__main__":
    main()
