"""The engine writes to direct-only peers on magicsock's UDP socket itself (``udp_lane``), and hands
everything else to magicsock: a peer not in the table, one whose trusted time has passed, or any
peer once the socket is gone."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from lane_rig import lane_rig, peers
from wgengine_helpers import udp

from pytsnet.actors.magicsock import udp_lane
from pytsnet.actors.runtime import ActorRef
from pytsnet.messages.magicsock import (
    WgDirectActive,
    WgDirectPaths,
    WgDirectPathsRequest,
)
from pytsnet.messages.wgengine import IpPacketOut, WgConfig, WgDatagramOut, WgDatagramsOut, WgPeer
from pytsnet.testing.polling import wait_until


@pytest.fixture
def rig() -> Iterator[tuple[ActorRef, ActorRef, list[object], socket.socket, socket.socket]]:
    with lane_rig("wg-direct") as r:
        yield r.engine, r.magicsock, r.router_log, r.router_sock, r.peer_sock


def test_direct_only_peers_are_written_by_the_engine_the_rest_go_to_magicsock(rig) -> None:  # type: ignore[no-untyped-def]
    engine, magicsock, log, router_sock, peer_sock = rig
    wait_until(lambda: any(isinstance(m, WgDirectPathsRequest) for m in log), 5, "table asked for at start")
    fresh, stale, absent = peers(3)
    engine.tell(WgConfig(addresses=["100.64.0.1/32"], peers=[
        WgPeer(node_key=fresh, allowed_ips=["100.64.0.2/32"]),
        WgPeer(node_key=stale, allowed_ips=["100.64.0.3/32"]),
        WgPeer(node_key=absent, allowed_ips=["100.64.0.4/32"]),
    ]))
    dst = peer_sock.getsockname()
    now = time.monotonic()
    engine.tell(WgDirectPaths(peers=(fresh, stale), addrs=(dst, dst), until=(now + 600, now - 1), gso=True))

    # A direct-only peer: the handshake initiation leaves from magicsock's socket, not its mailbox.
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    data, src = peer_sock.recvfrom(2048)
    assert data[0] == 1 and src == router_sock.getsockname()  # an initiation, from the router's port
    wait_until(lambda: any(isinstance(m, WgDirectActive) and m.peer == fresh for m in log), 5, "activity")
    assert not any(isinstance(m, WgDatagramOut | WgDatagramsOut) for m in log)
    wait_until(lambda: udp_lane.sent_bytes(magicsock, fresh) == len(data), 5, "the send counted")

    # Trusted time over: magicsock decides (it may add DERP), so the engine tells it.
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.3", payload=b"hi")))
    wait_until(lambda: any(isinstance(m, WgDatagramOut) and m.peer == stale for m in log), 5, "via magicsock")
    # Not in the table at all: the same.
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.4", payload=b"hi")))
    wait_until(lambda: any(isinstance(m, WgDatagramOut) and m.peer == absent for m in log), 5,
               "via magicsock")
    assert udp_lane.sent_bytes(magicsock, stale) == udp_lane.sent_bytes(magicsock, absent) == 0


def test_without_the_socket_the_burst_goes_to_magicsock(rig) -> None:  # type: ignore[no-untyped-def]
    engine, magicsock, log, router_sock, peer_sock = rig
    (peer,) = peers(1)
    engine.tell(WgConfig(addresses=["100.64.0.1/32"],
                         peers=[WgPeer(node_key=peer, allowed_ips=["100.64.0.2/32"])]))
    engine.tell(WgDirectPaths(peers=(peer,), addrs=(peer_sock.getsockname(),),
                              until=(time.monotonic() + 600,), gso=False))
    udp_lane.withdraw(magicsock, router_sock)  # magicsock restarting: its socket is gone
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    wait_until(lambda: any(isinstance(m, WgDatagramOut) and m.peer == peer for m in log), 5, "via magicsock")
    peer_sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        peer_sock.recv(2048)


def test_send_on_keeps_order_and_reports_gso(rig) -> None:  # type: ignore[no-untyped-def]
    _, magicsock, _, _, peer_sock = rig
    burst = [bytes([4, 0, 0, 0, i]) + bytes(1227) for i in range(10)] + [b"\x04\x00\x00\x00tail"]
    res = udp_lane.send_burst(magicsock, "p", peer_sock.getsockname(), burst, True)
    assert res is not None and res.gso and res.gso_sends == 1 and res.gso_datagrams == 11
    assert [peer_sock.recv(2048) for _ in burst] == burst
    res = udp_lane.send_burst(magicsock, "p", peer_sock.getsockname(), burst, False)
    assert res is not None and res.gso_sends == 0
    assert [peer_sock.recv(2048) for _ in burst] == burst
    assert udp_lane.sent_bytes(magicsock, "p") == 2 * sum(map(len, burst))


def test_table_changes_apply_in_order(rig) -> None:  # type: ignore[no-untyped-def]
    """A reset replaces the table, a change adds or removes one peer's row."""
    engine, magicsock, log, _, peer_sock = rig
    a, b = peers(2)
    engine.tell(WgConfig(addresses=["100.64.0.1/32"], peers=[
        WgPeer(node_key=a, allowed_ips=["100.64.0.2/32"]),
        WgPeer(node_key=b, allowed_ips=["100.64.0.3/32"])]))
    dst, later = peer_sock.getsockname(), time.monotonic() + 600
    engine.tell(WgDirectPaths(peers=(a,), addrs=(dst,), until=(later,), gso=False))
    engine.tell(WgDirectPaths(peers=(b,), addrs=(dst,), until=(later,), gso=False, reset=False))
    engine.tell(WgDirectPaths(peers=(), addrs=(), until=(), gso=False, reset=False, removed=(a,)))
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))  # a: removed
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.3", payload=b"hi")))  # b: added
    assert peer_sock.recv(2048)[0] == 1  # b's initiation, sent by the engine
    wait_until(lambda: any(isinstance(m, WgDatagramOut) and m.peer == a for m in log), 5, "a via magicsock")
    # the engine counts a send after the syscall returns: the peer may read the datagram first
    wait_until(lambda: udp_lane.sent_bytes(magicsock, b) > 0, 5, "b's send counted")
    assert udp_lane.sent_bytes(magicsock, a) == 0
