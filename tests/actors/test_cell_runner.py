"""How cells are run (issue 15): pykka through its public API, one runner per cell at a time.

A stop or kill from another thread goes before the next queued message (and after the current one);
a thread-dispatched cell has one pykka runner thread for its whole life, restarts included, which
ends when the cell stops for good; many senders racing the runner going idle (the thread runner's
sleep, the pool's scheduled flag) lose no message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from actor_helpers import Echo

from pytsnet.actors.runtime import ActorRef, ActorStopped, ActorSystem, FaultInjector
from pytsnet.messages.runtime import Count, Crash, Ping, Work
from pytsnet.testing.polling import wait_until


@pytest.fixture(params=["thread", "pool"])
def system(request: pytest.FixtureRequest) -> Iterator[ActorSystem]:
    s = ActorSystem("run", dispatcher=request.param)
    yield s
    s.shutdown()


def _busy(system: ActorSystem, log: list[str]) -> tuple[threading.Event, ActorRef]:
    gate = threading.Event()
    ref = system.spawn(Echo, log, gate, name="a")
    for seq in range(1, 5):
        ref.tell(Work(seq=seq))
    wait_until(lambda: ref.backlog().messages == 3)  # work 1 is being handled (waits on the gate)
    return gate, ref


def test_a_kill_goes_after_the_current_message_and_before_the_next(system: ActorSystem) -> None:
    log: list[str] = []
    gate, ref = _busy(system, log)
    killer = threading.Thread(target=FaultInjector.kill_now, args=(ref,))
    killer.start()
    wait_until(lambda: ref._cell.preempt == 1)
    gate.set()
    killer.join(10)
    wait_until(lambda: ref.ask(Count()).value == 3)  # the new incarnation got works 2-4: none lost
    assert log == ["start a#1", "a work 1", "stop a#1", "start a#2", "a work 2", "a work 3", "a work 4"]


def test_a_stop_goes_before_the_queued_messages_which_fail(system: ActorSystem) -> None:
    log: list[str] = []
    gate, ref = _busy(system, log)
    asked: list[BaseException] = []

    def ask() -> None:
        try:
            ref.ask(Ping(seq=9), timeout=10)
        except ActorStopped as e:
            asked.append(e)

    asker = threading.Thread(target=ask)
    asker.start()
    wait_until(lambda: ref.backlog().messages == 4)
    stopper = threading.Thread(target=ref.stop)
    stopper.start()
    wait_until(lambda: ref._cell.preempt == 1)
    gate.set()
    stopper.join(10)
    asker.join(10)
    assert log == ["start a#1", "a work 1", "stop a#1"]
    assert len(asked) == 1  # the queued ask failed with ActorStopped rather than being handled


def _runner_threads(system: ActorSystem, name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"actor:{system.name}/{name}" and t.is_alive()]


def test_a_thread_cell_keeps_one_runner_across_restarts_and_it_ends_with_the_cell() -> None:
    system = ActorSystem("runners", dispatcher="thread")
    try:
        ref = system.spawn(Echo, name="a")
        assert ref.ask(Ping()).incarnation == 1
        [runner] = _runner_threads(system, "a")
        ref.tell(Crash())
        wait_until(lambda: ref.incarnation == 2 and ref.ask(Ping()).incarnation == 2)
        assert _runner_threads(system, "a") == [runner]
        ref.stop()
        runner.join(10)
        assert not runner.is_alive()
    finally:
        system.shutdown()


def test_every_root_child_runner_ends_at_shutdown() -> None:
    system = ActorSystem("down", dispatcher="thread")
    refs = [system.spawn(Echo, name=f"e{i}") for i in range(20)]
    for r in refs:
        r.tell(Work(seq=1))
    runners = [t for t in threading.enumerate() if t.name.startswith("actor:down/")]
    assert len(runners) == 21  # 20 actors and the root supervisor
    assert system.shutdown()
    for t in runners:
        t.join(10)
    assert not [t for t in runners if t.is_alive()]


def test_senders_racing_the_scheduled_flag_lose_nothing(system: ActorSystem) -> None:
    ref = system.spawn(Echo, name="a")
    per, senders = 2000, 4

    def send() -> None:
        for seq in range(per):
            ref.tell(Work(seq=seq))
            if seq % 97 == 0:  # let the runner drain to empty now and then: the flag flips often
                ref.ask(Ping())

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    wait_until(lambda: ref.ask(Count()).value == per * senders, timeout=30)
