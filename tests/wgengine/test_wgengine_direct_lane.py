"""The engine writes an established session's datagrams to direct-only peers on magicsock's UDP
socket itself (``udp_lane``), and hands everything else to magicsock: a peer not in the table, one
whose trusted time has passed, any peer once the socket is gone, and every flush that publishes a new
receiver index (a handshake), which must reach magicsock's reader before anything answering it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from lane_rig import LaneRig, lane_rig, peer_keys, session
from wgengine_helpers import udp

from pytsnet.actors.magicsock import udp_lane
from pytsnet.actors.runtime import ActorRef
from pytsnet.messages.magicsock import (
    WgDirectActive,
    WgDirectPaths,
    WgDirectPathsRequest,
    WgLiveIndexes,
)
from pytsnet.messages.wgengine import IpPacketOut, WgConfig, WgDatagramOut, WgDatagramsOut, WgPeer
from pytsnet.testing.polling import wait_until
from pytsnet.wire.wireguard.device import Device


@pytest.fixture
def lane() -> Iterator[LaneRig]:
    with lane_rig("wg-direct") as r:
        yield r


@pytest.fixture
def rig(lane: LaneRig) -> tuple[ActorRef, ActorRef, list[object], socket.socket, socket.socket]:
    return lane.engine, lane.magicsock, lane.router_log, lane.router_sock, lane.peer_sock


def _config(lane: LaneRig, keys: list[str]) -> None:
    """Our address 100.64.0.1; the i-th peer at 100.64.0.(i+2)."""
    lane.engine.tell(WgConfig(addresses=["100.64.0.1/32"], peers=[
        WgPeer(node_key=k, allowed_ips=[f"100.64.0.{i}/32"]) for i, k in enumerate(keys, 2)]))


def _plain(dev: Device, datagram: bytes) -> bytes:
    """What the peer's device decrypts ``datagram`` to (one IP packet)."""
    dev.receive(datagram, time.monotonic(), src=b"rig")
    [(_, pkt)] = dev.received_packets()
    return pkt


def _via_router(log: list[object], peer: str, kind: int) -> bool:
    return any(getattr(m, "peer", None) == peer and any(d[0] == kind for d in (
        (m.data,) if isinstance(m, WgDatagramOut) else m.datas if isinstance(m, WgDatagramsOut) else ()))
        for m in list(log))


def test_a_handshake_goes_through_the_router_behind_its_new_index(lane: LaneRig) -> None:
    """Even to a peer published direct-only: written on the socket at once, the initiation could be
    answered before the router's thread took the new index, and its reader would drop the response
    as an unknown index (WireGuard's 5 s retry: a first dial stalled)."""
    (p,) = peer_keys(1)
    key = p.public().to_text()
    _config(lane, [key])
    lane.engine.tell(WgDirectPaths(peers=(key,), addrs=(lane.peer_sock.getsockname(),),
                                   until=(time.monotonic() + 600,), gso=False))
    lane.engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    wait_until(lambda: _via_router(lane.router_log, key, 1), 5, "the initiation, through the router")
    log = list(lane.router_log)
    [at] = [i for i, m in enumerate(log) if isinstance(m, WgDatagramOut) and m.peer == key]
    init = log[at]
    assert isinstance(init, WgDatagramOut)
    index = int.from_bytes(init.data[4:8], "little")  # the initiation's sender index
    told = [i for i, m in enumerate(log) if isinstance(m, WgLiveIndexes) and index in m.indexes]
    assert told and told[0] < at, log  # published first, in the same mailbox
    lane.peer_sock.settimeout(0.3)
    with pytest.raises(TimeoutError):  # nothing on the lane
        lane.peer_sock.recv(2048)


