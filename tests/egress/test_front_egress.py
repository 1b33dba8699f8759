"""The egress front end with fake workers: handshakes up to the request, the client's socket handed to
a worker (which then talks to the client directly), dispatch, and hostile input answered and counted."""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fake_worker import read_line, socks_flow, split, worker_command

from pytsnet.egress import Egress, EgressConfig, EgressConfigError
from pytsnet.testing.polling import wait_until

CONNECT_X = b"CONNECT x.example.com:443 HTTP/1.1\r\nHost: x.example.com:443\r\n\r\n"


@contextmanager
def running(*flags: str, wait_ready: bool = True, **kw: Any) -> Iterator[Egress]:
    cfg = EgressConfig(**{"socks": "127.0.0.1:0", "http": "127.0.0.1:0",
                          "worker_command": worker_command(*flags),
                          **kw})
    eg = Egress(cfg).start()
    try:
        if wait_ready:
            wait_until(lambda: all(w.state == "ready" for w in eg.status().workers), 10, "workers ready")
        yield eg
    finally:
        eg.drain(2.0)
        eg.close()


def test_socks_and_http_flows_reach_the_worker_and_payload_bypasses_the_front() -> None:
    with running(workers=1) as eg:
        s, got = socks_flow(eg.socks_address or "", "db.example.com", 5432, early=b"early!")
        assert got["proto"] == "socks5" and got["host"] == "db.example.com" and got["port"] == 5432
        assert bytes.fromhex(str(got["early"])) == b"early!" and s.recv(6) == b"early!"
        blob = bytes(range(256)) * 4096  # 1 MiB each way
        s.sendall(blob)
        back = b""
        while len(back) < len(blob):
            back += s.recv(65536)
        assert back == blob
        s.close()
        h = socket.create_connection(split(eg.http_address or ""), timeout=10)
        h.sendall(b"CONNECT 192.0.2.7:443 HTTP/1.1\r\nHost: 192.0.2.7:443\r\n\r\nTLS-hello")
        assert read_line(h) == b"HTTP/1.1 200 Connection established\r\n"
        assert read_line(h) == b"\r\n"
        import json
        line = json.loads(read_line(h))
        assert line["proto"] == "http" and line["host"] == "192.0.2.7" and line["port"] == 443
        assert bytes.fromhex(line["early"]) == b"TLS-hello"
        h.sendall(blob)
        back = b""
        while len(back) < len(blob) + 9:
            back += h.recv(65536)
        assert back == b"TLS-hello" + blob
        h.close()
        st = eg.status()
        assert st.front.assigned == 2 and st.front.accepted == 2 and st.front.refused == 0
        assert st.front.bytes_in < 200 and st.front.bytes_out < 10, st.front  # handshakes only, not 4 MiB
        wait_until(lambda: eg.status().workers[0].bytes_up >= 2 * len(blob), 5,
                   "the worker counted the bytes")


def test_least_loaded_spreads_open_flows_and_affinity_keeps_a_client_on_one_worker() -> None:
    with running(workers=2) as eg:
        flows = [socks_flow(eg.socks_address or "", "a.example.com", 80) for _ in range(6)]
        counts = [sum(1 for _, g in flows if g["worker"] == w) for w in (0, 1)]
        assert counts == [3, 3], counts
        wait_until(lambda: [w.flows_open for w in eg.status().workers] == [3, 3], 5, "open flows per worker")
        for s, _ in flows:
            s.close()
        wait_until(lambda: [w.flows_open for w in eg.status().workers] == [0, 0], 5, "flows done")
    with running(workers=2) as eg:  # one flow at a time: the workers take turns (not all on worker 0)
        got = []
        for _ in range(4):
            s, g = socks_flow(eg.socks_address or "", "a.example.com", 80)
            got.append(g["worker"])
            s.close()
            wait_until(lambda: sum(w.flows_open for w in eg.status().workers) == 0, 5, "the flow done")
        assert got == [0, 1, 0, 1], got
    with running(workers=2, affinity=True) as eg:
        flows = [socks_flow(eg.socks_address or "", "a.example.com", 80) for _ in range(4)]
        assert len({g["worker"] for _, g in flows}) == 1  # one client IP: one worker, though it is loaded
        for s, _ in flows:
            s.close()


