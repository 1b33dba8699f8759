"""The upstream proxy hop end to end: a worker whose ``upstream_proxy`` is a SOCKS5 or HTTP CONNECT
proxy served by another tailnet node (dialed through the tailnet, never a host socket), every flow's
target asked of it by name (the worker resolves nothing), its refusals relayed to the client; neither
the auth key nor the proxy's password in the worker's log, even at DEBUG."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from worker_rig import CONNECT_PORT, PROXY_PW, SOCKS_PORT, Rig, worker, worker_rig

from pytsnet.testing.streams import recv_exact
from pytsnet.wire.socks5 import Rep


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with worker_rig(tmp_path_factory.mktemp("egress-up")) as r:
        yield r


def _echo_through(c: socket.socket) -> None:
    payload = os.urandom(200_000)
    c.sendall(payload)
    assert recv_exact(c, len(payload)) == payload


def test_socks5_upstream(rig: Rig) -> None:
    with worker(rig, "egress-up-socks", upstream_proxy=f"socks5://up:{PROXY_PW}@{rig.web_ip}:{SOCKS_PORT}",
                log_level="DEBUG") as w:
        w.ready()
        flow, c = w.flow("socks5", "target.example.com", 443, early=b"hello")
        rep = recv_exact(c, 10)
        assert rep[:2] == b"\x05\x00"
        assert recv_exact(c, 5) == b"hello"
        _echo_through(c)
        c.close()
        assert w.done(flow).outcome == "ok"
        assert ("socks5", "target.example.com", 443) in rig.proxied
        flow, c = w.flow("socks5", "refuse.test", 80)
        assert recv_exact(c, 2) == bytes([5, Rep.CONNECTION_REFUSED])  # the proxy's own REP
        done = w.done(flow)
        assert done.outcome == "dial_failed" and "connection refused" in str(done.error)
        head = b"CONNECT refuse.test:443 HTTP/1.1\r\nHost: refuse.test\r\n\r\n"
        flow, c = w.flow("http", early=head)
        answer = c.recv(4096)
        assert answer.startswith(b"HTTP/1.1 502 ") and b"upstream proxy refused" in answer
    log = w.stderr()
    assert w.key not in log and PROXY_PW not in log and "egress-up-socks" in log  # it did log, at DEBUG


def test_http_connect_upstream(rig: Rig) -> None:
    url = f"http://up:{PROXY_PW}@{rig.web_ip}:{CONNECT_PORT}"
    with worker(rig, "egress-up-http", upstream_proxy=url) as w:
        w.ready()
        flow, c = w.flow("socks5", "198.51.100.7", 8443)
        assert recv_exact(c, 2) == b"\x05\x00"
        recv_exact(c, 8)
        _echo_through(c)
        c.close()
        assert w.done(flow).outcome == "ok"
        assert ("http", "198.51.100.7", 8443) in rig.proxied
        head = b"GET http://refuse.test/x HTTP/1.1\r\nHost: refuse.test\r\n\r\n"
        flow, c = w.flow("http", early=head)
        answer = c.recv(4096)
        assert answer.startswith(b"HTTP/1.1 502 ") and b"Nope From Proxy" in answer
        assert w.done(flow).outcome == "dial_failed"
    assert PROXY_PW not in w.stderr()
