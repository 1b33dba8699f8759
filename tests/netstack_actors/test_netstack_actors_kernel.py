"""Per-flow TCP actors and the app API against the Linux kernel's TCP through a TUN (issue 4 items 4-5)."""

from __future__ import annotations

import errno
import hashlib
import socket
import threading
import time
from collections.abc import Iterator

import anyio
import pytest
from netstack_actors_rig import KERNEL, STACK, Rig, netstack_rig

from pytsnet.net import SocketLike
from pytsnet.testing.netns import Netns

pytestmark = [pytest.mark.interop, pytest.mark.root]

SIZE = 4 * 1024 * 1024


@pytest.fixture
def rig(netns: Netns) -> Iterator[Rig]:
    with netstack_rig(netns) as r:
        yield r


def _payload(n: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(b"payload %d" % seed).digest(n)


def _kernel_server(ns: Netns, port: int, mode: str, data: bytes,
                   conns: int = 1) -> tuple[socket.socket, list]:
    """A kernel listener; per connection 'echo-hash' reads to EOF and answers the SHA-256, 'send' sends."""
    srv = ns.call(lambda: socket.create_server((KERNEL, port), backlog=conns + 8))
    results: list = []

    def serve_one(c: socket.socket) -> None:
        with c:
            if mode == "send":
                c.sendall(data)
                c.shutdown(socket.SHUT_WR)
                results.append(c.recv(1))
            else:
                h = hashlib.sha256()
                while chunk := c.recv(65536):
                    h.update(chunk)
                c.sendall(h.digest())
                results.append(h.hexdigest())

    def loop() -> None:
        threads = []
        for _ in range(conns):
            c, _ = srv.accept()
            t = threading.Thread(target=serve_one, args=(c,), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(120)

    threading.Thread(target=loop, daemon=True).start()
    return srv, results


# -- blocking twin ------------------------------------------------------------------------------------

def test_blocking_dial_to_kernel_server_sha256(rig: Rig) -> None:
    data = _payload(SIZE)
    srv, _ = _kernel_server(rig.ns, 7001, "echo-hash", data)
    with srv:
        s = rig.net.create_connection((KERNEL, 7001), timeout=30)
        assert s.getpeername() == (KERNEL, 7001)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        digest = b""
        while len(digest) < 32:
            chunk = s.recv(64)
            assert chunk, "EOF before the digest"
            digest += chunk
        assert digest == hashlib.sha256(data).digest()
        assert s.recv(10) == b""
        s.close()


def test_blocking_kernel_client_to_listener_sha256_and_makefile(rig: Rig) -> None:
    data = _payload(SIZE, 1)
    lst = rig.net.listen(7002)
    lst.settimeout(10)

    def client() -> bytes:
        with socket.create_connection((STACK, 7002), timeout=30) as c:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            f = c.makefile("rb")
            return f.read()

    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.append(rig.ns.call(client)), daemon=True)
    t.start()
    conn, addr = lst.accept()
    assert addr[0] == KERNEL
    conn.settimeout(30)
    rf = conn.makefile("rb")
    got = rf.read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    wf = conn.makefile("w", encoding="ascii")
    wf.write(f"sha256 {hashlib.sha256(got).hexdigest()}\n")
    wf.flush()
    conn.close()
    t.join(30)
    assert out == [b"sha256 %s\n" % hashlib.sha256(data).hexdigest().encode()]


def test_blocking_connection_refused_and_recv_timeout(rig: Rig) -> None:
    with pytest.raises(ConnectionRefusedError):
        rig.net.create_connection((KERNEL, 7999), timeout=10)
    srv, _ = _kernel_server(rig.ns, 7003, "echo-hash", b"")
    with srv:
        s: SocketLike = rig.net.create_connection((KERNEL, 7003), timeout=10)
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(10)  # the server waits for our EOF
        s.close()


# -- anyio streams --------------------------------------------------------------------------------------

async def _read_all(stream: object, limit: int = 1 << 30) -> bytes:
    out = bytearray()
    try:
        while len(out) < limit:
            out += await stream.receive()  # type: ignore[attr-defined]
    except anyio.EndOfStream:
        pass
    return bytes(out)


def test_anyio_dial_and_listen_sha256(rig: Rig) -> None:
    data = _payload(SIZE, 2)
    srv, served = _kernel_server(rig.ns, 7004, "send", data)

    def kernel_client() -> str:
        with socket.create_connection((STACK, 7005), timeout=30) as c:
            h = hashlib.sha256()
            while chunk := c.recv(65536):
                h.update(chunk)
            return h.hexdigest()

    client_out: list[str] = []

    async def main() -> None:
        # pytsnet dial -> kernel server: receive 4 MiB, then EOF.
        stream = await rig.net.connect_tcp(KERNEL, 7004)
        got = await _read_all(stream)
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        await stream.send(b"!")
        await stream.aclose()
        # kernel client -> pytsnet listener: send 4 MiB, then EOF.
        listener = await rig.net.listen_tcp(7005)
        t = threading.Thread(target=lambda: client_out.append(rig.ns.call(kernel_client)), daemon=True)
        t.start()
        conn = await listener.accept()
        await conn.send(data)
        await conn.send_eof()
        with anyio.fail_after(30):
            assert await _read_all(conn) == b""
        await conn.aclose()
        await listener.aclose()
        await anyio.to_thread.run_sync(t.join, 30)

    with srv:
        anyio.run(main)
    assert client_out == [hashlib.sha256(data).hexdigest()]
    assert served == [b"!"]


def test_anyio_receive_is_cancellation_safe(rig: Rig) -> None:
    srv = rig.ns.call(lambda: socket.create_server((KERNEL, 7006)))

    def serve() -> None:
        c, _ = srv.accept()
        with c:
            for b in b"after-cancel":  # slowly: receives are cancelled while they wait
                time.sleep(0.03)
                c.send(bytes([b]))

    threading.Thread(target=serve, daemon=True).start()

    async def main() -> None:
        stream = await rig.net.connect_tcp(KERNEL, 7006)
        got = b""
        cancelled = 0
        with anyio.fail_after(10):
            while True:
                with anyio.move_on_after(0.01) as scope:
                    try:
                        got += await stream.receive(1)
                    except anyio.EndOfStream:
                        break
                cancelled += scope.cancelled_caught
        assert got == b"after-cancel"
        assert cancelled > 5
        await stream.aclose()

    with srv:
        anyio.run(main)


def test_cancelled_dial_leaves_no_orphan_flow(rig: Rig) -> None:
    """A dial cancelled while its SYNs go unanswered (10.77.0.99 is nobody: the kernel drops them)
    must close its flow, not leave it retransmitting with no owner."""
    async def main() -> None:
        with anyio.move_on_after(0.3) as scope:
            await rig.net.connect_tcp("10.77.0.99", 7010)
        assert scope.cancelled_caught

    anyio.run(main)
    deadline = time.monotonic() + 5
    while rig.net.registry.flows() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rig.net.registry.flows() == []


def test_connect_refused_raises_typed_error_async(rig: Rig) -> None:
    async def main() -> None:
        with pytest.raises(ConnectionRefusedError):
            await rig.net.connect_tcp(KERNEL, 7998)

    anyio.run(main)


def test_udp_socket_both_ways(rig: Rig) -> None:
    async def main() -> None:
        u = await rig.net.bind_udp(5353)

        def kernel() -> tuple[bytes, tuple[str, int]]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((KERNEL, 0))
                s.settimeout(5)
                s.sendto(b"hello", (STACK, 5353))
                return s.recvfrom(100)

        async with anyio.create_task_group() as tg:
            res: list = []

            async def k() -> None:
                res.append(await anyio.to_thread.run_sync(rig.ns.call, kernel))

            tg.start_soon(k)
            with anyio.fail_after(5):
                data, src = await u.recvfrom()
            assert data == b"hello" and src[0] == KERNEL
            await u.sendto(b"world", src)
        assert res == [(b"world", (STACK, 5353))]
        u.close()

    anyio.run(main)


def test_kernel_sees_econnreset_when_app_closes_with_unread_data(rig: Rig) -> None:
    lst = rig.net.listen(7007)
    lst.settimeout(10)

    def client() -> int:
        with socket.create_connection((STACK, 7007), timeout=10) as c:
            c.sendall(b"unread")
            try:
                c.recv(10)
            except OSError as e:
                return e.errno or 0
            return 0

    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(rig.ns.call(client)), daemon=True)
    t.start()
    conn, _ = lst.accept()
    conn.settimeout(5)
    end = time.monotonic() + 5
    while not conn._ch.rx and time.monotonic() < end:  # wait for the bytes to arrive, unread
        time.sleep(0.01)
    conn.close()
    t.join(10)
    assert out == [errno.ECONNRESET]


