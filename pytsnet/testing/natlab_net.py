"""A local tailnet in the NAT lab, Python nodes in its node namespaces, and what a cell measures.

``lab_tailnet`` starts ``LocalTailnet`` (control, DERP, STUN) in the lab's internet namespace on
``INTERNET_ADDR``; ``LabTailnet.device`` starts an in-process node with every thread (so every
socket) in a node namespace. ``run_cell`` is one traversal cell: A dials B's echo service, the path
A settles on (``direct``/``derp``) within a bound, and a byte-exact round trip of ``nbytes``.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytsnet.testing.natlab import INTERNET_ADDR, SECOND_ADDR, NatLab
from pytsnet.testing.netns import Netns
from pytsnet.testing.polling import wait_until

__all__ = ["CellResult", "LabTailnet", "add_far_stun_region", "lab_tailnet", "peer_path", "run_cell",
           "serve_echo"]

ECHO_PORT = 7100
SECOND_STUN_PORT = 3480
"""The second STUN server's port on ``SECOND_ADDR`` (3478/3479 there are the reflectors')."""


@dataclass
class LabTailnet:
    lab: NatLab
    net: Any  # LocalTailnet (imported lazily)
    tmp: Path
    key: str
    devices: list[Any] = field(default_factory=list)

    def device(self, ns: Netns, hostname: str, **cfg: Any) -> Any:
        """An ``ActorDevice`` with its threads in ``ns``, running (endpoints advertised, as Go)."""
        from pytsnet.config import Config
        from pytsnet.device import ActorDevice
        conf = {"dir": str(self.tmp / hostname), "hostname": hostname, "auth_key": self.key,
                "control_url": self.net.control_url, "backoff_max": 1.0, **cfg}
        with ns.entered():
            dev = ActorDevice(Config(**conf)).start()
        self.devices.append(dev)
        dev.wait_until_running_blocking(30)
        return dev


@contextlib.contextmanager
def lab_tailnet(lab: NatLab, tmp: Path) -> Iterator[LabTailnet]:
    """A local tailnet on the lab's internet segment; every device started through it is closed."""
    from pytsnet.localnet.server import LocalTailnet
    net = LocalTailnet(tmp / "ctl", listen=f"{INTERNET_ADDR}:0", keepalive_interval=5)
    w: LabTailnet | None = None
    try:
        with lab.internet.entered():
            net.start()
        w = LabTailnet(lab=lab, net=net, tmp=tmp, key=net.create_authkey(reusable=True))
        yield w
    finally:
        if w is not None:
            for d in w.devices:
                with contextlib.suppress(Exception):
                    d.close()
        net.close()


def serve_echo(dev: Any, port: int = ECHO_PORT) -> threading.Thread:
    """Echo every connection on tailnet ``port`` of ``dev`` until the peer's FIN (daemon threads)."""
    listener = dev.listen_blocking(port)

    def one(conn: Any) -> None:
        with contextlib.suppress(OSError):
            conn.settimeout(60)
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        conn.close()

    def accept_loop() -> None:
        with contextlib.suppress(Exception):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=one, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept_loop, name=f"echo-{port}", daemon=True)
    t.start()
    return t


def peer_path(dev: Any, peer_ip: str) -> tuple[str, str | None]:
    """``(path, addr)`` of ``dev``'s route to the peer with tailnet address ``peer_ip``."""
    for p in dev.status().peers:
        if any(a.split("/")[0] == peer_ip for a in p.addresses):
            return p.path, p.addr
    return "none", None


@dataclass
class CellResult:
    path: str
    """``direct`` or ``derp`` (A's route to B at the end of the cell)."""
    addr: str | None
    """The direct ``ip:port`` A uses, when direct."""
    time_to_direct: float | None
    """Seconds from the first dial until A's route was direct (None: never within the bound)."""
    transfer_ok: bool
    nbytes: int


