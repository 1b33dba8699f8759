"""Copy the repository as a clean clone would have it, for tests that build or lint a copy.

Tracked and unignored files only (no venv, caches or build output); symlinks stay symlinks, so the
copy keeps ``pytsnet/<layer> -> ../<layer>`` and builds or lints exactly like the original.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

__all__ = ["copy_source_tree"]

SKIP_DIRS = {".venv", ".cache", ".git", "build", "dist", ".pytest_cache", ".ruff_cache", ".hypothesis"}


def copy_source_tree(repo: Path, dst: Path) -> None:
    """Copy ``git ls-files`` (cached and untracked-but-unignored) of ``repo`` into ``dst``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=repo, capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = repo / rel
        if rel.split("/", 1)[0] in SKIP_DIRS or not (src.is_symlink() or src.is_file()):
            continue  # deleted in the work tree but still in the index
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