def test_direct_only_peers_are_written_by_the_engine_the_rest_go_to_magicsock(lane: LaneRig) -> None:
    engine, magicsock, log, peer_sock = lane.engine, lane.magicsock, lane.router_log, lane.peer_sock
    wait_until(lambda: any(isinstance(m, WgDirectPathsRequest) for m in log), 5, "table asked for at start")
    fresh, stale, absent = peer_keys(3)
    keys = [k.public().to_text() for k in (fresh, stale, absent)]
    _config(lane, keys)
    devs = [session(lane, k, "100.64.0.1", f"100.64.0.{i}") for i, k in enumerate((fresh, stale, absent), 2)]
    dst = peer_sock.getsockname()
    now = time.monotonic()
    engine.tell(WgDirectPaths(peers=tuple(keys[:2]), addrs=(dst, dst), until=(now + 600, now - 1), gso=True))

    # A direct-only peer: the session's datagram leaves from magicsock's socket, not its mailbox.
    before = len(log)
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    data, src = peer_sock.recvfrom(2048)
    assert data[0] == 4 and src == lane.router_sock.getsockname()  # transport, from the router's port
    assert _plain(devs[0], data) == udp("100.64.0.1", "100.64.0.2", payload=b"hi")
    wait_until(lambda: any(isinstance(m, WgDirectActive) and m.peer == keys[0] for m in log), 5, "activity")
    assert not any(isinstance(m, WgDatagramOut | WgDatagramsOut) for m in list(log)[before:])
    wait_until(lambda: udp_lane.sent_bytes(magicsock, keys[0]) == len(data), 5, "the send counted")

    # Trusted time over: magicsock decides (it may add DERP), so the engine tells it.
    before = len(log)
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.3", payload=b"hi")))
    wait_until(lambda: _via_router(list(log)[before:], keys[1], 4), 5, "via magicsock")
    # Not in the table at all: the same.
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.4", payload=b"hi")))
    wait_until(lambda: _via_router(list(log)[before:], keys[2], 4), 5, "via magicsock")
    assert udp_lane.sent_bytes(magicsock, keys[1]) == udp_lane.sent_bytes(magicsock, keys[2]) == 0


def test_without_the_socket_the_burst_goes_to_magicsock(lane: LaneRig) -> None:
    engine, magicsock, log, peer_sock = lane.engine, lane.magicsock, lane.router_log, lane.peer_sock
    (p,) = peer_keys(1)
    key = p.public().to_text()
    _config(lane, [key])
    session(lane, p, "100.64.0.1", "100.64.0.2")
    engine.tell(WgDirectPaths(peers=(key,), addrs=(peer_sock.getsockname(),),
                              until=(time.monotonic() + 600,), gso=False))
    udp_lane.withdraw(magicsock, lane.router_sock)  # magicsock restarting: its socket is gone
    before = len(log)
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    wait_until(lambda: _via_router(list(log)[before:], key, 4), 5, "via magicsock")
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


def test_table_changes_apply_in_order(lane: LaneRig) -> None:
    """A reset replaces the table, a change adds or removes one peer's row."""
    engine, magicsock, log, peer_sock = lane.engine, lane.magicsock, lane.router_log, lane.peer_sock
    pa, pb = peer_keys(2)
    a, b = pa.public().to_text(), pb.public().to_text()
    _config(lane, [a, b])
    session(lane, pa, "100.64.0.1", "100.64.0.2")
    session(lane, pb, "100.64.0.1", "100.64.0.3")
    dst, later = peer_sock.getsockname(), time.monotonic() + 600
    engine.tell(WgDirectPaths(peers=(a,), addrs=(dst,), until=(later,), gso=False))
    engine.tell(WgDirectPaths(peers=(b,), addrs=(dst,), until=(later,), gso=False, reset=False))
    engine.tell(WgDirectPaths(peers=(), addrs=(), until=(), gso=False, reset=False, removed=(a,)))
    before = len(log)
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))  # a: removed
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.3", payload=b"hi")))  # b: added
    assert peer_sock.recv(2048)[0] == 4  # b's datagram, sent by the engine
    wait_until(lambda: _via_router(list(log)[before:], a, 4), 5, "a via magicsock")
    # the engine counts a send after the syscall returns: the peer may read the datagram first
    wait_until(lambda: udp_lane.sent_bytes(magicsock, b) > 0, 5, "b's send counted")
    assert udp_lane.sent_bytes(magicsock, a) == 0
