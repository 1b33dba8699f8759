"""Tracing: JSONL records of what each actor received, replied and sent, for ``trace show/replay``.

Off by default; on with ``ActorSystem(tracer=Tracer(path))`` or env ``PYTSNET_TRACE=path``.
Record kinds (``ev``): ``spawn`` (actor class import path, incarnation, args if they are Messages),
``recv`` (one handled message: seq, sender, receiver, incarnation, monotonic+wall time when handling
started, tag, message JSON, reply JSON or error), ``send`` (a message an actor sent while handling
message ``cause``), ``exit`` (an incarnation ended, with reason).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pytsnet.messages.base import Message, to_tagged

if TYPE_CHECKING:
    from pytsnet.actors.runtime.cell import Cell, Envelope
    from pytsnet.actors.runtime.system import ActorSystem

__all__ = ["Tracer", "read_trace"]


def _msg(m: Any) -> Any:
    return to_tagged(m) if isinstance(m, Message) else m


class Tracer:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._f: IO[str] | None = self.path.open("a", buffering=1, encoding="utf-8")

    def _write(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, sort_keys=True, default=repr)
        with self._lock:
            if self._f is not None:
                self._f.write(line + "\n")

    def spawn(self, system: ActorSystem, cell: Cell) -> None:
        cls = cell.spec.actor_cls
        args = cell.spec.args
        self._write({
            "ev": "spawn", "system": system.name, "actor": cell.name, "incarnation": cell.incarnation,
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "args": [to_tagged(a) for a in args] if all(isinstance(a, Message) for a in args) else None,
            "mono": system.clock.monotonic(), "wall": system.clock.time(),
        })

    def recv(self, system: ActorSystem, cell: Cell, env: Envelope, mono: float, wall: float,
             reply: Any, error: BaseException | None) -> None:
        self._write({
            "ev": "recv", "system": system.name, "seq": env.seq, "sender": env.sender, "receiver": cell.name,
            "incarnation": cell.incarnation, "kind": "ask" if env.reply is not None else "tell",
            "tag": type(env.msg).TAG, "msg": to_tagged(env.msg), "mono": mono, "wall": wall,
            "reply": _msg(reply), "error": None if error is None else f"{type(error).__name__}: {error}",
        })

    def send(self, system: ActorSystem, sender: str, cause: int | None, receiver: str, env: Envelope) -> None:
        self._write({
            "ev": "send", "system": system.name, "seq": env.seq, "cause": cause, "sender": sender,
            "receiver": receiver, "kind": "ask" if env.reply is not None else "tell",
            "tag": type(env.msg).TAG, "msg": to_tagged(env.msg),
            "mono": system.clock.monotonic(), "wall": system.clock.time(),
        })

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


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
