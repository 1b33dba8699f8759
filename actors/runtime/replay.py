"""Replay one actor from a trace: rebuild its class, feed its recorded inbox, compare outputs.

The actor runs alone, in the calling thread, with a ``ManualClock`` set to each message's recorded
time; every ref it reaches (``lookup``, ``self.ref``) is a stub that records sends, and an ask it
makes is answered with the recorded reply. A new recorded incarnation rebuilds the actor (and runs
``on_start``), as the supervisor did. Compared per message: reply (or error) and the ordered list
of sends (receiver, tag, JSON). Requirements: the class is importable and was spawned with
Message-only arguments (the trace records them).

Redacted traces (see ``trace``): a ``<redacted:KEY:FIELD>`` secret in a message the actor receives
is taken from ``secrets`` (``trace replay --state DIR`` reads the device's state store); without it
the replay stops with a ``ReplayError`` naming the secret. Outputs are compared in the form the
trace wrote them, so a replayed send holding the real key matches its redacted record. A message
whose payload bytes were not recorded cannot be rebuilt: record with ``PYTSNET_TRACE_PAYLOADS=1``.
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
from pytsnet.actors.runtime.trace import read_trace, redacted_tagged
from pytsnet.messages.base import Message, from_tagged
from pytsnet.messages.redact import PLACEHOLDER, RedactContext, payload_placeholder

EPHEMERAL = "process"
"""The source of a secret made per process (the disco key): in no state store."""

SecretSource = Callable[[str, str], str | None]
"""``(state_key, json_field)`` → the secret's text, or None if the store lacks it."""

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

    def defer_reply(self) -> None:
        return None  # replayed handlers are compared by what they return


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


def _as_traced(m: Any, payloads: bool) -> Any:
    """A value in the form the tracer wrote it (bytes replies redacted like ``Tracer._msg``)."""
    if isinstance(m, Message):
        return redacted_tagged(m, RedactContext(payloads=payloads))
    if isinstance(m, bytes | bytearray | memoryview) and not payloads:
        return payload_placeholder(bytes(m))
    return m


def _same(recorded: Any, got: Any) -> bool:
    """Equal to the recording, whether it was made with payloads or without."""
    return bool(recorded == _as_traced(got, True) or recorded == _as_traced(got, False))


def _unredact(obj: Any, secrets: SecretSource | None, what: str) -> Any:
    if isinstance(obj, str):
        m = PLACEHOLDER.match(obj)
        if m is None:
            return obj
        key, fld = m.groups()
        if key == EPHEMERAL:
            raise ReplayError(f"{what} needs the secret {fld}, which the trace redacted and no state store "
                              "holds (it is made per process): this actor cannot be replayed")
        value = secrets(key, fld) if secrets is not None else None
        if value is None:
            where = "the state store given has no" if secrets is not None else "no state store given for"
            raise ReplayError(f"{what} needs the secret {fld} (state key {key}), which the trace redacted: "
                              f"{where} it; pass --state DIR (the device's Config.dir)")
        return value
    if isinstance(obj, dict):
        return {k: _unredact(v, secrets, what) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unredact(v, secrets, what) for v in obj]
    return obj


def _rebuild(tagged: dict[str, Any], secrets: SecretSource | None, what: str) -> Message:
    try:
        return from_tagged(_unredact(tagged, secrets, what))
    except ValueError as e:  # pydantic's ValidationError: a payload placeholder where bytes belong
        if "redacted_payload" in str(tagged):
            raise ReplayError(f"{what} carries payload bytes the trace did not record: "
                              "record with PYTSNET_TRACE_PAYLOADS=1 to replay it") from None
        raise ReplayError(f"{what} cannot be rebuilt: {e}") from None


def replay(records: list[dict[str, Any]], actor: str, actor_cls: type[Actor] | None = None, *,
           secrets: SecretSource | None = None) -> ReplayResult:
    """Replay ``actor`` from trace records; ``actor_cls`` overrides the recorded class (tests);
    ``secrets`` supplies what the trace redacted."""
    spawns = [r for r in records if r["ev"] == "spawn" and r["actor"] == actor]
    if not spawns:
        raise ReplayError(f"no spawn record for actor {actor!r} in the trace")
    first = spawns[0]
    if first["args"] is None:
        raise ReplayError(f"{actor} was spawned with non-Message arguments; it cannot be rebuilt")
    cls = actor_cls or _import(first["class"])
    args = [_rebuild(a, secrets, f"{actor}'s spawn argument") for a in first["args"]]
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
    got: list[tuple[str, Message, str]] = []

    def sink(ref: ActorRef, msg: Message, is_ask: bool) -> Any:
        got.append((ref.name, msg, "ask" if is_ask else "tell"))
        if not is_ask:
            return None
        k = len(got) - 1
        if k < len(expected_sends) and expected_sends[k]["seq"] in handled:
            rec = handled[expected_sends[k]["seq"]]
            if rec["error"] is not None:
                raise HandlerError(ref.name, RuntimeError(rec["error"]))
            if isinstance(rec["reply"], dict):
                return _rebuild(rec["reply"], secrets, f"the recorded reply to {actor}'s ask")
            return rec["reply"]
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
                instance.ctx = _ReplayContext(actor, incarnation, clock)
                expected_sends, got = [], []
                current.name, current.seq, current.sink = actor, None, lambda *a: None
                instance.on_start()
            clock.set(rec["mono"], rec["wall"])
            msg = _rebuild(rec["msg"], secrets, f"{actor}'s inbox message seq {rec['seq']} ({rec['tag']})")
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
            d = None
            if rec["error"] != error:
                d = Divergence(i, rec["seq"], rec["tag"], "error", rec["error"], error)
            elif not _same(want_reply, reply):
                d = Divergence(i, rec["seq"], rec["tag"], "reply", want_reply, _as_traced(reply, False))
            else:
                want = [(s["receiver"], s["msg"], s["kind"]) for s in expected_sends]
                if len(want) != len(got) or not all(w[0] == g[0] and w[2] == g[2] and _same(w[1], g[1])
                                                    for w, g in zip(want, got, strict=True)):
                    d = Divergence(i, rec["seq"], rec["tag"], "sends", want,
                                   [(g[0], _as_traced(g[1], False), g[2]) for g in got])
            if d is not None:
                result.divergence = d
                return result
    finally:
        current.name, current.seq, current.sink = prev
    return result


def replay_file(path: str, actor: str, actor_cls: type[Actor] | None = None, *,
                secrets: SecretSource | None = None) -> ReplayResult:
    return replay(read_trace(path), actor, actor_cls, secrets=secrets)
