"""Chaos: killing a NetstackActor mid-transfer keeps every flow byte-exact (issue 15, "Done when").

Two userspace netstacks joined back to back (``pytsnet.testing.netstack_pair``).
Several flows upload then download at once; part-way through the upload the server's NetstackActor is
killed, part-way through the download the client's. Per-connection state lives in the flow actors
(siblings of the NetstackActor under the netstack's own supervisor), so each restarted NetstackActor
re-adopts them and every byte arrives, in order: both directions of every flow are checked by
SHA-256. The listener survives too (a connection made after the restart is accepted), and each
restart is observed (incarnation 2, and the flows it took over).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import anyio
import pytest

from pytsnet.actors.netstack.subtree import NETSTACK_RESTARTS, supervisor_name
from pytsnet.actors.runtime import ActorSystem, FaultInjector
from pytsnet.messages.netstack import NetstackStatusRequest
from pytsnet.net.stream import TcpStream
from pytsnet.testing.netstack_pair import netstack_pair
from pytsnet.testing.polling import wait_until

SERVER, CLIENT = "10.9.0.1", "10.9.0.2"
FLOWS, SIZE, PORT = 4, 768 * 1024, 7300


def _blob(tag: bytes, i: int) -> bytes:
    return i.to_bytes(4, "big") + hashlib.shake_256(tag + b"%d" % i).digest(SIZE - 4)


async def _read_all(stream: TcpStream, h: hashlib._Hash, seen: Callable[[int], None]) -> bytes:
    first = b""
    while True:
        try:
            chunk = await stream.receive()
        except anyio.EndOfStream:
            return first
        if len(first) < 4:
            first += chunk[: 4 - len(first)]
        h.update(chunk)
        seen(len(chunk))


def test_killing_the_netstack_mid_transfer_keeps_every_flow_byte_exact(chaos_system: ActorSystem) -> None:
    system = chaos_system
    server, client = netstack_pair(system, ("ns-server", SERVER), ("ns-client", CLIENT))
    n = FLOWS + 1  # the last one connects after the server's netstack restarted
    ups = [_blob(b"up", i) for i in range(n)]
    downs = [_blob(b"down", i) for i in range(n)]
    got_up: dict[int, str] = {}
    got_down: dict[int, str] = {}
    progress = {"up": 0, "down": 0}
    adopted: dict[str, int] = {}

    def seen(direction: str) -> Callable[[int], None]:
        def add(k: int) -> None:
            progress[direction] += k
        return add

    async def serve(stream: TcpStream) -> None:
        h = hashlib.sha256()
        first = await _read_all(stream, h, seen("up"))
        i = int.from_bytes(first, "big")
        got_up[i] = h.hexdigest()
        await stream.send(downs[i])
        await stream.aclose()

    async def dial(i: int) -> None:
        stream = await client.connect_tcp(SERVER, PORT)
        async with anyio.create_task_group() as tg:
            async def download() -> None:
                h = hashlib.sha256()
                await _read_all(stream, h, seen("down"))
                got_down[i] = h.hexdigest()
            tg.start_soon(download)
            await stream.send(ups[i])
            await stream.send_eof()
        await stream.aclose()

    async def kill_when(name: str, direction: str, at: int) -> None:
        while progress[direction] < at:
            await anyio.sleep(0.002)
        ref = system.lookup(name)
        assert ref is not None and ref.incarnation == 1
        FaultInjector.kill_now(ref, f"chaos: {name} mid-transfer")
        while not (ref.incarnation == 2 and ref.is_alive):
            await anyio.sleep(0.002)
        adopted[name] = ref.ask(NetstackStatusRequest(), timeout=10).adopted

    async def main() -> None:
        listener = await server.listen_tcp(PORT)
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                async def accept_all() -> None:
                    for _ in range(n):
                        tg.start_soon(serve, await listener.accept())
                tg.start_soon(accept_all)
                for i in range(FLOWS):
                    tg.start_soon(dial, i)
                await kill_when("ns-server", "up", FLOWS * SIZE // 3)
                tg.start_soon(dial, FLOWS)  # through the restarted netstack's re-adopted listener
                await kill_when("ns-client", "down", FLOWS * SIZE // 3)

    anyio.run(main)

    assert got_up == {i: hashlib.sha256(ups[i]).hexdigest() for i in range(n)}
    assert got_down == {i: hashlib.sha256(downs[i]).hexdigest() for i in range(n)}
    # Each NetstackActor restarted exactly once and took over flows that were mid-transfer.
    assert adopted["ns-server"] == FLOWS  # every upload was in progress
    assert adopted["ns-client"] >= 1
    for name in ("ns-server", "ns-client"):
        ref = system.lookup(name)
        assert ref is not None and ref.incarnation == 2


def test_a_crash_looping_netstack_escalates_and_its_subtree_restarts_empty(chaos_system: ActorSystem) -> None:
    """Past its budget (NETSTACK_RESTARTS within NETSTACK_WITHIN) the netstack's supervisor gives up and
    its parent restarts the whole subtree: nothing is re-adopted, and the app's listener is closed (a
    waiting accept ends) rather than left waiting on a netstack that forgot it."""
    system = chaos_system
    net, _ = netstack_pair(system, ("ns-loop", SERVER), ("ns-other", CLIENT))
    listener = net.listen(PORT)
    ref = net.ref
    sup = system.lookup(supervisor_name("ns-loop"))
    assert sup is not None
    for i in range(1, NETSTACK_RESTARTS + 1):  # within budget: the listener is carried over each time
        FaultInjector.kill_now(ref, f"chaos: crash loop {i}")
        wait_until(lambda i=i: ref.incarnation == i + 1 and ref.is_alive)
        assert net.registry.listener(PORT) is not None and sup.incarnation == 1
    FaultInjector.kill_now(ref, "chaos: one crash too many")
    wait_until(lambda: sup.incarnation == 2 and ref.is_alive)
    with pytest.raises(OSError, match="listener closed"):
        listener.accept()
    assert net.registry.listener(PORT) is None
    assert ref.ask(NetstackStatusRequest(), timeout=5).adopted == 0
