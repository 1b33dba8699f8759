"""A Taildrop backend in memory and a LocalAPI socket serving it: the LocalAPI's Taildrop routes and
``pytsnet file cp|get`` tested without a tailnet (the end-to-end tests use two real nodes).

``FakeTaildrop`` keeps what was pushed and an inbox; ``read_delay`` slows each 64 KiB read of a
pushed body (a slow peer: the CLI's progress bar shows several states). ``served`` runs a
``LocalApiSocket`` over it in its own actor system.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from pytsnet.actors.runtime import ActorSystem
from pytsnet.localapi.backend import Backend
from pytsnet.localapi.server import LocalApi
from pytsnet.localapi.taildrop import TaildropBackendError, register
from pytsnet.localapi.types import GO_ZERO_TIME, FileTarget, Hostinfo, Node, WaitingFile
from pytsnet.localapi.unix import LocalApiSocket

__all__ = ["FakeTaildrop", "Pushed", "api_over", "fake_target", "served"]

READ = 64 * 1024


def fake_target(n: int, host: str, *, online: bool | None = True) -> FileTarget:
    """A file target ``host`` at ``100.64.0.<n>`` / ``fd7a:115c:a1e0::<n>``, StableID ``stable-<host>``."""
    hexkey = f"{n:02x}" * 32
    node = Node(ID=n, StableID=f"stable-{host}", Name=f"{host}.tail-fake.ts.net.", User=1,
                Key=f"nodekey:{hexkey}", KeyExpiry=GO_ZERO_TIME, Machine=f"mkey:{hexkey}",
                DiscoKey=f"discokey:{hexkey}", Addresses=[f"100.64.0.{n}/32", f"fd7a:115c:a1e0::{n}/128"],
                AllowedIPs=[f"100.64.0.{n}/32"], Hostinfo=Hostinfo(Hostname=host), Created=GO_ZERO_TIME,
                Online=online, ComputedName=host)
    return FileTarget(Node=node, PeerAPIURL=f"http://100.64.0.{n}:{40000 + n}")


@dataclass
class Pushed:
    target: str
    name: str
    data: bytes
    size: int | None


@dataclass
class FakeTaildrop:
    targets: list[FileTarget] = field(default_factory=list)
    inbox: dict[str, bytes] = field(default_factory=dict)
    pushed: list[Pushed] = field(default_factory=list)
    read_delay: float = 0.0
    refuse: dict[str, TaildropBackendError] = field(default_factory=dict)
    """Names whose push fails with that error (after the body was read)."""
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def file_targets(self) -> list[FileTarget]:
        return list(self.targets)

    def push_file(self, target: FileTarget, name: str, body: BinaryIO, size: int | None) -> None:
        parts = []
        while chunk := body.read(READ):
            parts.append(chunk)
            if self.read_delay:
                time.sleep(self.read_delay)
        if name in self.refuse:
            raise self.refuse[name]
        assert target.Node is not None
        with self._cond:
            self.pushed.append(Pushed(target.Node.StableID, name, b"".join(parts), size))

    def add(self, name: str, data: bytes) -> None:
        with self._cond:
            self.inbox[name] = data
            self._cond.notify_all()

    def waiting_files(self) -> list[WaitingFile]:
        with self._cond:
            return [WaitingFile(Name=n, Size=len(d)) for n, d in sorted(self.inbox.items())]

    def await_waiting_files(self, timeout: float) -> list[WaitingFile]:
        with self._cond:
            self._cond.wait_for(lambda: bool(self.inbox), timeout)
        return self.waiting_files()

    def open_waiting_file(self, name: str) -> tuple[BinaryIO, int]:
        with self._cond:
            if name not in self.inbox:
                raise TaildropBackendError(500, f"open {name}: no such file or directory")
            data = self.inbox[name]
        return io.BytesIO(data), len(data)

    def delete_waiting_file(self, name: str) -> None:
        with self._cond:
            if self.inbox.pop(name, None) is None:
                raise TaildropBackendError(500, f"remove {name}: no such file or directory")


def api_over(fake: FakeTaildrop) -> LocalApi:
    """A LocalAPI with only the Taildrop routes working (the others have no device behind them)."""
    api = LocalApi(cast(Backend, object()))
    register(api, fake)
    return api


@contextmanager
def served(fake: FakeTaildrop, path: Path) -> Iterator[LocalApi]:
    """``fake``'s LocalAPI on a unix socket at ``path`` until the block ends."""
    system = ActorSystem("taildrop-fake", dispatcher="thread")
    api = api_over(fake)
    sock = LocalApiSocket(system, api, path)
    try:
        yield api
    finally:
        sock.close()
        system.shutdown()
