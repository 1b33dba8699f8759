"""The worker's ends: a drain (open flows finish, new ones are refused, the rest cut at the deadline,
the ephemeral node logged out and gone from control at once, exit 0), SIGTERM (the same drain), the
front's death (channel EOF: flows cut, logout, exit 1) and a front that never sends its setup (exit 2)."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest
from worker_rig import ECHO_PORT, Rig, WorkerProc, worker, worker_rig

from pytsnet.egress.channel import WorkerChannel
from pytsnet.egress.worker import EXIT_EOF, EXIT_SETUP, worker_command
from pytsnet.messages.egress import WorkerDrain, WorkerDrained
from pytsnet.testing.polling import wait_until
from pytsnet.testing.streams import recv_exact
from pytsnet.wire.socks5 import Rep


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with worker_rig(tmp_path_factory.mktemp("egress-life")) as r:
        yield r


def _hostnames(rig: Rig) -> set[str]:
    return {n.hostname for n in rig.net.nodes()}


def _open_echo(w: WorkerProc, rig: Rig) -> tuple[int, socket.socket]:
    flow, c = w.flow("socks5", rig.web_ip, ECHO_PORT, tcp=True)
    assert recv_exact(c, 10)[:2] == b"\x05\x00"
    c.sendall(b"ping")
    assert recv_exact(c, 4) == b"ping"
    return flow, c


def test_drain_finishes_open_flows_refuses_new_ones_and_logs_out(rig: Rig) -> None:
    with worker(rig, "egress-drain") as w:
        w.ready()
        assert "egress-drain" in _hostnames(rig)
        flow, c = _open_echo(w, rig)
        w.ch.send(WorkerDrain(deadline=10))
        late, c2 = w.flow("socks5", rig.web_ip, ECHO_PORT)
        assert recv_exact(c2, 2) == bytes([5, Rep.GENERAL_FAILURE])
        assert w.done(late).outcome == "refused" and w.done(late).error == "draining"
        c.sendall(b"last words")  # the open flow still works during the drain
        assert recv_exact(c, 10) == b"last words"
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b""
        assert w.done(flow).outcome == "ok"
        drained = w.wait_for(WorkerDrained)
        assert (drained.finished, drained.cut, drained.logged_out) == (1, 0, True)
        assert w.proc.wait(15) == 0
        assert "egress-drain" not in _hostnames(rig)  # logged out: gone at once, no grace period
        assert w.key not in w.stderr()


def test_drain_deadline_cuts_what_is_still_open(rig: Rig) -> None:
    with worker(rig, "egress-cut") as w:
        w.ready()
        flow, c = _open_echo(w, rig)
        w.ch.send(WorkerDrain(deadline=0.5))
        done = w.done(flow)
        assert done.outcome == "cut" and done.bytes_up == done.bytes_down == 4
        with pytest.raises(ConnectionResetError):
            while c.recv(100):  # the client sees the cut as a reset, not a clean end
                pass
        drained = w.wait_for(WorkerDrained)
        assert (drained.finished, drained.cut, drained.logged_out) == (0, 1, True)
        assert w.proc.wait(15) == 0
        assert "egress-cut" not in _hostnames(rig)


def test_sigterm_drains_too(rig: Rig) -> None:
    with worker(rig, "egress-term") as w:
        w.ready()
        w.proc.send_signal(signal.SIGTERM)
        drained = w.wait_for(WorkerDrained)
        assert drained.logged_out and drained.cut == 0
        assert w.proc.wait(15) == 0
        assert "egress-term" not in _hostnames(rig)


def test_front_gone_cuts_flows_logs_out_and_exits_1(rig: Rig) -> None:
    with worker(rig, "egress-eof") as w:
        w.ready()
        _, c = _open_echo(w, rig)
        w.ch.close()  # the front died: EOF on the worker's end
        assert w.proc.wait(15) == EXIT_EOF
        with pytest.raises(ConnectionResetError):
            while c.recv(100):
                pass
        wait_until(lambda: "egress-eof" not in _hostnames(rig), 5, "the ephemeral node is gone")


def test_no_setup_exits_2() -> None:
    front, child = WorkerChannel.pair()
    p = subprocess.Popen([*worker_command(child.fileno()), "--setup-timeout", "0.5"],
                         pass_fds=[child.fileno()],
                         stderr=subprocess.PIPE)
    child.close()
    _, err = p.communicate(timeout=20)
    assert p.returncode == EXIT_SETUP and b"no WorkerSetup" in err
    front.close()
