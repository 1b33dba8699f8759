"""A local tailnet inside the exit lab, its nodes, and what the exit-node end-to-end tests observe.

``exit_tailnet`` starts the lab (``pytsnet.testing.exitlab``) and a ``LocalTailnet`` in its hub;
``ExitNet.device`` starts an in-process node with every thread in a namespace, ``ExitNet.node_process``
a node in its own process there (so a test can SIGKILL it: an exit node that dies without a word).
``fetch`` is an HTTP/1.0 GET through a node; ``PacketCapture`` records every IPv4 packet a namespace
sends on any interface (AF_PACKET: no tcpdump on this machine), for the "nothing leaks" checks.

``sink``/``upload`` measure throughput (``bench/exit_node.py``). Run as ``python -m
pytsnet.testing.exitnet node CONFIG_JSON [SINK_PORT]`` to serve a node, ``... sink ADDR PORT`` for a
kernel sink (``ExitNet`` and the bench do this).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytsnet.testing.exitlab import HUB_ADDR, ExitLab, exit_lab
from pytsnet.testing.netns import Netns

__all__ = ["Captured", "ExitNet", "NodeProcess", "PacketCapture", "exit_tailnet", "fetch", "sink", "upload"]

EXIT_ROUTES = ["0.0.0.0/0", "::/0"]


@dataclass
class NodeProcess:
    """A node running in its own process inside a namespace (``ExitNet.node_process``)."""

    proc: subprocess.Popen[bytes]
    hostname: str
    address: str

    def kill(self) -> None:
        """SIGKILL: no reset, no goodbye to control or peers (its map stream just ends)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@dataclass
