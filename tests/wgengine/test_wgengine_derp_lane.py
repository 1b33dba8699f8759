"""The engine tells a DERP-only peer's bursts to that region's DERP client itself (one hop fewer
than through the router), counted for the router's status; any other peer, or a client that is not
there, goes to magicsock as before."""

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
    DerpSends,
    WgDirectActive,
    WgDirectPaths,
    WgDirectPathsRequest,
)
from pytsnet.messages.wgengine import IpPacketOut, WgConfig, WgDatagramOut, WgDatagramsOut, WgPeer
from pytsnet.testing.polling import wait_until


@pytest.fixture
def rig() -> Iterator[tuple[ActorRef, ActorRef, list[object], list[object], socket.socket]]:
    with lane_rig("wg-derp-lane") as r:
        yield r.engine, r.magicsock, r.router_log, r.derp_log, r.peer_sock


def _to(log: list[object], kind: type, peer: str) -> list[object]:
    return [m for m in log if isinstance(m, kind) and getattr(m, "peer", None) == peer]


def test_derp_only_peers_go_to_their_derp_client_the_rest_to_magicsock(rig) -> None:  # type: ignore[no-untyped-def]
    engine, magicsock, router_log, derp_log, _peer_sock = rig
    wait_until(lambda: any(isinstance(m, WgDirectPathsRequest) for m in router_log), 5, "table asked for")
    relayed, gone_region, absent = peers(3)
    engine.tell(WgConfig(addresses=["100.64.0.1/32"], peers=[
        WgPeer(node_key=relayed, allowed_ips=["100.64.0.2/32"]),
        WgPeer(node_key=gone_region, allowed_ips=["100.64.0.3/32"]),
        WgPeer(node_key=absent, allowed_ips=["100.64.0.4/32"]),
    ]))
    engine.tell(WgDirectPaths(peers=(), addrs=(), until=(), gso=False, derp_peers=(relayed, gone_region),
                              derp_actors=("ms.derp.1", "ms.derp.2")))

    # DERP-only, its client there: the initiation goes to the client, not through the router.
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    wait_until(lambda: _to(derp_log, DerpSends, relayed), 5, "told to the DERP client")
    (sends,) = _to(derp_log, DerpSends, relayed)
    assert isinstance(sends, DerpSends) and sends.datas[0][0] == 1  # a handshake initiation
    wait_until(lambda: _to(router_log, WgDirectActive, relayed), 5, "the activity noted")
    assert not _to(router_log, WgDatagramOut, relayed) and not _to(router_log, WgDatagramsOut, relayed)
    wait_until(lambda: udp_lane.derp_counts(magicsock, relayed)[0] == len(sends.datas[0]), 5, "counted")

    # Its region's client is not running (not spawned, restarting): the router decides, as before.
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.3", payload=b"hi")))
    wait_until(lambda: _to(router_log, WgDatagramOut, gone_region), 5, "via magicsock")
    # Not in either table: the router (which drops and counts an unknown peer).
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.4", payload=b"hi")))
    wait_until(lambda: _to(router_log, WgDatagramOut, absent), 5, "via magicsock")
    assert not _to(derp_log, DerpSends, gone_region) and not _to(derp_log, DerpSends, absent)


def test_a_peer_is_in_one_table_at_most(rig) -> None:  # type: ignore[no-untyped-def]
    """A row moves the peer between the direct and the DERP-only table; removal and reset clear both.
    (Each peer's first packet starts a handshake: its initiation shows which way the engine sends.)"""
    engine, _magicsock, router_log, derp_log, peer_sock = rig
    a, b, c, d = peers(4)
    engine.tell(WgConfig(addresses=["100.64.0.1/32"], peers=[
        WgPeer(node_key=p, allowed_ips=[f"100.64.0.{i}/32"]) for i, p in enumerate((a, b, c, d), 2)]))
    dst, later = peer_sock.getsockname(), time.monotonic() + 600
    engine.tell(WgDirectPaths(peers=(a, c), addrs=(dst, dst), until=(later, later), gso=False,
                              derp_peers=(b, d), derp_actors=("ms.derp.1", "ms.derp.1")))
    engine.tell(WgDirectPaths(peers=(b,), addrs=(dst,), until=(later,), gso=False, reset=False,
                              derp_peers=(a,), derp_actors=("ms.derp.1",)))  # a: DERP only now; b: direct
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.2", payload=b"hi")))
    wait_until(lambda: _to(derp_log, DerpSends, a), 5, "a via its DERP client")
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.3", payload=b"hi")))
    assert peer_sock.recv(2048)[0] == 1  # b's initiation: the engine's own UDP send
    assert not _to(derp_log, DerpSends, b)

    engine.tell(WgDirectPaths(peers=(), addrs=(), until=(), gso=False, reset=False, removed=(c,)))
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.4", payload=b"hi")))
    wait_until(lambda: _to(router_log, WgDatagramOut, c), 5, "c removed: via magicsock")
    engine.tell(WgDirectPaths(peers=(), addrs=(), until=(), gso=False))  # a reset to an empty table
    engine.tell(IpPacketOut(data=udp("100.64.0.1", "100.64.0.5", payload=b"hi")))
    wait_until(lambda: _to(router_log, WgDatagramOut, d), 5, "d after the reset: via magicsock")
    assert not _to(derp_log, DerpSends, c) and not _to(derp_log, DerpSends, d)
