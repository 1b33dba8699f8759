"""Node-key expiry end to end with two Python devices on a LocalTailnet (loopback, relay + STUN).

``nodes expire`` stops the expired node (``KeyExpired`` from ``wait_until_running``, NeedsLogin /
``key_expired`` in ``watch_state()``, no peers), every peer drops it within a second, the relay drops
its connection, traffic stops both ways; ``nodes extend`` brings it back to Running and traffic flows
both ways again; ``status()`` shows the key expiries. With a short ``--key-expiry`` the peer drops the
node at its ``KeyExpiry`` by its own timer while control sends no map frame at all.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.dial import UnknownTailnetHost
from pytsnet.errors import KeyExpired
from pytsnet.localnet import LocalTailnet
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import NodePublic

PORT = 7100


@dataclass
class Pair:
    net: LocalTailnet
    a: ActorDevice
    b: ActorDevice


def _device(net: LocalTailnet, key: str, tmp: Path, name: str) -> ActorDevice:
    return ActorDevice(Config(dir=tmp / name, hostname=name, auth_key=key, control_url=net.control_url,
                              backoff_max=1.0, bind_host="127.0.0.1")).start()


@pytest.fixture
def pair_factory(tmp_path: Path) -> Iterator[object]:
    made: list[tuple[LocalTailnet, list[ActorDevice]]] = []

    def make(**net_kw: object) -> Pair:
        net = LocalTailnet(tmp_path / "ctl", **net_kw).start()  # type: ignore[arg-type]
        devs: list[ActorDevice] = []
        made.append((net, devs))
        key = net.create_authkey(reusable=True)
        for name in ("alpha", "beta"):
            devs.append(_device(net, key, tmp_path, name))
        a, b = devs
        a.wait_until_running_blocking(20)
        b.wait_until_running_blocking(20)
        wait_until(lambda: len(a.peers()) == 1 and len(b.peers()) == 1, 20, "each sees the other")
        return Pair(net, a, b)

    yield make
    for net, devs in made:
        for d in devs:
            d.close()
        net.close()


async def _echo_once(client: ActorDevice, server: ActorDevice, data: bytes) -> bytes:
    """``client`` dials ``server``'s listener (by tailnet IP) and gets ``data`` echoed back."""
    lst = await server.listen(PORT)
    try:
        async with anyio.create_task_group() as tg:
            async def serve() -> None:
                s = await lst.accept()
                got = await s.receive(65536)
                await s.send(got)
                await s.aclose()

            tg.start_soon(serve)
            c = await client.tcp_connect(server.tailscale_ips()[0], PORT)
            await c.send(data)
            out = await c.receive(65536)
            await c.aclose()
        return bytes(out)
    finally:
        await lst.aclose()


def _traffic_both_ways(p: Pair) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            assert await _echo_once(p.a, p.b, b"alpha->beta") == b"alpha->beta"
            assert await _echo_once(p.b, p.a, b"beta->alpha") == b"beta->alpha"

    anyio.run(main)


def _names(dev: ActorDevice) -> set[str]:
    return {x.hostname for x in dev.peers()}


def test_expire_stops_the_node_peers_drop_it_and_extend_restores_traffic(pair_factory) -> None:
    p: Pair = pair_factory()  # type: ignore[operator]
    net, a, b = p.net, p.a, p.b
    _traffic_both_ways(p)
    relay = net.relay
    assert relay is not None
    a_key = NodePublic.from_text(a.status().self_node.node_key)  # type: ignore[union-attr]
    wait_until(lambda: a_key in relay.derp.clients, 10, "alpha on the relay")
    row = next(r for r in b.status().peers if r.hostname == "alpha")
    alpha = net.node("alpha")
    assert row.key_expiry == alpha.key_expiry and alpha.key_expiry > time.time() + 179 * 86400
    assert a.status().self_node.key_expiry == alpha.key_expiry  # type: ignore[union-attr]

    states: list[object] = []

    async def watch_until_key_expired() -> None:
        async with asyncio.timeout(10):
            async for st in a.watch_state():
                states.append(st)
                if st.error_kind == "key_expired":
                    return

    watcher = threading.Thread(target=lambda: asyncio.run(watch_until_key_expired()))
    watcher.start()
    wait_until(lambda: bool(states), 5, "watch_state() started")
    t0 = time.monotonic()
    net.expire_node("alpha")
    wait_until(lambda: "alpha" not in _names(b), 1.0, "beta drops alpha within a second")
    wait_until(lambda: a.state.error_kind == "key_expired", 1.0, "alpha learns its key expired")
    assert time.monotonic() - t0 < 1.5
    watcher.join(10)
    assert states[-1].state == "NeedsLogin" and states[-1].error_kind == "key_expired"  # type: ignore[attr-defined]
    with pytest.raises(KeyExpired):
        a.wait_until_running_blocking(1)
    assert a.peers() == []  # control sends an expired node no peers
    assert {r.node_id: r.reason for r in b.peer_table().rejected} == {alpha.id: "node key expired"}
    wait_until(lambda: a_key not in relay.derp.clients, 1.0, "the relay closed alpha's connection")
    assert relay.derp.stats.revoked >= 1
    # alpha's relay client dials again and is refused while its key is expired.
    wait_until(lambda: relay.derp.stats.rejected_unknown >= 1, 10, "the relay refuses alpha's reconnect")
    assert a_key not in relay.derp.clients

    async def refused(dev: ActorDevice, ip: str) -> None:
        with pytest.raises(UnknownTailnetHost):
            await dev.tcp_connect(ip, PORT)

    anyio.run(refused, b, alpha.ipv4)
    anyio.run(refused, a, net.node("beta").ipv4)

    net.extend_node("alpha", "1h")
    wait_until(lambda: a.state.state == "Running" and not a.state.error_kind, 10, "alpha Running again")
    wait_until(lambda: "alpha" in _names(b) and "beta" in _names(a), 5, "both see each other again")
    _traffic_both_ways(p)
    row = next(r for r in b.status().peers if r.hostname == "alpha")
    assert row.key_expiry == net.node("alpha").key_expiry
    assert row.key_expiry is not None and abs(row.key_expiry - (time.time() + 3600)) < 5


