"""The engine tells a DERP-only peer's bursts of an established session to that region's DERP client
itself (one hop fewer than through the router), counted for the router's status; any other peer, a
client that is not there, or a flush that publishes a new receiver index (a handshake) goes to
magicsock as before."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from lane_rig import LaneRig, lane_rig, peer_keys, session
from wgengine_helpers import udp

from pytsnet.actors.magicsock import udp_lane
from pytsnet.messages.magicsock import (
    DerpSends,
    WgDirectActive,
    WgDirectPaths,
    WgDirectPathsRequest,
)
from pytsnet.messages.wgengine import IpPacketOut, WgConfig, WgDatagramOut, WgDatagramsOut, WgPeer
from pytsnet.testing.polling import wait_until


@pytest.fixture
def lane() -> Iterator[LaneRig]:
    with lane_rig("wg-derp-lane") as r:
        yield r


def _to(log: list[object], kind: type, peer: str) -> list[object]:
    return [m for m in list(log) if isinstance(m, kind) and getattr(m, "peer", None) == peer]


def _sessions(lane: LaneRig, n: int) -> list[str]:
    """``n`` peers at 100.64.0.2, .3, ... with a session each (set up through the router)."""
    ps = peer_keys(n)
    keys = [p.public().to_text() for p in ps]
    lane.engine.tell(WgConfig(addresses=["100.64.0.1/32"], peers=[
        WgPeer(node_key=k, allowed_ips=[f"100.64.0.{i}/32"]) for i, k in enumerate(keys, 2)]))
    for i, p in enumerate(ps, 2):
        session(lane, p, "100.64.0.1", f"100.64.0.{i}")
    return keys


def test_a_handshake_goes_through_the_router_even_to_a_derp_only_peer(lane: LaneRig) -> None:
    """Its response may come back on UDP, where the reader checks the index the router was told."""
    (p,) = peer_keys(1)
    key = p.public().to_text()
    lane.engine.tell(WgConfig(addresses=["100.64.0.1/32"], peers=[WgPeer(node_key=key,
                                                                          allowed_ips=["100.64.0.2/32"])]))
    lane.engine.tell(WgDirectPaths(peers=(), addrs=(), until=(), gso=False, derp_peers=(key,),
                                   derp_actors=("ms.derp.1",)))
    lane.engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    wait_until(lambda: _to(lane.router_log, WgDatagramOut, key), 5, "the initiation, through the router")
    assert not _to(lane.derp_log, DerpSends, key)


def test_derp_only_peers_go_to_their_derp_client_the_rest_to_magicsock(lane: LaneRig) -> None:
    engine, magicsock, router_log, derp_log = lane.engine, lane.magicsock, lane.router_log, lane.derp_log
    wait_until(lambda: any(isinstance(m, WgDirectPathsRequest) for m in router_log), 5, "table asked for")
    relayed, gone_region, absent = _sessions(lane, 3)
    engine.tell(WgDirectPaths(peers=(), addrs=(), until=(), gso=False, derp_peers=(relayed, gone_region),
                              derp_actors=("ms.derp.1", "ms.derp.2")))
    before = len(router_log)

    # DERP-only, its client there: the datagram goes to the client, not through the router.
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    wait_until(lambda: _to(derp_log, DerpSends, relayed), 5, "told to the DERP client")
    (sends,) = _to(derp_log, DerpSends, relayed)
    assert isinstance(sends, DerpSends) and sends.datas[0][0] == 4  # the session's transport
    wait_until(lambda: _to(router_log, WgDirectActive, relayed), 5, "the activity noted")
    after = list(router_log)[before:]
    assert not _to(after, WgDatagramOut, relayed) and not _to(after, WgDatagramsOut, relayed)
    wait_until(lambda: udp_lane.derp_counts(magicsock, relayed)[0] == len(sends.datas[0]), 5, "counted")

    # Its region's client is not running (not spawned, restarting): the router decides, as before.
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.3", payload=b"hi")))
    wait_until(lambda: _to(list(router_log)[before:], WgDatagramOut, gone_region), 5, "via magicsock")
    # Not in either table: the router (which holds it for a path, or drops and counts it).
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.4", payload=b"hi")))
    wait_until(lambda: _to(list(router_log)[before:], WgDatagramOut, absent), 5, "via magicsock")
    assert not _to(derp_log, DerpSends, gone_region) and not _to(derp_log, DerpSends, absent)


def test_a_peer_is_in_one_table_at_most(lane: LaneRig) -> None:
    """A row moves the peer between the direct and the DERP-only table; removal and reset clear both.
    (Each peer has a session: its next datagram shows which way the engine sends.)"""
    engine, router_log, derp_log, peer_sock = lane.engine, lane.router_log, lane.derp_log, lane.peer_sock
    a, b, c, d = _sessions(lane, 4)
    dst, later = peer_sock.getsockname(), time.monotonic() + 600
    engine.tell(WgDirectPaths(peers=(a, c), addrs=(dst, dst), until=(later, later), gso=False,
                              derp_peers=(b, d), derp_actors=("ms.derp.1", "ms.derp.1")))
    engine.tell(WgDirectPaths(peers=(b,), addrs=(dst,), until=(later,), gso=False, reset=False,
                              derp_peers=(a,), derp_actors=("ms.derp.1",)))  # a: DERP only now; b: direct
    before = len(router_log)
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    wait_until(lambda: _to(derp_log, DerpSends, a), 5, "a via its DERP client")
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.3", payload=b"hi")))
    assert peer_sock.recv(2048)[0] == 4  # b's datagram: the engine's own UDP send
    assert not _to(derp_log, DerpSends, b)

    engine.tell(WgDirectPaths(peers=(), addrs=(), until=(), gso=False, reset=False, removed=(c,)))
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.4", payload=b"hi")))
    wait_until(lambda: _to(list(router_log)[before:], WgDatagramOut, c), 5, "c removed: via magicsock")
    engine.tell(WgDirectPaths(peers=(), addrs=(), until=(), gso=False))  # a reset to an empty table
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.5", payload=b"hi")))
    wait_until(lambda: _to(list(router_log)[before:], WgDatagramOut, d), 5, "d after the reset: magicsock")
    assert not _to(derp_log, DerpSends, c) and not _to(derp_log, DerpSends, d)
