"""The Python stack (10.77.0.2) against the Linux kernel (10.77.0.1) through a TUN (interop.md §3)."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterator

import pytest
from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.interface import Stack

from pytsnet.testing.netns import Netns
from pytsnet.testing.tun import TunDevice, TunPump, open_tun

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
