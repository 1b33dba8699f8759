"""Issue 15: ``on_stop`` is told why the incarnation ends (kameo's ``ActorStopReason``).

Each reason reaches ``on_stop`` on both dispatchers: a normal stop (``ref.stop()``, ``stop()`` from
inside, shutdown), a kill (``FaultInjector``, at once or after N messages), a panic (a failing tell,
a failing ``on_start``, a linked actor's death) carrying the very exception, and a restart (a
sibling suspended by a one-for-all supervisor).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytsnet.actors.runtime import (
    Actor,
    ActorStartError,
    ActorSystem,
    ChildSpec,
    FaultInjector,
    Killed,
    LinkDied,
    StopKind,
    StopReason,
    Strategy,
    handles,
    supervisor_spec,
)
from pytsnet.messages.runtime import Crash, Ping, Pong, Work
from pytsnet.testing.polling import wait_until

Stops = list[tuple[str, int, StopReason]]


class Recorder(Actor):
    """Records ``(name, incarnation, reason)`` of every ``on_stop``; ``Crash`` raises, ``Work`` stops."""

    def __init__(self, stops: Stops, fail_start: bool = False) -> None:
        self.stops = stops
        self.fail_start = fail_start

    def on_start(self) -> None:
        if self.fail_start:
            raise ValueError("cannot start")

    def on_stop(self, reason: StopReason) -> None:
        self.stops.append((self.name, self.incarnation, reason))

    @handles(Ping)
    def ping(self, msg: Ping) -> Pong:
        return Pong(seq=msg.seq, incarnation=self.incarnation)

    @handles(Crash)
    def crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.reason)

    @handles(Work)
    def work(self, msg: Work) -> None:
        self.stop()


@pytest.fixture(params=["thread", "pool"])
def system(request: pytest.FixtureRequest) -> Iterator[ActorSystem]:
    s = ActorSystem("stops", dispatcher=request.param)
    yield s
    s.shutdown()


def _of(stops: Stops, name: str) -> list[tuple[int, StopReason]]:
    return [(inc, r) for n, inc, r in stops if n == name]


def test_a_stop_from_outside_is_normal(system: ActorSystem) -> None:
    stops: Stops = []
    ref = system.spawn(Recorder, stops, name="a")
    ref.stop()
    assert _of(stops, "a") == [(1, StopReason.normal())]
    assert not stops[0][2].abnormal and stops[0][2].error is None


def test_stop_from_inside_is_normal_and_a_permanent_actor_comes_back(system: ActorSystem) -> None:
    stops: Stops = []
    ref = system.spawn(Recorder, stops, name="a")
    ref.tell(Work(seq=1))
    wait_until(lambda: ref.incarnation == 2 and ref.ask(Ping()).incarnation == 2)
    assert _of(stops, "a") == [(1, StopReason.normal())]


def test_shutdown_stops_every_actor_normally(system: ActorSystem) -> None:
    stops: Stops = []
    system.spawn(Recorder, stops, name="a")
    system.spawn(Recorder, stops, name="b")
    assert system.shutdown()
    assert sorted((n, r.kind) for n, _, r in stops) == [("a", StopKind.NORMAL), ("b", StopKind.NORMAL)]


def test_a_panic_carries_the_handlers_exception(system: ActorSystem) -> None:
    stops: Stops = []
    ref = system.spawn(Recorder, stops, name="a")
    ref.tell(Crash(reason="boom"))
    wait_until(lambda: len(stops) == 1)
    inc, reason = _of(stops, "a")[0]
    assert inc == 1 and reason.kind is StopKind.PANICKED and reason.abnormal
    assert isinstance(reason.error, RuntimeError) and str(reason.error) == "boom"
    assert str(reason) == "panicked: RuntimeError('boom')"
    wait_until(lambda: ref.ask(Ping()).incarnation == 2)  # and the supervisor restarted it


def test_a_failing_on_start_is_a_panic(system: ActorSystem) -> None:
    stops: Stops = []
    with pytest.raises(ActorStartError):
        system.spawn(Recorder, stops, True, name="a")
    [(inc, reason)] = _of(stops, "a")
    assert inc == 1 and reason.kind is StopKind.PANICKED
    assert isinstance(reason.error, ValueError) and str(reason.error) == "cannot start"


def test_a_kill_is_killed_with_the_injectors_error(system: ActorSystem) -> None:
    stops: Stops = []
    ref = system.spawn(Recorder, stops, name="a")
    FaultInjector.kill_now(ref, "chaos")
    wait_until(lambda: len(stops) == 1)
    reason = _of(stops, "a")[0][1]
    assert reason.kind is StopKind.KILLED and reason.abnormal
    assert isinstance(reason.error, Killed) and str(reason.error) == "chaos"


def test_a_kill_between_messages_by_the_injector_is_killed(system: ActorSystem) -> None:
    stops: Stops = []
    faults = FaultInjector(seed=1)
    system.faults = faults
    faults.kill_after(2, name="a")
    ref = system.spawn(Recorder, stops, name="a")
    for i in range(3):
        ref.tell(Ping(seq=i))
    wait_until(lambda: len(stops) == 1)
    reason = _of(stops, "a")[0][1]
    assert reason.kind is StopKind.KILLED and isinstance(reason.error, Killed)


def test_the_injector_kills_just_before_a_message_of_a_type(system: ActorSystem) -> None:
    """``kill_before(Work)``: the two pings ahead are handled, the kill lands exactly when the
    ``Work`` is next (however the senders interleave), and nothing before it trips the rule."""
    stops: Stops = []
    faults = FaultInjector(seed=1)
    system.faults = faults
    faults.kill_before(Work, name="a")
    ref = system.spawn(Recorder, stops, name="a")
    assert [ref.ask(Ping(seq=i)).seq for i in range(2)] == [0, 1]
    assert faults.kills == []
    ref.tell(Work(seq=0))
    wait_until(lambda: len(stops) == 2)  # killed, then restarted: the next incarnation gets the Work
    (first, killed), (second, done) = _of(stops, "a")
    assert killed.kind is StopKind.KILLED and isinstance(killed.error, Killed)
    assert faults.kills == [("a", 2)]  # killed with two messages handled, the Work not
    assert (first, second) == (1, 2) and done == StopReason.normal()  # Work handled once, by the second


def test_a_linked_death_is_a_panic_with_link_died(system: ActorSystem) -> None:
    stops: Stops = []
    a = system.spawn(Recorder, stops, name="a")
    b = system.spawn(Recorder, stops, name="b")
    b._cell.link(a)
    a.tell(Crash(reason="boom"))
    wait_until(lambda: len(_of(stops, "b")) == 1)
    reason = _of(stops, "b")[0][1]
    assert reason.kind is StopKind.PANICKED
    assert isinstance(reason.error, LinkDied) and reason.error.name == "a"


def test_siblings_of_a_one_for_all_restart_are_told_restart(system: ActorSystem) -> None:
    stops: Stops = []
    system.spawn_spec(supervisor_spec("sup", [ChildSpec(Recorder, "x", (stops,)),
                                              ChildSpec(Recorder, "y", (stops,))],
                                      strategy=Strategy.ONE_FOR_ALL))
    x, y = system.lookup("x"), system.lookup("y")
    assert x is not None and y is not None
    x.tell(Crash(reason="boom"))
    wait_until(lambda: x.incarnation == 2 and y.incarnation == 2)
    assert [r.kind for _, r in _of(stops, "x")] == [StopKind.PANICKED]
    assert _of(stops, "y") == [(1, StopReason.restart())]
