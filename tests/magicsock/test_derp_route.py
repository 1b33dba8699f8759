"""Replies on the DERP region a peer's packets came in on while its home is unknown (Go ``derpRoute`` /
``fallbackDERPRegionForPeer``), and only for admitted peers: a stranger's packets leave no route."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from magicsock_nodes import REGION, Node, know, node_pair, seqs, wg

from pytsnet.testing.polling import wait_until


@pytest.fixture
def nodes() -> Iterator[tuple[Node, Node]]:
    with node_pair(advertise=False, introduced=False) as pair:
        yield pair


def _seqs(node: Node) -> set[int]:
    return seqs(node, via="derp")


def test_reply_goes_back_on_the_arrival_region_while_the_home_is_unknown(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    know(a, b, home=0)  # a new node: a does not know its home yet
    know(b, a, home=REGION)
    a.send(b, wg(1))  # nothing heard from b yet: no path at all (held, dropped once its wait ends)
    wait_until(lambda: a.status().dropped_no_path == 1, what="no path counted")
    [row] = a.status().peers
    assert row.path == "none" and row.derp_region == 0, row
    b.send(a, wg(2))  # b dials a (a's home is known to b)
    wait_until(lambda: 2 in _seqs(a), what="b→a via DERP")
    wait_until(lambda: a.status().peers[0].path == "derp", what="a's route to b via the arrival region")
    a.send(b, wg(3))  # a answers on the region b's packet came in on
    wait_until(lambda: 3 in _seqs(b), what="a→b on the arrival region")
    st = a.status()
    assert st.dropped_no_path == 1 and st.peers[0].derp_region == REGION, st


def test_a_strangers_packets_leave_no_route(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    know(b, a, home=REGION)
    b.send(a, wg(1))  # b is not (yet) an admitted peer of a: the relay delivers, a keeps nothing
    wait_until(lambda: a.derp_status().bytes_in_unknown_sources > 0, what="stranger's bytes counted")
    know(a, b, home=0)  # admitted later, home still unknown
    a.send(b, wg(2))  # held for a path, dropped once its wait ends: the stranger's packet left none
    wait_until(lambda: a.status().dropped_no_path == 1, what="no route from the stranger's packet")
    assert 2 not in _seqs(b)
    b.send(a, wg(3))  # heard again, now as an admitted peer: the route exists
    wait_until(lambda: a.status().peers[0].path == "derp", what="route after admission")
    a.send(b, wg(4))
    wait_until(lambda: 4 in _seqs(b), what="a→b on the arrival region")
