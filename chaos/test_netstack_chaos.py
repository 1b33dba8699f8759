"""Chaos: killing one TcpFlowActor mid-transfer resets only that connection (issue 4, "Done when").

Kernel clients (through a TUN in a test namespace) upload to a pytsnet listener; a FaultInjector
rule kills the victim flow's actor part-way through. The kernel side must see ECONNRESET, the app
side a typed ``ConnectionResetError`` (``FlowCrashed``), and every other transfer must finish with
its SHA-256 intact.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import socket
import threading

import anyio
import pytest

from pytsnet.actors.runtime import ActorSystem, FaultInjector, MailboxConfig
from pytsnet.net import FlowCrashed, Netstack
from pytsnet.net.link import TunLinkActor
from pytsnet.netstack.config import StackConfig
from pytsnet.testing.netns import Netns
from pytsnet.testing.tun import open_tun

pytestmark = [pytest.mark.interop, pytest.mark.root]

KERNEL, STACK = "10.77.0.1", "10.77.0.2"
FLOWS, SIZE = 4, 3 * 1024 * 1024


def test_killing_one_flow_actor_resets_only_that_connection(netns: Netns, chaos_seed: int) -> None:
    tun = open_tun(netns, local=KERNEL, peer=STACK)
    system = ActorSystem("chaos-netstack", pool_workers=2)
    faults = FaultInjector(seed=chaos_seed).install(system)
    blobs = [hashlib.shake_256(b"chaos %d" % i).digest(SIZE) for i in range(FLOWS)]
    kernel_out: dict[int, object] = {}

    def kernel_client(i: int) -> object:
        try:
            with socket.create_connection((STACK, 7100), timeout=60) as c:
                c.sendall(blobs[i])
                c.shutdown(socket.SHUT_WR)
                return c.recv(64)
        except OSError as e:
            return e.errno

    try:
        link = system.spawn(TunLinkActor, tun.fd, "netstack", name="tun-link", mailbox=MailboxConfig(65536))
        net = Netstack.start(system, StackConfig(addresses=(ipaddress.ip_address(STACK),)), link)

        async def main() -> dict[int, object]:
            listener = await net.listen_tcp(7100)
            app_out: dict[int, object] = {}

            def clients() -> None:
                ts = []
                for i in range(FLOWS):
                    t = threading.Thread(
                        target=lambda i=i: kernel_out.__setitem__(i, netns.call(lambda: kernel_client(i))),
                        daemon=True)
                    t.start()
                    ts.append(t)
                for t in ts:
                    t.join(90)

            async def serve(stream: object) -> None:
                port = stream.remote_address[1]  # type: ignore[attr-defined]
                h, total, victim = hashlib.sha256(), 0, None
                try:
                    while True:
                        try:
                            chunk = await stream.receive()  # type: ignore[attr-defined]
                        except anyio.EndOfStream:
                            break
                        h.update(chunk)
                        total += len(chunk)
                        if total > SIZE // 4 and not faults.rules and not victim:
                            victim = stream._ch.name  # type: ignore[attr-defined]
                            cell = system.lookup(victim)._cell  # type: ignore[union-attr]
                            faults.kill_after(cell.handled + 20, name=victim)
                    await stream.send(h.digest())  # type: ignore[attr-defined]
                    app_out[port] = h.hexdigest()
                except FlowCrashed as e:
                    app_out[port] = e
                await stream.aclose()  # type: ignore[attr-defined]

            with anyio.fail_after(90):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.to_thread.run_sync, clients)
                    for _ in range(FLOWS):
                        tg.start_soon(serve, await listener.accept())
            return app_out

        app_out = anyio.run(main)
    finally:
        system.shutdown()
        tun.close()

    assert len(faults.kills) == 1, faults.kills
    crashed = [v for v in app_out.values() if isinstance(v, FlowCrashed)]
    assert len(crashed) == 1 and isinstance(crashed[0], ConnectionResetError)
    digests = {hashlib.sha256(b).digest() for b in blobs}
    resets = [i for i, v in kernel_out.items() if v == errno.ECONNRESET]
    assert len(resets) == 1, kernel_out
    others = {i: v for i, v in kernel_out.items() if i not in resets}
    assert len(others) == FLOWS - 1
    assert all(v in digests for v in others.values())
    assert sorted(v for v in app_out.values() if isinstance(v, str)) == sorted(
        hashlib.sha256(blobs[i]).hexdigest() for i in others)
