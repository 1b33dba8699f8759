"""Tracing: JSONL records of what each actor received, replied and sent, for ``trace show/replay``.

Off by default; on with ``ActorSystem(tracer=Tracer(path))`` or env ``PYTSNET_TRACE=path``.
Record kinds (``ev``): ``spawn`` (actor class import path, incarnation, args if they are Messages),
``recv`` (one handled message: seq, sender, receiver, incarnation, monotonic+wall time when handling
started, tag, message JSON, reply JSON or error), ``send`` (a message an actor sent while handling
message ``cause``), ``exit`` (an incarnation ended, with reason).

What a trace holds is readable by whoever gets the file, so it is created 0600 and written through a
``RedactContext``: ``Secret`` fields (the node private key) become ``<redacted:SOURCE>`` and the
record lists the sources under ``redacted`` (``trace replay --state DIR`` takes them from the
device's state store); ``Payload`` fields (application bytes) and bytes replies become a
length + hash placeholder unless ``PYTSNET_TRACE_PAYLOADS=1`` (or ``Tracer(payloads=True)``).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pytsnet.messages.base import Message
from pytsnet.messages.redact import RedactContext, payload_placeholder

if TYPE_CHECKING:
    from pytsnet.actors.runtime.cell import Cell, Envelope
    from pytsnet.actors.runtime.system import ActorSystem

__all__ = ["PAYLOADS_ENV", "Tracer", "read_trace", "redacted_tagged"]

PAYLOADS_ENV = "PYTSNET_TRACE_PAYLOADS"


def redacted_tagged(m: Message, ctx: RedactContext) -> dict[str, Any]:
    """``to_tagged`` as a trace writes it (secrets and, unless ``ctx.payloads``, payloads redacted)."""
    return {"tag": type(m).TAG, "data": json.loads(m.model_dump_json(context=ctx))}


class Tracer:
    def __init__(self, path: str | Path, *, payloads: bool | None = None) -> None:
        self.path = Path(path)
        self.payloads = os.environ.get(PAYLOADS_ENV) == "1" if payloads is None else payloads
        self._lock = threading.Lock()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # 0600 from creation
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)  # appending to a file made before this rule (or by someone else)
        self._f: IO[str] | None = os.fdopen(fd, "a", buffering=1, encoding="utf-8")

    def _ctx(self) -> RedactContext:
        return RedactContext(payloads=self.payloads)

    def _msg(self, m: Any, ctx: RedactContext) -> Any:
        if isinstance(m, Message):
            return redacted_tagged(m, ctx)
        if isinstance(m, bytes | bytearray | memoryview) and not ctx.payloads:
            ctx.payloads_redacted += 1
            return payload_placeholder(bytes(m))
        return m

    def _write(self, rec: dict[str, Any], ctx: RedactContext | None = None) -> None:
        if ctx is not None and ctx.secrets:
            rec["redacted"] = sorted(set(ctx.secrets))
        line = json.dumps(rec, sort_keys=True, default=_opaque)
        with self._lock:
            if self._f is not None:
                self._f.write(line + "\n")

    def spawn(self, system: ActorSystem, cell: Cell) -> None:
        cls = cell.spec.actor_cls
        args = cell.spec.args
        ctx = self._ctx()
        self._write({
            "ev": "spawn", "system": system.name, "actor": cell.name, "incarnation": cell.incarnation,
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "args": [redacted_tagged(a, ctx) for a in args] if all(isinstance(a, Message) for a in args)
            else None,
            "mono": system.clock.monotonic(), "wall": system.clock.time(),
        }, ctx)

    def recv(self, system: ActorSystem, cell: Cell, env: Envelope, mono: float, wall: float,
             reply: Any, error: BaseException | None) -> None:
        ctx = self._ctx()
        self._write({
            "ev": "recv", "system": system.name, "seq": env.seq, "sender": env.sender, "receiver": cell.name,
            "incarnation": cell.incarnation, "kind": "ask" if env.reply is not None else "tell",
            "tag": type(env.msg).TAG, "msg": redacted_tagged(env.msg, ctx), "mono": mono, "wall": wall,
            "reply": self._msg(reply, ctx),
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }, ctx)

    def send(self, system: ActorSystem, sender: str, cause: int | None, receiver: str, env: Envelope) -> None:
        ctx = self._ctx()
        self._write({
            "ev": "send", "system": system.name, "seq": env.seq, "cause": cause, "sender": sender,
            "receiver": receiver, "kind": "ask" if env.reply is not None else "tell",
            "tag": type(env.msg).TAG, "msg": redacted_tagged(env.msg, ctx),
            "mono": system.clock.monotonic(), "wall": system.clock.time(),
        }, ctx)

    def exit(self, system: ActorSystem, cell: Cell, reason: BaseException | None) -> None:
        self._write({
            "ev": "exit", "system": system.name, "actor": cell.name, "incarnation": cell.incarnation,
            "reason": None if reason is None else f"{type(reason).__name__}: {reason}",
            "mono": system.clock.monotonic(), "wall": system.clock.time(),
        })

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None


def _opaque(o: object) -> str:
    """A non-JSON reply: its type only (its repr could hold anything, a key or app bytes)."""
    return f"<{type(o).__module__}.{type(o).__qualname__}>"


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
