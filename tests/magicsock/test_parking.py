"""Datagrams for a peer with no path yet are held, not dropped (``wire.magicsock.parking``): the pure
holder's order, bounds and expiry, then the router sending them the instant a path appears."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from magicsock_nodes import REGION, Node, know, node_pair, seqs, wg

from pytsnet.messages.magicsock import WgDatagramOut
from pytsnet.testing.polling import wait_until
from pytsnet.wire.magicsock.parking import PARK_TTL, ParkedSends


def test_held_in_order_and_released_once() -> None:
    p = ParkedSends()
    assert p.park("a", (b"1", b"2"), 0.0) == 0 and p.park("a", (b"3",), 0.5) == 0
    assert "a" in p and len(p) == 3
    assert p.take("a", 1.0) == ((b"1", b"2", b"3"), 0)
    assert "a" not in p and p.take("a", 1.0) == ((), 0)


def test_expired_datagrams_are_not_released() -> None:
    p = ParkedSends(ttl=2.0)
    p.park("a", (b"old",), 0.0)
    p.park("a", (b"new",), 1.5)
    assert p.take("a", 2.5) == ((b"new",), 1)  # the one parked at 0 outlived its wait
    p.park("b", (b"x", b"y"), 0.0)
    p.park("c", (b"z",), 1.0)
    assert p.expire(2.5) == {"b": 2} and "b" not in p and "c" in p


def test_bounded_per_peer_and_in_peers() -> None:
    p = ParkedSends(per_peer=2, peers=2)
    assert p.park("a", (b"1", b"2", b"3"), 0.0) == 1  # the oldest made room
    assert p.take("a", 0.0) == ((b"2", b"3"), 0)
    assert p.park("a", (b"1",), 0.0) == 0 and p.park("b", (b"1",), 0.0) == 0
    assert p.park("c", (b"1", b"2"), 0.0) == 2  # a third peer is refused whole
    assert "c" not in p
    assert p.forget("a") == 1 and p.park("c", (b"1",), 0.0) == 0


@pytest.fixture
def nodes() -> Iterator[tuple[Node, Node]]:
    with node_pair(advertise=False, introduced=False) as pair:
        yield pair


def test_a_first_datagram_waits_for_the_home_region(nodes: tuple[Node, Node]) -> None:
    """The first-dial race: a knows b but not yet b's home region (a node that just joined). The
    initiation is held, not dropped, and leaves over DERP the moment control tells a b's home."""
    a, b = nodes
    know(b, a, home=REGION)
    know(a, b, home=0)
    a.send(b, wg(1))
    st = a.status()  # asked after the send: the router has taken it
    assert (st.peers[0].path, st.dropped_no_path, st.parked_sent) == ("none", 0, 0), st
    assert 1 not in seqs(b)
    know(a, b, home=REGION)  # the netmap update with b's home region
    wait_until(lambda: 1 in seqs(b, via="derp"), what="the held datagram delivered")
    st = a.status()
    assert (st.parked_sent, st.dropped_no_path, st.dropped_unknown_peer) == (1, 0, 0), st


def test_a_datagram_for_a_peer_not_in_the_path_table_yet(nodes: tuple[Node, Node]) -> None:
    """The engine's config overtook the path table: the datagram waits for the peer's entry."""
    a, b = nodes
    know(b, a, home=REGION)
    a.ref("udp").tell(WgDatagramOut(peer=b.key, data=wg(7)))
    know(a, b, home=REGION)
    wait_until(lambda: 7 in seqs(b, via="derp"), what="the held datagram delivered")
    st = a.status()
    assert (st.parked_sent, st.dropped_unknown_peer) == (1, 0), st


def test_a_held_datagram_with_no_path_in_time_is_dropped_and_counted(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    know(a, b, home=0)
    a.send(b, wg(1))
    wait_until(lambda: a.status().dropped_no_path == 1, PARK_TTL + 5, what="dropped after its wait")
    know(b, a, home=REGION)
    know(a, b, home=REGION)  # too late: nothing is sent after the wait
    wait_until(lambda: a.status().peers[0].path == "derp", what="a path now")
    a.send(b, wg(2))
    wait_until(lambda: 2 in seqs(b, via="derp"), what="a new datagram goes")
    assert 1 not in seqs(b) and a.status().parked_sent == 0
