"""Chaos tests of the runtime: kill actors mid-stream and check what the supervision tree promises."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytsnet.actors.runtime import (
    Actor,
    ActorRef,
    ActorSystem,
    ChildSpec,
    FaultInjector,
    MailboxConfig,
    Strategy,
    handles,
    supervisor_spec,
)
from pytsnet.messages.runtime import Count, Total, Work

N = 300


class Counter(Actor):
    """Records every work seq it handles in a ledger shared across incarnations (the test's view)."""

    def __init__(self, ledger: dict[str, list[int]]) -> None:
        self.ledger = ledger

    @handles(Work)
    def work(self, msg: Work) -> None:
        self.ledger.setdefault(self.name, []).append(msg.seq)

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=len(self.ledger.get(self.name, [])))


def tree(system: ActorSystem, ledger: dict[str, list[int]], strategy: Strategy = Strategy.ONE_FOR_ONE,
         max_restarts: int = 100, names: tuple[str, ...] = ("a", "b", "c"),
         ) -> tuple[ActorRef, list[ActorRef]]:
    specs = [ChildSpec(Counter, n, args=(ledger,), mailbox=MailboxConfig(10 * N)) for n in names]
    sup = system.spawn_spec(supervisor_spec("sup", specs, strategy=strategy, max_restarts=max_restarts,
                                            within=60.0))
    return sup, [system.lookup(n) for n in names]  # type: ignore[misc]


def stream(refs: list[ActorRef], n: int = N) -> None:
    for seq in range(n):
        for r in refs:
            r.tell(Work(seq=seq))


def drained(refs: list[ActorRef], n: int) -> Callable[[], bool]:
    return lambda: all(r.ask(Count(), timeout=5).value == n for r in refs)


def test_killed_child_restarts_and_loses_nothing(chaos_system: ActorSystem, faults: FaultInjector,
                                                 eventually: Callable[..., None]) -> None:
    ledger: dict[str, list[int]] = {}
    faults.kill_after(N // 3, name="b")
    _, refs = tree(chaos_system, ledger)
    stream(refs)
    eventually(drained(refs, N))
    assert faults.kills == [("b", N // 3)]
    assert [r.incarnation for r in refs] == [1, 2, 1]
    for name in "abc":  # in order, no loss, no duplicate, even for the killed one
        assert ledger[name] == list(range(N))


def test_siblings_keep_processing_under_seeded_random_kills(chaos_system: ActorSystem, faults: FaultInjector,
                                                            eventually: Callable[..., None]) -> None:
    ledger: dict[str, list[int]] = {}
    faults.kill_randomly(0.02, name="b")
    _, refs = tree(chaos_system, ledger)
    stream(refs)
    eventually(drained(refs, N))
    assert len(faults.kills) >= 2, faults.kills
    assert refs[0].incarnation == 1 and refs[2].incarnation == 1
    assert refs[1].incarnation == 1 + len(faults.kills)
    assert all(ledger[n] == list(range(N)) for n in "abc")


def test_random_kill_points_are_reproducible_from_the_seed(eventually: Callable[..., None]) -> None:
    def run(seed: int) -> list[tuple[str, int]]:
        system = ActorSystem("repro")
        inj = FaultInjector(seed).install(system)
        inj.kill_randomly(0.05, name="b")
        ledger: dict[str, list[int]] = {}
        _, refs = tree(system, ledger)
        stream(refs, 200)
        eventually(drained(refs, 200))
        system.shutdown()
        return inj.kills

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_budget_exhaustion_escalates(chaos_system: ActorSystem, faults: FaultInjector,
                                     eventually: Callable[..., None]) -> None:
    ledger: dict[str, list[int]] = {}
    faults.kill_after(10, name="b", repeat=True)
    sup, refs = tree(chaos_system, ledger, max_restarts=2)
    stream(refs, 100)
    eventually(lambda: sup.incarnation >= 2)  # sup exceeded its budget; root restarted it
    eventually(drained(refs, 100))
    assert refs[0].incarnation >= 2 and refs[2].incarnation >= 2  # restarted with their supervisor
    assert all(ledger[n] == list(range(100)) for n in "abc")


def test_one_for_all_restarts_all(chaos_system: ActorSystem, faults: FaultInjector,
                                  eventually: Callable[..., None]) -> None:
    ledger: dict[str, list[int]] = {}
    faults.kill_after(50, name="a")
    _, refs = tree(chaos_system, ledger, strategy=Strategy.ONE_FOR_ALL)
    stream(refs)
    eventually(drained(refs, N))
    assert [r.incarnation for r in refs] == [2, 2, 2]
    assert all(ledger[n] == list(range(N)) for n in "abc")


class Linked(Counter):
    def on_start(self) -> None:
        target = self.lookup(self.name[:-1] + chr(ord(self.name[-1]) - 1))  # "l2" links to "l1"
        if target is not None:
            self.link(target)


@pytest.mark.parametrize("kill", ["l1", "l3"])
def test_links_propagate_both_ways(chaos_system: ActorSystem, faults: FaultInjector,
                                   eventually: Callable[..., None], kill: str) -> None:
    ledger: dict[str, list[int]] = {}
    specs = [ChildSpec(Linked, n, args=(ledger,)) for n in ("l1", "l2", "l3")]
    chaos_system.spawn_spec(supervisor_spec("links", specs, max_restarts=100, within=60.0))
    other = chaos_system.spawn(Counter, ledger, name="unlinked")
    refs = [chaos_system.lookup(n) for n in ("l1", "l2", "l3")]
    faults.kill_now(chaos_system.lookup(kill), "chaos")  # type: ignore[arg-type]
    eventually(lambda: all(r.incarnation >= 2 for r in refs))  # l1 <-> l2 <-> l3: the death spreads
    # and it stops: links do not outlive an incarnation, so the tree settles
    eventually(lambda: all(r._cell.status.value == "running" and not len(r._cell.mailbox) for r in refs))
    settled = [r.incarnation for r in refs]
    for r in refs:
        r.ask(Count())
    assert [r.incarnation for r in refs] == settled
    assert all(2 <= n <= most for n, most in zip(settled, WORST_CASE[kill], strict=True)), settled
    assert other.incarnation == 1


# The most each of l1, l2, l3 can restart, from the link rules (deaths are told asynchronously, as in
# Erlang; each incarnation links once, to its predecessor in the chain, in on_start):
# - kill l1: l1 -> l2 -> l3 die in that order, each after the one it links to is already gone, so
#   a restart never links to a doomed incarnation: exactly once each.
# - kill l3: l3#1 kills l2#1, which kills l1#1 (upward, through the links made at start). A restart
#   may win the race against its target's pending death and link to the doomed incarnation
#   (l3#2 -> l2#1, l2#2 -> l1#1, then l3#3 -> l2#2): that wave runs downward only, since a restart
#   links to one target. So l1 dies once, l2 at most twice, l3 at most three times.
WORST_CASE = {"l1": [2, 2, 2], "l3": [2, 3, 4]}
