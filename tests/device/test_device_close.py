"""Issue 11 part 4: ``close()`` ends every open flow so peers see it at once, races with ``start()``
safely, and leaves no thread, fd or socket behind (Go issue #14808's class of leak).

Two Python devices on a LocalTailnet on loopback (direct path allowed). The peer's side of a stream
must fail within a second of the other device's ``close()``, whether it is blocked reading or
blocked writing into a full window: before the fix the RST died in a mailbox and the peer waited
for its own timeouts (minutes).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from device_helpers import eventually

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import DeviceClosed
from pytsnet.localnet.server import LocalTailnet
from pytsnet.net import SocketLike

SEEN_WITHIN = 1.0
PORT = 7100


def _device(net: LocalTailnet, tmp: Path, name: str) -> ActorDevice:
    return ActorDevice(Config(dir=tmp / name, hostname=name, auth_key=net.create_authkey(),
                              control_url=net.control_url, backoff_max=1.0, bind_host="127.0.0.1"))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[LocalTailnet, ActorDevice, ActorDevice]]:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        a, b = _device(net, tmp_path, "alpha").start(), _device(net, tmp_path, "beta").start()
        try:
            a.wait_until_running_blocking(20)
            b.wait_until_running_blocking(20)
            eventually(lambda: len(a.peers()) == 1 and len(b.peers()) == 1, 20, "each sees the other")
            yield net, a, b
        finally:
            a.close()
            b.close()


def _connected(a: ActorDevice, b: ActorDevice) -> tuple[SocketLike, SocketLike]:
    """A stream dialed by ``a``, accepted by ``b``, carrying a byte each way."""
    lst = b.listen_blocking(PORT)
    ca = a.tcp_connect_blocking("beta", PORT, timeout=15)
    cb, _ = lst.accept()
    ca.sendall(b"x")
    assert cb.recv(1) == b"x"
    cb.sendall(b"y")
    assert ca.recv(1) == b"y"
    return ca, cb


def _time_until_error(op: Callable[[], object], close: Callable[[], None]) -> tuple[float, BaseException]:
    """Run the blocking ``op`` on a thread, ``close`` here; seconds from close's start to op's error."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            op()
            box["error"] = AssertionError("op returned instead of failing")
        except BaseException as e:
            box["error"] = e
        box["t"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.3)  # op is blocked by now
    assert t.is_alive(), box
    t0 = time.monotonic()
    close()
    t.join(10)
    assert not t.is_alive(), "the peer never noticed the close"
    return float(box["t"]) - t0, box["error"]  # type: ignore[arg-type]


def test_peer_blocked_writing_sees_close_within_a_second(pair: tuple[LocalTailnet, ActorDevice, ActorDevice]
                                                         ) -> None:
    _, a, b = pair
    ca, cb = _connected(a, b)
    chunk = b"z" * 65536

    def write_forever() -> None:  # alpha never reads: the window closes and sendall blocks
        while True:
            cb.sendall(chunk)

    took, err = _time_until_error(write_forever, a.close)
    assert isinstance(err, ConnectionResetError), repr(err)
    assert took < SEEN_WITHIN, took
    with pytest.raises(ConnectionAbortedError):  # the closed side's stream says why, after what it had
        for _ in range(1000):
            assert ca.recv(1 << 20), "EOF instead of an error"


def test_peer_blocked_reading_sees_close_within_a_second(pair: tuple[LocalTailnet, ActorDevice, ActorDevice]
                                                         ) -> None:
    _, a, b = pair
    ca, cb = _connected(a, b)
    took, err = _time_until_error(lambda: cb.recv(1) or (_ for _ in ()).throw(EOFError("EOF")), a.close)
    assert isinstance(err, ConnectionResetError), repr(err)
    assert took < SEEN_WITHIN, took
    ca.close()


Pair = tuple[LocalTailnet, ActorDevice, ActorDevice]


def test_accepting_side_closing_resets_the_dialer(pair: Pair) -> None:
    _, a, b = pair
    ca, _ = _connected(a, b)
    took, err = _time_until_error(lambda: ca.recv(1) or (_ for _ in ()).throw(EOFError("EOF")), b.close)
    assert isinstance(err, ConnectionResetError), repr(err)
    assert took < SEEN_WITHIN, took


# -- leaks --------------------------------------------------------------------------------------------
def _resources() -> tuple[int, int, int]:
    """(OS threads, open fds, sockets) of this process."""
    fds = os.listdir("/proc/self/fd")
    socks = 0
    for fd in fds:
        with contextlib.suppress(OSError):  # an fd closed since listdir
            socks += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return len(os.listdir("/proc/self/task")), len(fds), socks


def _back_to(baseline: tuple[int, int, int]) -> None:
    def settled() -> bool:
        now = _resources()
        return all(n <= b for n, b in zip(now, baseline, strict=True))
    try:
        eventually(settled, 15, "threads/fds/sockets back to baseline")
    except AssertionError:
        names = sorted(t.name for t in threading.enumerate())
        raise AssertionError(f"baseline {baseline}, now {_resources()}; threads {names}") from None


@pytest.mark.timeout(400)  # ~30 s alone; generous for a loaded machine
def test_fifty_open_close_cycles_leave_nothing_behind(tmp_path: Path) -> None:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        key = net.create_authkey(reusable=True)

        def cycle(i: int, stream: bool) -> None:
            dev = ActorDevice(Config(dir=tmp_path / "node", hostname="cycler", auth_key=key,
                                     control_url=net.control_url, bind_host="127.0.0.1")).start()
            try:
                dev.wait_until_running_blocking(20)
                if stream:
                    lst = dev.listen_blocking(PORT)
                    lst.close()
            finally:
                dev.close()

        cycle(0, True)  # warm up: lazily created process-wide things (pools, caches) exist from now
        baseline = _resources()
        for i in range(50):
            cycle(i, i % 5 == 0)
        _back_to(baseline)


def test_close_racing_start_is_safe_and_leaks_nothing(tmp_path: Path) -> None:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        key = net.create_authkey(reusable=True)
        baseline = _resources()
        outcomes: set[str] = set()
        for i in range(20):
            dev = ActorDevice(Config(dir=tmp_path / f"r{i}", hostname=f"r{i}", auth_key=key,
                                     control_url=net.control_url, bind_host="127.0.0.1"))
            result: dict[str, str] = {}

            def start(dev: ActorDevice = dev, result: dict[str, str] = result) -> None:
                try:
                    dev.start()
                    result["start"] = "started"
                except DeviceClosed:
                    result["start"] = "refused"

            t = threading.Thread(target=start)
            t.start()
            if i % 2:
                time.sleep(0.002 * i)
            dev.close()
            t.join(15)
            assert not t.is_alive()
            outcomes.add(result["start"])
            assert dev.state.state == "Stopped"
            with pytest.raises(DeviceClosed):
                dev.start()
        _back_to(baseline)
