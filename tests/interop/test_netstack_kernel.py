"""The Python stack (10.77.0.2) against the Linux kernel (10.77.0.1) through a TUN (interop.md §3)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.interface import Stack
from pytsnet.netstack.ipv4 import Ipv4Packet, emit_ipv4
from pytsnet.netstack.tcp import segment as tcpseg
from pytsnet.netstack.tcp.connection import TcpConfig
from pytsnet.netstack.tcp.errors import ConnectionTimedOut
from pytsnet.netstack.tcp.segment import TcpSegment
from pytsnet.testing.netns import Netns
from pytsnet.testing.tun import Impairment, TunBridge, TunDevice, TunPump, kernel_has_netem, open_tun

pytestmark = [pytest.mark.interop, pytest.mark.root]

KERNEL = "10.77.0.1"
STACK = "10.77.0.2"


@pytest.fixture
def tun(netns: Netns) -> Iterator[TunDevice]:
    dev = open_tun(netns, local=KERNEL, peer=STACK)
    yield dev
    dev.close()


@pytest.fixture
def stack() -> Stack:
    return Stack(StackConfig(addresses=(ipaddress.ip_address(STACK),)))


@pytest.fixture
def pump(tun: TunDevice, stack: Stack) -> Iterator[TunPump]:
    p = TunPump(tun, stack).start()
    yield p
    p.stop()
    assert p.error is None, p.error


def test_kernel_pings_the_stack(netns: Netns, pump: TunPump, stack: Stack) -> None:
    out = netns.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1000", STACK], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0% packet loss" in out.stdout


def test_udp_kernel_to_stack_and_back(netns: Netns, pump: TunPump, stack: Stack) -> None:
    ep = pump.call(lambda: stack.udp_bind(5353))

    def kernel_side() -> tuple[bytes, tuple[str, int]]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((KERNEL, 0))
            s.settimeout(5)
            for i in range(20):
                s.sendto(b"ping %d" % i, (STACK, 5353))
            assert pump.wait_until(lambda: len(ep._queue) == 20, timeout=5)
            got = [pump.call(ep.recvfrom) for _ in range(20)]
            assert [g[0] for g in got if g] == [b"ping %d" % i for i in range(20)]
            src = got[0][1]  # type: ignore[index]
            assert str(src[0]) == KERNEL and src[1] == s.getsockname()[1]
            pump.call(lambda: ep.sendto(b"x" * 1200, src))
            return s.recvfrom(2000)

    data, addr = netns.call(kernel_side)
    assert data == b"x" * 1200 and addr == (STACK, 5353)


def test_udp_stack_to_kernel_server(netns: Netns, pump: TunPump, stack: Stack) -> None:
    def kernel_side() -> list[bytes]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((KERNEL, 7000))
            s.settimeout(5)
            ep = pump.call(lambda: stack.udp_bind(0))
            pump.call(lambda: ep.connect((KERNEL, 7000)))
            for i in range(10):
                pump.call(lambda i=i: ep.send(bytes([i]) * (i * 100 + 1)))
            got = [s.recvfrom(2000) for _ in range(10)]
            assert all(a == (STACK, ep.port) for _, a in got)
            return [d for d, _ in got]

    assert netns.call(kernel_side) == [bytes([i]) * (i * 100 + 1) for i in range(10)]


def test_udp_to_unbound_port_gets_port_unreachable(netns: Netns, pump: TunPump, stack: Stack) -> None:
    def kernel_side() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.connect((STACK, 9999))
            s.send(b"anyone?")
            try:
                s.recv(100)
            except OSError as exc:
                return exc.errno or 0
            return 0

    assert netns.call(kernel_side) == errno.ECONNREFUSED
    assert stack.drops["udp_port_unreachable"] == 1


def test_tcp_connect_to_closed_port_is_refused(netns: Netns, pump: TunPump, stack: Stack) -> None:
    def kernel_side() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            return s.connect_ex((STACK, 8080))

    assert netns.call(kernel_side) == errno.ECONNREFUSED
    assert stack.drops["tcp_closed_port"] >= 1


# -- TCP against the kernel's TCP -----------------------------------------------------------------

def _send_all(pump: TunPump, conn: Any, data: bytes, timeout: float = 60.0) -> None:
    off, end = 0, time.monotonic() + timeout
    view = memoryview(data)
    while off < len(data):
        assert time.monotonic() < end, f"send stalled at {off}/{len(data)}"
        n = pump.call(lambda o=off: conn.send(view[o:o + 262144]))
        if n:
            off += n
        else:
            assert pump.call(lambda: conn.error) is None, pump.call(lambda: conn.error)
            time.sleep(0.002)


def _recv_all(pump: TunPump, conn: Any, timeout: float = 60.0) -> bytes:
    chunks: list[bytes] = []
    end = time.monotonic() + timeout
    while True:
        assert time.monotonic() < end, f"recv stalled after {sum(map(len, chunks))} bytes"
        b = pump.call(lambda: conn.recv(262144))
        if b:
            chunks.append(b)
        elif pump.call(lambda: conn.at_eof):
            return b"".join(chunks)
        else:
            assert pump.call(lambda: conn.error) is None, pump.call(lambda: conn.error)
            time.sleep(0.001)


def _kernel_recv_all(s: socket.socket) -> bytes:
    chunks = []
    while b := s.recv(1 << 20):
        chunks.append(b)
    return b"".join(chunks)


def _accept(pump: TunPump, lst: Any, timeout: float = 10.0) -> Any:
    """The next accepted connection, or None after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        conn = pump.call(lst.accept)
        if conn is not None:
            return conn
        time.sleep(0.005)
    return None


