"""Chaos: forwarders of an exit node (issue 17, "Done when").

Killing one TcpForwarder mid-transfer resets only its flow (the kernel client sees a reset, the
other transfers finish intact); killing the ForwarderActor (the subtree's spawner) mid-transfer is
survived: the transfer in flight finishes, the actor restarts, and new flows are forwarded. First
in the router rig (kernel client via a TUN), then through a real exit node: A's device over
WireGuard to B's forwarders (``pytsnet.testing.exitnet``), where A's other flows must live on too.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytsnet.actors.runtime import FaultInjector
from pytsnet.device import ActorDevice
from pytsnet.netstack.forward import ForwardPolicy
from pytsnet.testing.exitlab import (
    ECHO_PORT,
    INTERNET_ADDR,
    WEB_BODY,
    WEB_PORT,
    ExitLab,
    TunRouter,
    echo_roundtrip,
    exit_lab,
    tun_router,
)
from pytsnet.testing.exitnet import exit_tailnet, fetch
from pytsnet.testing.netns import netns_available
from pytsnet.testing.polling import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.root]

SIZE = 6 * 1024 * 1024


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[ExitLab]:
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    with exit_lab(tmp_path, prefix="xc") as lab:
        yield lab


def slow_echo(blob: bytes, result: dict[int, object], i: int, started: threading.Event) -> None:
    """Upload in paced chunks (so the transfer is surely in flight when the fault hits), half-close,
    read the echo; the result is its SHA-256 or the errno."""
    try:
        with socket.create_connection((INTERNET_ADDR, ECHO_PORT), timeout=60) as c:
            got = bytearray()

            def reader() -> None:
                try:
                    while chunk := c.recv(65536):
                        got.extend(chunk)
                except OSError as e:
                    if e.errno != errno.EBADF:  # EBADF: the writer side already failed and closed it
                        result.setdefault(i, e.errno)

            t = threading.Thread(target=reader, daemon=True)
            t.start()
            started.set()
            for off in range(0, len(blob), 256 * 1024):
                c.sendall(blob[off:off + 256 * 1024])
                time.sleep(0.05)
            c.shutdown(socket.SHUT_WR)
            t.join(60)
            result.setdefault(i, hashlib.sha256(bytes(got)).hexdigest())
    except OSError as e:
        result.setdefault(i, e.errno)


def _during_transfers(threads: list[threading.Thread], started: list[threading.Event],
                      during: Callable[[], None]) -> None:
    """Start the transfer threads, call ``during`` once every transfer is under way, then join them."""
    for t in threads:
        t.start()
    for e in started:
        assert e.wait(30)
    time.sleep(0.3)
    during()
    for t in threads:
        t.join(120)


def run_clients(lab: ExitLab, blobs: list[bytes], during: Callable[[], None]) -> dict[int, object]:
    result: dict[int, object] = {}
    started = [threading.Event() for _ in blobs]

    def in_client(i: int) -> None:
        lab.client.call(lambda: slow_echo(blobs[i], result, i, started[i]))

    threads = [threading.Thread(target=in_client, args=(i,)) for i in range(len(blobs))]
    _during_transfers(threads, started, during)
    return result


def forwarders(r: TunRouter) -> list[str]:
    return sorted(name for _, name in ((f, n) for f, (n, _) in r.table._flows.items()) if "-tcp-" in name)


def test_killing_one_forwarder_resets_only_its_flow(lab: ExitLab) -> None:
    blobs = [hashlib.shake_256(b"chaos %d" % i).digest(SIZE) for i in range(3)]
    with tun_router(lab, ForwardPolicy(exit_node=True)) as r:
        victim: list[str] = []

        def kill_one() -> None:
            names = forwarders(r)
            assert len(names) == 3, names
            victim.append(names[0])
            ref = r.system.lookup(names[0])
            assert ref is not None
            FaultInjector.kill_now(ref, "chaos")

        result = run_clients(lab, blobs, kill_one)
        expected = {i: hashlib.sha256(b).hexdigest() for i, b in enumerate(blobs)}
        # the reset reaches the kernel client as ECONNRESET (reading) or EPIPE (writing after it)
        reset = [i for i, v in result.items() if v in (errno.ECONNRESET, errno.EPIPE)]
        assert len(reset) == 1, result
        assert all(result[i] == expected[i] for i in expected if i not in reset), result
        # the device (here: the router subtree) lives on: a new flow works
        assert lab.client.call(lambda: _echo_once(b"after")) == b"after"
        assert r.system.lookup(victim[0]) is None


def _echo_once(data: bytes) -> bytes:
    with socket.create_connection((INTERNET_ADDR, ECHO_PORT), timeout=20) as c:
        return echo_roundtrip(c, data)


def _forwarder_alive(r: TunRouter) -> bool:
    ref = r.system.lookup("forwarder")
    return ref is not None and ref.is_alive


def test_killing_the_forwarder_supervisor_mid_transfer_is_survived(lab: ExitLab) -> None:
    blobs = [hashlib.shake_256(b"sup %d" % i).digest(SIZE) for i in range(2)]
    with tun_router(lab, ForwardPolicy(exit_node=True)) as r:
        before = r.system.lookup("forwarder")
        assert before is not None

        def kill_sup() -> None:
            FaultInjector.kill_now(before, "chaos")

        result = run_clients(lab, blobs, kill_sup)
        assert result == {i: hashlib.sha256(b).hexdigest() for i, b in enumerate(blobs)}
        wait_until(lambda: _forwarder_alive(r), 10, "the forwarder restarted")
        assert lab.client.call(lambda: _echo_once(b"new flow")) == b"new flow"
        st = r.forwarder_status()
        assert st.counters["tcp_forwarded"] >= 3


def test_killing_the_forwarder_subtree_resets_its_flows_and_new_flows_work(lab: ExitLab) -> None:
    """The whole subtree (``forwarder.sup``) crashing: its flows are reset (nothing hangs, the kernel
    client sees a reset), its parent restarts it, and the next flow is forwarded."""
    blobs = [hashlib.shake_256(b"tree %d" % i).digest(SIZE) for i in range(2)]
    with tun_router(lab, ForwardPolicy(exit_node=True)) as r:
        sup = r.system.lookup("forwarder.sup")
        assert sup is not None

        def kill_tree() -> None:
            FaultInjector.kill_now(sup, "chaos")

        result = run_clients(lab, blobs, kill_tree)
        assert all(v in (errno.ECONNRESET, errno.EPIPE) for v in result.values()), result
        wait_until(lambda: _forwarder_alive(r), 10, "the forwarder restarted")
        assert lab.client.call(lambda: _echo_once(b"after restart")) == b"after restart"


# -- the same faults through a real exit node: A -> WireGuard -> B's forwarders -> the internet ---------
WG_SIZE = 3 * 1024 * 1024


@pytest.fixture
def wg_world(tmp_path: Path) -> Iterator[tuple[ActorDevice, ActorDevice]]:
    """A (client namespace) uses B (in-process exit node in the exit namespace) as its exit node."""
    if reason := netns_available():
        pytest.skip(reason)
    with exit_tailnet(tmp_path, prefix="xw") as w:
        b = w.device(w.lab.exit, "exit-b", advertise_exit_node=True)
        a = w.device(w.lab.client, "client")
        w.approve_exit("exit-b")
        wait_until(lambda: a.set_exit_node_blocking("exit-b") is not None, 20, "B engaged as A's exit node")
        yield a, b


def wg_slow_echo(a: ActorDevice, blob: bytes, result: dict[int, object], i: int,
                 started: threading.Event) -> None:
    """``slow_echo`` through A's device: the result is the echo's SHA-256, or "reset"."""
    try:
        c = a.tcp_connect_blocking(INTERNET_ADDR, ECHO_PORT, timeout=30)
        c.settimeout(60)
        got = bytearray()

        def reader() -> None:
            try:
                while chunk := c.recv(65536):
                    got.extend(chunk)
            except (ConnectionResetError, BrokenPipeError):
                result.setdefault(i, "reset")
            except OSError as e:
                if e.errno != errno.EBADF:
                    result.setdefault(i, repr(e))

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        started.set()
        for off in range(0, len(blob), 128 * 1024):
            c.sendall(blob[off:off + 128 * 1024])
            time.sleep(0.03)
        c.shutdown(socket.SHUT_WR)
        t.join(60)
        c.close()
        result.setdefault(i, hashlib.sha256(bytes(got)).hexdigest())
    except (ConnectionResetError, BrokenPipeError):
        result.setdefault(i, "reset")
    except OSError as e:
        result.setdefault(i, repr(e))


def wg_run_clients(a: ActorDevice, blobs: list[bytes], during: Callable[[], None]) -> dict[int, object]:
    result: dict[int, object] = {}
    started = [threading.Event() for _ in blobs]
    threads = [threading.Thread(target=wg_slow_echo, args=(a, blobs[i], result, i, started[i]))
               for i in range(len(blobs))]
    _during_transfers(threads, started, during)
    return result


class TailnetEcho:
    """A direct tailnet TCP connection A -> B (B's own listener, no forwarder): a flow of A's that a
    fault in B's forwarders must not touch."""

    def __init__(self, a: ActorDevice, b: ActorDevice) -> None:
        self.listener = b.listen_blocking(9100)

        def serve() -> None:
            conn = self.listener.accept()[0]
            with contextlib.suppress(OSError), conn:  # reset when the test's devices close
                while data := conn.recv(65536):
                    conn.sendall(data)

        threading.Thread(target=serve, daemon=True).start()
        self.sock = a.tcp_connect_blocking(b.tailscale_ips()[0], 9100, timeout=20)
        self.sock.settimeout(20)

    def roundtrip(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        got = b""
        while len(got) < len(data):
            got += self.sock.recv(65536)
        return got

    def close(self) -> None:
        self.sock.close()
        self.listener.close()


def b_forwarders(b: ActorDevice) -> list[str]:
    assert b.system is not None
    return sorted(n for n in b.system.names() if n.startswith("forwarder-tcp-"))


def wait_alive(b: ActorDevice, name: str) -> None:
    assert b.system is not None
    wait_until(lambda: (ref := b.system.lookup(name)) is not None and ref.is_alive, 10, f"{name} restarted")


def test_over_wireguard_killing_one_forwarder_resets_only_its_flow(
        wg_world: tuple[ActorDevice, ActorDevice]) -> None:
    a, b = wg_world
    other = TailnetEcho(a, b)
    blobs = [hashlib.shake_256(b"wg chaos %d" % i).digest(WG_SIZE) for i in range(3)]
    victim: list[str] = []

    def kill_one() -> None:
        names = b_forwarders(b)
        assert len(names) == 3, names
        victim.append(names[0])
        ref = b.system.lookup(names[0]) if b.system is not None else None
        assert ref is not None
        FaultInjector.kill_now(ref, "chaos")

    result = wg_run_clients(a, blobs, kill_one)
    expected = {i: hashlib.sha256(x).hexdigest() for i, x in enumerate(blobs)}
    reset = [i for i, v in result.items() if v == "reset"]
    assert len(reset) == 1, result
    assert all(result[i] == expected[i] for i in expected if i not in reset), result
    assert other.roundtrip(b"still here") == b"still here"
    assert _wg_echo_once(a, b"after") == b"after"
    assert b.system is not None and b.system.lookup(victim[0]) is None
    other.close()


def _wg_echo_once(a: ActorDevice, data: bytes) -> bytes:
    c = a.tcp_connect_blocking(INTERNET_ADDR, ECHO_PORT, timeout=20)
    c.settimeout(20)
    try:
        return echo_roundtrip(c, data)
    finally:
        c.close()


def test_over_wireguard_killing_the_forwarder_actor_mid_transfer_is_survived(
        wg_world: tuple[ActorDevice, ActorDevice]) -> None:
    """The ForwarderActor (the spawner) dies mid-transfer: the transfers in flight finish."""
    a, b = wg_world
    assert b.system is not None
    ref = b.system.lookup("forwarder")
    assert ref is not None
    blobs = [hashlib.shake_256(b"wg sup %d" % i).digest(WG_SIZE) for i in range(2)]
    result = wg_run_clients(a, blobs, lambda: FaultInjector.kill_now(ref, "chaos"))
    assert result == {i: hashlib.sha256(x).hexdigest() for i, x in enumerate(blobs)}
    wait_alive(b, "forwarder")
    assert _wg_echo_once(a, b"new flow") == b"new flow"


def test_over_wireguard_killing_the_forwarder_supervisor_mid_transfer_is_survived(
        wg_world: tuple[ActorDevice, ActorDevice]) -> None:
    """The exit node's whole forwarder subtree (``forwarder.sup``) dies mid-transfer: its flows are
    reset (A sees a reset, nothing hangs); A's direct tailnet flow to B and B's device live on; the
    subtree is restarted and a new fetch works."""
    a, b = wg_world
    assert b.system is not None
    other = TailnetEcho(a, b)
    sup = b.system.lookup("forwarder.sup")
    assert sup is not None
    blobs = [hashlib.shake_256(b"wg tree %d" % i).digest(WG_SIZE) for i in range(2)]
    result = wg_run_clients(a, blobs, lambda: FaultInjector.kill_now(sup, "chaos"))
    assert set(result.values()) == {"reset"}, result
    assert other.roundtrip(b"unaffected") == b"unaffected"
    assert b.status().state == "Running" and a.active_exit_node() is not None
    wait_alive(b, "forwarder")
    assert fetch(a, INTERNET_ADDR, WEB_PORT) == WEB_BODY
    assert _wg_echo_once(a, b"after restart") == b"after restart"
    other.close()
