"""How the local tailnet's files sit on disk: a 0700 directory, every file 0600 from its creation.

Files are created with ``os.open(..., 0o600)`` (never a chmod afterwards, which leaves a window in
which another local user can open the file) and replaced atomically (write a temporary sibling,
fsync, ``os.replace``), so a crash leaves the old or the new content, never half a key.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` 0700 (parents too); an existing one made by an older version is tightened."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)  # migration of a dir created before this rule; new dirs never get here
    return path


def create_private_file(path: Path) -> None:
    """Make sure ``path`` exists, created 0600 if it did not (so a library creating it later, such
    as SQLite, opens a file that was never readable by others)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE))


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600 from creation."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
