"""``dev.listen_ssh`` against the real OpenSSH client through the tailnet (the client node's loopback
SOCKS5 proxy): a command's output and exit status, policy accept and reject (a caller the policy does
not admit is closed before the SSH banner; a user the rules do not map is refused at authentication),
the peer identity a handler sees, and the host key kept in the state store."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncssh
import pytest
from ssh_rig import ssh_policy_seen, ssh_rig

from pytsnet.ssh import SSHSession
from pytsnet.ssh.hostkeys import HOST_KEY_STATE
from pytsnet.ssh.shell import process_user
from pytsnet.testing.polling import wait_until

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("ssh") is None,
                                 reason="needs openssh-client (.ci/run installs it)")]

ME = process_user().pw_name
ACCEPT_ALL = [{"action": "accept", "src": ["*"], "dst": ["*"], "users": [ME]}]


def test_openssh_runs_a_command_with_output_and_exit_status(tmp_path: Path) -> None:
    with ssh_rig(tmp_path, ACCEPT_ALL) as rig:
        r = rig.ssh(ME, "echo hello-$USER; echo to-stderr >&2; exit 7")
        assert r.returncode == 7, r.stderr
        assert r.stdout == f"hello-{ME}\n".encode()
        assert b"to-stderr" in r.stderr
        assert rig.listener.stats.sessions == 1
        key = rig.server.store.read_state(HOST_KEY_STATE)
        assert key is not None and asyncssh.import_private_key(key).get_algorithm() == "ssh-ed25519"


def test_caller_not_in_policy_is_closed_before_the_banner(tmp_path: Path) -> None:
    """No rule names the client (its src is a tag nobody has): the server's policy has no rules, the TCP
    connection is accepted by the netstack and closed with not one byte sent (no ``SSH-2.0``)."""
    rules = [{"action": "accept", "src": ["tag:nobody"], "dst": ["*"], "users": [ME]}]
    with ssh_rig(tmp_path, rules, server_rules=0) as rig:
        s = rig.raw_connect()
        s.settimeout(20)
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        s.close()
        assert got == b""
        r = rig.ssh(ME, "true")
        assert r.returncode == 255
        assert b"closed by remote host" in r.stderr or b"Connection closed" in r.stderr, r.stderr
        assert rig.listener.stats.refused_before_banner >= 2
        assert rig.listener.stats.sessions == 0


def test_accepted_caller_sees_the_banner_and_an_unmapped_user_is_refused(tmp_path: Path) -> None:
    rules = [{"action": "accept", "src": ["*"], "dst": ["*"], "users": ["someone-else"]}]
    with ssh_rig(tmp_path, rules) as rig:
        s = rig.raw_connect()
        s.settimeout(20)
        assert s.recv(4096).startswith(b"SSH-2.0-")
        s.close()
        r = rig.ssh(ME, "echo should-not-run")
        assert r.returncode == 255
        assert b"should-not-run" not in r.stdout
        assert b"does not permit you to SSH as user" in r.stderr, r.stderr
        assert rig.listener.stats.sessions == 0


def test_turnkey_refuses_a_local_user_other_than_the_process_owner(tmp_path: Path) -> None:
    """The policy maps ``other`` to itself, but the turnkey shell cannot change user: refused at auth."""
    rules = [{"action": "accept", "src": ["*"], "dst": ["*"], "users": ["*"]}]
    with ssh_rig(tmp_path, rules) as rig:
        r = rig.ssh("other", "echo should-not-run")
        assert r.returncode == 255 and b"should-not-run" not in r.stdout
        assert b"cannot log you in as 'other'" in r.stderr, r.stderr
        assert rig.listener.stats.sessions == 0


def test_policy_change_is_applied_to_the_next_connection(tmp_path: Path) -> None:
    with ssh_rig(tmp_path, ACCEPT_ALL) as rig:
        assert rig.ssh(ME, "true").returncode == 0
        rig.net.set_policy({"ssh": [{"action": "accept", "src": ["tag:nobody"], "dst": ["*"],
                                     "users": [ME]}]})
        wait_until(lambda: ssh_policy_seen(rig.server, 0), 20, "the emptied SSHPolicy", interval=0.05)
        r = rig.ssh(ME, "echo should-not-run")
        assert r.returncode == 255 and b"should-not-run" not in r.stdout


def test_handler_sees_the_peer_identity(tmp_path: Path) -> None:
    seen: list[SSHSession] = []

    async def handler(session: SSHSession) -> int:
        seen.append(session)
        p = session.peer
        session.process.stdout.write(f"{p.hostname} {p.ssh_user}->{p.local_user} {p.src[0]}\n".encode())
        return 3

    rules = [{"action": "accept", "src": ["*"], "dst": ["*"], "users": ["*"]}]
    with ssh_rig(tmp_path, rules, handler) as rig:
        r = rig.ssh("alice", "ignored")
        client_ip = next(ip for ip in rig.client.tailscale_ips() if ":" not in ip)
        assert r.returncode == 3, r.stderr
        assert r.stdout.decode() == f"client alice->alice {client_ip}\n"
        assert len(seen) == 1
        assert seen[0].peer.node_name.startswith("client.") and client_ip in {
            a.split("/")[0] for a in seen[0].peer.addresses}
        assert seen[0].process.command == "ignored"
