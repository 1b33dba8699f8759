"""Tailscale SSH check mode end to end: the real OpenSSH client through the tailnet (the client node's
SOCKS5 proxy) logs in to ``listen_ssh`` under a ``check`` rule; the node follows Go's hold-and-delegate
(banner, expanded URL fetched over Noise from localnet, which holds it until the admin decides)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from ssh_rig import Rig, ssh_rig

from pytsnet.ssh.shell import process_user
from pytsnet.testing.polling import wait_until

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("ssh") is None,
                                 reason="needs openssh-client (.ci/run installs it)")]

ME = process_user().pw_name
BANNER = b"Tailscale SSH requires an additional check"


def _check_rule(period: str) -> list[dict[str, object]]:
    return [{"action": "check", "src": ["*"], "dst": ["*"], "users": [ME], "checkPeriod": period}]


def _start(rig: Rig, *command: str) -> subprocess.Popen[bytes]:
    argv = [a if a != "LogLevel=ERROR" else "LogLevel=INFO" for a in rig.ssh_argv(ME, *command)]  # banners
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=rig.env())


def _pending(rig: Rig) -> dict[str, object]:
    wait_until(lambda: len(rig.net.ssh_checks()) == 1, 30, "the login is held as a pending check",
               interval=0.05)
    return rig.net.ssh_checks()[0]


def test_check_waits_for_approval_then_denial_refuses(tmp_path: Path) -> None:
    with ssh_rig(tmp_path, _check_rule("always")) as rig:
        proc = _start(rig, "echo checked-in-$USER")
        try:
            check = _pending(rig)
            assert (check["src_host"], check["dst_host"], check["ssh_user"], check["local_user"]) == (
                "client", "server", ME, ME)
            time.sleep(1.0)
            assert proc.poll() is None  # held: the login has not completed
            assert rig.listener.stats.sessions == 0
            assert rig.net.decide_ssh_check(int(check["id"]), True)  # type: ignore[call-overload]
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert out == f"checked-in-{ME}\n".encode()
        assert BANNER in err, err  # the rule's message, as an auth banner
        assert rig.listener.stats.holds == 1 and rig.listener.stats.sessions == 1

        proc = _start(rig, "echo should-not-run")  # "always": asked again
        try:
            check = _pending(rig)
            assert rig.net.decide_ssh_check(int(check["id"]), False)  # type: ignore[call-overload]
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 255 and b"should-not-run" not in out
        assert BANNER in err and b"the SSH check was denied" in err, err
        assert rig.listener.stats.sessions == 1 and rig.net.ssh_checks() == []


def test_client_giving_up_leaves_no_pending_check(tmp_path: Path) -> None:
    with ssh_rig(tmp_path, _check_rule("always")) as rig:
        proc = _start(rig, "echo should-not-run")
        try:
            check = _pending(rig)
        finally:
            proc.kill()
            proc.communicate(timeout=30)
        wait_until(lambda: rig.net.ssh_checks() == [], 30, "the abandoned check is forgotten", interval=0.1)
        assert not rig.net.decide_ssh_check(int(check["id"]), True)  # type: ignore[call-overload]
        assert rig.listener.stats.sessions == 0


def test_check_period_accepts_a_second_login_without_asking(tmp_path: Path) -> None:
    with ssh_rig(tmp_path, _check_rule("1h")) as rig:
        proc = _start(rig, "echo first")
        try:
            check = _pending(rig)
            rig.net.decide_ssh_check(int(check["id"]), True)  # type: ignore[call-overload]
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 0 and out == b"first\n", err
        r = rig.ssh(ME, "echo second")  # within the period: control answers accept at once
        assert r.returncode == 0 and r.stdout == b"second\n", r.stderr
        assert rig.listener.stats.holds == 2 and rig.listener.stats.sessions == 2
        assert rig.net.control is not None and rig.net.control.stats["ssh_checks"] == 1