def _kernel_client_to_listener(netns: Netns, pump: TunPump, stack: Stack, up: bytes, down: bytes,
                               port: int = 8000) -> None:
    lst = pump.call(lambda: stack.tcp_listen(port))
    result: dict[str, Any] = {}

    def kernel_client() -> None:
        with socket.create_connection((STACK, port), timeout=30, source_address=(KERNEL, 0)) as s:
            s.sendall(up)
            s.shutdown(socket.SHUT_WR)  # half-close: we can still read everything the stack sends
            result["down"] = _kernel_recv_all(s)

    t = threading.Thread(target=lambda: netns.call(kernel_client))
    t.start()
    conn = _accept(pump, lst)
    assert conn is not None, "no connection accepted"
    got_up = _recv_all(pump, conn)
    _send_all(pump, conn, down)
    pump.call(conn.close)
    t.join(90)
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(result["down"]).digest() == hashlib.sha256(down).digest()


def _dial_kernel_server(netns: Netns, pump: TunPump, stack: Stack, up: bytes, down: bytes,
                        port: int = 9000) -> None:
    result: dict[str, Any] = {}
    ready = threading.Event()

    def kernel_server() -> None:
        with socket.socket() as srv:
            srv.bind((KERNEL, port))
            srv.listen(8)
            srv.settimeout(30)
            ready.set()
            c, _ = srv.accept()
            with c:
                c.settimeout(60)
                result["up"] = _kernel_recv_all(c)  # until our FIN: half-close from the stack side
                c.sendall(down)

    t = threading.Thread(target=lambda: netns.call(kernel_server))
    t.start()
    assert ready.wait(10)
    conn = pump.call(lambda: stack.tcp_connect((KERNEL, port), time.monotonic()))
    _send_all(pump, conn, up)
    pump.call(conn.shutdown_write)
    got_down = _recv_all(pump, conn)
    pump.call(conn.close)
    t.join(90)
    assert hashlib.sha256(result["up"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()


def test_kernel_client_to_pytsnet_listener_with_half_close(netns: Netns, pump: TunPump, stack: Stack) -> None:
    _kernel_client_to_listener(netns, pump, stack, os.urandom(3 << 20), os.urandom(2 << 20))


def test_pytsnet_dial_to_kernel_server_with_half_close(netns: Netns, pump: TunPump, stack: Stack) -> None:
    _dial_kernel_server(netns, pump, stack, os.urandom(3 << 20), os.urandom(2 << 20))


def test_pytsnet_dial_to_closed_kernel_port_is_refused(pump: TunPump, stack: Stack) -> None:
    conn = pump.call(lambda: stack.tcp_connect((KERNEL, 9), time.monotonic()))
    assert pump.wait_until(lambda: conn.error is not None, 10)
    assert isinstance(conn.error, ConnectionRefusedError)
    assert pump.wait_until(lambda: stack.tcp_flows == 0, 5)


def test_backlog_overflow_drops_syns_until_the_app_accepts(netns: Netns, pump: TunPump, stack: Stack) -> None:
    """Four kernel connects at a backlog of 2. A SYN beyond two half-open gets a SYN cookie; once two
    wait for accept(), SYNs and cookie ACKs are dropped (as on Linux with syncookies: such a client
    thinks it is connected). Each client's first bytes, retransmitted by the kernel, bring it in
    once the app accepts; which of these happen depends on timing, the outcome does not."""
    lst = pump.call(lambda: stack.tcp_listen(8100, backlog=2))

    def kernel_side() -> tuple[int, set[bytes]]:
        import select

        socks = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((STACK, 8100))
            socks.append(s)
        time.sleep(0.5)
        early = sum(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _connected(s) for s in socks)
        conns = [_accept(pump, lst) for _ in range(2)]  # make room; retransmissions get in
        assert all(conns)
        for i, s in enumerate(socks):
            _, writable, _ = select.select([], [s], [], 10)
            assert writable and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            s.send(b"client %d" % i)
        conns += [_accept(pump, lst, timeout=8) for _ in range(2)]
        assert all(conns), "a client never got in"
        got = set()
        for c in conns:
            assert pump.wait_until(lambda c=c: c.readable, 10)
            got.add(pump.call(lambda c=c: c.recv(100)))
        for s in socks:
            s.close()
        return early, got

    early, got = netns.call(kernel_side)
    assert early >= 2 and got == {b"client %d" % i for i in range(4)}
    # The two beyond the backlog got no half-open state: each SYN was dropped or answered by a cookie.
    assert stack.drops["tcp_backlog_full"] + stack.stats["tcp_syncookies_sent"] >= 2


def test_kernel_gets_in_through_a_syn_cookie_while_silent_syns_fill_the_backlog(
        netns: Netns, pump: TunPump, stack: Stack) -> None:
    """Half-open connections from an address nobody answers for fill the backlog; the kernel's
    connect gets a SYN cookie, completes, and carries data both ways, with the window scale and
    SACK it offered restored from the timestamp echo."""
    lst = pump.call(lambda: stack.tcp_listen(8500, backlog=4))
    ghost, me = ipaddress.IPv4Address("10.77.0.9"), ipaddress.IPv4Address(STACK)  # routed nowhere

    def fill() -> None:
        for i in range(8):
            seg = TcpSegment(2000 + i, 8500, 1000 * i, 0, tcpseg.SYN, 64240, mss=1200)
            stack.receive(emit_ipv4(Ipv4Packet(ghost, me, 6, tcpseg.emit_segment(seg, ghost, me))),
                          time.monotonic())

    pump.call(fill)
    assert pump.call(lambda: len(lst._pending)) == 4 and stack.stats["tcp_syncookies_sent"] == 4
    up, down = os.urandom(1 << 20), os.urandom(1 << 20)
    result: dict[str, bytes] = {}

    def kernel_client() -> None:
        with socket.create_connection((STACK, 8500), timeout=30, source_address=(KERNEL, 0)) as s:
            s.sendall(up)
            s.shutdown(socket.SHUT_WR)
            result["down"] = _kernel_recv_all(s)

    t = threading.Thread(target=lambda: netns.call(kernel_client))
    t.start()
    conn = _accept(pump, lst)
    assert conn is not None and conn.remote[0] == ipaddress.IPv4Address(KERNEL)
    assert stack.stats["tcp_syncookies_validated"] == 1 and pump.call(lambda: len(lst._pending)) == 4
    assert conn._snd_wscale > 0 and conn._sack_ok and conn._ts_ok  # Linux offers all three
    got_up = _recv_all(pump, conn)
    _send_all(pump, conn, down)
    pump.call(conn.close)
    t.join(90)
    assert got_up == up and result["down"] == down


def _connected(s: socket.socket) -> bool:
    try:
        s.getpeername()
        return True
    except OSError:
        return False


NETEM = "loss 2% reorder 10% duplicate 1% delay 20ms"
IMPAIR = Impairment(loss=0.02, duplicate=0.01, reorder=0.10, delay=0.020, seed=4)


def test_transfers_under_netem(netns: Netns, tun: TunDevice, stack: Stack) -> None:
    """netem on the TUN when the kernel has it; else the pump applies the same impairment.

    The pump's impairment covers both directions (netem on the TUN only shapes kernel → stack),
    so the fallback is the harsher of the two.
    """
    if kernel_has_netem():
        tun.set_netem(NETEM)
        pump = TunPump(tun, stack).start()
    else:
        pump = TunPump(tun, stack, IMPAIR).start()
    try:
        _kernel_client_to_listener(netns, pump, stack, os.urandom(1 << 20), os.urandom(1 << 20))
        _dial_kernel_server(netns, pump, stack, os.urandom(1 << 20), os.urandom(1 << 20))
    finally:
        pump.stop()
    assert pump.error is None, pump.error
    if pump.impair is not None:
        assert pump.impaired["lost"] > 10 and pump.impaired["duplicated"] > 3


@pytest.mark.slow
def test_64_mib_each_way(netns: Netns, pump: TunPump, stack: Stack) -> None:
    blob = os.urandom(64 << 20)
    _kernel_client_to_listener(netns, pump, stack, blob, blob, port=8200)
    _dial_kernel_server(netns, pump, stack, blob, blob, port=9200)


@pytest.mark.slow
def test_100_concurrent_connections_each_way(netns: Netns, pump: TunPump, stack: Stack) -> None:
    n, size = 100, 64 << 10
    blobs = [os.urandom(size) for _ in range(n)]
    lst = pump.call(lambda: stack.tcp_listen(8300))
    got: dict[int, bytes] = {}

    def kernel_clients() -> None:
        socks = [socket.create_connection((STACK, 8300), timeout=60) for _ in range(n)]
        for i, s in enumerate(socks):
            s.sendall(i.to_bytes(4, "big") + blobs[i])
            s.shutdown(socket.SHUT_WR)
        for s in socks:
            with s:
                assert _kernel_recv_all(s) == b"done"

    t = threading.Thread(target=lambda: netns.call(kernel_clients))
    t.start()
    conns = []
    while len(conns) < n:
        c = _accept(pump, lst, timeout=30)
        assert c is not None, f"only {len(conns)} accepted"
        conns.append(c)
    for c in conns:
        data = _recv_all(pump, c)
        got[int.from_bytes(data[:4], "big")] = data[4:]
        _send_all(pump, c, b"done")
        pump.call(c.close)
    t.join(120)
    assert all(got[i] == blobs[i] for i in range(n))

    # and the other way: n dials from the stack to one kernel server
    ready = threading.Event()
    received: list[bytes] = []

    def kernel_server() -> None:
        with socket.socket() as srv:
            srv.bind((KERNEL, 9300))
            srv.listen(n)
            srv.settimeout(60)
            ready.set()
            for _ in range(n):
                c, _ = srv.accept()
                with c:
                    received.append(_kernel_recv_all(c))

    t2 = threading.Thread(target=lambda: netns.call(kernel_server))
    t2.start()
    assert ready.wait(10)
    dials = [pump.call(lambda: stack.tcp_connect((KERNEL, 9300), time.monotonic())) for _ in range(n)]
    for i, c in enumerate(dials):
        _send_all(pump, c, i.to_bytes(4, "big") + blobs[i])
        pump.call(c.shutdown_write)
    t2.join(120)
    assert sorted(received) == sorted(i.to_bytes(4, "big") + blobs[i] for i in range(n))


def test_pytsnet_connect_times_out_when_nothing_answers(tun: TunDevice) -> None:
    """10.77.0.9 is routed into the kernel, which neither owns nor forwards it: SYNs vanish."""
    stack = Stack(StackConfig(addresses=(ipaddress.ip_address(STACK),)),
                  tcp_config=TcpConfig(rto_initial=0.2, syn_retries=2))
    pump = TunPump(tun, stack).start()
    try:
        t0 = time.monotonic()
        conn = pump.call(lambda: stack.tcp_connect(("10.77.0.9", 80), time.monotonic()))
        assert pump.wait_until(lambda: conn.error is not None, 10)
        assert isinstance(conn.error, ConnectionTimedOut)
        assert 0.2 * (1 + 2 + 4) * 0.9 <= time.monotonic() - t0 < 5
        assert pump.wait_until(lambda: stack.tcp_flows == 0, 2)
    finally:
        pump.stop()


def test_pytsnet_connect_times_out_against_a_kernel_listener_dropping_syns(netns: Netns,
                                                                          tun: TunDevice) -> None:
    """A kernel listener whose accept queue is full drops new SYNs silently (no RST): the stack's
    second dial to that live port exhausts its SYN retries and fails with the typed timeout."""
    srv = netns.call(lambda: socket.create_server((KERNEL, 9900), backlog=0))  # room for one
    stack = Stack(StackConfig(addresses=(ipaddress.ip_address(STACK),)),
                  tcp_config=TcpConfig(rto_initial=0.2, syn_retries=2))
    pump = TunPump(tun, stack).start()
    try:
        first = pump.call(lambda: stack.tcp_connect((KERNEL, 9900), time.monotonic()))
        assert pump.wait_until(lambda: first.state.value == "ESTABLISHED", 5)
        time.sleep(0.1)  # the kernel moved it to the (now full) accept queue
        t0 = time.monotonic()
        second = pump.call(lambda: stack.tcp_connect((KERNEL, 9900), time.monotonic()))
        assert pump.wait_until(lambda: second.error is not None, 10)
        assert isinstance(second.error, ConnectionTimedOut) and isinstance(second.error, TimeoutError)
        assert 0.2 * (1 + 2 + 4) * 0.9 <= time.monotonic() - t0 < 5
        assert first.error is None  # the queued connection is unaffected, and the kernel still has it
        srv.settimeout(2)
        c, peer = srv.accept()
        c.close()
        assert peer[0] == STACK
    finally:
        pump.stop()
        srv.close()


def test_kernel_connect_times_out_while_backlog_stays_full(netns: Netns, pump: TunPump, stack: Stack) -> None:
    pump.call(lambda: stack.tcp_listen(8400, backlog=1))

    def kernel_side() -> str:
        first = socket.create_connection((STACK, 8400), timeout=5)
        with first, socket.socket() as second:
            second.settimeout(1.5)
            try:
                second.connect((STACK, 8400))
            except TimeoutError:
                return "timeout"
            return "connected"

    assert netns.call(kernel_side) == "timeout"


# -- concurrent transfers under impairment ----------------------------------------------------------

def _blobs(n: int, size: int, tag: bytes) -> list[bytes]:
    """Per-connection payloads that name their connection (4-byte index) so pairing can be checked."""
    return [tag + i.to_bytes(4, "big") + os.urandom(size) for i in range(n)]


def _kernel_exchange(socks: list[socket.socket], blobs: list[bytes], timeout: float) -> list[bytes]:
    """Every socket sends its blob then half-closes, and reads to EOF, all at once (one selector)."""
    import selectors

    sel = selectors.DefaultSelector()
    sent = [0] * len(socks)
    got: list[list[bytes]] = [[] for _ in socks]
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, i)
    eof = [False] * len(socks)
    open_, end = len(socks), time.monotonic() + timeout
    while open_:
        assert time.monotonic() < end, f"kernel side stalled with {open_} connections open"
        for key, ev in sel.select(1.0):
            i, s = key.data, key.fileobj
            assert isinstance(s, socket.socket)
            if ev & selectors.EVENT_WRITE:
                with contextlib.suppress(BlockingIOError):
                    sent[i] += s.send(memoryview(blobs[i])[sent[i]:sent[i] + (1 << 20)])
                if sent[i] == len(blobs[i]):
                    s.shutdown(socket.SHUT_WR)
            if ev & selectors.EVENT_READ:
                with contextlib.suppress(BlockingIOError):
                    b = s.recv(1 << 20)
                    got[i].append(b)
                    eof[i] = not b
            events = (0 if eof[i] else selectors.EVENT_READ) | (
                selectors.EVENT_WRITE if sent[i] < len(blobs[i]) else 0)
            if not events:
                sel.unregister(s)
                open_ -= 1
            elif events != key.events:
                sel.modify(s, events, i)
    sel.close()
    return [b"".join(g) for g in got]


def _stack_exchange(pump: TunPump, conns: list[Any], blobs: list[bytes], timeout: float) -> list[bytes]:
    """The stack-side twin of ``_kernel_exchange``: round-robin over every connection per pump lock."""
    sent = [0] * len(conns)
    got: list[list[bytes]] = [[] for _ in conns]
    done = [False] * len(conns)
    end = time.monotonic() + timeout

    def step() -> bool:
        progress = False
        for i, c in enumerate(conns):
            if done[i]:
                continue
            if c.error is not None:
                raise AssertionError(f"connection {i}: {c.error!r}")
            if sent[i] < len(blobs[i]):
                n = c.send(memoryview(blobs[i])[sent[i]:sent[i] + 262144])
                sent[i] += n
                progress |= n > 0
                if sent[i] == len(blobs[i]):
                    c.shutdown_write()
            b = c.recv(262144)
            if b:
                got[i].append(b)
                progress = True
            elif c.at_eof and sent[i] == len(blobs[i]):
                c.close()
                done[i] = True
        return progress

    while not all(done):
        assert time.monotonic() < end, f"stack side stalled: {done.count(False)} connections open"
        if not pump.call(step):
            time.sleep(0.002)
    return [b"".join(g) for g in got]


def _check_pairing(up: list[bytes], down: list[bytes], kernel_got: list[bytes],
                   stack_got: list[bytes]) -> None:
    """Byte-exact, and the kernel socket that sent up[i] received the down blob of the same connection."""
    assert sorted(hashlib.sha256(b).digest() for b in stack_got) == sorted(
        hashlib.sha256(b).digest() for b in up)
    up_index = {b[:6]: i for i, b in enumerate(up)}
    for k, got in enumerate(stack_got):
        i = up_index[got[:6]]
        assert hashlib.sha256(kernel_got[i]).digest() == hashlib.sha256(down[k]).digest(), (i, k)


def _impaired_pump(tun: TunDevice, stack: Stack, seed: int) -> TunPump:
    return TunPump(tun, stack, Impairment(loss=0.02, duplicate=0.01, reorder=0.10, delay=0.020,
                                          seed=seed)).start()


def _listener_exchange(netns: Netns, pump: TunPump, stack: Stack, up: list[bytes], down: list[bytes],
                       port: int, timeout: float) -> None:
    """len(up) kernel clients → a stack listener, both directions at once on every connection."""
    lst = pump.call(lambda: stack.tcp_listen(port, backlog=len(up)))
    box: dict[str, Any] = {}

    def kernel() -> None:
        try:
            socks = netns.call(lambda: [socket.create_connection((STACK, port), timeout=30)
                                        for _ in range(len(up))])
            box["got"] = _kernel_exchange(socks, up, timeout)
            for s in socks:
                s.close()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=kernel)
    t.start()
    conns = []
    while len(conns) < len(up):
        c = _accept(pump, lst, timeout=60)
        assert c is not None, f"only {len(conns)} accepted ({box.get('error')!r})"
        conns.append(c)
    stack_got = _stack_exchange(pump, conns, down, timeout)
    t.join(timeout)
    assert "error" not in box, box["error"]
    _check_pairing(up, down, box["got"], stack_got)


