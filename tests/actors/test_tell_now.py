"""``ActorRef.tell_now``: an idle actor handles the message on the caller's thread; anything else
(busy, mail queued, a handler of its own running, stopped, a tracer) keeps ``tell``'s semantics.

Issue 14: the WireGuard engine hands a flow its burst this way, saving a mailbox hop, a thread
wake-up and a GIL hand-off per burst. What must not change is the actor contract: one runner at a
time, per-sender order, a handler's error is the callee's panic (its supervisor restarts it; the
caller never sees it) and the fault injector still kills before a message.
"""

from __future__ import annotations

import threading

import pytest

from pytsnet.actors.runtime import Actor, ActorRef, ActorStopped, ActorSystem, Restart, handles
from pytsnet.actors.runtime.faults import FaultInjector
from pytsnet.actors.runtime.ref import current
from pytsnet.messages.runtime import Count, Crash, Total, Work
from pytsnet.testing.polling import wait_until


class Recorder(Actor):
    """Logs each ``Work`` with the thread that ran it and the actor the runtime says is running."""

    def __init__(self, log: list[tuple[int, int, str | None]], gate: threading.Event | None = None,
                 entered: threading.Event | None = None) -> None:
        self.log = log
        self.gate = gate
        self.entered = entered

    @handles(Work)
    def work(self, msg: Work) -> None:
        if msg.seq == 0 and self.gate is not None:
            assert self.entered is not None
            self.entered.set()
            assert self.gate.wait(10)
        if msg.seq == 1000:  # re-entrant: must be queued behind this handler, not nested in it
            self.ref.tell_now(Work(seq=1001))
        self.log.append((msg.seq, threading.get_ident(), current.name))

    @handles(Crash)
    def crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.reason)

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=len(self.log))


def _idle(ref: ActorRef) -> None:
    """Wait until nobody runs ``ref`` (an ask's reply is set a moment before its runner lets go)."""
    lock = ref._cell.run_lock

    def free() -> bool:
        if not lock.acquire(blocking=False):
            return False
        lock.release()
        return True

    wait_until(free, timeout=10)


@pytest.fixture(params=["thread", "pool"])
def system(request: pytest.FixtureRequest):
    s = ActorSystem("dev", dispatcher=request.param)
    yield s
    assert s.shutdown(5)


def test_an_idle_actor_handles_it_on_the_callers_thread(system: ActorSystem) -> None:
    log: list[tuple[int, int, str | None]] = []
    ref = system.spawn(Recorder, log, name="r")
    assert ref.ask(Count()) == Total(value=0)  # started
    _idle(ref)
    assert ref.tell_now(Work(seq=1))
    assert log == [(1, threading.get_ident(), "r")]  # done before tell_now returned, here, as "r"
    assert current.name is None  # the caller's identity is back


def test_a_busy_actor_gets_it_queued_in_order(system: ActorSystem) -> None:
    log: list[tuple[int, int, str | None]] = []
    gate, entered = threading.Event(), threading.Event()
    ref = system.spawn(Recorder, log, gate, entered, name="r")
    ref.tell(Work(seq=0))  # blocks its runner in the handler
    assert entered.wait(10)
    assert ref.tell_now(Work(seq=1))  # busy: queued, not run here
    assert log == []
    gate.set()
    wait_until(lambda: len(log) == 2, timeout=10)
    assert [s for s, _, _ in log] == [0, 1]
    assert log[1][1] != threading.get_ident()


def test_queued_mail_goes_first(system: ActorSystem) -> None:
    log: list[tuple[int, int, str | None]] = []
    gate, entered = threading.Event(), threading.Event()
    ref = system.spawn(Recorder, log, gate, entered, name="r")
    ref.tell(Work(seq=0))
    assert entered.wait(10)
    ref.tell(Work(seq=1))
    ref.tell(Work(seq=2))
    gate.set()
    for seq in range(3, 40):  # races the runner draining 1 and 2: never ahead of them
        ref.tell_now(Work(seq=seq))
    wait_until(lambda: len(log) == 40, timeout=10)
    assert [s for s, _, _ in log] == list(range(40))


def test_reentrant_tell_now_is_queued_behind_the_running_handler(system: ActorSystem) -> None:
    log: list[tuple[int, int, str | None]] = []
    ref = system.spawn(Recorder, log, name="r")
    assert ref.ask(Count()) == Total(value=0)
    _idle(ref)
    ref.tell_now(Work(seq=1000))  # its handler tells_now 1001 to itself before logging 1000
    wait_until(lambda: len(log) == 2, timeout=10)
    assert [s for s, _, _ in log] == [1000, 1001]


def test_an_inline_crash_is_the_callees_panic(system: ActorSystem) -> None:
    log: list[tuple[int, int, str | None]] = []
    ref = system.spawn(Recorder, log, name="r")
    assert ref.ask(Count()) == Total(value=0)
    _idle(ref)
    assert ref.tell_now(Crash(reason="poison"))  # no exception here: the caller is not the one failing
    wait_until(lambda: ref.incarnation == 2, timeout=10)  # the supervisor restarted it
    ref.tell_now(Work(seq=5))
    wait_until(lambda: len(log) == 1, timeout=10)
    assert log[0][0] == 5


def test_a_crash_of_a_never_restarted_actor_stops_only_it(system: ActorSystem) -> None:
    log: list[tuple[int, int, str | None]] = []
    other: list[tuple[int, int, str | None]] = []
    ref = system.spawn(Recorder, log, name="r", restart=Restart.NEVER)
    keep = system.spawn(Recorder, other, name="k", restart=Restart.NEVER)
    assert ref.ask(Count()) == Total(value=0)
    ref.tell_now(Crash(reason="poison"))
    wait_until(lambda: not ref.is_alive, timeout=10)
    with pytest.raises(ActorStopped):
        ref.tell_now(Work(seq=1))  # as tell does
    assert keep.tell_now(Work(seq=2))
    assert [s for s, _, _ in other] == [2]


def test_the_fault_injector_kills_before_an_inline_message(system: ActorSystem) -> None:
    faults = FaultInjector().install(system)
    faults.kill_after(3, name="r")
    log: list[tuple[int, int, str | None]] = []
    ref = system.spawn(Recorder, log, name="r")
    for seq in range(6):
        ref.tell_now(Work(seq=seq))
    wait_until(lambda: len(log) == 6, timeout=10)
    assert faults.kills == [("r", 3)]  # killed before its 4th message, which waited for the restart
    assert ref.incarnation == 2
    assert [s for s, _, _ in log] == list(range(6))


def test_mail_that_comes_during_an_inline_handler_runs_after_it(system: ActorSystem) -> None:
    log: list[tuple[int, int, str | None]] = []
    gate, entered = threading.Event(), threading.Event()
    ref = system.spawn(Recorder, log, gate, entered, name="r")
    assert ref.ask(Count()) == Total(value=0)
    _idle(ref)
    caller = threading.Thread(target=ref.tell_now, args=(Work(seq=0),))
    caller.start()
    assert entered.wait(10)  # seq 0 runs inline on ``caller``, held at the gate
    ref.tell(Work(seq=1))  # queued: no runner may take it while the inline handler runs
    ref.tell(Work(seq=2))
    assert log == []
    gate.set()
    caller.join(10)
    wait_until(lambda: len(log) == 3, timeout=10)  # not lost: handed to the cell's runner after
    assert [s for s, _, _ in log] == [0, 1, 2]
    assert log[0][1] == caller.ident
