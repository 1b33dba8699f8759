"""``EgressFlow``'s answers when the dial fails, without a tailnet: the device's typed errors become
the SOCKS5 REP / HTTP status the client reads (fail closed: an unavailable exit node is REP 03 / 502
"exit node unavailable", and nothing else was dialed), and the worker hears one ``FlowDone``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from pytsnet.actors.runtime import ActorSystem, Restart
from pytsnet.egress.flow import EgressFlow, FlowSettings
from pytsnet.egress.upstream import UpstreamProxy
from pytsnet.errors import DialTimeout, ExitNodeUnavailable, UnknownTailnetHost
from pytsnet.messages.egress import FlowAssign, FlowDone
from pytsnet.net import SocketLike
from pytsnet.wire.socks5 import Rep


class _Refusing:
    def __init__(self, error: OSError) -> None:
        self.error = error
        self.dialed: list[tuple[str, int]] = []

    def tcp_connect_blocking(self, host: str, port: int, timeout: float = 15.0) -> SocketLike:
        self.dialed.append((host, port))
        raise self.error


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    s = ActorSystem("egress-flow-test")
    yield s
    s.shutdown()


def _run(system: ActorSystem, assign: FlowAssign, dialer: _Refusing,
         settings: FlowSettings | None = None) -> tuple[bytes, FlowDone]:
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    got: list[FlowDone] = []
    ended = threading.Event()

    def report(done: FlowDone) -> None:
        got.append(done)
        ended.set()

    system.spawn(EgressFlow, assign, theirs, dialer, settings or FlowSettings(), report, lambda k, n: None,
                 threading.Event(),
                 name=f"flow-{assign.flow}", restart=Restart.NEVER, dispatcher="pool")
    answer = b""
    while chunk := ours.recv(4096):
        answer += chunk
    assert ended.wait(10) and len(got) == 1
    return answer, got[0]


EXIT_DOWN = ExitNodeUnavailable("exit-1", "offline", "192.0.2.5")


def test_exit_node_unavailable_is_socks5_rep_03(system: ActorSystem) -> None:
    dialer = _Refusing(EXIT_DOWN)
    answer, done = _run(system, FlowAssign(flow=1, proto="socks5", host="192.0.2.5", port=443), dialer)
    assert answer == bytes([5, Rep.NETWORK_UNREACHABLE, 0, 1, 0, 0, 0, 0, 0, 0])
    assert done.outcome == "dial_failed" and done.error == "exit node unavailable"
    assert dialer.dialed == [("192.0.2.5", 443)]  # the device's dial only: it refused, nothing else tried


def test_exit_node_unavailable_is_http_502_with_the_reason(system: ActorSystem) -> None:
    head = b"CONNECT 192.0.2.5:443 HTTP/1.1\r\nHost: 192.0.2.5:443\r\n\r\n"
    answer, done = _run(system, FlowAssign(flow=2, proto="http", early=head), _Refusing(EXIT_DOWN))
    assert answer.startswith(b"HTTP/1.1 502 ") and answer.endswith(b"exit node unavailable\n")
    assert done.outcome == "dial_failed"


def test_exit_node_unavailable_for_the_upstream_proxy_too(system: ActorSystem) -> None:
    dialer = _Refusing(EXIT_DOWN)
    up = FlowSettings(upstream=UpstreamProxy.parse("socks5://u:p@192.0.2.9:1080"))
    answer, done = _run(system, FlowAssign(flow=3, proto="socks5", host="example.com", port=80), dialer, up)
    assert answer[:2] == bytes([5, Rep.NETWORK_UNREACHABLE])
    assert dialer.dialed == [("192.0.2.9", 1080)]  # the proxy, through the device
    assert done.error == "upstream proxy: exit node unavailable"


@pytest.mark.parametrize(("error", "host", "rep", "status"), [
    (UnknownTailnetHost("nosuch.test"), "nosuch.test", Rep.HOST_UNREACHABLE, 502),
    (DialTimeout("timed out"), "100.64.0.5", Rep.HOST_UNREACHABLE, 504),
    (ConnectionRefusedError("refused"), "100.64.0.5", Rep.CONNECTION_REFUSED, 502),
])
def test_other_dial_errors(system: ActorSystem, error: OSError, host: str, rep: Rep, status: int) -> None:
    answer, _ = _run(system, FlowAssign(flow=4, proto="socks5", host=host, port=80), _Refusing(error))
    assert answer[:2] == bytes([5, rep])
    head = f"GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    answer, _ = _run(system, FlowAssign(flow=5, proto="http", early=head), _Refusing(error))
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())


def test_a_request_that_is_not_a_proxy_request_is_refused(system: ActorSystem) -> None:
    dialer = _Refusing(EXIT_DOWN)
    answer, done = _run(system, FlowAssign(flow=6, proto="http", early=b"GET /localapi/v0/status HTTP/1.1\r\n"
                                                                     b"Host: x\r\n\r\n"), dialer)
    assert answer.startswith(b"HTTP/1.1 404 ") and done.outcome == "refused" and dialer.dialed == []
    answer, done = _run(system, FlowAssign(flow=7, proto="http", early=b"\x16\x03garbage\r\n\r\n"), dialer)
    assert answer.startswith(b"HTTP/1.1 400 ") and done.outcome == "error" and dialer.dialed == []
