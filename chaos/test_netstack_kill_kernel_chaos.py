"""Chaos: the NetstackActor killed mid-transfer with Linux TCP peers; every flow finishes byte-exact.

Kernel clients (through a TUN in a test namespace) upload to a pytsnet listener and read back a
download; part-way through, the NetstackActor (not a flow) is killed. Its flows are siblings under
the netstack's supervisor, so they outlive it and the restarted incarnation re-adopts them: every
upload's SHA-256 matches at the app, every download's at the kernel, and no connection sees a reset.
(The in-process variant, both ends pytsnet and both netstacks killed: test_netstack_restart_chaos.py.)
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import threading

import anyio
import pytest

from pytsnet.actors.runtime import ActorSystem, FaultInjector, MailboxConfig
from pytsnet.messages.netstack import NetstackStatusRequest
from pytsnet.net import Netstack
from pytsnet.net.link import TunLinkActor
from pytsnet.net.stream import TcpStream
from pytsnet.netstack.config import StackConfig
from pytsnet.testing.netns import Netns
from pytsnet.testing.tun import open_tun

pytestmark = [pytest.mark.interop, pytest.mark.root]

KERNEL, STACK = "10.77.0.1", "10.77.0.2"
FLOWS, SIZE, PORT = 4, 2 * 1024 * 1024, 7110


def test_killing_the_netstack_actor_keeps_kernel_flows_byte_exact(netns: Netns) -> None:
    tun = open_tun(netns, local=KERNEL, peer=STACK)
    system = ActorSystem("chaos-netstack-kill", pool_workers=2)
    ups = [i.to_bytes(4, "big") + hashlib.shake_256(b"up %d" % i).digest(SIZE - 4) for i in range(FLOWS)]
    downs = [hashlib.shake_256(b"down %d" % i).digest(SIZE) for i in range(FLOWS)]
    kernel_out: dict[int, object] = {}
    app_up: dict[int, str] = {}
    received = {"n": 0}
    adopted: list[int] = []

    def kernel_client(i: int) -> object:
        try:
            with socket.create_connection((STACK, PORT), timeout=60) as c:
                c.sendall(ups[i])
                c.shutdown(socket.SHUT_WR)
                h = hashlib.sha256()
                while chunk := c.recv(65536):
                    h.update(chunk)
                return h.hexdigest()
        except OSError as e:
            return e

    try:
        link = system.spawn(TunLinkActor, tun.fd, "netstack", name="tun-link", mailbox=MailboxConfig(65536))
        net = Netstack.start(system, StackConfig(addresses=(ipaddress.ip_address(STACK),)), link)

        def clients() -> None:
            ts = [threading.Thread(target=lambda i=i: kernel_out.__setitem__(
                i, netns.call(lambda: kernel_client(i))), daemon=True) for i in range(FLOWS)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(90)

        async def serve(stream: TcpStream) -> None:
            h, first = hashlib.sha256(), b""
            while True:
                try:
                    chunk = await stream.receive()
                except anyio.EndOfStream:
                    break
                first += chunk[: max(0, 4 - len(first))]
                h.update(chunk)
                received["n"] += len(chunk)
            i = int.from_bytes(first, "big")
            app_up[i] = h.hexdigest()
            await stream.send(downs[i])
            await stream.aclose()

        async def kill_mid_transfer() -> None:
            while received["n"] < FLOWS * SIZE // 3:
                await anyio.sleep(0.002)
            FaultInjector.kill_now(net.ref, "chaos: the netstack actor mid-transfer")
            while not (net.ref.incarnation == 2 and net.ref.is_alive):
                await anyio.sleep(0.002)
            adopted.append(net.ref.ask(NetstackStatusRequest(), timeout=10).adopted)

        async def main() -> None:
            listener = await net.listen_tcp(PORT)
            with anyio.fail_after(90):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.to_thread.run_sync, clients)
                    tg.start_soon(kill_mid_transfer)
                    for _ in range(FLOWS):
                        tg.start_soon(serve, await listener.accept())

        anyio.run(main)
    finally:
        system.shutdown()
        tun.close()

    assert app_up == {i: hashlib.sha256(ups[i]).hexdigest() for i in range(FLOWS)}
    assert kernel_out == {i: hashlib.sha256(downs[i]).hexdigest() for i in range(FLOWS)}
    assert adopted == [FLOWS]  # restarted once, with every flow still mid-upload
