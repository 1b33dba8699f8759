"""Actors and waiting helpers shared by the runtime tests (no sleeps that can flake)."""

from __future__ import annotations

import threading

from pytsnet.actors.runtime import Actor, PanicAction, StopReason, handles
from pytsnet.messages.runtime import Count, Crash, Done, Ping, Pong, Total, Work


class Echo(Actor):
    def __init__(self, log: list[str] | None = None, gate: threading.Event | None = None) -> None:
        self.count = 0
        self.log = log if log is not None else []
        self.gate = gate

    def on_start(self) -> None:
        self.log.append(f"start {self.name}#{self.incarnation}")

    def on_stop(self, reason: StopReason) -> None:
        self.log.append(f"stop {self.name}#{self.incarnation}")

    @handles(Ping)
    def ping(self, msg: Ping) -> Pong:
        return Pong(seq=msg.seq, incarnation=self.incarnation)

    @handles(Work)
    def work(self, msg: Work) -> None:
        if self.gate is not None:
            assert self.gate.wait(10)
        self.count += 1
        self.log.append(f"{self.name} work {msg.seq}")

    @handles(Count)
    def total(self, msg: Count) -> Total:
        return Total(value=self.count)

    @handles(Crash)
    def crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.reason)


class Tough(Echo):
    def on_panic(self, error: Exception) -> PanicAction:
        return PanicAction.CONTINUE


class Sink(Actor):
    """Receives Done from Tally; answers Count with how many it got."""

    def __init__(self) -> None:
        self.got = 0

    @handles(Done)
    def done(self, msg: Done) -> None:
        self.got += 1

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=self.got)


class Tally(Actor):
    """Replay subject: state, outbound tells, an outbound ask, clock reads, a panic."""

    def __init__(self) -> None:
        self.total = 0

    @handles(Work)
    def work(self, msg: Work) -> None:
        self.total += msg.seq
        sink = self.lookup("sink")
        assert sink is not None
        sink.tell(Done(seq=msg.seq, by=self.name))

    @handles(Count)
    def count(self, msg: Count) -> Total:
        return Total(value=self.total * 1000 + int(self.clock.monotonic()))

    @handles(Ping)
    def ping(self, msg: Ping) -> Pong:
        sink = self.lookup("sink")
        assert sink is not None
        return Pong(seq=sink.ask(Count()).value, incarnation=self.incarnation)

    @handles(Crash)
    def crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.reason)


class BrokenTally(Tally):
    """A 'bug fix' that changes behaviour at Work seq 3."""

    @handles(Work)
    def work(self, msg: Work) -> None:
        self.total += msg.seq
        sink = self.lookup("sink")
        assert sink is not None
        sink.tell(Done(seq=msg.seq + (1 if msg.seq == 3 else 0), by=self.name))
