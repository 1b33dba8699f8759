"""The socket bridge: tailnet connections as real sockets (dev.listen_socket / dev.connect_socket).

A listening socket whose accept honours blocking, timeout and non-blocking modes, with the caller's
tailnet address as the peer; a connected socket with a real fd (selectors work); whois from a
connection; a bounded accept queue; one flow's splice dying resets that flow only; close and device
close end accept.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import threading
import time
from typing import Any

import pytest
from serving_rig import Pair

from pytsnet.actors.netstack.splice import Splice
from pytsnet.errors import DeviceClosed, NotTailnetConnection
from pytsnet.net.bridge import TailnetConnection, TailnetListenSocket
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import new_device


def _echo_once(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def test_listen_socket_is_a_real_listening_socket(pair: Pair) -> None:
    a, b = pair.a, pair.b
    with a.listen_socket(7101) as lst:
        assert isinstance(lst, socket.socket) and lst.fileno() >= 0
        assert lst.type == socket.SOCK_STREAM and lst.family == socket.AF_INET
        assert lst.getsockname() == (pair.ip(a), 7101)
        lst.listen(5)  # a no-op: already listening
        lst.setblocking(False)
        with pytest.raises(BlockingIOError):
            lst.accept()
        lst.settimeout(0.2)
        with pytest.raises(TimeoutError):
            lst.accept()
        lst.settimeout(None)
        client = b.tcp_connect_blocking(pair.ip(a), 7101, timeout=10)
        sel = selectors.DefaultSelector()
        sel.register(lst, selectors.EVENT_READ)
        assert sel.select(10), "the listening fd turns readable when a connection waits"
        sel.close()
        conn, peer = lst.accept()
        assert isinstance(conn, TailnetConnection) and conn.fileno() >= 0
        assert peer == conn.getpeername() == client.getsockname()
        assert peer[0] == pair.ip(b)
        assert conn.getsockname() == (pair.ip(a), 7101)
        t = threading.Thread(target=_echo_once, args=(conn,))
        t.start()
        client.sendall(b"ping over the bridge")
        client.shutdown(socket.SHUT_WR)
        got = b""
        client.settimeout(10)
        while chunk := client.recv(100):
            got += chunk
        assert got == b"ping over the bridge"
        client.close()
        t.join(10)
        lst.setblocking(False)
        with pytest.raises(BlockingIOError):  # the doorbell is quiet again
            lst.accept()


def test_connect_socket_is_a_real_connected_socket(pair: Pair) -> None:
    a, b = pair.a, pair.b
    lst = a.listen_blocking(7102)
    try:
        sock = b.connect_socket("alpha", 7102, timeout=10)  # a MagicDNS short name
        server = lst.accept()[0]
        assert sock.getpeername() == (pair.ip(a), 7102)
        assert sock.getsockname()[0] == pair.ip(b)
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        assert not sel.select(0), "nothing to read yet"
        server.sendall(b"x" * 100_000)
        assert sel.select(10)
        sel.close()
        got = b""
        sock.settimeout(10)
        while len(got) < 100_000:
            got += sock.recv(65536)
        assert got == b"x" * 100_000
        sock.sendall(b"back")
        server.settimeout(10)
        assert server.recv(10) == b"back"
        sock.close()
        assert server.recv(10) == b"", "the app's close is a FIN on the tailnet"
        server.close()
    finally:
        lst.close()


def test_whois_connection_names_the_caller(pair: Pair) -> None:
    a, b = pair.a, pair.b
    with a.listen_socket(7103) as lst:
        client = b.connect_socket(pair.ip(a), 7103, timeout=10)
        lst.settimeout(10)
        conn, peer = lst.accept()
        assert a.whois_connection(conn).node.name == pair.name(b)
        assert a.whois_connection(peer).node.name == pair.name(b)
        assert b.whois_connection(client).node.name == pair.name(a)
        plain_a, plain_b = socket.socketpair()
        with plain_a, plain_b, pytest.raises(NotTailnetConnection):
            a.whois_connection(plain_a)
        conn.close()
        with pytest.raises(NotTailnetConnection):
            a.whois_connection(conn)  # closed: its fd may be anyone's now
        client.close()


def test_unaccepted_connections_are_bounded(pair: Pair) -> None:
    """backlog 2, twelve dials, an app that does not accept: the bridge holds two connections (two
    splices), the netstack's queues hold at most ``backlog`` each (beyond them SYNs get cookies or
    are dropped, as Linux's: a dialer may see its connect complete and wait), and nothing else grows."""
    a, b = pair.a, pair.b
    lst = a.listen_socket(7104, backlog=2)
    assert isinstance(lst, TailnetListenSocket)
    results: list[object] = []

    def dial() -> None:
        try:
            results.append(b.tcp_connect_blocking(pair.ip(a), 7104, timeout=3))
        except OSError as e:
            results.append(e)

    threads_before = threading.active_count()
    dials = [threading.Thread(target=dial) for _ in range(12)]
    for t in dials:
        t.start()
    for t in dials:
        t.join(20)
    assert len(results) == 12
    connected = [r for r in results if not isinstance(r, BaseException)]
    assert all(isinstance(r, TimeoutError) for r in results if isinstance(r, BaseException)), results
    wait_until(lambda: len(lst._queue) == 2, 10, "two bridged and waiting")
    time.sleep(0.5)  # had the bridge no bound, more would be taken meanwhile
    assert len(lst.flows) == 2 and len(lst._queue) == 2, "the bridge holds backlog connections, no more"
    assert a._ns is not None
    assert len(a._ns.registry.listener(7104).ready) <= 2, "the netstack's hand-over queue is bounded too"
    assert threading.active_count() - threads_before <= 2 * 2 + 1, "two splices (2 threads each) + accept"
    lst.settimeout(2)
    accepted = []
    with contextlib.suppress(TimeoutError):
        while True:  # as room frees, what the netstack held comes through
            accepted.append(lst.accept()[0])
    assert len(accepted) >= 2
    assert {c.getpeername() for c in accepted} <= {s.getsockname() for s in connected}  # type: ignore[attr-defined]
    for c in accepted:
        c.close()
    for s in connected:
        s.close()  # type: ignore[attr-defined]
    lst.close()


