"""``pytsnet ssh`` (asyncssh client, a node of its own) against ``listen_ssh``: a command's output and
exit status by MagicDNS name, and a refusal when the policy does not name the user."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ssh_rig import Rig, ssh_rig

from pytsnet.ssh.shell import process_user
from pytsnet.testing.polling import wait_until

pytestmark = pytest.mark.timeout(180)

ME = process_user().pw_name


def _cli(rig: Rig, tmp: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "pytsnet", "ssh", "--dir", str(tmp / "cli"), "--hostname", "cli",
            "--control-url", rig.net.control_url, "--authkey", rig.net.create_authkey(), "--timeout", "60",
            *args]
    return subprocess.run(argv, capture_output=True, timeout=150, stdin=subprocess.DEVNULL, env=rig.env(),
                          check=False)


def test_pytsnet_ssh_runs_a_command_by_name(tmp_path: Path) -> None:
    rules = [{"action": "accept", "src": ["*"], "dst": ["*"], "users": [ME]}]
    with ssh_rig(tmp_path, rules) as rig:
        r = _cli(rig, tmp_path, "-l", ME, "server", "echo", "from-$USER;", "exit 4")
        assert r.returncode == 4, r.stderr[-2000:]
        assert r.stdout == f"from-{ME}\n".encode()
        r = _cli(rig, tmp_path, f"someone-else@{rig.server_ip}", "echo should-not-run")
        assert r.returncode == 255 and b"should-not-run" not in r.stdout
        assert b"does not permit you to SSH as user" in r.stderr, r.stderr[-2000:]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)")
def test_pytsnet_ssh_interactive_pty_in_tmux(tmp_path: Path) -> None:
    rules = [{"action": "accept", "src": ["*"], "dst": ["*"], "users": [ME]}]
    with ssh_rig(tmp_path, rules) as rig:
        sock = str(tmp_path / "tmux.sock")
        env = {**rig.env(), "TERM": "xterm-256color"}

        def tmux(*args: str) -> str:
            return subprocess.run(["tmux", "-S", sock, *args], capture_output=True, text=True, env=env,
                                  timeout=20, check=True).stdout

        argv = [sys.executable, "-m", "pytsnet", "ssh", "--dir", str(tmp_path / "cli"), "--hostname", "cli",
                "--control-url", rig.net.control_url, "--authkey", rig.net.create_authkey(), f"{ME}@server"]
        tmux("new-session", "-d", "-s", "s", "-x", "100", "-y", "30",
             shlex.join(argv) + "; echo CLI-EXIT=$?; sleep 30")
        try:
            wait_until(lambda: rig.listener.stats.sessions == 1, 60, "the CLI's session", interval=0.2)
            tmux("send-keys", "-t", "s", "stty size; echo $((6*7))-cli-pty", "Enter")
            wait_until(lambda: "42-cli-pty" in tmux("capture-pane", "-p", "-t", "s"), 20, "typed output",
                       interval=0.2)
            assert "30 100" in tmux("capture-pane", "-p", "-t", "s")
            tmux("send-keys", "-t", "s", "exit 3", "Enter")
            wait_until(lambda: "CLI-EXIT=3" in tmux("capture-pane", "-p", "-t", "s"), 30, "the CLI exits 3",
                       interval=0.2)
        finally:
            subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True, env=env, check=False)
