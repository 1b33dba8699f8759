"""``python -m pytsnet up`` prints its IPs and peers, and exits cleanly on Ctrl-C (SIGINT) or SIGTERM,
whichever of its threads the kernel hands the signal to."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())


def _signal_thread(pid: int, sig: int) -> None:
    """``sig`` to one of ``pid``'s threads other than its main one (Linux ``tgkill``): what the kernel
    may do with a process-wide Ctrl-C when the main thread is not the one it picks."""
    tid = next(int(t) for t in sorted(os.listdir(f"/proc/{pid}/task"), key=int) if int(t) != pid)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(_SYS_TGKILL, pid, tid, sig) == 0, os.strerror(ctypes.get_errno())


@pytest.mark.skipif(_SYS_TGKILL is None, reason="tgkill's syscall number is known for x86_64/aarch64 only")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_taken_by_another_thread_still_stops_it(net: LocalTailnet, tmp_path: Path, sig: int) -> None:
    """Once Running the event loop is idle; a signal one of the device's threads takes must still
    wake it (before: asyncio.run's own SIGINT handling left ``up`` hanging for good, 1 run in ~50)."""
    proc = _up(net, tmp_path, "sig", net.create_authkey(), "--no-socket")
    try:
        _read_until(proc, [], "state Running", time.monotonic() + 30)
        time.sleep(0.3)  # the loop goes idle
        _signal_thread(proc.pid, sig)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
