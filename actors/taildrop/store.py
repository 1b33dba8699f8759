"""``TaildropStore``: the directory received files land in (Go's taildrop ``manager`` + ``fsFileOps``).

An upload writes ``<name>.<sender's stable ID>.partial`` (created 0600 in a 0700 directory), from
``offset`` (the partial file is truncated there: Go ``OpenWriter``), and renames it to ``<name>`` once
the declared length has arrived; a different file already there makes it ``<name> (1)`` (Go
``Rename``: same size and SHA-256 → the partial is just dropped). A cut upload keeps its partial file
for the sender's resume. One upload per (sender, name) at a time (Go's ``ErrFileExists``, 409).

Budgets (typed refusals, checked before a byte is written and as bytes arrive): ``max_file_size``
per file (413) and ``min_free`` bytes the filesystem must keep free after the whole file (507). Every
path is built from a name ``validate_base_name`` accepted, joined to the directory and checked to stay
in it. Thread-safe: the peerAPI connections (one thread each) and the device's app-facing calls share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pytsnet.wire.taildrop import (
    BLOCK_SIZE,
    DELETED_SUFFIX,
    PARTIAL_SUFFIX,
    BlockChecksum,
    InvalidFileName,
    next_filename,
    partial_name,
    validate_base_name,
)

__all__ = ["DEFAULT_MAX_FILE_SIZE", "DEFAULT_MIN_FREE", "PutRecord", "PutRefused", "TaildropStore",
           "Upload", "WaitingFile"]

DEFAULT_MAX_FILE_SIZE = 16 << 30
DEFAULT_MIN_FREE = 256 << 20
_HISTORY = 64


class PutRefused(OSError):
    """An upload refused or failed: ``status`` is the peerAPI answer, ``public`` its text (Go's texts
    where Go has one)."""

    def __init__(self, status: int, public: str) -> None:
        super().__init__(public)
        self.status = status
        self.public = public


@dataclass(frozen=True)
class WaitingFile:
    """A received file waiting for the app (Go ``apitype.WaitingFile``)."""

    name: str
    size: int


@dataclass(frozen=True)
class PutRecord:
    """One finished upload attempt (Go ``ipn.PartialFile`` once done or cut): where it started
    (``offset``), the body bytes it wrote, and whether the file was completed."""

    name: str
    sender: str
    offset: int
    received: int
    declared_size: int
    done: bool
    final_name: str = ""


class Upload:
    """One PUT being written. ``write`` the body as it arrives, then ``finish`` (complete) or ``abort``
    (cut: the partial file stays)."""

    def __init__(self, store: TaildropStore, key: tuple[str, str], f: BinaryIO, path: Path,
                 offset: int, length: int) -> None:
        self._store, self._key, self._f, self.path = store, key, f, path
        self.offset = offset
        self.length = length
        """The body's declared length (-1: unknown, e.g. chunked)."""
        self.received = 0
        self._closed = False

    def write(self, data: bytes) -> None:
        if self.length >= 0 and self.received + len(data) > self.length:
            raise PutRefused(400, "body longer than its Content-Length")
        if self.offset + self.received + len(data) > self._store.max_file_size:
            raise PutRefused(413, "file too large")
        try:
            self._f.write(data)
        except OSError:
            raise PutRefused(500, "write failed") from None
        self.received += len(data)

    def finish(self) -> str:
        """Complete: the final name it was stored under. ``PutRefused`` if fewer bytes came than declared."""
        if self.length >= 0 and self.received != self.length:
            self.abort()
            raise PutRefused(400, f"copied {self.received} bytes; expected {self.length}")
        self._close()
        final = self._store._finalize(self.path, self._key[1])
        self._store._record(PutRecord(self._key[1], self._key[0], self.offset, self.received,
                                      self.length, True, final))
        return final

    def abort(self) -> None:
        """Cut: the partial file is kept for a resume (idempotent)."""
        if self._closed:
            return
        self._close()
        self._store._record(PutRecord(self._key[1], self._key[0], self.offset, self.received,
                                      self.length, False))

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self._f.close()
            self._store._release(self._key)