def test_a_killed_splice_resets_only_its_flow(pair: Pair) -> None:
    a, b = pair.a, pair.b
    with a.listen_socket(7105) as lst:
        lst.settimeout(10)
        c1 = b.tcp_connect_blocking(pair.ip(a), 7105, timeout=10)
        s1, _ = lst.accept()
        c2 = b.tcp_connect_blocking(pair.ip(a), 7105, timeout=10)
        s2, _ = lst.accept()
        victim = next(f for f in list(lst.flows) if f.connection.getpeername() == c1.getsockname())
        victim.abort()
        c1.settimeout(10)
        with pytest.raises(ConnectionResetError):
            c1.recv(10)
        s1.settimeout(10)
        assert s1.recv(10) == b"", "the app's end of the killed flow ends"
        assert victim.done.wait(10) and victim.error is not None
        c2.settimeout(10)
        s2.settimeout(10)
        c2.sendall(b"still here")
        assert s2.recv(100) == b"still here"
        s2.sendall(b"and back")
        assert c2.recv(100) == b"and back"
        for s in (s1, s2, c1, c2):
            s.close()


def test_close_resets_waiting_connections_and_ends_accept(pair: Pair) -> None:
    a, b = pair.a, pair.b
    lst = a.listen_socket(7106)
    c1 = b.tcp_connect_blocking(pair.ip(a), 7106, timeout=10)
    wait_until(lambda: len(lst._queue) == 1, 10, "bridged and waiting")
    lst.close()
    c1.settimeout(10)
    with pytest.raises(ConnectionResetError):
        c1.recv(10)
    with pytest.raises(OSError):
        lst.accept()
    lst._thread.join(5)
    assert not lst._thread.is_alive(), "the accept thread ends with the socket"
    # the port is free again: a new listening socket takes it
    with a.listen_socket(7106):
        pass
    c1.close()


