"""The inbound fast path (issue 14): the WireGuard engine hands an established TCP flow's packets
straight to that flow's actor, by the routes the netstack publishes (``FlowRoutes``); the netstack
actor only sees what has no route. Two ActorDevices on a LocalTailnet, direct path, loopback.

Proven here: bulk data takes the fast path; routes are withdrawn when flows end; a restarted engine
or netstack gets the table again and the transfer in flight finishes byte-exact; a killed receiving
flow resets only itself while the engine forgets its route.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from pytsnet.actors.runtime import ActorRef, FaultInjector
from pytsnet.device import ActorDevice
from pytsnet.messages.wgengine import GetWgStatus, WgStatus

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_rig import exchange, payload, tailnet_pair

from pytsnet.testing.polling import wait_until

N = 1 << 20


def _engine(dev: ActorDevice) -> ActorRef:
    assert dev.system is not None
    ref = dev.system.lookup("wgengine")
    assert ref is not None
    return ref


def _status(dev: ActorDevice) -> WgStatus:
    return _engine(dev).ask(GetWgStatus())


def test_bulk_inbound_takes_the_fast_path_and_routes_are_withdrawn(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path, direct=True) as p:
        anyio.run(exchange, p, 4096)  # warm-up: the direct path
        before = {d: _status(d) for d in (p.a, p.b)}
        x = anyio.run(exchange, p, N)
        assert x.got_ab == x.sent_ab and x.got_ba == x.sent_ba
        for d in (p.a, p.b):
            after, was = _status(d), before[d]
            delivered = after.packets_in - was.packets_in
            direct = after.packets_to_flows - was.packets_to_flows
            assert delivered > N // 1400, (was, after)
            # Every data segment after the handshake goes straight to its flow; the netstack actor
            # gets the SYNs (and a few packets that came before the engine heard of a new flow).
            assert direct >= 0.9 * delivered, (delivered, direct)
        # The flows ended: their routes are withdrawn (the netstack's FlowClosed -> FlowRoutes).
        wait_until(lambda: all(_status(d).flow_routes == 0 for d in (p.a, p.b)), 20, "routes withdrawn")


@pytest.mark.parametrize("victim", ["wgengine", "netstack"])
def test_restarted_engine_or_netstack_gets_the_routes_again(tmp_path: Path, victim: str) -> None:
    """Kill the receiver's engine (its route table dies with it: it asks the netstack again) or its
    netstack actor (the new incarnation adopts the flows and sends the whole table) mid-transfer."""

    async def main(p: object) -> tuple[bytes, bytes, WgStatus]:
        with anyio.fail_after(120):
            return await transfer(p)

    async def transfer(p: object) -> tuple[bytes, bytes, WgStatus]:
        a, b = p.a, p.b  # type: ignore[attr-defined]
        assert b.system is not None
        ref = b.system.lookup(victim)
        assert ref is not None
        lst = await b.listen(7300)
        data = payload(N, b"fast")
        c = await a.tcp_connect("beta", 7300)
        s = await lst.accept()
        buf = bytearray()
        killed = False
        async with anyio.create_task_group() as tg:
            async def send() -> None:
                for k in range(0, N, 16384):
                    await c.send(data[k:k + 16384])

            tg.start_soon(send)
            while len(buf) < N:
                buf += await s.receive(65536)
                if not killed and len(buf) >= N // 4:
                    FaultInjector.kill_now(ref)
                    killed = True
        wait_until(lambda: ref.incarnation == 2 and ref.is_alive, 10, f"{victim} restarted")
        before = _status(b)
        # More data on the same flow after the restart: it takes the fast path again.
        more = payload(N // 4, b"more")
        got = bytearray()
        async with anyio.create_task_group() as tg:
            async def send_more() -> None:
                await c.send(more)

            tg.start_soon(send_more)
            while len(got) < len(more):
                got += await s.receive(65536)
        after = _status(b)
        await c.aclose()
        await s.aclose()
        await lst.aclose()
        assert bytes(got) == more
        return bytes(buf), data, after.model_copy(update={
            "packets_to_flows": after.packets_to_flows - before.packets_to_flows,
            "packets_in": after.packets_in - before.packets_in})

    with tailnet_pair(tmp_path, direct=True) as p:
        anyio.run(exchange, p, 4096)
        got, sent, delta = anyio.run(main, p)
        assert got == sent
        assert delta.flow_routes >= 1, delta
        assert delta.packets_in > 0 and delta.packets_to_flows >= 0.9 * delta.packets_in, delta


def test_killed_receiving_flow_resets_alone_and_loses_its_route(tmp_path: Path) -> None:
    async def main(p: object) -> tuple[list[bool], list[BaseException | None], int]:
        a, b = p.a, p.b  # type: ignore[attr-defined]
        lst = await b.listen(7400)
        datas = [payload(N // 2, bytes([i])) for i in range(3)]
        clients = [await a.tcp_connect("beta", 7400) for _ in range(3)]
        accepted = [await lst.accept() for _ in range(3)]
        by_port = {s.remote_address[1]: s for s in accepted}
        servers = [by_port[c.local_address[1]] for c in clients]
        got = [bytearray() for _ in range(3)]
        errors: list[BaseException | None] = [None] * 3
        routes_at_kill = 0

        async def send(i: int) -> None:
            try:
                for k in range(0, len(datas[i]), 16384):
                    await clients[i].send(datas[i][k:k + 16384])
                await clients[i].send_eof()
            except (ConnectionError, anyio.ClosedResourceError, anyio.BrokenResourceError) as e:
                errors[i] = errors[i] or e

        async def recv(i: int) -> None:
            nonlocal routes_at_kill
            try:
                while True:
                    got[i] += await servers[i].receive(65536)
                    if i == 1 and routes_at_kill == 0 and len(got[1]) >= N // 8:
                        routes_at_kill = _status(b).flow_routes
                        victim = b.system.lookup(servers[1]._ch.name)
                        assert victim is not None
                        FaultInjector.kill_now(victim)
            except anyio.EndOfStream:
                pass
            except ConnectionError as e:
                errors[i] = errors[i] or e

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(send, i)
                    tg.start_soon(recv, i)
        for st in (*clients, *servers):
            await st.aclose()
        await lst.aclose()
        return [bytes(got[i]) == datas[i] for i in range(3)], errors, routes_at_kill

    with tailnet_pair(tmp_path, direct=True) as p:
        anyio.run(exchange, p, 4096)
        exact, errors, routes_at_kill = anyio.run(main, p)
        assert routes_at_kill >= 3, routes_at_kill  # the three flows were on the fast path
        assert exact[0] and exact[2], (exact, errors)
        assert not exact[1]
        assert isinstance(errors[1], ConnectionError), errors
        assert errors[0] is None and errors[2] is None, errors
        wait_until(lambda: _status(p.b).flow_routes == 0, 20, "every route withdrawn")

