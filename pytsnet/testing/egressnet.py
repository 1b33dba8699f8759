"""A LocalTailnet on loopback with a byte source on it, for the egress's end-to-end tests and bench.

The source is a Python node, ``src``, in the calling process: on ``SOURCE_PORT`` a client sends 16
bytes (size and seed, big-endian ``u64`` each) and gets ``size`` bytes of ``payload(seed, size)`` back,
then the end of the stream; the source records which tailnet address asked for each seed, so a test
knows which egress worker carried a flow (``WorkerStatus.ip``). On ``ECHO_PORT`` it echoes.

Clients reach it through the egress's SOCKS5 listener (``socks_connect``): the front only does the
handshake, the worker (an ephemeral node of this tailnet) dials ``src``. The tailnet's ephemeral grace
is short (``EPHEMERAL_GRACE``) so a SIGKILLed worker's node is reaped within a test.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytsnet.device import ActorDevice
from pytsnet.egress.config import EgressConfig, parse_hostport
from pytsnet.localnet.server import LocalTailnet
from pytsnet.net import SocketLike
from pytsnet.testing.streams import accept_in_threads, echo
from pytsnet.testing.tailnet import local_tailnet

__all__ = ["ECHO_PORT", "EPHEMERAL_GRACE", "SOURCE_PORT", "EgressNet", "children", "digest", "egress_net",
           "fetch", "open_fds", "payload", "socks_connect"]

SOURCE_PORT, ECHO_PORT = 7100, 7000
EPHEMERAL_GRACE = 1.0
_HEAD = struct.Struct(">QQ")
_CHUNK = 256 * 1024


def payload(seed: int, size: int) -> bytes:
    """The bytes the source sends for ``seed`` (deterministic, incompressible)."""
    return random.Random(seed).randbytes(size)


def digest(seed: int, size: int) -> str:
    return hashlib.sha256(payload(seed, size)).hexdigest()


@dataclass
class EgressNet:
    net: LocalTailnet
    src: ActorDevice
    tmp: Path
    key: str
    """A reusable, ephemeral auth key: the workers'."""
    stop: threading.Event = field(default_factory=threading.Event)
    asked: dict[int, str] = field(default_factory=dict)
    """seed → the tailnet address that asked for it (the worker that carried the flow)."""

    @property
    def src_ip(self) -> str:
        return self.src.tailscale_ips()[0]

    def config(self, **kw: Any) -> EgressConfig:
        """An ``EgressConfig`` of real workers on this tailnet (loopback listeners, quick heartbeats)."""
        base: dict[str, Any] = {"auth_key": self.key, "control_url": self.net.control_url,
                                "socks": "127.0.0.1:0", "http": "127.0.0.1:0", "bind_host": "127.0.0.1",
                                "heartbeat_interval": 0.2, "up_timeout": 30.0, "dial_timeout": 10.0}
        return EgressConfig(**(base | kw))

    def node_ids(self, prefix: str = "egress") -> set[int]:
        """IDs of the tailnet's nodes whose hostname starts with ``prefix`` (the workers' nodes)."""
        return {n.id for n in self.net.nodes() if n.hostname.startswith(prefix)}


def _source(en: EgressNet, conn: SocketLike) -> None:
    conn.settimeout(30)
    try:
        head = b""
        while len(head) < _HEAD.size:
            chunk = conn.recv(_HEAD.size - len(head))
            if not chunk:
                return
            head += chunk
        size, seed = _HEAD.unpack(head)
        en.asked[seed] = str(conn.getpeername()[0])
        data = payload(seed, size)
        for off in range(0, size, _CHUNK):
            conn.sendall(data[off:off + _CHUNK])
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):  # the client closes after reading everything
                pass
    except OSError:
        pass
    finally:
        conn.close()


@contextmanager
def egress_net(tmp: Path, **net_options: Any) -> Iterator[EgressNet]:
    """The tailnet (``ephemeral_grace=EPHEMERAL_GRACE`` unless given) with ``src`` serving."""
    opts = {"ephemeral_grace": EPHEMERAL_GRACE, **net_options}
    with local_tailnet(tmp, ["src"], net_options=opts) as tn:
        en = EgressNet(tn.net, tn["src"], tmp, tn.net.create_authkey(reusable=True, ephemeral=True))
        accept_in_threads(en.src.listen_blocking(SOURCE_PORT), en.stop, lambda conn: _source(en, conn))
        accept_in_threads(en.src.listen_blocking(ECHO_PORT), en.stop, echo)
        try:
            yield en
        finally:
            en.stop.set()


def _read_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return out


def socks_connect(proxy: str, host: str, port: int, timeout: float = 30.0) -> socket.socket:
    """A SOCKS5 CONNECT (no auth) through ``proxy`` (``HOST:PORT``); ``ConnectionError`` if refused."""
    sock = socket.create_connection(parse_hostport(proxy), timeout=timeout)
    try:
        sock.sendall(b"\x05\x01\x00")
        if _read_exact(sock, 2) != b"\x05\x00":
            raise ConnectionError("SOCKS5 method refused")
        addr = socket.inet_aton(host)
        sock.sendall(b"\x05\x01\x00\x01" + addr + struct.pack(">H", port))
        rep = _read_exact(sock, 4)
        if rep[1] != 0:
            raise ConnectionError(f"SOCKS5 REP {rep[1]}")
        _read_exact(sock, {1: 4, 4: 16}.get(rep[3], 0) + 2)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Fetch:
    """One transfer from the source: ``received`` bytes so far, their hash, how it ended."""

    seed: int
    size: int
    received: int = 0
    error: str | None = None
    hasher: Any = field(default_factory=hashlib.sha256)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def exact(self) -> bool:
        return self.error is None and self.received == self.size and \
            self.hasher.hexdigest() == digest(self.seed, self.size)


def fetch(sock: socket.socket, seed: int, size: int, gate: threading.Event | None = None,
          after: int = 0) -> Fetch:
    """Ask the source for ``size`` bytes of ``seed`` over ``sock`` (already through the proxy) and read
    them on a thread; with ``gate``, reading pauses after ``after`` bytes until the gate is set (the
    flow stays open mid-transfer, the source blocked on flow control)."""
    f = Fetch(seed, size)

    def run() -> None:
        paused = gate
        try:
            sock.sendall(_HEAD.pack(size, seed))
            while f.received < size:
                if paused is not None and f.received >= after:
                    paused.wait()
                    paused = None
                chunk = sock.recv(min(65536, size - f.received))
                if not chunk:
                    f.error = f"EOF after {f.received} of {size} bytes"
                    break
                f.hasher.update(chunk)
                f.received += len(chunk)
        except OSError as e:
            f.error = f"{type(e).__name__} after {f.received} of {size} bytes"
        finally:
            sock.close()
            f.done.set()

    threading.Thread(target=run, name=f"fetch-{seed}", daemon=True).start()
    return f


def open_fds() -> int:
    """This process's open file descriptors."""
    return len(os.listdir("/proc/self/fd"))


def children(pid: int | None = None) -> set[int]:
    """The live child processes of ``pid`` (this process by default)."""
    pid = os.getpid() if pid is None else pid
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                out |= {int(c) for c in f.read().split()}
    return out