# -- 100 concurrent connections each way -----------------------------------------------------------------

CONCURRENT = 100
PER_CONN = 64 * 1024


def test_100_concurrent_connections_each_way(rig: Rig) -> None:
    blobs = [_payload(PER_CONN, 100 + i) for i in range(CONCURRENT)]
    srv, served = _kernel_server(rig.ns, 7010, "echo-hash", b"", conns=CONCURRENT)

    def kernel_client(i: int) -> bytes:
        with socket.create_connection((STACK, 7011), timeout=60) as c:
            c.sendall(blobs[i])
            c.shutdown(socket.SHUT_WR)
            out = bytearray()
            while chunk := c.recv(65536):
                out += chunk
            return bytes(out)

    client_results: dict[int, bytes] = {}

    async def main() -> None:
        listener = await rig.net.listen_tcp(7011, backlog=128)

        async def dial(i: int) -> None:
            s = await rig.net.connect_tcp(KERNEL, 7010)
            await s.send(blobs[i])
            await s.send_eof()
            assert await _read_all(s) == hashlib.sha256(blobs[i]).digest()
            await s.aclose()

        async def serve(s: object) -> None:  # answer each kernel client with the SHA-256 of its bytes
            got = await _read_all(s)
            await s.send(hashlib.sha256(got).digest())  # type: ignore[attr-defined]
            await s.aclose()  # type: ignore[attr-defined]

        def run_clients() -> None:
            def one(i: int) -> None:
                client_results[i] = rig.ns.call(lambda: kernel_client(i))

            ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(CONCURRENT)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(90)

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                for i in range(CONCURRENT):
                    tg.start_soon(dial, i)
                tg.start_soon(anyio.to_thread.run_sync, run_clients)
                for _ in range(CONCURRENT):
                    tg.start_soon(serve, await listener.accept())
        await listener.aclose()

    with srv:
        anyio.run(main)
    assert sorted(served) == sorted(hashlib.sha256(b).hexdigest() for b in blobs)
    assert client_results == {i: hashlib.sha256(blobs[i]).digest() for i in range(CONCURRENT)}