def _exchange(addr: str, data: bytes, read: int = 4096, timeout: float = 5.0) -> bytes:
    s = socket.create_connection(split(addr), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(read)
            if not chunk:
                return out
            out += chunk
    except (ConnectionResetError, TimeoutError):
        return out
    finally:
        s.close()


def test_hostile_input_is_answered_counted_and_never_crashes() -> None:
    with running(workers=1, proxy_password="pw", handshake_timeout=0.5, max_handshakes=8) as eg:
        socks, http = eg.socks_address or "", eg.http_address or ""
        assert _exchange(socks, b"\x05\x01\x00") == b"\x05\xff"  # no acceptable method: auth is required
        assert _exchange(socks, b"\x05\x01\x02\x01\x05tsnet\x05wrong") == b"\x05\x02\x01\x01"
        udp = b"\x05\x01\x02\x01\x05tsnet\x02pw" + b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"
        assert _exchange(socks, udp)[4:6] == b"\x05\x07"  # UDP ASSOCIATE: command not supported
        assert _exchange(http, CONNECT_X).startswith(b"HTTP/1.1 407")
        assert _exchange(http, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert _exchange(http, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404")
        big = b"CONNECT x.example.com:443 HTTP/1.1\r\nX: " + b"a" * 40000
        assert _exchange(http, big).startswith(b"HTTP/1.1 431")
        t0 = time.monotonic()
        assert _exchange(http, b"CONNECT x.exa", timeout=5) == b""  # slowloris: cut at the handshake bound
        assert time.monotonic() - t0 < 3
        flood = [socket.create_connection(split(socks)) for _ in range(30)]  # past max_handshakes
        wait_until(lambda: eg.status().front.refused >= 7 + 22, 10, "the flood refused")
        for s in flood:
            s.close()
        auth = base64.b64encode(b"tsnet:pw")
        h = socket.create_connection(split(http), timeout=5)
        h.sendall(b"CONNECT ok.example.com:443 HTTP/1.1\r\nHost: ok.example.com:443\r\n"
                  b"Proxy-Authorization: Basic " + auth + b"\r\n\r\n")
        assert read_line(h).startswith(b"HTTP/1.1 200")  # still serving
        h.close()
        s, got = socks_flow(socks, "ok.example.com", 22, password="pw")
        assert got["port"] == 22
        s.close()
        assert eg.status().front.assigned == 2


def test_no_worker_ready_is_answered_by_the_front() -> None:
    with running("--never-ready", workers=1, wait_ready=False, ready_wait=0.5) as eg:
        t0 = time.monotonic()
        s = socket.create_connection(split(eg.socks_address or ""), timeout=5)
        s.sendall(b"\x05\x01\x00" + b"\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50")
        got = b""
        while len(got) < 12 and (chunk := s.recv(12 - len(got))):
            got += chunk
        assert got == b"\x05\x00" + b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00"  # REP 01
        assert 0.3 < time.monotonic() - t0 < 5  # it waited for a worker (bounded), then refused
        s.close()
        out = _exchange(eg.http_address or "", CONNECT_X)
        assert out.startswith(b"HTTP/1.1 503") and b"no egress worker ready" in out
        assert eg.status().front.refused == 2


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "192.0.2.1:0"])
def test_a_non_loopback_listener_without_a_password_is_refused_at_start(listen: str) -> None:
    with pytest.raises(EgressConfigError, match="without a proxy password"):
        Egress(EgressConfig(socks=listen, worker_command=worker_command())).start()


def test_the_real_worker_needs_an_auth_key() -> None:
    with pytest.raises(EgressConfigError, match="auth key"):
        Egress(EgressConfig(socks="127.0.0.1:0")).start()


def test_the_front_keeps_no_client_fds_after_handing_over_or_refusing() -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with running(workers=1, ready_wait=0.2) as eg:
        base = fds()
        flows = [socks_flow(eg.socks_address or "", "a.example.com", 80) for _ in range(5)]
        # ours: the 5 client ends; the front's copies of the accepted sockets are closed after the send
        wait_until(lambda: fds() == base + 5, 5, "only the clients' own sockets open")
        for s, _ in flows:
            s.close()
        for _ in range(5):
            _exchange(eg.http_address or "", b"BAD\r\n\r\n")
        wait_until(lambda: fds() == base, 5, "every fd closed")