def run_cell(a: Any, b: Any, *, nbytes: int = 256 * 1024, bound: float = 30.0,
             want_direct: bool = True) -> CellResult:
    """A dials B's echo service and pumps small round trips (disco needs traffic to try paths) until
    A's route is direct or ``bound`` passes (``want_direct=False``: a fixed 8 s look, so a later
    upgrade would be seen), then a byte-exact ``nbytes`` echo."""
    b_ip = b.tailscale_ips()[0]
    # B only just came up: A's netmap may not hold it yet, and a dial to an IP no peer has is refused
    # at once (UnknownTailnetHost, as Go's), so wait for the peer first, within the same bound
    wait_until(lambda: any(b_ip in (x.split("/")[0] for x in p.addresses) for p in a.status().peers),
               bound, f"A's netmap holding B ({b_ip})", interval=0.05)
    t0 = time.monotonic()
    sock = a.tcp_connect_blocking(b_ip, ECHO_PORT, timeout=bound)
    sock.settimeout(bound)
    direct_at: float | None = None
    look = bound if want_direct else min(bound, 8.0)
    try:
        while time.monotonic() - t0 < look:
            sock.sendall(b"ping")
            got = b""
            while len(got) < 4:
                chunk = sock.recv(4 - len(got))
                if not chunk:
                    raise ConnectionError("echo closed early")
                got += chunk
            if peer_path(a, b_ip)[0] == "direct":
                direct_at = time.monotonic() - t0
                if want_direct:
                    break
            time.sleep(0.2)
        payload = hashlib.sha256(b"natlab").digest() * (nbytes // 32)
        sent = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)),
                                daemon=True)
        sent.start()
        back = bytearray()
        while chunk := sock.recv(65536):
            back += chunk
        sent.join(bound)
    finally:
        sock.close()
    path, addr = peer_path(a, b_ip)
    return CellResult(path=path, addr=addr, time_to_direct=direct_at, transfer_ok=bytes(back) == payload,
                      nbytes=len(payload))



FAR_REGION_DELAY = 0.05
"""Seconds the second region's STUN server waits before answering: it is "far", so no node homes there."""


@contextlib.contextmanager
def add_far_stun_region(w: LabTailnet, region_id: int = 901) -> Iterator[Any]:
    """A second DERP region whose STUN server listens on ``SECOND_ADDR`` and answers
    ``FAR_REGION_DELAY`` late. Netcheck takes one answer per region (Go cancels a region's other
    probes at its first answer), so only a second region gives it two STUN destinations and lets it
    tell that a NAT's mapping varies by destination (Go's ``MappingVariesByDestIP``, which the
    hard-NAT ``EndpointSTUN4LocalPort`` guess needs). Being slower, the region is never anyone's home
    (Go and pytsnet both pick the lowest latency), and its DERP (``SECOND_ADDR`` on the relay's port,
    where nothing listens) is never dialled. Enter before the devices start; yields the
    ``StunServer``, closed on exit."""
    import asyncio
    import copy

    from pytsnet.localnet.stun_server import StunServer

    class FarStun(StunServer):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            asyncio.get_running_loop().call_later(FAR_REGION_DELAY, super().datagram_received, data, addr)

    async def start() -> StunServer:
        s = FarStun()
        await s.start(SECOND_ADDR, SECOND_STUN_PORT)  # on the tailnet's loop: in the internet namespace
        return s

    server = asyncio.run_coroutine_threadsafe(start(), w.net.loop).result(timeout=10)
    try:
        dm = copy.deepcopy(w.net.relay.derp_map)
        node = dict(next(iter(dm["Regions"].values()))["Nodes"][0])
        node.update(Name=f"{region_id}a", RegionID=region_id, HostName=SECOND_ADDR, IPv4=SECOND_ADDR,
                    IPv6="none", STUNPort=server.port)
        dm["Regions"][str(region_id)] = {"RegionID": region_id, "RegionCode": "far", "RegionName": "far away",
                                         "Nodes": [node]}
        w.net.set_derp_map(dm)
        yield server
    finally:
        w.net.loop.call_soon_threadsafe(server.close)