def test_short_key_expiry_peers_drop_the_node_by_timer_without_a_map_frame(pair_factory) -> None:
    lifetime = 12.0
    # Hostinfo changes (the nodes' first netcheck findings, Hostinfo.NetInfo) relayed at once, not
    # held for hostinfo_interval into the quiet window below, as in test_go_expiry
    p: Pair = pair_factory(key_expiry=lifetime, hostinfo_interval=0)  # type: ignore[operator]
    net, a, b = p.net, p.a, p.b
    net.extend_node("beta", "1h")  # only alpha runs out
    wait_until(lambda: (r := next(iter(a.status().peers), None)) is not None and r.key_expiry
               == net.node("beta").key_expiry, 5, "alpha has beta's new expiry")
    expiry = net.node("alpha").key_expiry
    assert expiry is not None
    assert expiry - time.time() > 2, "the devices took too long to start for this lifetime"
    _traffic_both_ways(p)

    def quiet_for(seconds: float) -> bool:  # no map frame for a while: the tailnet has settled
        before = net.control.stats["map_frames"]
        time.sleep(seconds)
        return net.control.stats["map_frames"] == before

    wait_until(lambda: quiet_for(0.5), 10, "map streams quiet")
    frames, to_b = net.control.stats["map_frames"], len(net.control.sent[net.node("beta").id])
    assert expiry - time.time() > 0.5, "settled too late"
    assert "alpha" in _names(b)
    wait_until(lambda: "alpha" not in _names(b), expiry - time.time() + 1.0, "beta drops alpha by timer")
    dropped_at = time.time()
    assert net.control.stats["map_frames"] == frames and len(net.control.sent[net.node("beta").id]) == to_b
    assert expiry - 0.2 <= dropped_at <= expiry + 1.0
    wait_until(lambda: a.state.error_kind == "key_expired", 1.0, "alpha's own timer: KeyExpired")
    assert a.peers() == []
    assert net.control.stats["map_frames"] == frames  # still nothing sent: every node used its timer
    # Renewed after running out: both come back (the patch carries only the new KeyExpiry).
    net.extend_node("alpha", "1h")
    wait_until(lambda: a.state.state == "Running" and not a.state.error_kind, 10, "alpha Running again")
    wait_until(lambda: "alpha" in _names(b) and "beta" in _names(a), 5, "both see each other again")
    _traffic_both_ways(p)


def test_restarting_an_expired_node_needs_a_new_login(tmp_path: Path) -> None:
    """Restarted with its expired key, a node rotates it; control refuses that without a re-auth (its
    single-use key is spent: ``KeyExpired``) and accepts it with a fresh auth key (same node, IPs)."""
    with LocalTailnet(tmp_path / "ctl") as net:
        single = net.create_authkey()
        a = _device(net, single, tmp_path, "alpha")
        try:
            a.wait_until_running_blocking(20)
            old = net.node("alpha")
            net.expire_node("alpha")
            wait_until(lambda: a.state.error_kind == "key_expired", 2.0, "alpha: KeyExpired")
        finally:
            a.close()
        again = _device(net, single, tmp_path, "alpha")
        try:
            with pytest.raises(KeyExpired):
                again.wait_until_running_blocking(15)
        finally:
            again.close()
        assert net.node("alpha").node_key == old.node_key  # not rotated
        fresh = _device(net, net.create_authkey(), tmp_path, "alpha")
        try:
            fresh.wait_until_running_blocking(20)
            now = net.node("alpha")
            assert (now.id, now.ipv4) == (old.id, old.ipv4) and now.node_key != old.node_key
            assert now.key_expiry is not None and now.key_expiry > time.time() + 179 * 86400
            assert len(net.nodes()) == 1
        finally:
            fresh.close()
