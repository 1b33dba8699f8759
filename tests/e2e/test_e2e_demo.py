"""``python -m pytsnet demo``: the local-tailnet demo runs end to end and exits 0 only when it held."""

from __future__ import annotations

import subprocess
import sys


def test_demo_two_python_nodes_http_and_bulk() -> None:
    cmd = [sys.executable, "-m", "pytsnet", "demo", "--size", str(1 << 20)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "hello from beta over the tailnet" in out
    assert out.count("sha256 matches") == 2
    assert "state Running, home DERP 900" in out
    assert "\nOK" in out
