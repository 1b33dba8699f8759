"""One egress worker process against a real LocalTailnet: SOCKS5 and HTTP flows byte-exact through its
ephemeral node, refusals with the right codes, heartbeats at the interval, and hostile frames counted
without a crash. (Drain, SIGTERM and the front's death: ``test_worker_lifecycle``.)"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
from worker_rig import ECHO_PORT, HTTP_PORT, Rig, WorkerProc, worker, worker_rig

from pytsnet.messages.egress import FlowAssign, WorkerHeartbeat, WorkerReady
from pytsnet.testing.streams import recv_exact
from pytsnet.wire.socks5 import Rep


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with worker_rig(tmp_path_factory.mktemp("egress")) as r:
        yield r


@pytest.fixture(scope="module")
def w(rig: Rig) -> Iterator[WorkerProc]:
    with worker(rig, "egress-w1", max_flows=3) as wp:
        wp.ready()
        yield wp
    assert wp.key not in wp.stderr()


def _socks_ok(c: socket.socket) -> tuple[str, int]:
    rep = recv_exact(c, 10)
    assert rep[:4] == b"\x05\x00\x00\x01", rep
    return socket.inet_ntoa(rep[4:8]), int.from_bytes(rep[8:10], "big")


def test_ready_names_the_ephemeral_node(rig: Rig, w: WorkerProc) -> None:
    ready = w.of(WorkerReady)[0]
    assert ready.pid == w.proc.pid and ready.ip.startswith("100.")
    node = next(n for n in rig.net.nodes() if n.hostname == "egress-w1")
    assert node.ephemeral and str(node.id) == ready.node_id


def test_socks5_flow_is_byte_exact_both_ways(rig: Rig, w: WorkerProc) -> None:
    flow, c = w.flow("socks5", rig.web_ip, ECHO_PORT, early=b"early:")
    bound_ip, _ = _socks_ok(c)
    assert bound_ip == w.of(WorkerReady)[0].ip  # the node's tailnet address, not the host's
    payload = os.urandom(512 * 1024)
    c.sendall(payload)
    c.shutdown(socket.SHUT_WR)
    got = recv_exact(c, len(payload) + 6)
    assert got == b"early:" + payload
    assert c.recv(1) == b""
    c.close()
    done = w.done(flow)
    assert done.outcome == "ok" and done.bytes_up == done.bytes_down == len(payload) + 6


def test_unknown_tailnet_ip_is_rep_02_and_nothing_is_dialed(rig: Rig, w: WorkerProc) -> None:
    flow, c = w.flow("socks5", "100.100.99.99", 80)
    assert recv_exact(c, 10) == bytes([5, Rep.NOT_ALLOWED, 0, 1, 0, 0, 0, 0, 0, 0])
    assert c.recv(1) == b""
    assert w.done(flow).outcome == "dial_failed"
    flow, c = w.flow("socks5", "192.0.2.10", 80)  # beyond the tailnet, no exit node: refused too
    assert recv_exact(c, 2) == bytes([5, Rep.NOT_ALLOWED])
    assert w.done(flow).outcome == "dial_failed"


def test_http_connect_through_the_worker(rig: Rig, w: WorkerProc) -> None:
    head = f"CONNECT {rig.web_ip}:{ECHO_PORT} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic eA==\r\n\r\n"
    flow, c = w.flow("http", early=head.encode() + b"tunnel-early")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += c.recv(4096)
    status, rest = answer.split(b"\r\n\r\n", 1)
    assert status.startswith(b"HTTP/1.1 200")
    c.sendall(b"-more")
    c.shutdown(socket.SHUT_WR)
    got = rest + recv_exact(c, len(b"tunnel-early-more") - len(rest))
    assert got == b"tunnel-early-more"
    assert w.done(flow).outcome == "ok"


def test_plain_http_forward_through_the_worker(rig: Rig, w: WorkerProc) -> None:
    head = f"GET http://{rig.web_ip}:{HTTP_PORT}/path?q=1 HTTP/1.1\r\nHost: {rig.web_ip}\r\n\r\n"
    flow, c = w.flow("http", early=head.encode())
    answer = b""
    while chunk := c.recv(4096):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello /path?q=1")
    done = w.done(flow)
    assert done.outcome == "ok" and done.bytes_down == len(answer)


def test_http_to_an_unknown_tailnet_host_is_502(w: WorkerProc) -> None:
    flow, c = w.flow("http", early=b"GET http://nosuchhost.test/ HTTP/1.1\r\nHost: nosuchhost.test\r\n\r\n")
    answer = c.recv(4096)
    assert answer.startswith(b"HTTP/1.1 502") and b"not a tailnet host" in answer
    assert w.done(flow).outcome == "dial_failed"


def test_heartbeats_arrive_at_the_interval_with_counters(w: WorkerProc) -> None:
    start = len(w.of(WorkerHeartbeat))
    time.sleep(1.5)
    beats = w.of(WorkerHeartbeat)[start:]
    assert 3 <= len(beats) <= 12  # every 0.2 s: generous bounds
    assert [b.seq for b in beats] == list(range(beats[0].seq, beats[0].seq + len(beats)))
    last = beats[-1]
    assert last.exit_ok and last.exit_node is None and last.rss > 1_000_000 and last.flows_open == 0
    assert last.flows_total >= 1 and last.bytes_up > 0 and last.bytes_down > 0


def test_hostile_frames_are_counted_not_fatal(rig: Rig, w: WorkerProc) -> None:
    before = w.wait_for(WorkerHeartbeat).dropped
    w.ch.send(FlowAssign(flow=900, proto="socks5", host=rig.web_ip, port=ECHO_PORT))  # no fd
    r, wr = os.pipe()
    w.ch.send(FlowAssign(flow=901, proto="socks5", host=rig.web_ip, port=ECHO_PORT), [r])  # not a socket
    os.close(r)
    os.close(wr)
    w.ch.sock.send(b"\x00garbage{")  # not a frame at all
    w.ch.send(WorkerReady(worker=0, pid=1, node_id="x", ip="x"))  # a frame the worker never takes
    assert w.done(900).outcome == "error" and w.done(901).outcome == "error"
    w.wait_for(WorkerHeartbeat, lambda h: h.dropped >= before + 4)
    assert w.proc.poll() is None
    flow, c = w.flow("socks5", rig.web_ip, ECHO_PORT)  # and it still serves
    _socks_ok(c)
    c.sendall(b"still here")
    assert recv_exact(c, 10) == b"still here"
    c.close()
    w.done(flow)


def test_past_max_flows_a_flow_is_refused_busy(rig: Rig, w: WorkerProc) -> None:
    held = [w.flow("socks5", rig.web_ip, ECHO_PORT) for _ in range(3)]
    for _, c in held:
        _socks_ok(c)
    flow, c = w.flow("socks5", rig.web_ip, ECHO_PORT)
    assert recv_exact(c, 2) == bytes([5, Rep.GENERAL_FAILURE])
    done = w.done(flow)
    assert done.outcome == "refused" and done.error == "busy"
    for f, c in held:
        c.close()
        w.done(f)


def test_unavailable_exit_node_fails_closed_and_heartbeats_say_so(rig: Rig) -> None:
    with worker(rig, "egress-noexit", exit_node="no-such-exit") as wx:
        wx.ready()
        beat = wx.wait_for(WorkerHeartbeat, lambda h: h.seq >= 1)
        assert beat.exit_node == "no-such-exit" and not beat.exit_ok
        flow, c = wx.flow("socks5", "192.0.2.10", 80)  # beyond the tailnet: only an exit node could carry it
        assert recv_exact(c, 2) == bytes([5, Rep.NETWORK_UNREACHABLE])
        assert wx.done(flow).error == "exit node unavailable"
        head = b"CONNECT 192.0.2.10:443 HTTP/1.1\r\nHost: 192.0.2.10:443\r\n\r\n"
        flow, c = wx.flow("http", early=head)
        answer = c.recv(4096)
        assert answer.startswith(b"HTTP/1.1 502 ") and b"exit node unavailable" in answer
        flow, c = wx.flow("socks5", rig.web_ip, ECHO_PORT)  # the tailnet itself still works
        _socks_ok(c)
        c.close()
