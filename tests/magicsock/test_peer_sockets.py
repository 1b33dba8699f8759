"""A peer's direct endpoint gets a connected socket of its own (``actors.magicsock.peer_sockets``):
the kernel queues that peer's datagrams apart from a stranger's, so a flood that overflows the shared
queue costs the tunnel nothing. First the sockets alone, then the router and its reader."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from magicsock_nodes import Node, node_pair, seqs, wg

from pytsnet.actors.magicsock.peer_sockets import PeerSockets
from pytsnet.messages.magicsock import SetPeers
from pytsnet.testing.polling import wait_until


def _udp(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(2)
    return s


@pytest.fixture
def main() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the router's socket
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    yield s
    s.close()


def test_the_peer_endpoint_is_read_on_its_own_socket_a_stranger_on_the_shared(main: socket.socket) -> None:
    peer, stranger = _udp(), _udp()
    ps = PeerSockets(main, buffer=1 << 20, gro=False)
    key = peer.getsockname()
    assert ps.sync({key}) == [] and list(ps.socks) == [key]
    own = ps.socks[key]
    own.settimeout(2)
    peer.sendto(b"from the peer", main.getsockname())
    stranger.sendto(b"from a stranger", main.getsockname())
    assert own.recvfrom(100) == (b"from the peer", key)
    assert main.recvfrom(100) == (b"from a stranger", stranger.getsockname())
    # sends on the shared socket leave from the same port the peer sees
    main.sendto(b"reply", key)
    assert peer.recvfrom(100)[1] == main.getsockname()
    ps.close_all()
    for s in (peer, stranger):
        s.close()


def test_an_endpoint_no_longer_wanted_is_handed_back_with_what_it_holds(main: socket.socket) -> None:
    peer = _udp()
    ps = PeerSockets(main, buffer=1 << 20, gro=False)
    ps.sync({peer.getsockname()})
    peer.sendto(b"queued before the path changed", main.getsockname())
    time.sleep(0.05)
    gone = ps.sync(set())
    assert ps.socks == {} and len(gone) == 1
    gone[0].settimeout(2)
    assert gone[0].recv(100) == b"queued before the path changed"  # the caller reads it, then closes
    gone[0].close()
    peer.sendto(b"after", main.getsockname())
    assert main.recv(100) == b"after"  # back on the shared queue
    peer.close()


def test_bounded_and_closed_for_good(main: socket.socket) -> None:
    peers = [_udp() for _ in range(3)]
    ps = PeerSockets(main, buffer=1 << 20, gro=False, limit=2)
    ps.sync({p.getsockname() for p in peers})
    assert len(ps.socks) == 2  # the third endpoint shares the main queue
    ps.close_all()
    assert ps.socks == {} and ps.sync({p.getsockname() for p in peers}) == [] and ps.socks == {}
    for p in peers:
        p.close()


def test_an_endpoint_that_cannot_be_bound_stays_on_the_shared_queue() -> None:
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR: nothing may share its port
    plain.bind(("127.0.0.1", 0))
    ps = PeerSockets(plain, buffer=1 << 20, gro=False)
    ps.sync({("127.0.0.1", 9)})
    assert ps.socks == {} and ps.open_failures == 1
    plain.close()


# -- the router's reader -------------------------------------------------------------------------
class _GatedPoller:
    """Stands in for the reader's poller: while the gate is shut, the reader waits before polling."""

    def __init__(self, poller: Any) -> None:
        self.poller = poller
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(30)
        return self.poller.poll(timeout)  # type: ignore[no-any-return]


def _direct(a: Node, b: Node) -> bool:
    a.send(b, wg(0))
    b.send(a, wg(0))
    return all(n.status().peers[0].path == "direct" for n in (a, b))


def test_a_flood_that_overflows_the_shared_queue_costs_the_peer_nothing() -> None:
    """B's reader stalls (a loaded machine) while a stranger sends more than B's shared queue holds,
    then A sends 300 datagrams on the direct path: the kernel dropped much of the flood, and every
    one of A's datagrams arrives (on one queue with the flood, they were dropped with it)."""
    with node_pair(advertise=True) as (a, b):
        wait_until(lambda: _direct(a, b), what="direct both ways")
        wait_until(lambda: b.status().peer_sockets == 1, what="B's socket for A's endpoint")
        router = b.ref("udp")._cell.actor
        gated = _GatedPoller(router._poller)
        router._poller = gated
        assert gated.waiting.wait(5), "B's reader never came back to poll"
        before, sent_before = b.status(), a.status().peers[0].udp_bytes_out
        stranger = _udp()
        junk = b"\x09" * 1400
        flood = 8 * (4 << 20) // 1400  # eight times what a 4 MiB queue could hold of the payload alone
        for _ in range(flood):
            stranger.sendto(junk, ("127.0.0.1", router.bound_port))
        for i in range(1, 301):
            a.send(b, wg(i))
        wait_until(lambda: a.status().peers[0].udp_bytes_out >= sent_before + 300 * len(wg(0)),
                   what="A's 300 sent")  # A's router sent them: they are in B's kernel now
        time.sleep(0.2)
        gated.gate.set()
        wait_until(lambda: seqs(b, "udp") >= set(range(1, 301)), what="all of A's datagrams at B")
        after = b.status()
        junk_read = after.early_drops["unknown_kind"] - before.early_drops["unknown_kind"]
        assert junk_read < flood, "the shared queue never overflowed: the test proves nothing"
        assert after.peer_socket_datagrams - before.peer_socket_datagrams >= 300
        stranger.close()


def test_an_icmp_error_on_a_peer_socket_is_read_and_skipped() -> None:
    """A goes away; B's sends to A's endpoint earn ICMP port-unreachable, which Linux reports on B's
    connected socket for that endpoint: the reader skips it and keeps reading, no restart."""
    with node_pair(advertise=True) as (a, b):
        wait_until(lambda: _direct(a, b), what="direct both ways")
        wait_until(lambda: b.status().peer_sockets == 1, what="B's socket for A's endpoint")
        cell = b.ref("udp")._cell
        incarnation = cell.incarnation
        a.system.shutdown(10)
        for i in range(20):
            b.send(a, wg(i))
            time.sleep(0.01)
        stranger = _udp()
        read = b.status().datagrams_read
        stranger.sendto(b"\x09" * 100, ("127.0.0.1", cell.actor.bound_port))
        wait_until(lambda: b.status().datagrams_read > read, what="B still reading")
        assert cell.incarnation == incarnation
        stranger.close()


def test_a_peer_that_leaves_gives_its_socket_back() -> None:
    """A leaves B's netmap: B's reader reads A's socket one last time and closes it; A's datagrams
    (from an endpoint no peer has now) land on the shared socket as a stranger's."""
    with node_pair(advertise=True) as (a, b):
        wait_until(lambda: _direct(a, b), what="direct both ways")
        wait_until(lambda: b.status().peer_sockets == 1, what="B's socket for A's endpoint")
        router = b.ref("udp")._cell.actor
        own = next(iter(router._peer_socks.socks.values()))
        b.ref("disco").tell(SetPeers(peers=()))
        wait_until(lambda: b.status().peer_sockets == 0 and not b.status().peers, what="A gone from B")
        wait_until(lambda: own.fileno() == -1, what="A's socket closed")  # the reader's next turn
        before = b.status()
        a.send(b, wg(9))  # A still has B's path
        wait_until(lambda: b.status().unknown_udp_source > before.unknown_udp_source, what="read")
        assert b.status().peer_socket_datagrams == before.peer_socket_datagrams  # on the shared socket