class ExitNet:
    lab: ExitLab
    net: Any  # LocalTailnet (imported lazily: the lab module stays light)
    tmp: Path
    key: str
    devices: list[Any] = field(default_factory=list)
    processes: list[NodeProcess] = field(default_factory=list)

    def _config(self, hostname: str, **cfg: Any) -> dict[str, Any]:
        return {"dir": str(self.tmp / hostname), "hostname": hostname, "auth_key": self.key,
                "control_url": self.net.control_url, "backoff_max": 1.0, "advertise_endpoints": False, **cfg}

    def device(self, ns: Netns, hostname: str, **cfg: Any) -> Any:
        """An ``ActorDevice`` started with its threads (and so its sockets) in ``ns``; running."""
        from pytsnet.config import Config
        from pytsnet.device import ActorDevice
        with ns.entered():
            dev = ActorDevice(Config(**self._config(hostname, **cfg))).start()
        self.devices.append(dev)
        dev.wait_until_running_blocking(30)
        return dev

    def node_process(self, ns: Netns, hostname: str, sink_port: int | None = None, **cfg: Any) -> NodeProcess:
        """A node in a child process inside ``ns``, running; its tailnet IPv4 is ``.address``. With
        ``sink_port`` it serves a ``sink`` on that tailnet port (for benchmarks)."""
        extra = [] if sink_port is None else [str(sink_port)]
        proc = ns.popen([sys.executable, "-m", "pytsnet.testing.exitnet", "node",
                         json.dumps(self._config(hostname, **cfg)), *extra],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().split()  # "running <ip>" once Running (or EOF if it died)
        if line[:1] != ["running"]:
            proc.kill()
            raise RuntimeError(f"node process {hostname} did not come up: {line}")
        node = NodeProcess(proc=proc, hostname=hostname, address=line[1])
        self.processes.append(node)
        return node

    def approve_exit(self, hostname: str) -> None:
        self.net.approve_routes(hostname, EXIT_ROUTES)


@contextlib.contextmanager
def exit_tailnet(tmp: Path, *, client_route: bool = False, prefix: str = "xn") -> Iterator[ExitNet]:
    """The exit lab with a local tailnet in its hub; every node started through it is stopped on exit."""
    from pytsnet.localnet.server import LocalTailnet
    with exit_lab(tmp, client_route=client_route, prefix=prefix) as lab:
        net = LocalTailnet(tmp / "ctl", listen=f"{HUB_ADDR}:0", keepalive_interval=5)
        w: ExitNet | None = None
        try:
            with lab.hub.entered():
                net.start()
            w = ExitNet(lab=lab, net=net, tmp=tmp, key=net.create_authkey(reusable=True))
            yield w
        finally:
            if w is not None:
                for p in w.processes:
                    p.kill()
                for d in w.devices:
                    d.close()
            net.close()


def fetch(dev: Any, host: str, port: int, path: str = "/", timeout: float = 30.0) -> bytes:
    """HTTP/1.0 GET through ``dev`` (a tailnet dial: by IP or name); the response body."""
    sock = dev.tcp_connect_blocking(host, port, timeout=timeout)
    sock.settimeout(timeout)
    try:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        raw = bytearray()
        while chunk := sock.recv(65536):
            raw += chunk
    finally:
        sock.close()
    head, _, body = bytes(raw).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200") and not head.startswith(b"HTTP/1.1 200"):
        raise AssertionError(f"GET {host}:{port}{path}: {head[:80]!r}")
    return body


# -- packet capture ------------------------------------------------------------------------------------
ETH_P_ALL, PACKET_OUTGOING = 0x0003, 4
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 65534


@dataclass(frozen=True)
class Captured:
    """One IPv4 packet the namespace sent: the interface, source, destination, IP protocol."""

    ifname: str
    src: str
    dst: str
    proto: int


class PacketCapture:
    """Every IPv4 packet ``ns`` sends on any of its interfaces, from ``start`` on (an AF_PACKET socket
    made inside the namespace sees all of its interfaces, outgoing included)."""

    def __init__(self, ns: Netns) -> None:
        self._ns = ns
        self._lock = threading.Lock()
        self._seen: list[Captured] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{ns.name}", daemon=True)

    def __enter__(self) -> PacketCapture:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("capture socket not open")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with self._ns.entered():
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.settimeout(0.1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._ready.set()
        with s:
            while not self._stop.is_set():
                try:
                    data, (ifname, _proto, pkttype, hatype, _addr) = s.recvfrom(65535)
                except TimeoutError:
                    continue
                if pkttype != PACKET_OUTGOING:
                    continue
                if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
                    if data[12:14] != b"\x08\x00":
                        continue
                    data = data[14:]
                elif hatype != ARPHRD_NONE:
                    continue
                if len(data) < 20 or data[0] >> 4 != 4:
                    continue
                proto = data[9]
                src, dst = (str(ipaddress.IPv4Address(x)) for x in struct.unpack_from("!4s4s", data, 12))
                with self._lock:
                    self._seen.append(Captured(ifname, src, dst, proto))

    def packets(self) -> list[Captured]:
        with self._lock:
            return list(self._seen)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def wait_for(self, dst: str, timeout: float = 5.0) -> bool:
        """True once a packet to ``dst`` was seen (the capture's own positive control)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(p.dst == dst for p in self.packets()):
                return True
            time.sleep(0.05)
        return False


# -- servers in their own processes (``python -m pytsnet.testing.exitnet node|sink ...``) ----------------
def sink(conn: Any) -> None:
    """Read to EOF, answer the byte count (a benchmark's receiver: the sender checks it got there)."""
    with conn:
        n = 0
        while chunk := conn.recv(1 << 20):
            n += len(chunk)
        conn.sendall(str(n).encode())


def upload(connect: Any, nbytes: int) -> float:
    """Send ``nbytes`` on the connection ``connect()`` opens to a ``sink``, half-close, check the
    count; MB/s (1e6 bytes) from connect to the count."""
    block = b"\x5a" * (256 * 1024)
    t0 = time.perf_counter()
    c = connect()
    try:
        c.settimeout(120)
        left = nbytes
        while left > 0:
            c.sendall(block[:min(left, len(block))])
            left -= min(left, len(block))
        c.shutdown(socket.SHUT_WR)
        got = int(c.recv(64) or b"0")
    finally:
        c.close()
    dt = time.perf_counter() - t0
    if got != nbytes:
        raise RuntimeError(f"sink got {got} of {nbytes} bytes")
    return nbytes / dt / 1e6


def _serve_node(config_json: str, sink_port: int | None) -> None:
    from pytsnet.config import Config
    from pytsnet.device import ActorDevice
    dev = ActorDevice(Config(**json.loads(config_json))).start()
    try:
        dev.wait_until_running_blocking(30)
        if sink_port is not None:
            listener = dev.listen_blocking(sink_port)

            def accept() -> None:
                while True:
                    conn = listener.accept()[0]
                    threading.Thread(target=sink, args=(conn,), daemon=True).start()
            threading.Thread(target=accept, daemon=True).start()
        print("running", dev.tailscale_ips()[0], flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or kills us)
    finally:
        dev.close()


def _serve_sink(addr: str, port: int) -> None:
    srv = socket.create_server((addr, port))
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=sink, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    if sys.argv[1:2] == ["node"] and len(sys.argv) in (3, 4):
        _serve_node(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else None)
    elif sys.argv[1:2] == ["sink"] and len(sys.argv) == 4:
        _serve_sink(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit("usage: python -m pytsnet.testing.exitnet node CONFIG_JSON [SINK_PORT]"
                         " | sink ADDR PORT")
