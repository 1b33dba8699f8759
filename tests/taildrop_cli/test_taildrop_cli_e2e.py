"""``pytsnet file cp`` and ``pytsnet file get`` end to end: two Python nodes on a local tailnet, each
serving its LocalAPI on a unix socket; the CLI in a tmux pane sends a file from alpha to beta over
the tailnet (alpha's LocalAPI → ``dev.send_file`` → beta's peerAPI) with its progress bar read by
capture-pane, then ``file get`` on beta writes it out byte-exact and empties the inbox. Also: the
device's refusals as Go's statuses, and the same routes on the loopback listener's LocalAPI."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pytsnet.device import ActorDevice
from pytsnet.errors import LocalApiError
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


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ActorDevice, ActorDevice, Path]]:
    """alpha and beta on a local tailnet, their LocalAPIs at ``<socks>/a.sock`` and ``b.sock``."""
    tmp = tmp_path_factory.mktemp("tdcli")
    socks = Path(tempfile.mkdtemp(prefix="tdE", dir="/tmp"))  # short: a unix socket path is ≤ 107 bytes
    try:
        with LocalTailnet(tmp / "control", listen="127.0.0.1:0") as net:
            alpha = new_device(net, tmp, "alpha", local_api_socket=socks / "a.sock").start()
            beta = new_device(net, tmp, "beta", local_api_socket=socks / "b.sock").start()
            try:
                for d in (alpha, beta):
                    d.wait_until_running_blocking(30)
                wait_for_peers(alpha, ["beta"])
                wait_for_peers(beta, ["alpha"])
                yield alpha, beta, socks
            finally:
                alpha.close()
                beta.close()
    finally:
        shutil.rmtree(socks, ignore_errors=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)")
def test_file_cp_in_tmux_then_get_byte_exact(pair: tuple[ActorDevice, ActorDevice, Path],
                                             tmp_path: Path) -> None:
    _, beta, socks = pair
    data = os.urandom(24 * MiB)
    src = tmp_path / "payload.bin"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    server = f"pytsnet-tde-{uuid.uuid4().hex[:8]}"
    try:
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
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, timeout=10)
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


def test_refusals_carry_go_statuses(pair: tuple[ActorDevice, ActorDevice, Path], tmp_path: Path) -> None:
    """The device's typed refusals become Go's statuses through the LocalAPI and the CLI's errors."""
    alpha, beta, socks = pair
    lc = alpha.local_client()
    [target] = lc.file_targets()
    assert target.Node is not None and target.Node.ComputedName == "beta"
    with pytest.raises(LocalApiError) as e:
        lc.push_file(target.Node.StableID, 1, "../escape", io.BytesIO(b"x"))
    assert e.value.status == 400 and "invalid filename" in str(e.value)
    with pytest.raises(LocalApiError) as e:
        lc.push_file(target.Node.StableID, 1, "COM1", io.BytesIO(b"x"))
    assert e.value.status == 400
    (tmp_path / "me.txt").write_bytes(b"x")
    r = _cli("file", "cp", "--socket", str(socks / "b.sock"), str(tmp_path / "me.txt"), "beta:")
    assert r.returncode == 1 and "cannot send files to this node itself" in r.stderr, r.stderr
    r = _cli("file", "cp", "--socket", str(socks / "b.sock"), str(tmp_path / "me.txt"), "100.100.100.100:")
    assert r.returncode == 1 and "not in your Tailnet" in r.stderr, r.stderr
    with pytest.raises(LocalApiError) as e:
        beta.local_client().get_waiting_file("never-sent.bin")
    assert e.value.status == 500
    assert beta.waiting_files() == []


def test_loopback_local_api_streams_file_put_and_get(pair: tuple[ActorDevice, ActorDevice, Path]) -> None:
    """Go tsnet's ``Loopback`` LocalAPI (``Sec-Tailscale``, the credential): a 3 MiB file put
    through alpha's and read back through beta's, both streamed (past the 1 MiB buffered cap)."""
    alpha, beta, _ = pair
    data = os.urandom(3 * MiB + 5)
    [target] = alpha.local_client().file_targets()
    assert target.Node is not None
    hdrs = {"Sec-Tailscale": "localapi"}
    a_addr, _, a_cred = alpha.loopback()
    with httpx.Client(auth=("", a_cred), headers=hdrs, timeout=60) as c:
        url = f"http://{a_addr}/localapi/v0/file-put/{target.Node.StableID}/loop%20back.bin"
        r = c.put(url, content=data)
    assert r.status_code == 200, r.text
    b_addr, _, b_cred = beta.loopback()
    with httpx.Client(auth=("", b_cred), headers=hdrs, timeout=60) as c:
        r = c.get(f"http://{b_addr}/localapi/v0/files/loop%20back.bin")
        assert r.status_code == 200 and r.headers["content-length"] == str(len(data)) and r.content == data
        assert c.delete(f"http://{b_addr}/localapi/v0/files/loop%20back.bin").status_code == 204
        r = c.put(f"http://{b_addr}/localapi/v0/file-put/x/y", content=b"z", auth=("", "wrong"))
        assert r.status_code == 403 and r.text == "bad password\n"
    assert beta.waiting_files() == []
