"""An interactive PTY session of the real OpenSSH client on ``listen_ssh``'s turnkey login shell, driven
by tmux (send-keys, capture-pane): a terminal with the client's size, a window change followed, typed
commands answered, and ``exit`` ending the session."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from ssh_rig import ssh_rig

from pytsnet.ssh.shell import process_user
from pytsnet.testing.polling import wait_until

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("tmux") is None,
                                 reason="needs openssh-client and tmux (.ci/run installs them)")]

ME = process_user().pw_name


def test_openssh_pty_session_in_tmux(tmp_path: Path) -> None:
    rules = [{"action": "accept", "src": ["*"], "dst": ["*"], "users": [ME]}]
    with ssh_rig(tmp_path, rules) as rig:
        sock = str(tmp_path / "tmux.sock")
        env = {**rig.env(), "TERM": "xterm-256color"}

        def tmux(*args: str) -> str:
            return subprocess.run(["tmux", "-S", sock, *args], capture_output=True, text=True, env=env,
                                  timeout=20, check=True).stdout

        def pane() -> str:
            return tmux("capture-pane", "-p", "-t", "s")

        ssh_cmd = shlex.join(rig.ssh_argv(ME, tty=True)) + "; echo SSH-EXIT=$?; sleep 30"
        tmux("new-session", "-d", "-s", "s", "-x", "100", "-y", "30", ssh_cmd)
        try:
            tmux("send-keys", "-t", "s", "PS1='PROMPT> '; stty size; tty", "Enter")
            wait_until(lambda: "30 100" in pane(), 30, "the shell reports the client's terminal size",
                       interval=0.2)
            assert "/dev/pts/" in pane()
            tmux("send-keys", "-t", "s", "echo $((6*7))-from-the-pty", "Enter")
            wait_until(lambda: "42-from-the-pty" in pane(), 20, "the typed command's output", interval=0.2)
            tmux("resize-window", "-t", "s", "-x", "90", "-y", "25")
            tmux("send-keys", "-t", "s", "clear; stty size", "Enter")
            wait_until(lambda: "25 90" in pane(), 20, "the window change reaches the PTY", interval=0.2)
            tmux("send-keys", "-t", "s", "exit 5", "Enter")
            wait_until(lambda: "SSH-EXIT=5" in pane(), 20, "ssh exits with the shell's status", interval=0.2)
            assert rig.listener.stats.sessions == 1
        finally:
            subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True, env=env, check=False)
