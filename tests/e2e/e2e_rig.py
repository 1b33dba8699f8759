"""Two Python devices on a LocalTailnet (with its DERP relay + STUN) on loopback, and transfer helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from pytsnet.device import ActorDevice
from pytsnet.errors import UnknownTailnetHost
from pytsnet.localnet.server import LocalTailnet
from pytsnet.messages.magicsock import UdpBlackhole
from pytsnet.testing.polling import wait_until
from pytsnet.testing.tailnet import local_tailnet, new_device
from pytsnet.wire.magicsock.endpoint import Timings

FAST = Timings(heartbeat=0.5, trust=1.5, session_active=10.0, upgrade=5.0, ping_timeout=0.8,
               ping_interval=0.3)
"""Go's disco timings shortened so upgrades and fallbacks happen in test time (same rules)."""


@dataclass
class Pair:
    net: LocalTailnet
    a: ActorDevice
    b: ActorDevice

    def ip(self, dev: ActorDevice) -> str:
        return dev.tailscale_ips()[0]


def _config(direct: bool) -> dict[str, Any]:
    return {"advertise_endpoints": direct, "timings": FAST, "stun_interval": (2.0, 3.0)}


def make_device(net: LocalTailnet, tmp: Path, name: str, *, direct: bool = True,
                ipv6: bool = False) -> ActorDevice:
    """``ipv6``: ``Config.ipv6`` (24d: a tailnet's IPv6 addresses are used only when the node opts in)."""
    return new_device(net, tmp, name, ipv6=ipv6, **_config(direct)).start()


@contextmanager
def tailnet_pair(tmp: Path, *, direct: bool = True, timeout: float = 20.0,
                 derp_tls: bool = False) -> Iterator[Pair]:
    """``alpha`` and ``beta``; with ``direct=False`` their UDP is cut from the start (DERP only)."""
    cut = None if direct else (lambda d: blackhole(d, True))
    with local_tailnet(tmp, ["alpha", "beta"], timeout=timeout, net_options={"derp_tls": derp_tls},
                       on_start=cut, **_config(direct)) as tn:
        yield Pair(tn.net, tn["alpha"], tn["beta"])


def blackhole(dev: ActorDevice, on: bool) -> None:
    """Drop every datagram read from ``dev``'s UDP socket (direct path and STUN cut; DERP is TCP)."""
    wait_until(lambda: dev.system is not None and dev.system.lookup("magicsock.udp") is not None, 20,
               "magicsock up")
    assert dev.system is not None
    ref = dev.system.lookup("magicsock.udp")
    assert ref is not None
    ref.tell(UdpBlackhole(enabled=on))



def payload(n: int, seed: bytes) -> bytes:
    """Deterministic non-repeating bytes (SHA-256 counter stream)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest() * 64
        i += 1
    return bytes(out[:n])


async def send_and_echo_digest(stream: object, data: bytes) -> None:
    """Write ``data`` then half-close (the peer reads to EOF)."""
    s = stream
    for i in range(0, len(data), 65536):
        await s.send(data[i:i + 65536])  # type: ignore[attr-defined]
    await s.send_eof()  # type: ignore[attr-defined]


def wait_resolves(dev: ActorDevice, name: str, addrs: list[str], what: str, timeout: float = 20.0) -> None:
    """Wait until ``dev``'s resolver answers ``name`` with ``addrs`` (a DNS config reached its netmap)."""
    def answers() -> bool:
        try:
            return dev.lookup_blocking(name) == addrs
        except UnknownTailnetHost:
            return False
    wait_until(answers, timeout, what)


async def serve_http_body(lst: object, body: bytes, served: list[bytes]) -> None:
    """Answer each connection accepted on ``lst`` with one ``200`` carrying ``body`` (then close),
    recording each request's head in ``served``; runs until cancelled."""
    async def one(s: object) -> None:
        req = bytearray()
        while b"\r\n\r\n" not in req:
            req += await s.receive(65536)  # type: ignore[attr-defined]
        served.append(bytes(req))
        await s.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"  # type: ignore[attr-defined]
                     + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await s.aclose()  # type: ignore[attr-defined]

    async with anyio.create_task_group() as tg:
        while True:
            tg.start_soon(one, await lst.accept())  # type: ignore[attr-defined]


async def read_all(stream: object, limit: int = 1 << 30) -> bytes:
    buf = bytearray()
    while True:
        try:
            chunk = await stream.receive(65536)  # type: ignore[attr-defined]
        except anyio.EndOfStream:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise AssertionError("more bytes than sent")


@dataclass
class Exchange:
    sent_ab: bytes
    got_ab: bytes
    sent_ba: bytes
    got_ba: bytes


async def exchange(pair: Pair, n: int, *, port: int = 7000, during: Callable[[], object] | None = None,
                   by_name: bool = True) -> Exchange:
    """``n`` bytes a→b and ``n`` bytes b→a at the same time on two connections (each dialed by the
    sender, read to EOF by the listener). ``during`` runs in a thread once a quarter has arrived."""
    a, b = pair.a, pair.b
    ab, ba = payload(n, b"a->b"), payload(n, b"b->a")
    got: dict[str, bytes] = {}
    progress = {"ab": 0, "ba": 0}
    la, lb = await a.listen(port), await b.listen(port)

    async def serve(lst: object, key: str) -> None:
        s = await lst.accept()  # type: ignore[attr-defined]
        buf = bytearray()
        while True:
            try:
                buf += await s.receive(65536)
            except anyio.EndOfStream:
                break
            progress[key] = len(buf)
        got[key] = bytes(buf)
        await s.aclose()

    async def dial(src: ActorDevice, dst: ActorDevice, data: bytes) -> None:
        host = dst.config.hostname if by_name else dst.tailscale_ips()[0]
        s = await src.tcp_connect(str(host), port)
        await send_and_echo_digest(s, data)
        await s.drain()

    async def chaos() -> None:
        while min(progress.values()) < n // 4:
            await anyio.sleep(0.02)
        assert during is not None
        await anyio.to_thread.run_sync(during)

    with anyio.fail_after(240):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, lb, "ab")
            tg.start_soon(serve, la, "ba")
            tg.start_soon(dial, a, b, ab)
            tg.start_soon(dial, b, a, ba)
            if during is not None:
                tg.start_soon(chaos)
    await la.aclose()
    await lb.aclose()
    return Exchange(ab, got["ab"], ba, got["ba"])


def peer_row(dev: ActorDevice) -> object:
    [row] = dev.status().peers
    return row
