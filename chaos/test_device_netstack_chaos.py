"""Chaos: a device's NetstackActor killed mid-transfer, through the whole data plane (WireGuard over a
local tailnet); every concurrent flow finishes byte-exact and the restart is observed.

The device tree spawns the netstack subtree under the data-plane supervisor (``pytsnet/tree.py``);
the receiving node's NetstackActor is killed while several uploads are in flight. Its flow actors
are siblings under ``netstack.sup`` and the restarted incarnation re-adopts them, so each upload's
SHA-256 matches and the sender reads back the digest it expects on every connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import anyio

from pytsnet import ActorDevice, Config
from pytsnet.actors.runtime import FaultInjector
from pytsnet.messages.netstack import NetstackStatusRequest
from pytsnet.net.stream import TcpStream

FLOWS, SIZE, PORT = 3, 2 * 1024 * 1024, 7600


def test_killing_a_devices_netstack_keeps_every_flow(device_config: Callable[[str], Config]) -> None:
    cfg = device_config

    blobs = [i.to_bytes(4, "big") + hashlib.shake_256(b"dev %d" % i).digest(SIZE - 4) for i in range(FLOWS)]
    want = {i: hashlib.sha256(b).hexdigest() for i, b in enumerate(blobs)}
    at_server: dict[int, str] = {}
    echoed: dict[int, str] = {}
    received = {"n": 0}
    restart: dict[str, int] = {}

    async def main() -> None:
        async with ActorDevice(cfg("up")) as a, ActorDevice(cfg("down")) as b:
            await a.up(30)
            await b.up(30)
            assert b.system is not None
            ns = b.system.lookup("netstack")
            assert ns is not None
            listener = await b.listen(PORT)

            async def serve(conn: TcpStream) -> None:
                h, first = hashlib.sha256(), b""
                while True:
                    try:
                        chunk = await conn.receive()
                    except anyio.EndOfStream:
                        break
                    first += chunk[: max(0, 4 - len(first))]
                    h.update(chunk)
                    received["n"] += len(chunk)
                at_server[int.from_bytes(first, "big")] = h.hexdigest()
                await conn.send(h.hexdigest().encode())
                await conn.aclose()

            async def upload(i: int) -> None:
                stream = await a.tcp_connect("down", PORT, timeout=20)
                for off in range(0, SIZE, 64 * 1024):
                    await stream.send(blobs[i][off:off + 64 * 1024])
                await stream.send_eof()
                reply = b""
                while True:
                    try:
                        reply += await stream.receive()
                    except anyio.EndOfStream:
                        break
                echoed[i] = reply.decode()
                await stream.aclose()

            async def kill_mid_transfer() -> None:
                while received["n"] < FLOWS * SIZE // 3:
                    await anyio.sleep(0.002)
                FaultInjector.kill_now(ns, "chaos: the device's netstack mid-transfer")
                while not (ns.incarnation == 2 and ns.is_alive):
                    await anyio.sleep(0.002)
                restart["adopted"] = ns.ask(NetstackStatusRequest(), timeout=10).adopted

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    async def accept_all() -> None:
                        for _ in range(FLOWS):
                            tg.start_soon(serve, await listener.accept())
                    tg.start_soon(accept_all)
                    tg.start_soon(kill_mid_transfer)
                    for i in range(FLOWS):
                        tg.start_soon(upload, i)
            restart["incarnation"] = ns.incarnation

    anyio.run(main)
    assert at_server == want and echoed == want
    assert restart == {"adopted": FLOWS, "incarnation": 2}
