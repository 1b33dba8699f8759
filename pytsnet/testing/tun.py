"""A TUN device inside a test namespace, and a thread that pumps it through a sans-IO stack.

The kernel owns one end (``local``, e.g. 10.77.0.1) and routes ``peer`` (10.77.0.2) into the TUN;
every ``read()`` of the fd is one IP packet the kernel sent, every ``write()`` injects one
(interop.md §3). ``TunPump`` feeds reads to ``Stack.receive`` and writes ``Stack.poll`` output,
sleeping no longer than ``Stack.next_deadline``. The stack is not thread-safe, so tests touch it only
through ``TunPump.call`` which runs under the pump's lock and wakes the loop afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import heapq
import os
import random
import select
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pytsnet.testing.netns import Netns, unique_tag

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
_T = TypeVar("_T")


def kernel_has_netem() -> bool:
    """True when the running kernel can do ``tc qdisc ... netem`` (many CI kernels cannot)."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return any(line.startswith("CONFIG_NET_SCH_NETEM=") for line in f)
    except OSError:
        return os.path.exists("/sys/module/sch_netem")


@dataclass(frozen=True)
class Impairment:
    """netem's loss/duplicate/reorder/delay applied by the pump itself, in both directions.

    As in netem, ``reorder`` is the share of packets sent at once while the rest wait ``delay``.
    Seeded, so a failing run can be replayed.
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    seed: int = 0


class SansIoStack(Protocol):
    def receive(self, ip_packet: bytes, now: float) -> None: ...
    def poll(self, now: float) -> list[bytes]: ...
    def next_deadline(self) -> float | None: ...


class TunDevice:
    """An open TUN fd living in ``ns``; closing the fd removes the interface."""

    def __init__(self, ns: Netns, fd: int, name: str, mtu: int) -> None:
        self.ns, self.fd, self.name, self.mtu = ns, fd, name, mtu
        os.set_blocking(fd, False)

    def read(self) -> bytes | None:
        """One packet, or None when nothing is waiting."""
        try:
            return os.read(self.fd, 65535)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        # A refused write is a drop, as on a full link; TCP retransmits.
        with contextlib.suppress(OSError):
            os.write(self.fd, packet)

    def set_netem(self, spec: str) -> None:
        """Shape what the kernel sends into the TUN, e.g. ``"loss 2% reorder 10% delay 20ms"``."""
        self.ns.sh(f"tc qdisc replace dev {self.name} root netem {spec}")

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def open_tun(ns: Netns, local: str = "10.77.0.1", peer: str = "10.77.0.2", mtu: int = 1280,
             name: str | None = None) -> TunDevice:
    """Create ``tunpyNNNN`` in ``ns`` with ``local`` peer ``peer``, up, IPv6 off."""
    ifname = name or f"tunpy{unique_tag()}"

    def make() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TUN | IFF_NO_PI))
        except BaseException:
            os.close(fd)
            raise
        return fd

    fd = ns.call(make)
    try:
        ns.sh(f"sysctl -qw net.ipv6.conf.{ifname}.disable_ipv6=1 || true")
        ns.sh(f"ip addr add {local} peer {peer} dev {ifname} && ip link set {ifname} mtu {mtu} up")
    except BaseException:
        os.close(fd)
        raise
    return TunDevice(ns, fd, ifname, mtu)


class TunPump:
    """A daemon thread moving packets between a ``TunDevice`` and a sans-IO stack."""

    def __init__(self, tun: TunDevice, stack: SansIoStack, impair: Impairment | None = None) -> None:
        self.tun, self.stack = tun, stack
        self.impair = impair
        self._rng = random.Random(impair.seed if impair else 0)
        self._delayed: list[tuple[float, int, bool, bytes]] = []  # (due, n, to_stack, packet)
        self._n = 0
        self.impaired = {"lost": 0, "duplicated": 0, "delayed": 0}
        self.lock = threading.RLock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"tunpump-{tun.name}", daemon=True)

    def start(self) -> TunPump:
        self._thread.start()
        return self

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` (which may touch the stack) under the lock, then let the pump flush."""
        with self.lock:
            result = fn()
        self.wake()
        return result

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def wait_until(self, pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.005) -> bool:
        """Poll ``pred`` (under the lock) until it holds or ``timeout`` passes."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.call(pred):
                return True
            time.sleep(interval)
        return self.call(pred)

    def _flush(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, to_stack, pkt = heapq.heappop(self._delayed)
            if to_stack:
                self.stack.receive(pkt, now)
            else:
                self.tun.write(pkt)
        for pkt in self.stack.poll(now):
            self._forward(pkt, False, now)

    def _forward(self, pkt: bytes, to_stack: bool, now: float) -> None:
        imp = self.impair
        copies = 1
        if imp is not None:
            if self._rng.random() < imp.loss:
                self.impaired["lost"] += 1
                return
            if self._rng.random() < imp.duplicate:
                self.impaired["duplicated"] += 1
                copies = 2
        for _ in range(copies):
            if imp is not None and imp.delay > 0 and self._rng.random() >= imp.reorder:
                self.impaired["delayed"] += 1
                self._n += 1
                heapq.heappush(self._delayed, (now + imp.delay, self._n, to_stack, pkt))
            elif to_stack:
                self.stack.receive(pkt, now)
            else:
                self.tun.write(pkt)

    def _run(self) -> None:
        try:
            while not self._stop:
                with self.lock:
                    now = time.monotonic()
                    self._flush(now)
                    deadline = self.stack.next_deadline()
                    if self._delayed and (deadline is None or self._delayed[0][0] < deadline):
                        deadline = self._delayed[0][0]
                timeout = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
                ready, _, _ = select.select([self.tun.fd, self._wake_r], [], [], timeout)
                if self._wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                if self.tun.fd in ready:
                    with self.lock:
                        for _ in range(256):  # batch, then flush replies before reading more
                            pkt = self.tun.read()
                            if pkt is None:
                                break
                            self._forward(pkt, True, time.monotonic())
        except BaseException as exc:  # surfaced to the test through .error
            self.error = exc

    def stop(self) -> None:
        self._stop = True
        self.wake()
        self._thread.join(timeout=5)
        os.close(self._wake_r)
        os.close(self._wake_w)


class TunBridge:
    """Two TUN devices (say, in two namespaces) joined by a thread applying the same ``Impairment``.

    Gives kernel↔kernel over the very link model ``TunPump`` gives the stack: the reference rate.
    """

    def __init__(self, a: TunDevice, b: TunDevice, impair: Impairment | None = None) -> None:
        self.a, self.b, self.impair = a, b, impair
        self._rng = random.Random(impair.seed if impair else 0)
        self._delayed: list[tuple[float, int, TunDevice, bytes]] = []
        self._n = 0
        self.impaired = {"lost": 0, "duplicated": 0, "delayed": 0}
        self._stop = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"tunbridge-{a.name}", daemon=True)

    def start(self) -> TunBridge:
        self._thread.start()
        return self

    def _forward(self, pkt: bytes, out: TunDevice, now: float) -> None:
        imp = self.impair
        if imp is None:
            out.write(pkt)
            return
        if self._rng.random() < imp.loss:
            self.impaired["lost"] += 1
            return
        copies = 1
        if self._rng.random() < imp.duplicate:
            self.impaired["duplicated"] += 1
            copies = 2
        for _ in range(copies):
            if imp.delay > 0 and self._rng.random() >= imp.reorder:
                self.impaired["delayed"] += 1
                self._n += 1
                heapq.heappush(self._delayed, (now + imp.delay, self._n, out, pkt))
            else:
                out.write(pkt)

    def _run(self) -> None:
        try:
            while not self._stop:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, out, pkt = heapq.heappop(self._delayed)
                    out.write(pkt)
                timeout = 0.2 if not self._delayed else max(0.0, min(0.2, self._delayed[0][0] - now))
                ready, _, _ = select.select([self.a.fd, self.b.fd], [], [], timeout)
                for src, dst in ((self.a, self.b), (self.b, self.a)):
                    if src.fd in ready:
                        for _ in range(256):
                            got = src.read()
                            if got is None:
                                break
                            self._forward(got, dst, time.monotonic())
        except BaseException as exc:  # surfaced to the test through .error
            self.error = exc

    def stop(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
