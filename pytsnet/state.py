"""Where a node keeps its machine key, node key and last netmap essentials.

``StateStore`` is Go's ``ipn.StateStore`` shape (bytes by key); implement it to keep state anywhere.
``FileStore`` writes ``tailscaled.state`` like Go's ``ipn/store.FileStore``: one JSON object of
key → base64 bytes, replaced atomically, mode 0600, in a 0700 directory. ``MemoryStore`` keeps
nothing across processes (Go allows it only for ephemeral nodes; so does ``ActorDevice``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path

from pytsnet.actors.control.store import MACHINE_KEY, NETMAP, NODE, StateStore
from pytsnet.errors import StateDirLocked, StateStoreError  # defined with every public error
from pytsnet.wire.keys import MachinePrivate, NodePrivate, NodePublic

__all__ = ["LOCK_FILE", "MACHINE_KEY", "NETMAP", "NODE", "STATE_FILE", "FileStore", "MemoryStore",
           "StateDirLock", "StateDirLocked", "StateStore", "StateStoreError", "check_state"]

STATE_FILE = "tailscaled.state"
LOCK_FILE = "tailscaled.lock"
MAX_STATE_FILE = 64 << 20  # far above real state (keys, one self node); bounds what a load reads


def check_state(store: StateStore) -> None:
    """Refuse a store whose values the control client could not use, naming the key.

    The client treats a missing ``_node`` as "register afresh"; a corrupt one must not look
    missing, or a damaged file silently turns the device into a new node with a new address."""
    raw = store.read_state(MACHINE_KEY)
    if raw:
        try:
            MachinePrivate.from_text(raw.decode())
        except (ValueError, UnicodeDecodeError) as e:
            raise StateStoreError(f"state key {MACHINE_KEY!r}: not a machine private key ({e})") from None
    node = _json_object(store, NODE)
    if node is not None:
        try:
            if node.get("NodePrivate"):
                NodePrivate.from_text(str(node["NodePrivate"]))
            if node.get("OldNodeKey"):
                NodePublic.from_text(str(node["OldNodeKey"]))
        except ValueError as e:
            raise StateStoreError(f"state key {NODE!r}: bad key ({e})") from None
    netmap = _json_object(store, NETMAP)
    if netmap is not None:
        _check_self_node(netmap.get("Node", {}))


def _check_self_node(me: object) -> None:
    """The stored self node's fields the client shows before control answers (Addresses, Name, ID)."""
    if not isinstance(me, dict):
        raise StateStoreError(f"state key {NETMAP!r}: 'Node' is not an object")
    addrs, name, node_id = me.get("Addresses"), me.get("Name"), me.get("ID")
    if addrs is not None and not (isinstance(addrs, list) and all(isinstance(a, str) for a in addrs)):
        raise StateStoreError(f"state key {NETMAP!r}: 'Node.Addresses' is not a list of strings")
    if name is not None and not isinstance(name, str):
        raise StateStoreError(f"state key {NETMAP!r}: 'Node.Name' is not a string")
    if node_id is not None and (isinstance(node_id, bool) or not isinstance(node_id, int)):
        raise StateStoreError(f"state key {NETMAP!r}: 'Node.ID' is not an integer")


def _json_object(store: StateStore, key: str) -> dict[str, object] | None:
    raw = store.read_state(key)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; Recursion: deep nesting
        raise StateStoreError(f"state key {key!r}: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise StateStoreError(f"state key {key!r}: not a JSON object")
    return doc


class StateDirLock:
    """An exclusive ``flock`` on ``<dir>/tailscaled.lock`` holding the owner's pid.

    One device per state dir: a second one (this process or another) gets ``StateDirLocked`` naming
    the holder. The OS drops the lock when its file closes, so a crashed holder never wedges the dir."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
            raise StateDirLocked(str(self.path.parent), int(text) if text.isdigit() else None) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock


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
            self._data = self._load()

    def _load(self) -> dict[str, bytes]:
        """Read and check the whole file; any damage is a ``StateStoreError`` naming it (and the key)."""
        try:
            with self.path.open("rb") as f:
                small = os.fstat(f.fileno()).st_size <= MAX_STATE_FILE
                raw = f.read(MAX_STATE_FILE + 1) if small else None  # a huge file is never read
        except OSError as e:  # a directory, no permission, an I/O error
            raise StateStoreError(f"{self.path}: unreadable state: {e.strerror or e}") from None
        if raw is None or len(raw) > MAX_STATE_FILE:  # (one growing while read stops at the cap)
            raise StateStoreError(f"{self.path}: unreadable state: larger than {MAX_STATE_FILE} bytes")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than the decoder's stack
            raise StateStoreError(f"{self.path}: unreadable state: {e}") from None
        if not isinstance(doc, dict):
            raise StateStoreError(f"{self.path}: unreadable state: not a JSON object")
        data: dict[str, bytes] = {}
        for k, v in doc.items():
            try:
                if not isinstance(v, str):
                    raise ValueError(f"a JSON {type(v).__name__}, not base64 text")
                data[k] = base64.b64decode(v, validate=True)  # non-ASCII text is a ValueError too
            except ValueError as e:
                raise StateStoreError(f"{self.path}: state key {k[:64]!r}: not base64 ({e})") from None
        return data

    @classmethod
    def in_dir(cls, directory: str | Path) -> FileStore:
        d = Path(directory)
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:  # e.g. a regular file where the dir should be
            raise StateStoreError(f"{d}: unusable state dir: {e.strerror or e}") from None
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
