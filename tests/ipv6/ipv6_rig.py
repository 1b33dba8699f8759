"""Shared by the IPv6 tests: fast disco timings, a byte-exact TCP transfer over the tailnet, and
reading a node's magicsock socket and path."""

from __future__ import annotations

import hashlib
import socket
import threading
from typing import Any

from pytsnet.device import ActorDevice
from pytsnet.messages.magicsock import LocalAddr, LocalAddrRequest, PeerPath
from pytsnet.testing.polling import wait_until
from pytsnet.wire.magicsock.endpoint import Timings

FAST = Timings(heartbeat=0.5, trust=2.0, upgrade=1.0, ping_timeout=1.0, ping_interval=0.5,
               session_active=10.0)
FAST_NODE: dict[str, Any] = {"timings": FAST, "stun_interval": (2.0, 3.0), "backoff_max": 1.0}


def payload(n: int, seed: bytes) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest() * 64
        i += 1
    return bytes(out[:n])


def transfer(src: ActorDevice, dst: ActorDevice, n: int, port: int = 7100, timeout: float = 60.0) -> bytes:
    """``n`` bytes ``src`` → ``dst`` over one tailnet TCP connection; what ``dst`` read to EOF."""
    data = payload(n, b"ipv6")
    lst = dst.listen_blocking(port)
    got = bytearray()
    err: list[BaseException] = []

    def serve() -> None:
        try:
            lst.settimeout(timeout)
            conn, _ = lst.accept()
            conn.settimeout(timeout)
            while chunk := conn.recv(65536):
                got.extend(chunk)
            conn.close()
        except BaseException as e:  # reported by the caller
            err.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    s = src.tcp_connect_blocking(dst.tailscale_ips()[0], port, timeout=timeout)
    s.settimeout(timeout)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    t.join(timeout)
    s.close()
    lst.close()
    assert not err, err
    assert not t.is_alive(), "receiver still reading"
    return bytes(got)


def peer_path(dev: ActorDevice) -> PeerPath:
    """``dev``'s path to its one peer, as the magicsock router reports it."""
    peers = dev.status().peers
    assert len(peers) == 1, peers
    return peers[0]  # type: ignore[return-value]


def wait_direct(dev: ActorDevice, timeout: float = 30.0) -> str:
    """Wait until ``dev`` goes direct to its peer; the UDP address it uses."""
    wait_until(lambda: dev.status().peers and dev.status().peers[0].path == "direct", timeout, "direct path")
    addr = dev.status().peers[0].addr
    assert addr is not None
    return addr


def udp_local_addr(dev: ActorDevice) -> str:
    """The magicsock socket's bound address (``[::]:41641`` for a dual-stack one)."""
    assert dev.system is not None
    ref = dev.system.lookup("magicsock.udp")
    assert ref is not None
    ans = ref.ask(LocalAddrRequest(), timeout=5)
    assert isinstance(ans, LocalAddr)
    return ans.addr
