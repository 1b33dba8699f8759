"""Isolated Linux network namespaces for tests, benchmarks and demos.

Every foreign peer (Go tsnet, wireguard-go, the kernel behind a TUN) runs in a namespace that we
created, with no default route, so nothing can reach a public address. A Python thread can also
*enter* a namespace (``setns`` is per thread): sockets and TUN devices it creates stay there, which
lets in-process nodes live in a namespace of their own.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

CLONE_NEWNET = 0x40000000
_T = TypeVar("_T")
_counter = itertools.count()
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsUnavailable(RuntimeError):
    """Namespaces need root and iproute2; tests skip with this reason when they are missing."""


def netns_available() -> str | None:
    """Return None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


def unique_tag() -> str:
    """A short tag, unique per process and call, for interface and namespace names (<=15 chars)."""
    return f"{os.getpid() % 10000:04d}{next(_counter) % 1000:03d}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


class Netns:
    """A network namespace with loopback up, its own resolv.conf, IPv6 off and no default route."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._procs: list[subprocess.Popen[bytes]] = []
        self._closed = False
        _ip("netns", "add", name)
        try:
            _ip("-n", name, "link", "set", "lo", "up")
            etc = Path("/etc/netns") / name
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
            self.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        except BaseException:
            self.close()
            raise

    # -- running things inside -------------------------------------------------------------
    def run(self, args: Sequence[str], *, check: bool = True, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *args], check=check,
                              capture_output=True, text=True, timeout=timeout, env=env)

    def sh(self, script: str, *, check: bool = True, timeout: float = 60) -> str:
        return self.run(["sh", "-c", script], check=check, timeout=timeout).stdout

    def popen(self, args: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a process in the namespace; it is killed when the namespace closes."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.name, *args], start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body with *this thread* inside the namespace; sockets made there stay there."""
        with open("/proc/thread-self/ns/net", "rb") as home, open(
                f"/run/netns/{self.name}", "rb") as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def call(self, fn: Callable[[], _T]) -> _T:
        """Call ``fn`` on a helper thread inside the namespace and return its result."""
        box: dict[str, object] = {}

        def runner() -> None:
            try:
                with self.entered():
                    box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc

        t = threading.Thread(target=runner, name=f"netns-{self.name}")
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def assert_no_route_out(self) -> None:
        out = self.run(["ip", "route", "get", "192.0.2.1"], check=False)
        if out.returncode == 0:
            raise AssertionError(f"namespace {self.name} has a route out: {out.stdout}")

    # -- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                with contextlib.suppress(Exception):
                    proc.wait(timeout=5)
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(Path("/etc/netns") / self.name, ignore_errors=True)

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def veth_pair(a: Netns, a_addr: str, b: Netns, b_addr: str, prefix: int = 24) -> tuple[str, str]:
    """Link two namespaces with a veth pair; returns the interface names (in a, in b)."""
    tag = unique_tag()
    ia, ib = f"va{tag}", f"vb{tag}"
    _ip("link", "add", ia, "netns", a.name, "type", "veth", "peer", "name", ib, "netns", b.name)
    _ip("-n", a.name, "addr", "add", f"{a_addr}/{prefix}", "dev", ia)
    _ip("-n", b.name, "addr", "add", f"{b_addr}/{prefix}", "dev", ib)
    _ip("-n", a.name, "link", "set", ia, "up")
    _ip("-n", b.name, "link", "set", ib, "up")
    return ia, ib


@contextlib.contextmanager
def isolated_netns(prefix: str = "pt") -> Iterator[Netns]:
    """A fresh namespace torn down on exit, whatever happened inside."""
    ns = Netns(f"{prefix}{unique_tag()}")
    try:
        ns.assert_no_route_out()
        yield ns
    finally:
        ns.close()
