"""``dev.register_fallback_tcp_handler``: Go's ``RegisterFallbackTCPHandler`` semantics between two
real devices on a LocalTailnet — intercept (the handler serves the flow), reject (the dialing peer
sees a refused connection: an RST), pass (the next handler decides; nobody intercepting is an RST),
unregister, and listeners taking precedence over the fallback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.errors import ConnectionRefused
from pytsnet.net.socket import SocketLike
from pytsnet.services.fallback import MAX_HANDLERS, ConnHandler
from pytsnet.testing.tailnet import Tailnet, local_tailnet

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tailnet]:
    tmp: Path = tmp_path_factory.mktemp("fallback")
    with local_tailnet(tmp, ["host", "peer"]) as tn:
        yield tn


def _echo(tag: bytes) -> ConnHandler:
    def serve(conn: SocketLike) -> None:
        with conn:
            data = conn.recv(100)
            conn.sendall(tag + data)
    return serve


def _dial(tn: Tailnet, port: int) -> bytes:
    sock = tn["peer"].tcp_connect_blocking(Tailnet.ip(tn["host"]), port, timeout=10)
    sock.settimeout(10)
    with sock:
        sock.sendall(b"hello")
        return sock.recv(100)


def test_intercept_serves_the_flow_with_the_four_tuple(tn: Tailnet) -> None:
    seen: list[tuple[tuple[str, int], tuple[str, int]]] = []

    def cb(src: tuple[str, int], dst: tuple[str, int]) -> tuple[ConnHandler | None, bool]:
        seen.append((src, dst))
        return (_echo(b"fb:"), True) if dst[1] == 7001 else (None, False)

    unregister = tn["host"].register_fallback_tcp_handler(cb)
    try:
        assert _dial(tn, 7001) == b"fb:hello"
    finally:
        unregister()
    (src, dst), = seen
    assert src[0] == Tailnet.ip(tn["peer"]) and 0 < src[1] < 65536
    assert dst == (Tailnet.ip(tn["host"]), 7001)


def test_reject_resets_the_syn(tn: Tailnet) -> None:
    calls = threading.Event()

    def cb(src: tuple[str, int], dst: tuple[str, int]) -> tuple[ConnHandler | None, bool]:
        calls.set()
        return None, True

    unregister = tn["host"].register_fallback_tcp_handler(cb)
    try:
        with pytest.raises(ConnectionRefused):
            _dial(tn, 7002)
        assert calls.is_set()
    finally:
        unregister()


def test_pass_goes_to_the_next_handler_and_nobody_intercepting_resets(tn: Tailnet) -> None:
    order: list[str] = []

    def first(src: tuple[str, int], dst: tuple[str, int]) -> tuple[ConnHandler | None, bool]:
        order.append("first")
        return _echo(b"never:"), False  # a handler with intercept=False is not used

    def second(src: tuple[str, int], dst: tuple[str, int]) -> tuple[ConnHandler | None, bool]:
        order.append("second")
        return (_echo(b"second:"), True) if dst[1] == 7003 else (None, False)

    host = tn["host"]
    un1 = host.register_fallback_tcp_handler(first)
    un2 = host.register_fallback_tcp_handler(second)
    try:
        assert _dial(tn, 7003) == b"second:hello"
        assert order == ["first", "second"]
        order.clear()
        with pytest.raises(ConnectionRefused):  # both pass: reset, never a fall-through
            _dial(tn, 7004)
        assert order == ["first", "second"]
        un2()
        un2()  # idempotent
        order.clear()
        with pytest.raises(ConnectionRefused):
            _dial(tn, 7003)
        assert order == ["first"]
    finally:
        un1()
        un2()
    order.clear()
    with pytest.raises(ConnectionRefused):  # no handler left: the netstack's own RST, no callback
        _dial(tn, 7003)
    assert order == []


def test_a_listener_takes_its_port_before_the_fallback(tn: Tailnet) -> None:
    host = tn["host"]
    asked: list[int] = []

    def cb(src: tuple[str, int], dst: tuple[str, int]) -> tuple[ConnHandler | None, bool]:
        asked.append(dst[1])
        return _echo(b"fb:"), True

    unregister = host.register_fallback_tcp_handler(cb)
    lst = host.listen_blocking(7005)
    try:
        def serve() -> None:
            conn, _ = lst.accept()
            _echo(b"listener:")(conn)
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        assert _dial(tn, 7005) == b"listener:hello"
        t.join(10)
        assert asked == []
        assert _dial(tn, 7006) == b"fb:hello"
        assert asked == [7006]
    finally:
        lst.close()
        unregister()


def test_a_raising_callback_rejects(tn: Tailnet) -> None:
    def cb(src: tuple[str, int], dst: tuple[str, int]) -> tuple[ConnHandler | None, bool]:
        raise RuntimeError("app bug")

    unregister = tn["host"].register_fallback_tcp_handler(cb)
    try:
        with pytest.raises(ConnectionRefused):
            _dial(tn, 7007)
    finally:
        unregister()


def test_intercepted_connections_being_served_are_bounded(tn: Tailnet) -> None:
    host = tn["host"]
    fb = host._fallback_tcp
    fb._slots = threading.BoundedSemaphore(1)  # MAX_HANDLERS, made small for the test
    release = threading.Event()

    def hold(conn: SocketLike) -> None:
        with conn:
            conn.sendall(b"held")
            release.wait(20)

    def cb(src: tuple[str, int], dst: tuple[str, int]) -> tuple[ConnHandler | None, bool]:
        return (hold, True) if dst[1] == 7008 else (_echo(b"fb:"), True)

    unregister = host.register_fallback_tcp_handler(cb)
    try:
        first = tn["peer"].tcp_connect_blocking(Tailnet.ip(host), 7008, timeout=10)
        first.settimeout(10)
        assert first.recv(10) == b"held"  # its handler runs, holding the only slot
        busy = fb.refused_busy
        with pytest.raises(ConnectionRefused):
            _dial(tn, 7009)
        assert fb.refused_busy == busy + 1
        release.set()
        first.close()
        for _ in range(50):  # the slot comes back once the held handler returns
            try:
                assert _dial(tn, 7009) == b"fb:hello"
                break
            except ConnectionRefused:
                threading.Event().wait(0.1)
        else:
            pytest.fail("the slot never came back")
    finally:
        release.set()
        unregister()
        fb._slots = threading.BoundedSemaphore(MAX_HANDLERS)