def _dial_exchange(netns: Netns, pump: TunPump, stack: Stack, up: list[bytes], down: list[bytes],
                   port: int, timeout: float) -> None:
    """len(up) stack dials → a kernel server; ``up`` is what the kernel side sends."""
    srv = netns.call(lambda: socket.create_server((KERNEL, port), backlog=len(up)))
    box: dict[str, Any] = {}

    def kernel() -> None:
        try:
            srv.settimeout(60)
            socks = [srv.accept()[0] for _ in range(len(up))]
            box["got"] = _kernel_exchange(socks, up, timeout)
            for s in socks:
                s.close()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=kernel)
    t.start()
    conns = [pump.call(lambda: stack.tcp_connect((KERNEL, port), time.monotonic())) for _ in up]
    try:
        stack_got = _stack_exchange(pump, conns, down, timeout)
        t.join(timeout)
    finally:
        srv.close()
    assert "error" not in box, box["error"]
    _check_pairing(up, down, box["got"], stack_got)


def test_concurrent_exchange_helpers_without_impairment(netns: Netns, pump: TunPump, stack: Stack) -> None:
    """The drivers the impaired tests use, quickly, on a clean link (5 connections each way)."""
    up, down = _blobs(5, 100_000, b"ku"), _blobs(5, 70_000, b"sd")
    _listener_exchange(netns, pump, stack, up, down, 8500, 30)
    _dial_exchange(netns, pump, stack, up, down, 9500, 30)


