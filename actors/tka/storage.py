"""Tailnet Lock chain storage on disk, in Go's ``tka.FS`` layout (so Go's state dir reads the same).

``<base>/<2 chars>/<base32(hash)>`` holds one AUM record (``wire.tka.chonk.encode_hash_info``),
``<base>/last_active_ancestor`` the raw 32-byte hash. Writes are atomic (temporary file in the
same directory, fsync, rename), so a crash leaves the old record or the new one. Purged AUMs are
marked (``PurgedUnix``), not deleted, as Go does. Files whose names are not AUM hashes (temporary
files, OS litter) are ignored. A corrupt, oversized or misnamed record raises
``ChonkCorruptError`` (a ``TkaDecodeError``); an unreadable one ``ChonkIOError``: never a crash.
The first scan reads every record into memory and later reads use it (Go rescans the directory
on every call, which makes opening a chain quadratic in file reads): the directory belongs to one
``FsChonk`` at a time, and its writes keep the cache true.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from pytsnet.wire.tka.aum import AUM, aum_hash_from_text, aum_hash_text
from pytsnet.wire.tka.chonk import (
    AUM_HASH_LEN,
    AUMNotFoundError,
    ChonkCorruptError,
    HashInfo,
    decode_hash_info,
    encode_hash_info,
    fs_aum_path,
)
from pytsnet.wire.tka.errors import TkaDecodeError, TkaError

MAX_RECORD_BYTES = 4 << 20
"""The largest record we read: a full checkpoint (512 keys) is well under 1 MiB."""
LAST_ACTIVE_ANCESTOR = "last_active_ancestor"


class ChonkIOError(TkaError):
    """The store's directory or a record could not be read or written."""


