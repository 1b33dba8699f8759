"""``pytsnet file cp`` and ``pytsnet file get`` end to end: two Python nodes on a local tailnet, each
serving its LocalAPI on a unix socket; the CLI in a tmux pane sends a file from alpha to beta over
the tailnet (alpha's LocalAPI → ``dev.send_file`` → beta's peerAPI) with its progress bar read by
capture-pane, then ``file get`` on beta writes it out byte-exact and empties the inbox."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.tailnet import new_device, wait_for_peers

pytestmark = pytest.mark.timeout(240)

MiB = 1 << 20
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
PCT = re.compile(r"(\d{1,3})%")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytsnet", *args], capture_output=True, text=True,
                          timeout=120, env=ENV)


def _tmux(server: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", server, *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)")
def test_file_cp_in_tmux_then_get_byte_exact(tmp_path: Path) -> None:
    socks = Path(tempfile.mkdtemp(prefix="tdE", dir="/tmp"))  # short: a unix socket path is ≤ 107 bytes
    data = os.urandom(24 * MiB)
    src = tmp_path / "payload.bin"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    server = f"pytsnet-tde-{uuid.uuid4().hex[:8]}"
    try:
        with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
            alpha = new_device(net, tmp_path, "alpha", local_api_socket=socks / "a.sock").start()
            beta = new_device(net, tmp_path, "beta", local_api_socket=socks / "b.sock").start()
            try:
                for d in (alpha, beta):
                    d.wait_until_running_blocking(30)
                wait_for_peers(alpha, ["beta"])
                wait_for_peers(beta, ["alpha"])
                r = _cli("file", "cp", "--socket", str(socks / "a.sock"), "--targets")
                names = [ln.split("\t")[1] for ln in r.stdout.splitlines()]
                assert r.returncode == 0 and names == ["beta"], r

                done = tmp_path / "rc"
                cmd = (f"{sys.executable} -m pytsnet file cp --socket {socks / 'a.sock'} {src} beta:; "
                       f"echo rc=$? > {done}; sleep 120")
                _tmux(server, "new-session", "-d", "-x", "200", "-y", "50", "-s", "cp", cmd)
                seen: list[int] = []
                screen = ""
                deadline = time.monotonic() + 150
                while not done.exists():
                    assert time.monotonic() < deadline, screen
                    screen = _tmux(server, "capture-pane", "-p", "-t", "cp")
                    line = next((ln for ln in screen.splitlines() if "payload.bin" in ln), "")
                    m = PCT.search(line)
                    if m and (not seen or seen[-1] != int(m.group(1))):
                        seen.append(int(m.group(1)))
                    time.sleep(0.05)
                final = _tmux(server, "capture-pane", "-p", "-t", "cp")
                assert done.read_text().strip() == "rc=0", final
                bar = next(ln for ln in final.splitlines() if "payload.bin" in ln)
                assert "100%" in bar and "24.0/24.0 MiB" in bar and "━" in bar, final
                print("progress states seen:", seen)
                assert len({p for p in seen if 0 < p < 100}) >= 2, (seen, final)
                assert seen == sorted(seen)

                assert [(w.name, w.size) for w in beta.waiting_files()] == [("payload.bin", len(data))]
                r = _cli("file", "get", "--verbose", "--socket", str(socks / "b.sock"), str(out))
                assert r.returncode == 0, r.stderr
                got = (out / "payload.bin").read_bytes()
                assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest() and len(got) == len(data)
                assert beta.waiting_files() == []
            finally:
                alpha.close()
                beta.close()
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, timeout=10)
        shutil.rmtree(socks, ignore_errors=True)
