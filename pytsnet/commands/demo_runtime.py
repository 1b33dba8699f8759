"""``pytsnet demo --runtime``: a supervision tree survives a child killed mid-stream, as it happens."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from pytsnet.actors.runtime import Actor, ActorSystem, FaultInjector, StopReason, handles, supervisor_spec
from pytsnet.actors.runtime.supervisor import ChildSpec, Strategy
from pytsnet.messages.runtime import Count, Total, Work

STREAM = 12
_print_lock = threading.Lock()


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


class Worker(Actor):
    """Counts the work it handled; the count lives in the incarnation (lost on restart, on purpose)."""

    def __init__(self) -> None:
        self.handled = 0

    def on_start(self) -> None:
        say(f"  start  {self.name} incarnation {self.incarnation}")

    def on_stop(self, reason: StopReason) -> None:
        say(f"  stop   {self.name} incarnation {self.incarnation} ({reason})")

    @handles(Work)
    def work(self, msg: Work) -> None:
        self.handled += 1
        say(f"  {self.name}#{self.incarnation} handled work {msg.seq}")

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=self.handled)


def run(args: argparse.Namespace | None = None) -> int:
    t0 = time.monotonic()
    system = ActorSystem("demo")
    faults = FaultInjector(seed=1).install(system)
    faults.kill_after(5, name="worker-b")
    names = ["worker-a", "worker-b", "worker-c"]
    say("tree: root -> pipeline (one_for_one, 3 restarts in 5 s) -> worker-a, worker-b, worker-c")
    say(f"plan: stream {STREAM} work items to each worker; worker-b is killed before its 6th")
    pipeline = system.spawn_spec(supervisor_spec("pipeline", [ChildSpec(Worker, n) for n in names],
                                                 strategy=Strategy.ONE_FOR_ONE))
    refs = [system.lookup(n) for n in names]
    for seq in range(STREAM):
        for ref in refs:
            assert ref is not None
            ref.tell(Work(seq=seq))
    totals = {}
    for ref in refs:
        assert ref is not None
        deadline = time.monotonic() + 5
        while True:  # the killed worker's count restarts at its new incarnation: ask until drained
            total = ref.ask(Count(), timeout=2.0).value
            if len(ref._cell.mailbox) == 0 or time.monotonic() > deadline:
                break
        totals[ref.name] = (ref.incarnation, total)
    ok = (faults.kills == [("worker-b", 5)] and totals["worker-a"] == (1, STREAM)
          and totals["worker-c"] == (1, STREAM) and totals["worker-b"] == (2, STREAM - 5))
    say("result:")
    for name, (inc, total) in totals.items():
        say(f"  {name}: incarnation {inc}, handled {total} in this incarnation")
    say(f"  kills: {faults.kills}; siblings unaffected, worker-b restarted with the same ref, "
        f"no message lost ({'OK' if ok else 'UNEXPECTED'})")
    system.stop_actor(pipeline)
    system.shutdown()
    say(f"done in {time.monotonic() - t0:.2f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