class FsChonk:
    """A ``Chonk`` in a directory (Go ``tka.ChonkDir``); created if missing."""

    def __init__(self, base: str | os.PathLike[str]) -> None:
        self._base = Path(base)
        try:
            self._base.mkdir(mode=0o755, parents=True, exist_ok=True)
        except FileExistsError as e:
            raise ChonkIOError(f"chonk directory {str(self._base)!r} is a file") from e
        except OSError as e:
            raise ChonkIOError(f"creating chonk root dir: {e}") from e
        if not self._base.is_dir():
            raise ChonkIOError(f"chonk directory {str(self._base)!r} is a file")
        self._cache: dict[bytes, HashInfo] | None = None  # every record, after the first scan

    @property
    def base(self) -> Path:
        """The directory holding the chain."""
        return self._base

    def aum_path(self, h: bytes) -> Path:
        """Where the record for ``h`` lives."""
        sub, name = fs_aum_path(h)
        return self._base / sub / name

    # -- records ---------------------------------------------------------------------------

    def _get(self, h: bytes) -> HashInfo | None:
        if self._cache is not None:
            return self._cache.get(h)
        return self._read(h)

    def _read(self, h: bytes) -> HashInfo | None:
        path = self.aum_path(h)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ChonkIOError(f"{path}: {e}") from e
        if len(data) > MAX_RECORD_BYTES:
            raise ChonkCorruptError(f"{path}: record larger than {MAX_RECORD_BYTES} bytes")
        try:
            return decode_hash_info(data, want_hash=h)
        except TkaDecodeError as e:
            raise ChonkCorruptError(f"{path}: {e}") from e

    def _put(self, h: bytes, info: HashInfo) -> None:
        path = self.aum_path(h)
        self._write_atomic(path, encode_hash_info(info))
        if self._cache is not None:
            self._cache[h] = info

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as e:
            raise ChonkIOError(f"writing {path}: {e}") from e

    def _load(self) -> dict[bytes, HashInfo]:
        """Every record on disk (purged ones too), read once."""
        if self._cache is not None:
            return self._cache
        records: dict[bytes, HashInfo] = {}
        try:
            prefixes = sorted(p for p in self._base.iterdir() if p.is_dir())
        except FileNotFoundError:
            prefixes = []
        except OSError as e:
            raise ChonkIOError(f"reading prefix dirs: {e}") from e
        for prefix in prefixes:
            try:
                names = sorted(p.name for p in prefix.iterdir())
            except OSError as e:
                raise ChonkIOError(f"reading prefix dir: {e}") from e
            for name in names:
                try:
                    h = aum_hash_from_text(name)
                except TkaDecodeError:
                    continue  # a temporary file or OS litter, not an AUM record
                if len(h) != AUM_HASH_LEN or self.aum_path(h).parent != prefix:
                    continue
                info = self._read(h)
                if info is not None:
                    records[h] = info
        self._cache = records
        return records

    def _scan(self) -> Iterator[tuple[bytes, AUM]]:
        """Every unpurged AUM with its hash."""
        for h, info in self._load().items():
            if info.aum is not None and info.purged_unix == 0:
                yield h, info.aum

    # -- the Chonk protocol ----------------------------------------------------------------

    def aum(self, h: bytes) -> AUM:
        info = self._get(bytes(h))
        if info is None or info.aum is None or info.purged_unix > 0:
            raise AUMNotFoundError(f"AUM {aum_hash_text(h)} not found")
        return info.aum

    def child_aums(self, prev: bytes) -> list[AUM]:
        return [a for _, a in self._scan() if a.prev_aum_hash == prev]

    def heads(self) -> list[AUM]:
        aums = list(self._scan())
        parents = {a.prev_aum_hash for _, a in aums if a.prev_aum_hash is not None}
        return [a for h, a in aums if h not in parents]

    def commit_verified_aums(self, aums: Sequence[AUM], now: float) -> None:
        for a in aums:
            h = a.hash()
            existing = self._get(h)
            created = existing.created_unix if existing is not None else int(now)
            self._put(h, HashInfo(aum=a, created_unix=created, purged_unix=0))

    def last_active_ancestor(self) -> bytes | None:
        path = self._base / LAST_ACTIVE_ANCESTOR
        try:
            with open(path, "rb") as f:
                data = f.read(AUM_HASH_LEN + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ChonkIOError(f"{path}: {e}") from e
        if len(data) != AUM_HASH_LEN:
            raise ChonkCorruptError(f"stored hash is of wrong length: {len(data)} != {AUM_HASH_LEN}")
        return data

    def set_last_active_ancestor(self, h: bytes) -> None:
        if len(h) != AUM_HASH_LEN:
            raise TkaDecodeError(f"AUM hash must be {AUM_HASH_LEN} bytes, got {len(h)}")
        self._write_atomic(self._base / LAST_ACTIVE_ANCESTOR, bytes(h))

    def all_aums(self) -> list[bytes]:
        return [h for h, _ in self._scan()]

    def commit_time(self, h: bytes) -> float:
        info = self._get(bytes(h))
        if info is None or info.purged_unix > 0:
            raise AUMNotFoundError(f"AUM {aum_hash_text(h)} not found")
        if info.created_unix > 0:
            return float(info.created_unix)
        # Written by a tailscaled older than CreatedUnix: the file's mtime stands in (Go).
        try:
            return self.aum_path(h).stat().st_mtime
        except OSError:
            return 0.0

    def purge_aums(self, hashes: Sequence[bytes], now: float | None = None) -> None:
        """Mark AUMs purged (kept on disk, as Go does); ``now`` defaults to the clock."""
        stamp = int(time.time() if now is None else now)
        for h in hashes:
            info = self._get(bytes(h))
            if info is None:
                raise AUMNotFoundError(f"purging {aum_hash_text(h)}: not found")
            if info.aum is None or info.purged_unix > 0:
                continue
            self._put(bytes(h), HashInfo(info.aum, info.created_unix, max(stamp, 1)))

    def remove_all(self) -> None:
        self._cache = None
        try:
            shutil.rmtree(self._base)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise ChonkIOError(f"removing {self._base}: {e}") from e
