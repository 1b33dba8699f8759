"""``python -m pytsnet up`` prints its IPs and peers, and exits cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pytsnet.localnet.server import LocalTailnet


def _up(net: LocalTailnet, tmp_path: Path, name: str, key: str, *flags: str) -> subprocess.Popen[str]:
    """``pytsnet up`` as hostname ``name`` against ``net`` (``flags``: more of its options)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pytsnet", "up", "--control-url", net.control_url, "--authkey", key,
         "--dir", str(tmp_path / name), "--hostname", name, *flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _read_until(proc: subprocess.Popen[str], lines: list[str], prefix: str, deadline: float) -> str:
    """Read ``proc``'s lines into ``lines`` until one starts with ``prefix``; that line."""
    assert proc.stdout is not None
    while not any(ln.startswith(prefix) for ln in lines):
        assert time.monotonic() < deadline and proc.poll() is None, lines
        lines.append(proc.stdout.readline().strip())
    return next(ln for ln in lines if ln.startswith(prefix))


def test_up_prints_ips_and_peers_and_exits_on_sigint(
    net: LocalTailnet, make_device, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    key = net.create_authkey(reusable=True)
    proc = _up(net, tmp_path, "cli", key)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 20
        assert " ips 100." in _read_until(proc, lines, "state Running", deadline)
        make_device("other", net.control_url, key).wait_until_running_blocking(10)
        _read_until(proc, lines, "peer + other", deadline)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _running_line(net: LocalTailnet, tmp_path: Path, name: str, *flags: str) -> str:
    """Start ``pytsnet up`` (with ``flags``) and return its ``state Running`` line; then Ctrl-C."""
    proc = _up(net, tmp_path, name, net.create_authkey(), "--no-socket", *flags)
    try:
        line = _read_until(proc, [], "state Running", time.monotonic() + 30)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        return line
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_ipv6_flag_keeps_the_tailnet_ipv6_address(tmp_path: Path) -> None:
    """``--ipv6`` is ``Config(ipv6=True)``: control gives both addresses and the node keeps both;
    without it the IPv6 one is dropped (IPv4 only by default)."""
    with LocalTailnet(tmp_path / "ctl", ipv6=True) as net:
        with_flag = _running_line(net, tmp_path, "six", "--ipv6").split(" ips ", 1)[1].split(" name ")[0]
        without = _running_line(net, tmp_path, "four").split(" ips ", 1)[1].split(" name ")[0]
    assert any(ip.startswith("fd7a:115c:a1e0:") for ip in with_flag.split()), with_flag
    assert any(ip.startswith("100.") for ip in with_flag.split()), with_flag
    assert all(":" not in ip for ip in without.split()) and without.startswith("100."), without
