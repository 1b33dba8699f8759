"""The DERP send lane on a live connection: what the engine writes on a published ``DerpWriter`` reaches
the peer, counts in the client's status, and keeps a non-home region in use (its idle close counts the
engine's writes, which never pass the client's mailbox)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from magicsock_nodes import Node, make_node, wg
from magicsock_relay import MiniDerp, MiniStun

from pytsnet.actors.magicsock import derp_writer
from pytsnet.messages.magicsock import DerpRegion, DerpStatus, DerpStatusRequest, MagicsockPeer, SetPeers
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import NodePublic

IDLE = 1.5


@pytest.fixture
def nodes() -> Iterator[tuple[Node, Node]]:
    relays = {901: (MiniDerp(), MiniStun()), 902: (MiniDerp(), MiniStun())}
    regions = tuple(DerpRegion(region_id=rid, host="127.0.0.1", port=d.port, stun_port=s.port)
                    for rid, (d, s) in sorted(relays.items()))
    a = make_node("a", 0, 0, advertise=False, regions=regions, home=901, derp_idle_close=IDLE)
    b = make_node("b", 0, 0, advertise=False, regions=regions, home=902, derp_idle_close=IDLE)
    try:
        for x, y in ((a, b), (b, a)):
            x.ref("disco").tell(SetPeers(peers=(MagicsockPeer(
                node_key=y.key, disco_key=y.disco_key, home_derp=y.config.home_region),)))
        wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, what="paths known")
        yield a, b
    finally:
        assert a.system.shutdown(10)
        assert b.system.shutdown(10)
        for d, s in relays.values():
            d.close()
            s.close()


def _derp(node: Node, region: int) -> DerpStatus:
    ref = node.system.lookup(node.config.derp_name(region))
    assert ref is not None
    return ref.ask(DerpStatusRequest(), timeout=5)


def _seqs(node: Node) -> set[int]:
    return {int.from_bytes(m.data[4:12], "big") for m in list(node.got) if m.via == "derp"}


def test_engine_writes_reach_the_peer_and_keep_a_non_home_region_open(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.send(b, wg(0))  # through the router: dials b's home region (902) on a
    wait_until(lambda: 0 in _seqs(b), what="first packet via 902")
    ref = a.system.lookup(a.config.derp_name(902))
    assert ref is not None
    key = NodePublic.from_text(b.key).raw
    wait_until(lambda: derp_writer.send(ref, b.key, key, [wg(1)]) is not None, what="writer published")
    n = 2
    end = time.monotonic() + 3 * IDLE  # only lane writes from here on: twice the idle close
    while time.monotonic() < end:
        assert derp_writer.send(ref, b.key, key, [wg(n), wg(n + 1)]) == 0
        n += 2
        time.sleep(0.05)
    wait_until(lambda: _seqs(b) >= set(range(n)), what="every lane write at b")
    st = _derp(a, 902)
    assert st.connected and st.idle_closes == 0 and st.connects == 1, st
    [row] = [p for p in st.peers if p.peer == b.key]
    assert row.bytes_out == len(wg(0)) * n  # the router's first packet and the lane's
    wait_until(lambda: _derp(a, 902).idle_closes == 1, timeout=IDLE + 5, what="idle once the writes stop")
    assert derp_writer.send(ref, b.key, key, [wg(n)]) is None  # withdrawn: the engine tells the client