@pytest.mark.serial
@pytest.mark.slow
@pytest.mark.timeout(360)
def test_64_mib_each_way_concurrently_under_impairment(netns: Netns, tun: TunDevice, stack: Stack) -> None:
    """Kernel → listener and stack dial → kernel at once, 64 MiB each; 2% loss, 10% reorder, 1% dup, 20 ms."""
    pump = _impaired_pump(tun, stack, seed=64)
    size = 64 << 20
    box: dict[str, Any] = {}

    def dial() -> None:
        try:
            _dial_exchange(netns, pump, stack, _blobs(1, 1000, b"kd"), _blobs(1, size, b"su"), 9600, 330)
        except BaseException as exc:
            box["error"] = exc

    t0 = time.monotonic()
    t = threading.Thread(target=dial)
    t.start()
    try:
        _listener_exchange(netns, pump, stack, _blobs(1, size, b"ku"), _blobs(1, 1000, b"sd"), 8600, 330)
        t.join(340)
    finally:
        pump.stop()
    assert "error" not in box, box["error"]
    assert pump.error is None, pump.error
    elapsed = time.monotonic() - t0
    print(f"64 MiB each way under impairment in {elapsed:.0f} s "
          f"({2 * size * 8 / elapsed / 1e6:.2f} Mbit/s aggregate), impairment {pump.impaired}")
    assert pump.impaired["lost"] > 1000 and pump.impaired["duplicated"] > 300


