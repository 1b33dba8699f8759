"""DERP regions on demand (Go magicsock derp.go): home stays connected, others dial on the first send
and close after the idle time; netcheck moves home to a region that answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from magicsock_nodes import Node, make_node, wg
from magicsock_relay import MiniDerp, MiniStun

from pytsnet.messages.magicsock import DerpRegion, DerpStatus, DerpStatusRequest, MagicsockPeer, SetPeers
from pytsnet.testing.polling import wait_until

IDLE = 1.5


Relays = dict[int, tuple[MiniDerp, MiniStun]]


@pytest.fixture
def relays() -> Iterator[Relays]:
    r = {901: (MiniDerp(), MiniStun()), 902: (MiniDerp(), MiniStun())}
    yield r
    for d, s in r.values():
        d.close()
        s.close()


def _regions(relays: Relays) -> tuple[DerpRegion, ...]:
    return tuple(DerpRegion(region_id=rid, host="127.0.0.1", port=d.port, stun_port=s.port)
                 for rid, (d, s) in sorted(relays.items()))


def _node(name: str, regions: tuple[DerpRegion, ...], home: int) -> Node:
    return make_node(name, 0, 0, advertise=False, regions=regions, home=home, derp_idle_close=IDLE)


def _derp(node: Node, region: int) -> DerpStatus:
    ref = node.system.lookup(node.config.derp_name(region))
    assert ref is not None
    return ref.ask(DerpStatusRequest(), timeout=5)


def _introduce(a: Node, b: Node) -> None:
    for x, y in ((a, b), (b, a)):
        x.ref("disco").tell(SetPeers(peers=(MagicsockPeer(
            node_key=y.key, disco_key=y.disco_key, home_derp=y.config.home_region),)))


def _seqs(node: Node) -> set[int]:
    return {int.from_bytes(m.data[4:12], "big") for m in list(node.got) if m.via == "derp"}


def test_non_home_region_dials_on_send_and_closes_when_idle(relays: Relays) -> None:
    regions = _regions(relays)
    a, b = _node("a", regions, 901), _node("b", regions, 902)
    try:
        wait_until(lambda: _derp(a, 901).connected and _derp(b, 902).connected, what="home regions up")
        assert not _derp(a, 902).connected and _derp(a, 902).connects == 0  # not in use: never dialed
        assert not _derp(b, 901).connected
        _introduce(a, b)
        wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, what="paths known")
        for i in range(20):  # A -> B goes to B's home (902), B -> A to A's home (901)
            a.send(b, wg(i))
            b.send(a, wg(100 + i))
        wait_until(lambda: _seqs(b) >= set(range(20)), what="A->B via B's home region")
        wait_until(lambda: _seqs(a) >= set(range(100, 120)), what="B->A via A's home region")
        st = _derp(a, 902)
        assert st.connected and not st.home and st.connects == 1
        assert _derp(a, 901).home and _derp(a, 901).connected
        wait_until(lambda: not _derp(a, 902).connected, timeout=IDLE + 5, what="idle non-home close")
        assert _derp(a, 902).idle_closes == 1
        assert _derp(a, 901).connected and _derp(a, 901).idle_closes == 0  # home never idles out
        a.send(b, wg(500))  # in use again: dials again, the queued packet still arrives
        wait_until(lambda: 500 in _seqs(b), what="A->B after the idle close")
        assert _derp(a, 902).connects == 2
    finally:
        assert a.system.shutdown(10)
        assert b.system.shutdown(10)


def test_netcheck_moves_home_to_the_region_that_answers(relays: Relays) -> None:
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers STUN
    dead.bind(("127.0.0.1", 0))
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # DERP dials to region 900 are refused
    d, s = relays[902]
    regions = (DerpRegion(region_id=900, host="127.0.0.1", port=closed_port, stun_port=dead.getsockname()[1]),
               DerpRegion(region_id=902, host="127.0.0.1", port=d.port, stun_port=s.port))
    a = _node("a", regions, 0)
    try:
        assert _derp(a, 900).home  # the lowest region id until netcheck measures
        wait_until(lambda: _derp(a, 902).home, timeout=15, what="netcheck picks region 902")
        wait_until(lambda: _derp(a, 902).connected, what="new home connected")
        assert not _derp(a, 900).home
    finally:
        assert a.system.shutdown(10)
        dead.close()