def test_device_close_ends_accept(tmp_path_factory: pytest.TempPathFactory, pair: Pair) -> None:
    """A device of its own (closing it must not disturb the shared pair)."""
    dev = new_device(pair.net, tmp_path_factory.mktemp("gamma"), "gamma").start()
    lst = dev.listen_socket(7107)
    got: list[BaseException] = []

    def accept() -> None:
        try:
            lst.accept()
        except OSError as e:
            got.append(e)

    t = threading.Thread(target=accept)
    t.start()
    time.sleep(0.2)
    dev.close()
    t.join(10)
    assert not t.is_alive() and got, "a blocked accept ends when the device closes"
    assert isinstance(got[0], DeviceClosed), got
    lst.close()


def test_the_bridge_opens_nothing_on_the_host(pair: Pair) -> None:
    """Every fd of the bridge is an unnamed AF_UNIX socketpair end, not inherited by child processes:
    no host port, no filesystem or abstract name another process could connect to."""
    a, b = pair.a, pair.b
    with a.listen_socket(7108) as lst:
        lst.settimeout(10)
        client = b.connect_socket(pair.ip(a), 7108, timeout=10)
        conn, _ = lst.accept()
        flow = next(iter(lst.flows))
        for sock in (lst, lst._bell, conn, client, flow._inner):
            fd = sock.fileno()
            raw = socket.socket(fileno=os.dup(fd))
            try:
                assert raw.family == socket.AF_UNIX and raw.getsockname() == "", (sock, raw.getsockname())
                assert raw.getpeername() == "", "the other end is unnamed too"
            finally:
                raw.close()
            assert not os.get_inheritable(fd)
        conn.close()
        client.close()


def test_no_fds_left_refuses_that_connection_only(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge cannot make a socketpair (EMFILE): that connection is reset, the listener goes on."""
    a, b = pair.a, pair.b
    real = socket.socketpair
    failures = [OSError(errno.EMFILE, "Too many open files")]

    def socketpair(*args: Any) -> tuple[socket.socket, socket.socket]:
        if failures:
            raise failures.pop()
        return real(*args)

    with a.listen_socket(7109) as lst:
        lst.settimeout(10)
        monkeypatch.setattr(socket, "socketpair", socketpair)
        c1 = b.tcp_connect_blocking(pair.ip(a), 7109, timeout=10)
        c1.settimeout(10)
        with pytest.raises(ConnectionResetError):
            c1.recv(10)
        assert not failures
        c2 = b.connect_socket(pair.ip(a), 7109, timeout=10)
        conn, peer = lst.accept()
        assert peer == c2.getsockname()
        for s in (c1, c2, conn):
            s.close()


def test_a_crashing_splice_resets_only_its_flow(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair.a, pair.b
    real = Splice.run
    crashes = [RuntimeError("a bug in the copy loop")]

    def run(self: Splice) -> str | None:
        if crashes:
            raise crashes.pop()
        return real(self)

    with a.listen_socket(7110) as lst:
        lst.settimeout(10)
        monkeypatch.setattr(Splice, "run", run)
        c1 = b.tcp_connect_blocking(pair.ip(a), 7110, timeout=10)
        s1, _ = lst.accept()
        c1.settimeout(10)
        with pytest.raises(ConnectionResetError):
            c1.recv(10)
        assert not crashes
        c2 = b.connect_socket(pair.ip(a), 7110, timeout=10)
        s2, _ = lst.accept()
        c2.settimeout(10)
        s2.settimeout(10)
        c2.sendall(b"fine")
        assert s2.recv(10) == b"fine"
        for s in (s1, s2, c1, c2):
            s.close()
