"""The DERP send lane's writer: the engine's bursts and the client's own frames reach the socket in the
order they were written, a socket that does not take a write at once leaves the rest for the client
(woken once) with every later write behind it, the buffer is bounded, and a failed connection refuses."""

from __future__ import annotations

import socket
import threading

import pytest

from pytsnet.actors.magicsock import derp_writer
from pytsnet.actors.magicsock.derp_writer import MAX_PENDING_BYTES, DerpWriter
from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.reader import SERVER_MAX_FRAME_LEN, FrameReader

KEY = bytes(range(32))


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


def _read_all(sock: socket.socket, into: bytearray, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return
        into += data


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    return FrameReader(SERVER_MAX_FRAME_LEN).feed_raw(data)


def test_bursts_go_out_framed_and_in_order() -> None:
    a, b = _pair()
    woken: list[int] = []
    w = DerpWriter(a, lambda: woken.append(1))
    try:
        assert w.send("p", KEY, [b"one", bytearray(b"two")]) == 0
        assert w.send("p", KEY, [b"three"]) == 0
        b.settimeout(2)
        got = b.recv(65536)
        assert _frames(got) == [(f.FrameType.SEND_PACKET, KEY + p) for p in (b"one", b"two", b"three")]
        assert not woken and w.bytes_out == {"p": 11} and w.writes == 2
    finally:
        a.close()
        b.close()


def test_a_socket_that_does_not_take_a_write_leaves_the_rest_for_the_client_in_order() -> None:
    a, b = _pair()
    woken: list[int] = []
    w = DerpWriter(a, lambda: woken.append(1))
    packet = bytes(1200)
    sent: list[int] = []  # sequence numbers the writer accepted
    refused = 0
    for seq in range(2000):  # nobody reads b: the socket fills, the rest waits in the writer
        r = w.send("p", KEY, [seq.to_bytes(4, "big") + packet])
        assert r is not None
        if r == 0:
            sent.append(seq)
        refused += r
    assert len(woken) == 1  # the client is woken once, when the socket first left bytes
    assert refused > 0 and w.refused == refused  # the bound: MAX_PENDING_BYTES
    assert len(sent) * 1241 < MAX_PENDING_BYTES + 4 * 65536
    got = bytearray()
    stop = threading.Event()
    t = threading.Thread(target=_read_all, args=(b, got, stop))
    t.start()
    try:
        w.write(f.encode(f.Pong(b"12345678")))  # the client's frame goes behind everything queued
        a.shutdown(socket.SHUT_WR)
        t.join(10)
        frames = _frames(bytes(got))
        seqs = [int.from_bytes(p[32:36], "big") for t_, p in frames if t_ == f.FrameType.SEND_PACKET]
        assert seqs == sent
        assert frames[-1] == (f.FrameType.PONG, b"12345678")
    finally:
        stop.set()
        t.join(5)
        a.close()
        b.close()


def test_a_failed_connection_refuses_and_the_registry_falls_back() -> None:
    a, b = _pair()
    w = DerpWriter(a, lambda: None)

    class Ref:  # a stand-in for the client's ActorRef (the registry only hashes it)
        pass

    owner = Ref()
    derp_writer.publish(owner, w)  # type: ignore[arg-type]
    try:
        assert derp_writer.send(owner, "p", KEY, [b"x"]) == 0  # type: ignore[arg-type]
        w.fail(OSError("closing"))
        assert derp_writer.send(owner, "p", KEY, [b"x"]) is None  # type: ignore[arg-type]
        with pytest.raises(OSError):
            w.write(b"ctl")
        derp_writer.withdraw(owner, DerpWriter(a, lambda: None))  # type: ignore[arg-type]  # not its writer
        assert derp_writer._writers.get(owner) is w  # type: ignore[call-overload]
        derp_writer.withdraw(owner, w)  # type: ignore[arg-type]
        assert derp_writer.send(owner, "p", KEY, [b"x"]) is None  # type: ignore[arg-type]
    finally:
        derp_writer.withdraw(owner, w)  # type: ignore[arg-type]
        a.close()
        b.close()


def test_a_socket_error_fails_the_writer() -> None:
    a, b = _pair()
    w = DerpWriter(a, lambda: None)
    b.close()
    try:
        results = [w.send("p", KEY, [bytes(100)]) for _ in range(3)]  # EPIPE at the latest on the second
        assert results[-1] is None and w.failed is not None
    finally:
        a.close()