class TaildropStore:
    def __init__(self, directory: str | os.PathLike[str], *, max_file_size: int = DEFAULT_MAX_FILE_SIZE,
                 min_free: int = DEFAULT_MIN_FREE) -> None:
        self.dir = Path(directory)
        self.max_file_size = max_file_size
        self.min_free = min_free
        self._lock = threading.Lock()
        self._active: set[tuple[str, str]] = set()
        self._history: deque[PutRecord] = deque(maxlen=_HISTORY)

    # -- receiving ------------------------------------------------------------------------------------
    def begin(self, sender: str, name: str, offset: int, length: int) -> Upload:
        """Open ``name``'s partial file for ``sender`` at ``offset``; ``InvalidFileName``/``PutRefused``."""
        validate_base_name(name)
        sender = _client_id(sender)
        total = offset + length if length >= 0 else offset
        if total > self.max_file_size:
            raise PutRefused(413, "file too large")
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            raise PutRefused(500, "Taildrop folder not configured or accessible") from None
        if length > 0:
            try:
                free = shutil.disk_usage(self.dir).free
            except OSError:
                raise PutRefused(500, "Taildrop folder not configured or accessible") from None
            if free - length < self.min_free:
                raise PutRefused(507, "not enough disk space")
        key = (sender, name)
        with self._lock:
            if key in self._active:
                raise PutRefused(409, "file already exists")
            self._active.add(key)
        try:
            path = self._path(partial_name(name, sender))
            try:
                fd = os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600)
            except OSError:  # a symlink planted there (not followed), permissions, a full disk
                raise PutRefused(500, "cannot open the partial file") from None
            f = os.fdopen(fd, "r+b")
            try:
                size = f.seek(0, os.SEEK_END)
                if offset < 0 or offset > size:
                    raise PutRefused(400, f"offset {offset} out of range")
                f.seek(offset)
                f.truncate(offset)
            except BaseException:
                f.close()
                raise
        except BaseException:
            self._release(key)
            raise
        return Upload(self, key, f, path, offset, length)

    def hashes(self, sender: str, name: str) -> bytes:
        """Go ``HashPartialFile``: one JSON checksum line per block of ``name``'s partial file from
        ``sender`` (nothing when there is none)."""
        validate_base_name(name)
        path = self._path(partial_name(name, _client_id(sender)))
        out = bytearray()
        try:
            with open(path, "rb") as f:
                while block := f.read(BLOCK_SIZE):
                    out += BlockChecksum(hashlib.sha256(block).digest(), len(block)).to_line()
        except FileNotFoundError:
            return b""
        except OSError:
            raise PutRefused(500, "cannot read the partial file") from None
        return bytes(out)

    def partial_files(self, sender: str) -> list[str]:
        """Go ``PartialFiles``: the partial files of ``sender`` (their on-disk names)."""
        suffix = f".{_client_id(sender)}{PARTIAL_SUFFIX}"
        return sorted(p.name for p in self._entries() if p.name.endswith(suffix))

    def sweep_partials(self, now: float, max_age: float) -> list[str]:
        """Remove partial files no upload is writing whose last write is ``max_age`` seconds before
        ``now`` or older (Go's ``fileDeleter``); their names."""
        with self._lock:
            active = {partial_name(name, sender) for sender, name in self._active}
        out = []
        for p in self._entries():
            if not p.name.endswith(PARTIAL_SUFFIX) or p.name in active:
                continue
            with contextlib.suppress(OSError):
                if now - p.lstat().st_mtime >= max_age:
                    p.unlink()
                    out.append(p.name)
        return sorted(out)

    def history(self) -> list[PutRecord]:
        """The last finished or cut uploads, oldest first."""
        with self._lock:
            return list(self._history)

    # -- the app's side -------------------------------------------------------------------------------
    def waiting_files(self) -> list[WaitingFile]:
        """Completed files (Go ``WaitingFiles``), by name."""
        out = []
        for p in self._entries():
            if p.name.endswith((PARTIAL_SUFFIX, DELETED_SUFFIX)):
                continue
            with contextlib.suppress(OSError):
                st = p.lstat()
                if p.is_file() and not p.is_symlink():
                    out.append(WaitingFile(p.name, st.st_size))
        return sorted(out, key=lambda w: w.name)

    def open(self, name: str) -> BinaryIO:
        validate_base_name(name)
        fd = os.open(self._path(name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        return os.fdopen(fd, "rb")

    def delete(self, name: str) -> None:
        validate_base_name(name)
        os.unlink(self._path(name))

    # -- internals -----------------------------------------------------------------------------------
    def _entries(self) -> list[Path]:
        try:
            return list(self.dir.iterdir())
        except FileNotFoundError:
            return []

    def _path(self, name: str) -> Path:
        path = self.dir / name
        if path.parent != self.dir or os.sep in name or (os.altsep and os.altsep in name):
            raise InvalidFileName("not a base name")
        return path

    def _finalize(self, partial: Path, name: str) -> str:
        """Go ``Rename``: into place, or next to a different file of that name as ``name (1)``…"""
        dst = name
        for _ in range(10):
            with self._lock:
                target = self._path(dst)
                if not target.exists() and not target.is_symlink():
                    os.rename(partial, target)
                    return dst
            if target.is_file() and target.stat().st_size == partial.stat().st_size and \
                    _sha256(target) == _sha256(partial):
                partial.unlink()
                return dst
            dst = next_filename(dst)
        raise PutRefused(500, "too many retries trying to rename the partial file")

    def _release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._active.discard(key)

    def _record(self, rec: PutRecord) -> None:
        with self._lock:
            self._history.append(rec)


def _client_id(stable_id: str) -> str:
    """The sender's stable node ID as a file-name part (Go's ``clientID``): only safe characters kept."""
    return "".join(c for c in stable_id if c.isascii() and (c.isalnum() or c in "-_")) or "unknown"


def _sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()
