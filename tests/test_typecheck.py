"""mypy sees the real module graph: run on one facade file from the source tree, it resolves every
``pytsnet.*`` import (the layers through the ``pytsnet/<layer>`` symlinks) and finds no error.

The whole package is checked by ``mypy`` in ``make test`` (config in pyproject.toml).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mypy_resolves_every_pytsnet_import_from_one_facade_file(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
                          "--show-error-codes", "pytsnet/device.py"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert "import-not-found" not in out.stdout, out.stdout
    assert "import-untyped" not in out.stdout, out.stdout
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("Success: no issues found in 1 source file"), out.stdout
