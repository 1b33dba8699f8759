"""Worker supervision across processes, with fake workers: a killed worker's flows end and only
theirs, its slot is back with a new pid; a stopped (hung) worker is detected and replaced; a worker
that keeps dying spends the restart budget and the egress escalates; a drain lets open flows finish."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import pytest
from fake_worker import socks_flow, split, worker_command

from pytsnet.egress import Egress, EgressConfig, EgressEscalated, EgressStatus
from pytsnet.testing.polling import wait_until

CONNECT_X = b"CONNECT x.example.com:443 HTTP/1.1\r\nHost: x.example.com:443\r\n\r\n"


def _start(*flags: str, **kw: object) -> Egress:
    cfg = EgressConfig(**{"socks": "127.0.0.1:0", "http": "127.0.0.1:0",
                          "worker_command": worker_command(*flags),
                          "heartbeat_interval": 0.2, **kw})  # type: ignore[arg-type]
    return Egress(cfg).start()


def _ready(eg: Egress, n: int) -> None:
    wait_until(lambda: sum(w.state == "ready" for w in eg.status().workers) == n, 10, f"{n} workers ready")


def _echoes(s: socket.socket, data: bytes = b"ping") -> bool:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(len(data) - len(got))
        if not chunk:
            return False
        got += chunk
    return got == data


def _ended(s: socket.socket) -> bool:
    """The client sees its flow end (EOF or reset) once its worker is gone."""
    s.settimeout(5)
    try:
        return s.recv(10) == b""
    except ConnectionResetError:
        return True


def test_kill_9_of_a_worker_ends_only_its_flows_and_the_slot_comes_back() -> None:
    eg = _start(workers=2)
    try:
        _ready(eg, 2)
        flows = [socks_flow(eg.socks_address or "", "a.example.com", 80) for _ in range(4)]
        victim = [(s, g) for s, g in flows if g["worker"] == 0]
        others = [(s, g) for s, g in flows if g["worker"] == 1]
        assert len(victim) == 2 and len(others) == 2
        old_pid = int(str(victim[0][1]["pid"]))
        os.kill(old_pid, signal.SIGKILL)
        for s, _ in victim:
            assert _ended(s)
        for s, _ in others:
            assert _echoes(s, b"still here")
        t0 = time.monotonic()
        wait_until(lambda: (w := eg.status().workers[0]).state == "ready" and w.pid != old_pid, 10,
                   "the slot back")
        assert time.monotonic() - t0 < 5
        st = eg.status()
        w0 = st.workers[0]
        assert w0.restarts == 1 and w0.last_exit == "signal 9" and st.front.flows_failed_by_worker_loss == 2
        assert st.workers[1].restarts == 0 and st.state == "running"
        s, g = socks_flow(eg.socks_address or "", "b.example.com", 80)  # new flows go to the new worker too
        assert _echoes(s)
        for s2, _ in [*flows, (s, g)]:
            s2.close()
    finally:
        eg.drain(2.0)
        eg.close()


def test_a_hung_worker_is_detected_killed_and_replaced() -> None:
    eg = _start(workers=1, heartbeat_timeout=1.0)
    try:
        _ready(eg, 1)
        pid = eg.status().workers[0].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: eg.status().workers[0].last_exit == "hung", 8, "detected as hung")
        wait_until(lambda: eg.status().workers[0].state == "ready", 8, "replaced")
        st = eg.status().workers[0]
        assert st.pid != pid and st.restarts == 1
        with pytest.raises(ProcessLookupError):  # killed and reaped, not left stopped
            os.kill(pid, 0)
    finally:
        eg.drain(2.0)
        eg.close()


def test_a_worker_that_keeps_dying_spends_the_budget_and_the_egress_escalates() -> None:
    eg = _start("--exit-at-start", "7", workers=1, restart_budget=(2, 60.0), backoff_initial=0.1)
    try:
        with pytest.raises(EgressEscalated, match="restart budget spent") as e:
            eg.wait(timeout=15)
        assert "exit 7" in e.value.reason
        st = eg.status()
        assert st.state == "escalated" and st.workers[0].restarts == 2
        s = socket.create_connection(split(eg.socks_address or ""), timeout=5)
        s.sendall(b"\x05\x01\x00\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50")
        got = b""
        while (chunk := s.recv(64)):
            got += chunk
        assert got[2:4] == b"\x05\x01"  # refused, REP 01
        s.close()
        h = socket.create_connection(split(eg.http_address or ""), timeout=5)
        h.sendall(CONNECT_X)
        out = b""
        while (chunk := h.recv(4096)):
            out += chunk
        assert out.startswith(b"HTTP/1.1 503") and b"egress escalated: restart budget spent" in out
        h.close()
    finally:
        eg.close()


def test_drain_lets_open_flows_finish_refuses_new_ones_and_workers_exit() -> None:
    eg = _start(workers=2)
    try:
        _ready(eg, 2)
        pids = {w.pid for w in eg.status().workers}
        s, _ = socks_flow(eg.socks_address or "", "a.example.com", 80)
        result: list[EgressStatus] = []
        t = threading.Thread(target=lambda: result.append(eg.drain(10.0)))
        t.start()
        wait_until(lambda: eg.status().state == "draining", 5, "draining")
        with pytest.raises(OSError):  # the listeners are closed
            socket.create_connection(split(eg.socks_address or ""), timeout=2).close()
        assert _echoes(s, b"the open flow goes on")
        s.close()
        t.join(15)
        assert result and result[0].state == "stopped"
        assert all(w.state == "stopped" and w.last_exit == "exit 0" for w in result[0].workers)
        for pid in pids:
            assert pid is not None
            wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 5, "the worker exited")
    finally:
        eg.close()


def test_a_stopped_worker_whose_channel_is_full_does_not_wedge_its_slot() -> None:
    """Flows handed to a SIGSTOPped worker fill its channel (about a dozen frames of a 15 KB head): the
    slot must not block in that send for good — the hang is still detected and the worker replaced, and
    flows that could not be handed over are answered (HTTP 503), not held forever."""
    eg = _start(workers=1, heartbeat_timeout=1.0)
    clients: list[socket.socket] = []
    try:
        _ready(eg, 1)
        pid = eg.status().workers[0].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        head = CONNECT_X[:-2] + b"x-pad: " + b"p" * 15000 + b"\r\n\r\n"
        for _ in range(30):
            c = socket.create_connection(split(eg.http_address or ""), timeout=15)
            c.sendall(head)
            clients.append(c)
        wait_until(lambda: eg.status().workers[0].last_exit == "hung", 10, "detected as hung")
        wait_until(lambda: eg.status().workers[0].state == "ready", 10, "replaced")
        answers = []
        for c in clients:  # every client hears an answer (a 503, or a 200 once held for the new worker)
            out = b""  # or its end (its fd was in the dead worker's channel): none is left hanging
            with contextlib.suppress(ConnectionResetError):
                out = c.recv(12)
            answers.append(out)
        assert all(a in (b"", b"HTTP/1.1 503", b"HTTP/1.1 200") for a in answers), answers
        assert answers.count(b"HTTP/1.1 503") >= 10, answers
    finally:
        for c in clients:
            c.close()
        eg.drain(2.0)
        eg.close()


def test_a_worker_that_stops_reading_costs_one_send_timeout_not_one_per_flow() -> None:
    """A worker that beats but reads no frame (a wedged main thread) is not hung by the heartbeat, so it
    is not replaced; once its channel is full, the flows queued for it are refused at once — not after
    ``SEND_TIMEOUT`` each (60 flows took ~25 s, and the slot's mailbox backed up into the router)."""
    eg = _start("--stop-reading", workers=1)
    clients: list[socket.socket] = []
    try:
        _ready(eg, 1)
        head = CONNECT_X[:-2] + b"x-pad: " + b"p" * 15000 + b"\r\n\r\n"
        t0 = time.monotonic()
        for _ in range(60):
            c = socket.create_connection(split(eg.http_address or ""), timeout=15)
            c.sendall(head)
            clients.append(c)
        refused = 0
        for c in clients:  # those handed over sit in the full channel: they hear nothing by the deadline
            c.settimeout(max(0.05, t0 + 10 - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                refused += c.recv(12).startswith(b"HTTP/1.1 503")
        assert refused >= 40
        assert eg.status().workers[0].state == "ready"
    finally:
        for c in clients:
            c.close()
        eg.drain(1.0)
        eg.close()
