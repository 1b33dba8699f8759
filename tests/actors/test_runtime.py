"""The runtime's contract: asks, panics, mailboxes, identity across restarts, supervision, links."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from actor_helpers import Echo, Tough

from pytsnet.actors.runtime import (
    Actor,
    ActorStartError,
    ActorStopped,
    ActorSystem,
    AskTimeout,
    ChildSpec,
    HandlerError,
    MailboxConfig,
    MailboxFull,
    MailboxPolicy,
    ManualClock,
    NameTaken,
    Restart,
    Strategy,
    UnhandledMessage,
    handles,
    supervisor_spec,
)
from pytsnet.messages.runtime import Count, Crash, Done, Ping, Pong, Total, Work
from pytsnet.testing.polling import wait_until

DISPATCHERS = ["thread", "pool"]


@pytest.fixture(params=DISPATCHERS)
def system(request: pytest.FixtureRequest):
    s = ActorSystem("dev", dispatcher=request.param)
    yield s
    assert s.shutdown(5)


def test_ask_returns_typed_reply(system: ActorSystem) -> None:
    ref = system.spawn(Echo, name="e")
    assert ref.ask(Ping(seq=7)) == Pong(seq=7, incarnation=1)


def test_handler_error_reaches_asker_and_actor_keeps_running(system: ActorSystem) -> None:
    ref = system.spawn(Echo, name="e")
    with pytest.raises(HandlerError) as ei:
        ref.ask(Crash(reason="boom"))
    assert isinstance(ei.value.cause, RuntimeError)
    assert ref.ask(Ping(seq=1)).incarnation == 1


def test_failed_tell_is_a_panic_and_the_supervisor_restarts_same_ref(system: ActorSystem) -> None:
    log: list[str] = []
    ref = system.spawn(Echo, log, name="e")
    ref.tell(Crash())
    assert ref.ask(Ping(seq=2)) == Pong(seq=2, incarnation=2)
    assert system.lookup("e") == ref
    assert log == ["start e#1", "stop e#1", "start e#2"]


def test_on_panic_continue_keeps_the_incarnation(system: ActorSystem) -> None:
    ref = system.spawn(Tough, name="t")
    ref.tell(Crash())
    assert ref.ask(Ping()).incarnation == 1


def test_unhandled_message_type_is_rejected_at_send(system: ActorSystem) -> None:
    ref = system.spawn(Echo, name="e")
    with pytest.raises(UnhandledMessage):
        ref.tell(Done(seq=1, by="x"))


def test_ask_timeout_and_stopped(system: ActorSystem) -> None:
    gate = threading.Event()
    ref = system.spawn(Echo, None, gate, name="e")
    ref.tell(Work(seq=0))
    with pytest.raises(AskTimeout):
        ref.ask(Ping(), timeout=0.05)
    gate.set()
    ref.stop()
    assert not ref.is_alive
    with pytest.raises(ActorStopped):
        ref.tell(Ping())
    assert system.lookup("e") is None


def test_queued_asks_fail_with_actor_stopped_on_final_stop(system: ActorSystem) -> None:
    gate = threading.Event()
    ref = system.spawn(Echo, None, gate, name="e")
    ref.tell(Work(seq=0))
    errors: list[BaseException] = []

    def asker() -> None:
        try:
            ref.ask(Ping(), timeout=5)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=asker)
    t.start()
    wait_until(lambda: len(ref._cell.mailbox) == 1)
    stopper = threading.Thread(target=ref.stop)
    stopper.start()
    wait_until(lambda: ref._cell.preempt > 0)
    gate.set()
    stopper.join(5)
    t.join(5)
    assert len(errors) == 1 and isinstance(errors[0], ActorStopped)


@pytest.mark.parametrize("policy", list(MailboxPolicy))
def test_bounded_mailbox_policies(system: ActorSystem, policy: MailboxPolicy) -> None:
    gate = threading.Event()
    ref = system.spawn(Echo, None, gate, name="e", mailbox=MailboxConfig(2, policy, block_timeout=0.05))
    ref.tell(Work(seq=0))
    wait_until(lambda: len(ref._cell.mailbox) == 0)  # seq 0 is being handled (blocked on gate)
    ref.tell(Work(seq=1))
    ref.tell(Work(seq=2))
    if policy is MailboxPolicy.DROP_NEWEST:
        ref.tell(Work(seq=3))
        assert ref.dropped == 1
        with pytest.raises(MailboxFull):
            ref.ask(Ping())
    else:
        with pytest.raises(MailboxFull):
            ref.tell(Work(seq=3))
    gate.set()
    wait_until(lambda: len(ref._cell.mailbox) == 0)
    assert ref.ask(Count()) == Total(value=3)


def test_block_policy_waits_for_room(system: ActorSystem) -> None:
    gate = threading.Event()
    ref = system.spawn(Echo, None, gate, name="e", mailbox=MailboxConfig(1, MailboxPolicy.BLOCK, 5.0))
    ref.tell(Work(seq=0))
    wait_until(lambda: len(ref._cell.mailbox) == 0)
    ref.tell(Work(seq=1))
    threading.Timer(0.02, gate.set).start()
    ref.tell(Work(seq=2))  # blocks until the actor makes room
    assert ref.ask(Count()) == Total(value=3)


def test_messages_sent_during_restart_are_queued_not_lost(system: ActorSystem) -> None:
    log: list[str] = []
    ref = system.spawn(Echo, log, name="e")
    ref.tell(Crash())
    for i in range(50):
        ref.tell(Work(seq=i))
    assert ref.ask(Count()) == Total(value=50)
    assert ref.incarnation == 2
    assert [x for x in log if "work" in x] == [f"e work {i}" for i in range(50)]


def test_registry_is_scoped_per_system() -> None:
    a, b = ActorSystem("dev-a"), ActorSystem("dev-b")
    try:
        ra = a.spawn(Echo, name="control")
        rb = b.spawn(Echo, name="control")
        assert ra != rb and a.lookup("control") == ra and b.lookup("control") == rb
        with pytest.raises(NameTaken):
            a.spawn(Echo, name="control")
    finally:
        a.shutdown()
        b.shutdown()


def test_restart_policies(system: ActorSystem) -> None:
    never = system.spawn(Echo, name="never", restart=Restart.NEVER)
    transient = system.spawn(Echo, name="transient", restart=Restart.TRANSIENT)
    never.tell(Crash())
    wait_until(lambda: not never.is_alive)
    transient.tell(Crash())
    assert transient.ask(Ping()).incarnation == 2
    transient._cell.stop_self()  # a normal exit: transient is not restarted
    wait_until(lambda: not transient.is_alive)


def test_on_start_failure_is_a_typed_spawn_error(system: ActorSystem) -> None:
    class Bad(Echo):
        def on_start(self) -> None:
            raise ValueError("no socket")

    with pytest.raises(ActorStartError):
        system.spawn(Bad, name="bad")
    assert system.lookup("bad") is None


def _tree(system: ActorSystem, strategy: Strategy, log: list[str], max_restarts: int = 3):
    kids = [ChildSpec(Echo, n, args=(log,)) for n in ("a", "b", "c")]
    return system.spawn_spec(supervisor_spec("sup", kids, strategy=strategy, max_restarts=max_restarts))


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [(Strategy.ONE_FOR_ONE, "b"), (Strategy.ONE_FOR_ALL, "abc"), (Strategy.REST_FOR_ONE, "bc")],
)
def test_strategies(system: ActorSystem, strategy: Strategy, restarted: str) -> None:
    log: list[str] = []
    _tree(system, strategy, log)
    refs = {n: system.lookup(n) for n in "abc"}
    refs["b"].tell(Crash())
    wait_until(lambda: refs["b"].incarnation == 2)
    for n, r in refs.items():
        assert r.ask(Ping()).incarnation == (2 if n in restarted else 1)
    if strategy is Strategy.ONE_FOR_ALL:  # reverse-order stop of the others, then ordered start
        tail = log[log.index("stop b#1"):]
        assert tail == ["stop b#1", "stop c#1", "stop a#1", "start a#2", "start b#2", "start c#2"]


def test_budget_exhaustion_escalates_to_parent(system: ActorSystem) -> None:
    log: list[str] = []
    sup = _tree(system, Strategy.ONE_FOR_ONE, log, max_restarts=2)
    b = system.lookup("b")
    a = system.lookup("a")
    for expected in (2, 3):
        b.tell(Crash())
        wait_until(lambda e=expected: b.incarnation == e)
    b.tell(Crash())  # third restart within the window: sup fails, root restarts sup and its children
    wait_until(lambda: sup.incarnation == 2)
    wait_until(lambda: a.incarnation == 2)
    assert a.ask(Ping()).incarnation == 2 and b.ask(Ping()).incarnation == 4


def test_root_escalation_fails_the_system() -> None:
    from pytsnet.actors.runtime import SupervisorConfig

    s = ActorSystem("fragile", root=SupervisorConfig(max_restarts=0))
    ref = s.spawn(Echo, name="e")
    ref.tell(Crash())
    assert s.stopped.wait(5)
    assert s.failed is not None and not ref.is_alive


class Watcher(Echo):
    def __init__(self, log: list[str], trap: bool) -> None:
        super().__init__(log)
        self.trap = trap

    def on_link_died(self, ref, reason) -> None:  # type: ignore[no-untyped-def]
        self.log.append(f"{self.name} saw {ref.name} die: {type(reason).__name__}")
        if not self.trap:
            super().on_link_died(ref, reason)


def test_links_notify_on_abnormal_death_only(system: ActorSystem) -> None:
    log: list[str] = []
    a = system.spawn(Echo, log, name="a", restart=Restart.NEVER)
    trap = system.spawn(Watcher, log, True, name="trap")
    prop = system.spawn(Watcher, log, False, name="prop")
    for w in (trap, prop):
        w._cell.link(a)
    a.tell(Crash())
    wait_until(lambda: prop.incarnation == 2)
    assert trap.ask(Ping()).incarnation == 1
    assert "trap saw a die: RuntimeError" in log and "prop saw a die: RuntimeError" in log
    b = system.spawn(Echo, log, name="b")
    trap._cell.link(b)
    b.stop()
    assert trap.ask(Ping()).incarnation == 1
    assert not any("saw b" in x for x in log)


class Ticker(Actor):
    def __init__(self) -> None:
        self.ticks = 0

    def on_start(self) -> None:
        self.send_interval(1.0, Ping(seq=1))
        self.once = self.send_after(0.5, Work(seq=0))

    @handles(Ping)
    def tick(self, msg: Ping) -> None:
        self.ticks += 1

    @handles(Work)
    def work(self, msg: Work) -> None:
        self.ticks += 100

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=self.ticks)


def test_timers_follow_the_injected_clock() -> None:
    clock = ManualClock()
    s = ActorSystem("t", clock=clock)
    try:
        ref = s.spawn(Ticker, name="tick")
        assert ref.ask(Count()).value == 0
        clock.advance(3.2)
        assert ref.ask(Count()).value == 103
        ref.stop()
        clock.advance(5)  # cancelled on stop: nothing delivered, nothing raised
    finally:
        s.shutdown()


class UdpReader(Actor):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.got: list[bytes] = []

    def on_start(self) -> None:
        def read() -> Work:
            data = self.sock.recv(2048)
            return Work(seq=len(data), payload=data)

        self.loop = self.start_io_loop(read, close=lambda: self.sock.shutdown(socket.SHUT_RDWR))

    @handles(Work)
    def work(self, msg: Work) -> None:
        self.got.append(msg.payload)

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=len(self.got))


def test_io_loop_delivers_reads_as_tells_and_stops_with_the_actor(system: ActorSystem) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ref = system.spawn(UdpReader, a, name="reader")
    for i in range(5):
        b.send(bytes([i]) * 10)
    wait_until(lambda: ref.ask(Count()).value == 5)
    loop = ref._cell.actor.loop
    ref.stop()
    assert loop.stopped.is_set() and not loop._thread.is_alive()
    a.close()
    b.close()


def test_ask_async_does_not_block_the_event_loop(system: ActorSystem) -> None:
    gate = threading.Event()
    ref = system.spawn(Echo, None, gate, name="e")
    ref.tell(Work(seq=0))

    async def main() -> tuple[Pong, int]:
        ticks = 0
        task = asyncio.create_task(ref.ask_async(Ping(seq=9), timeout=5))
        while not task.done():
            ticks += 1
            if ticks == 5:
                gate.set()
            await asyncio.sleep(0.001)
        return await task, ticks

    reply, ticks = asyncio.run(main())
    assert reply.seq == 9 and ticks >= 5


def test_shutdown_stops_in_reverse_start_order(system: ActorSystem) -> None:
    log: list[str] = []
    for n in ("x", "y", "z"):
        system.spawn(Echo, log, name=n)
    assert system.shutdown(5)
    assert log[-3:] == ["stop z#1", "stop y#1", "stop x#1"]


def test_per_actor_ordering_under_many_senders(system: ActorSystem) -> None:
    log: list[str] = []
    ref = system.spawn(Echo, log, name="o", mailbox=MailboxConfig(10_000))
    for i in range(2000):
        ref.tell(Work(seq=i))
    assert ref.ask(Count()).value == 2000
    assert log[1:] == [f"o work {i}" for i in range(2000)]


def test_cancelling_ask_async_as_the_reply_lands_still_cancels(system: ActorSystem) -> None:
    """3.11's ``asyncio.wait_for`` returned the result and dropped a cancel that raced the inner
    future; an app's Ctrl-C (the runner cancels the main task) was then lost mid-transfer."""
    import time

    ref = system.spawn(Echo, None, None, name="e")

    async def main() -> None:
        for _ in range(20):
            task = asyncio.create_task(ref.ask_async(Ping(seq=1), timeout=5))
            await asyncio.sleep(0)  # the task now waits for the reply
            time.sleep(0.02)  # the loop is blocked: the reply's wake-up is queued behind us
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