@pytest.mark.serial
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_100_concurrent_connections_each_way_under_impairment(netns: Netns, tun: TunDevice,
                                                              stack: Stack) -> None:
    """100 kernel clients → listener and 100 stack dials → kernel, 256 KiB each way on every one."""
    pump = _impaired_pump(tun, stack, seed=100)
    n, size = 100, 256 << 10
    try:
        _listener_exchange(netns, pump, stack, _blobs(n, size, b"ku"), _blobs(n, size, b"sd"), 8700, 130)
        _dial_exchange(netns, pump, stack, _blobs(n, size, b"kd"), _blobs(n, size, b"su"), 9700, 130)
    finally:
        pump.stop()
    assert pump.error is None, pump.error
    assert pump.impaired["lost"] > 500


@pytest.mark.serial
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kernel_to_kernel_reference_under_impairment(netns_factory: Any) -> None:
    """The limit: two kernels joined by a ``TunBridge`` with the same impairment, 16 MiB each way at once.

    Prints the rate so the stack's numbers can be put next to it (docs/performance.md).
    """
    a, b = netns_factory("ka"), netns_factory("kb")
    ta = open_tun(a, local="10.78.0.1", peer="10.78.0.2")
    tb = open_tun(b, local="10.78.0.2", peer="10.78.0.1")
    bridge = TunBridge(ta, tb, Impairment(loss=0.02, duplicate=0.01, reorder=0.10, delay=0.020, seed=7))
    bridge.start()
    size = 16 << 20
    up, down = _blobs(1, size, b"ku"), _blobs(1, size, b"kd")
    try:
        srv = b.call(lambda: socket.create_server(("10.78.0.2", 9800)))
        box: dict[str, Any] = {}

        def server() -> None:
            try:
                srv.settimeout(30)
                box["got"] = _kernel_exchange([srv.accept()[0]], down, 240)
            except BaseException as exc:
                box["error"] = exc

        t = threading.Thread(target=server)
        t.start()
        t0 = time.monotonic()
        cli = a.call(lambda: socket.create_connection(("10.78.0.2", 9800), timeout=30))
        got = _kernel_exchange([cli], up, 240)
        t.join(240)
        elapsed = time.monotonic() - t0
        cli.close()
        srv.close()
    finally:
        bridge.stop()
        ta.close()
        tb.close()
    assert "error" not in box, box["error"]
    assert bridge.error is None, bridge.error
    assert box["got"] == up and got == down
    print(f"kernel<->kernel 16 MiB each way under impairment in {elapsed:.1f} s: "
          f"{size * 8 / elapsed / 1e6:.2f} Mbit/s per direction, impairment {bridge.impaired}")
    assert bridge.impaired["lost"] > 100
