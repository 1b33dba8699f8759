"""Where a node keeps its machine key, node key and last netmap essentials.

``StateStore`` is Go's ``ipn.StateStore`` shape (bytes by key); implement it to keep state anywhere.
``FileStore`` writes ``tailscaled.state`` like Go's ``ipn/store.FileStore``: one JSON object of
key → base64 bytes, replaced atomically, mode 0600, in a 0700 directory. ``MemoryStore`` keeps
nothing across processes (Go allows it only for ephemeral nodes; so does ``ActorDevice``).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path

from pytsnet.actors.control.store import MACHINE_KEY, NETMAP, NODE, StateStore
from pytsnet.errors import StateStoreError  # defined with every public error; re-exported here

__all__ = ["MACHINE_KEY", "NETMAP", "NODE", "STATE_FILE", "FileStore", "MemoryStore", "StateStore",
           "StateStoreError"]

STATE_FILE = "tailscaled.state"


class MemoryStore:
    """State in memory only (tsnet allows it only for ephemeral nodes)."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def read_state(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def write_state(self, key: str, value: bytes) -> None:
        with self._lock:
            self._put(key, value)
            self._persist()

    def _put(self, key: str, value: bytes) -> None:
        if value:
            self._data[key] = bytes(value)
        else:
            self._data.pop(key, None)

    def _persist(self) -> None:
        """Called with the lock held after every write; memory needs nothing more."""


class FileStore(MemoryStore):
    """Go's ``tailscaled.state`` layout: a JSON object of key -> base64, written atomically, 0600."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_text())
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                self._data = {str(k): base64.b64decode(v, validate=True) for k, v in doc.items()}
            except (ValueError, TypeError) as e:
                raise StateStoreError(f"{self.path}: unreadable state: {e}") from None

    @classmethod
    def in_dir(cls, directory: str | Path) -> FileStore:
        d = Path(directory)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(d / STATE_FILE)

    def _persist(self) -> None:
        doc = {k: base64.b64encode(v).decode() for k, v in sorted(self._data.items())}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
