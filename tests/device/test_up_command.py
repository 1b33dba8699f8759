"""``python -m pytsnet up`` prints its IPs and peers, and exits cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pytsnet.localnet.server import LocalTailnet


def test_up_prints_ips_and_peers_and_exits_on_sigint(
    net: LocalTailnet, make_device, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    key = net.create_authkey(reusable=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytsnet", "up", "--control-url", net.control_url, "--authkey", key,
         "--dir", str(tmp_path / "up"), "--hostname", "cli"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while not any(ln.startswith("state Running") for ln in lines):
            assert time.monotonic() < deadline, lines
            lines.append(proc.stdout.readline().strip())
        assert " ips 100." in next(ln for ln in lines if ln.startswith("state Running"))
        make_device("other", net.control_url, key).wait_until_running_blocking(10)
        while not any(ln.startswith("peer + other") for ln in lines):
            assert time.monotonic() < deadline, lines
            lines.append(proc.stdout.readline().strip())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
