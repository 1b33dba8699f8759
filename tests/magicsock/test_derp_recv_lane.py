"""The DERP receive lane: once a connection's handshake is complete its reader thread hands received
packets to the engine itself (``DerpLink`` + ``RecvSplitter`` + ``DerpInbound``), not through the
``DerpClient``'s mailbox; the actor keeps the connection's state, counters and route notes stay right,
and a receiving client killed mid-flow restarts and the flow goes on."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator

import pytest
from magicsock_nodes import REGION, Node, node_pair, seqs, wg

from pytsnet.actors.runtime import FaultInjector
from pytsnet.testing.polling import wait_until
from pytsnet.wire.derp.handshake import ClientConnection

VICTIM = f"derp.{REGION}"


@pytest.fixture
def nodes() -> Iterator[tuple[Node, Node]]:
    with node_pair(advertise=False, endpoints=False) as pair:
        yield pair


_seqs = functools.partial(seqs, via="derp")


def test_packets_reach_the_engine_without_the_clients_mailbox(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.send(b, wg(0))  # the connection is up and its ServerInfo opened: the lane is on after this
    wait_until(lambda: 0 in _seqs(b), what="first packet")
    cell = b.ref(VICTIM)._cell
    before = cell.handled
    n = 40
    for i in range(1, n + 1):  # one at a time: a read at b each
        a.send(b, wg(i))
        wait_until(lambda i=i: i in _seqs(b), what=f"packet {i} at b's engine")  # type: ignore[misc]
    handled = cell.handled - before
    # its 1 s ticks at most: no bytes (n of them without the lane)
    assert handled < n // 4, f"b's DerpClient handled {handled} messages for {n} packets"
    st = b.derp_status()  # counted by the lane, shown by the actor
    [row] = [p for p in st.peers if p.peer == a.key]
    assert row.bytes_in == len(wg(0)) * (n + 1) and st.bytes_in_unknown_sources == 0
    # the route note came from the lane: b answers a on the region a's packets came in on
    b.send(a, wg(7))
    wait_until(lambda: 7 in _seqs(a), what="b→a")


def test_receiving_client_killed_mid_flow_restarts_and_the_flow_goes_on(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    n = 0

    def pump(k: int) -> int:
        nonlocal n
        for _ in range(k):
            a.send(b, wg(n))
            n += 1
        return n

    first = pump(50)
    wait_until(lambda: _seqs(b) >= set(range(first)), what="flow before the kill")
    ref = b.ref(VICTIM)
    pump(50)  # in flight while the receiving client dies
    FaultInjector.kill_now(ref)
    wait_until(lambda: ref.incarnation == 2 and ref.is_alive, what="supervised restart")
    wait_until(lambda: b.derp_status().connected, what="reconnected")
    mark = n

    def resumed() -> bool:
        pump(1)
        return max(_seqs(b)) >= mark

    wait_until(resumed, timeout=15, what="packets after the restart")
    last = pump(100)
    wait_until(lambda: _seqs(b) >= set(range(last - 100, last)), what="a burst after the restart")
    assert b.ref("sup").is_alive and a.ref(VICTIM).incarnation == 1


def test_packets_on_the_lane_keep_the_read_deadline_fed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The actor no longer sees packet frames: the reader's read count must still count as traffic,
    or a connection carrying only data would time out (120 s in Go and here; 2 s in this test)."""
    from pytsnet.actors.magicsock import derp_client

    short = functools.partial(ClientConnection, read_timeout=2.0)
    monkeypatch.setattr(derp_client, "ClientConnection", short)
    with node_pair(advertise=False, endpoints=False) as (a, b):
        end = time.monotonic() + 5.0  # well past b's 2 s read deadline, packets all the while
        i = 0
        while time.monotonic() < end:
            a.send(b, wg(i))
            i += 1
            time.sleep(0.05)
        wait_until(lambda: i - 1 in _seqs(b), what="the last packet")
        assert b.derp_status().connects == 1, b.derp_status()
