"""``python -m pytsnet egress`` as a subprocess (fake workers via the hidden ``--worker-cmd``): it serves
flows, ``egress status`` prints its table and JSON, SIGTERM drains to exit 0, a spent restart budget
exits 1 with the reason, an open non-loopback listener is refused (exit 2)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from fake_worker import socks_flow

from pytsnet.messages.egress import EgressStatus
from pytsnet.testing.polling import wait_until

FAKE = str(Path(__file__).with_name("fake_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])


def _egress(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pytsnet", "egress", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytsnet", "egress", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=20)


def test_egress_serves_status_prints_and_sigterm_drains() -> None:
    p = _egress("--workers", "2", "--socks", "127.0.0.1:0", "--status", "127.0.0.1:0", "--drain-timeout", "3",
                "--worker-cmd", f"{sys.executable} {FAKE} --fd {{fd}}")
    try:
        assert p.stdout is not None
        banner = p.stdout.readline()
        m = re.search(r"socks5 (\S+), status (\S+)", banner)
        assert m, banner
        socks, status = m.groups()
        wait_until(lambda: httpx.get(f"http://{status}/").json()["state"] == "running", 10, "running")
        s, got = socks_flow(socks, "a.example.com", 80)
        assert got["port"] == 80
        s.close()
        st = EgressStatus.model_validate_json(_cli("status", f"http://{status}", "--json").stdout)
        assert st.front.assigned == 1 and len(st.workers) == 2
        table = _cli("status", status)
        assert table.returncode == 0 and "state: running" in table.stdout and "ready" in table.stdout
        assert "assigned 1" in table.stdout
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=15)
        assert p.returncode == 0, err
        assert "egress: stopped" in out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_spent_budget_exits_non_zero_with_the_reason() -> None:
    p = _egress("--socks", "127.0.0.1:0", "--restart-budget", "1/60",
                "--worker-cmd", f"{sys.executable} {FAKE} --fd {{fd}} --exit-at-start 5")
    try:
        _, err = p.communicate(timeout=15)
        assert p.returncode == 1
        assert "egress escalated: restart budget spent" in err and "exit 5" in err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_an_open_non_loopback_listener_is_refused_and_status_of_nothing_fails() -> None:
    r = _cli("--socks", "0.0.0.0:0", "--worker-cmd", "true")
    assert r.returncode == 2 and "without a proxy password" in r.stderr
    r = _cli("status", "127.0.0.1:1")
    assert r.returncode == 2 and "status from" in r.stderr


def test_ctrl_c_at_a_terminal_drains_and_does_not_kill_the_workers_mid_flow() -> None:
    """Ctrl-C signals the terminal's whole foreground process group: the workers must not die of that
    SIGINT (a ``KeyboardInterrupt`` cut their flows and skipped the logout); the front drains them."""
    p = subprocess.Popen([sys.executable, "-m", "pytsnet", "egress", "--socks", "127.0.0.1:0", "--status",
                          "127.0.0.1:0", "--drain-timeout", "10",
                          "--worker-cmd", f"{sys.executable} {FAKE} --fd {{fd}}"],
                         cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)  # its own process group, as a shell's job is
    try:
        assert p.stdout is not None
        m = re.search(r"socks5 (\S+), status (\S+)", p.stdout.readline())
        assert m
        socks, status = m.groups()
        wait_until(lambda: httpx.get(f"http://{status}/").json()["state"] == "running", 10, "running")
        s, _ = socks_flow(socks, "a.example.com", 80)
        os.killpg(p.pid, signal.SIGINT)
        wait_until(lambda: httpx.get(f"http://{status}/").json()["state"] == "draining", 10, "draining")
        s.sendall(b"still open")
        assert s.recv(64) == b"still open"  # the drain lets the open flow go on
        s.close()
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
        assert "egress: stopped" in out and "KeyboardInterrupt" not in err
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
