"""Replay one actor from a trace: rebuild its class, feed its recorded inbox, compare outputs.

The actor runs alone, in the calling thread, with a ``ManualClock`` set to each message's recorded
time; every ref it reaches (``lookup``, ``self.ref``) is a stub that records sends, and an ask it
makes is answered with the recorded reply. A new recorded incarnation rebuilds the actor (and runs
``on_start``), as the supervisor did. Compared per message: reply (or error) and the ordered list
of sends (receiver, tag, JSON). Requirements: the class is importable and was spawned with
Message-only arguments (the trace records them).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytsnet.actors.runtime.actor import Actor, handler_for
from pytsnet.actors.runtime.clock import ManualClock, TimerHandle
from pytsnet.actors.runtime.errors import HandlerError
from pytsnet.actors.runtime.ref import ActorRef, current
from pytsnet.actors.runtime.trace import read_trace
from pytsnet.messages.base import Message, from_tagged, to_tagged

__all__ = ["Divergence", "ReplayError", "ReplayResult", "replay", "replay_file"]


class ReplayError(Exception):
    """The trace cannot be replayed (actor absent, class not importable, non-Message args)."""


@dataclass
class Divergence:
    index: int  # position in the actor's inbox (0-based)
    seq: int
    tag: str
    what: str  # "reply" | "error" | "sends"
    expected: Any
    got: Any

    def __str__(self) -> str:
        return (f"divergence at inbox message #{self.index} (seq {self.seq}, {self.tag}): {self.what}\n"
                f"  recorded: {self.expected}\n  replayed: {self.got}")


@dataclass
class ReplayResult:
    actor: str
    messages: int
    divergence: Divergence | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.divergence is None


class _StubCell:
    """Enough of a cell for an ``ActorRef`` whose sends the replayer intercepts."""

    def __init__(self, name: str, incarnation: int = 1) -> None:
        self.name = name
        self.incarnation = incarnation
        self.is_stopped = False

        class _Sys:
            pass

        self.system = _Sys()
        self.system.name = "replay"  # type: ignore[attr-defined]


class _NullIoLoop:
    def stop(self, join_timeout: float = 1.0) -> None:
        pass


class _ReplayContext:
    def __init__(self, name: str, incarnation: int, clock: ManualClock) -> None:
        self.name = name
        self.incarnation = incarnation
        self._clock = clock
        self._ref = ActorRef(_StubCell(name, incarnation))  # type: ignore[arg-type]

    @property
    def ref(self) -> ActorRef:
        return self._ref

    @property
    def clock(self) -> ManualClock:
        return self._clock

    def lookup(self, name: str) -> ActorRef | None:
        return ActorRef(_StubCell(name))  # type: ignore[arg-type]

    def send_after(self, delay: float, msg: Message) -> TimerHandle:
        return TimerHandle(self._clock.monotonic() + delay)  # its ticks are in the recorded inbox

    def send_interval(self, period: float, msg: Message) -> TimerHandle:
        return TimerHandle(self._clock.monotonic() + period)

    def start_io_loop(self, fn: Callable[[], Message | None], close: Callable[[], None] | None) -> Any:
        return _NullIoLoop()  # its results are in the recorded inbox

    def link(self, other: ActorRef) -> None:
        pass

    def stop_self(self) -> None:
        pass


def _import(path: str) -> type[Actor]:
    module, _, qual = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ReplayError(f"cannot import actor class {path}: {e}") from e
    return obj  # type: ignore[no-any-return]


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def replay(records: list[dict[str, Any]], actor: str, actor_cls: type[Actor] | None = None) -> ReplayResult:
    """Replay ``actor`` from trace records; ``actor_cls`` overrides the recorded class (tests)."""
    spawns = [r for r in records if r["ev"] == "spawn" and r["actor"] == actor]
    if not spawns:
        raise ReplayError(f"no spawn record for actor {actor!r} in the trace")
    first = spawns[0]
    if first["args"] is None:
        raise ReplayError(f"{actor} was spawned with non-Message arguments; it cannot be rebuilt")
    cls = actor_cls or _import(first["class"])
    args = [from_tagged(a) for a in first["args"]]
    inbox = [r for r in records if r["ev"] == "recv" and r["receiver"] == actor]
    sends: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["ev"] == "send" and r["sender"] == actor:
            sends[r["cause"]].append(r)
    handled = {r["seq"]: r for r in records if r["ev"] == "recv"}
    clock = ManualClock(first["mono"], first["wall"])
    result = ReplayResult(actor, len(inbox))
    instance: Actor | None = None
    incarnation = 0
    expected_sends: list[dict[str, Any]] = []
    got: list[tuple[str, dict[str, Any], str]] = []

    def sink(ref: ActorRef, msg: Message, is_ask: bool) -> Any:
        got.append((ref.name, to_tagged(msg), "ask" if is_ask else "tell"))
        if not is_ask:
            return None
        k = len(got) - 1
        if k < len(expected_sends) and expected_sends[k]["seq"] in handled:
            rec = handled[expected_sends[k]["seq"]]
            if rec["error"] is not None:
                raise HandlerError(ref.name, RuntimeError(rec["error"]))
            return from_tagged(rec["reply"]) if isinstance(rec["reply"], dict) else rec["reply"]
        raise HandlerError(ref.name, RuntimeError("no recorded reply for this ask"))

    prev = (current.name, current.seq, current.sink)
    try:
        for i, rec in enumerate(inbox):
            if rec["incarnation"] != incarnation or instance is None:
                incarnation = rec["incarnation"]
                spawn = next((s for s in spawns if s["incarnation"] == incarnation), None)
                if spawn is not None:
                    clock.set(spawn["mono"], spawn["wall"])
                instance = cls(*args)
                instance.ctx = _ReplayContext(actor, incarnation, clock)  # type: ignore[assignment]
                expected_sends, got = [], []
                current.name, current.seq, current.sink = actor, None, lambda *a: None
                instance.on_start()
            clock.set(rec["mono"], rec["wall"])
            msg = from_tagged(rec["msg"])
            expected_sends, got = sends.get(rec["seq"], []), []
            current.name, current.seq, current.sink = actor, rec["seq"], sink
            reply: Any = None
            error: str | None = None
            method = handler_for(cls, type(msg))
            try:
                if method is None:
                    raise TypeError(f"{cls.__name__} has no handler for {type(msg).__name__}")
                reply = getattr(instance, method)(msg)
            except Exception as e:
                error = _err(e)
            want_reply = rec["reply"]
            got_reply = to_tagged(reply) if isinstance(reply, Message) else reply
            d = None
            if rec["error"] != error:
                d = Divergence(i, rec["seq"], rec["tag"], "error", rec["error"], error)
            elif want_reply != got_reply:
                d = Divergence(i, rec["seq"], rec["tag"], "reply", want_reply, got_reply)
            else:
                want = [(s["receiver"], s["msg"], s["kind"]) for s in expected_sends]
                if want != got:
                    d = Divergence(i, rec["seq"], rec["tag"], "sends", want, got)
            if d is not None:
                result.divergence = d
                return result
    finally:
        current.name, current.seq, current.sink = prev
    return result


def replay_file(path: str, actor: str, actor_cls: type[Actor] | None = None) -> ReplayResult:
    return replay(read_trace(path), actor, actor_cls)
