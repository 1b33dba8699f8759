"""The front↔worker channel: frames with fds, EOF at a peer's death, and hostile frames refused with
their fds closed (a confused worker must not leak descriptors into the front)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from pytsnet.egress.channel import MAX_FRAME, ChannelClosed, ChannelError, WorkerChannel
from pytsnet.messages.egress import FlowAssign, WorkerHeartbeat, WorkerSetup
from pytsnet.messages.loopback import LoopbackAccepted


def _pair() -> tuple[WorkerChannel, WorkerChannel]:
    front, child = WorkerChannel.pair()
    return front, WorkerChannel(child)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_frame_carries_a_socket_that_works_on_the_other_side() -> None:
    front, worker = _pair()
    a, b = socket.socketpair()
    front.send(FlowAssign(flow=7, proto="socks5", host="100.64.0.9", port=80, early=b"GET /"), [b.fileno()])
    b.close()  # the front closes its copy once sent
    got = worker.recv(timeout=5)
    assert got is not None
    msg, fds = got
    assert isinstance(msg, FlowAssign) and msg.flow == 7 and msg.early == b"GET /" and len(fds) == 1
    s = socket.socket(fileno=fds[0])
    s.sendall(b"hello")
    assert a.recv(10) == b"hello"
    s.close()
    a.close()


def test_setup_keeps_the_auth_key_out_of_repr() -> None:
    setup = WorkerSetup(worker=0, hostname="w0", control_url="http://127.0.0.1:1",
                        auth_key="tskey-auth-SECRET", upstream_proxy="socks5://u:PROXYPASS@100.64.0.5:1080")
    assert "SECRET" not in repr(setup) and "PROXYPASS" not in repr(setup)
    front, worker = _pair()
    front.send(setup)
    got = worker.recv(timeout=5)
    assert got is not None and isinstance(got[0], WorkerSetup) and got[0].auth_key == "tskey-auth-SECRET"


def test_recv_times_out_and_a_dead_peer_is_an_eof() -> None:
    front, child = WorkerChannel.pair()
    assert front.recv(timeout=0.05) is None
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=[child.fileno()])
    child.close()
    p.kill()
    p.wait()
    with pytest.raises(ChannelClosed):
        front.recv(timeout=5)


@pytest.mark.parametrize("frame", [
    b"not json", b"[1, 2]", b'"tag"', b'{"tag": "nope", "data": {}}',
    b'{"tag": "egress.heartbeat", "data": {"seq": "x"}}', b"\xff\xfe", b"x" * (MAX_FRAME + 10)])
def test_a_bad_frame_is_a_typed_error_and_its_fd_is_closed(frame: bytes) -> None:
    front, child = WorkerChannel.pair()
    _a, b = socket.socketpair()
    socket.send_fds(child, [frame], [b.fileno()])
    before = _open_fds()
    with pytest.raises(ChannelError):
        front.recv(timeout=5)
    assert _open_fds() <= before  # the fd that came with the frame was closed, not leaked
    # and the channel goes on
    WorkerChannel(child).send(WorkerHeartbeat(worker=0, seq=1))
    got = front.recv(timeout=5)
    assert got is not None and isinstance(got[0], WorkerHeartbeat)


def test_a_foreign_message_is_refused_both_ways() -> None:
    front, child = WorkerChannel.pair()
    with pytest.raises(ChannelError):
        front.send(LoopbackAccepted())
    child.sendall(b'{"tag": "loopback.accepted", "data": {}}')
    with pytest.raises(ChannelError):
        front.recv(timeout=5)


def test_two_fds_in_one_frame_are_refused() -> None:
    front, _child = WorkerChannel.pair()
    a, b = socket.socketpair()
    with pytest.raises(ChannelError):
        front.send(FlowAssign(flow=1, proto="socks5"), [a.fileno(), b.fileno()])
