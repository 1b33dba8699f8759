"""An engine wired to recording stand-ins for magicsock's router (and a DERP client), with the
router's UDP socket published in ``udp_lane``: the rig of the engine's direct and DERP lane tests.

The lanes carry an established session's datagrams; a flush that publishes a new receiver index
(a handshake) goes through the router's mailbox. ``session`` gives the engine a session with a peer
whose key the test holds, so the lanes can be watched with transport datagrams."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from wgengine_helpers import udp

from pytsnet.actors.magicsock import udp_lane
from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, handles
from pytsnet.actors.wgengine import WgEngine
from pytsnet.messages.magicsock import (
    DerpSends,
    WgDatagramIn,
    WgDirectActive,
    WgDirectPathsRequest,
    WgHandshakeQueueFull,
    WgLiveIndexes,
)
from pytsnet.messages.wgengine import IpPacketOut, WgDatagramOut, WgDatagramsOut
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import NodePrivate, NodePublic
from pytsnet.wire.wireguard.device import Device, PeerConfig


class Recorder(Actor):
    """A magicsock router, or a DERP client, that records what the engine tells it, in order."""

    def __init__(self, log: list[object]) -> None:
        self.log = log

    @handles(WgDatagramOut, WgDatagramsOut, WgLiveIndexes, WgHandshakeQueueFull, WgDirectPathsRequest,
             WgDirectActive, DerpSends)
    def record(self, msg: object) -> None:
        self.log.append(msg)


@dataclass
class LaneRig:
    engine: ActorRef
    magicsock: ActorRef
    router_log: list[object]
    derp_log: list[object]
    """What the DERP client ``ms.derp.1`` was told."""
    router_sock: socket.socket
    peer_sock: socket.socket
    public: NodePublic
    """The engine's node key."""


@contextlib.contextmanager
def lane_rig(name: str) -> Iterator[LaneRig]:
    system = ActorSystem(name)
    router_log: list[object] = []
    derp_log: list[object] = []
    magicsock = system.spawn(Recorder, router_log, name="magicsock")
    system.spawn(Recorder, derp_log, name="ms.derp.1")
    router_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router_sock.bind(("127.0.0.1", 0))
    peer_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer_sock.bind(("127.0.0.1", 0))
    peer_sock.settimeout(5)
    udp_lane.publish(magicsock, router_sock)
    private = NodePrivate.generate()
    engine = system.spawn(WgEngine, private, name="wgengine")
    try:
        yield LaneRig(engine, magicsock, router_log, derp_log, router_sock, peer_sock, private.public())
    finally:
        udp_lane.withdraw(magicsock, router_sock)
        system.shutdown()
        router_sock.close()
        peer_sock.close()


def peers(n: int) -> list[str]:
    """``n`` fresh node keys, as text."""
    return [NodePrivate.generate().public().to_text() for _ in range(n)]


def peer_keys(n: int) -> list[NodePrivate]:
    """``n`` fresh node keys whose private halves the test holds (for ``session``)."""
    return [NodePrivate.generate() for _ in range(n)]


def _datas(m: object) -> tuple[bytes, ...]:
    if isinstance(m, WgDatagramOut):
        return (m.data,)
    return m.datas if isinstance(m, WgDatagramsOut) else ()


def session(rig: LaneRig, peer: NodePrivate, our_ip: str, peer_ip: str) -> Device:
    """Give the engine (configured with ``peer`` at ``peer_ip`` already, and no lane table for it yet) a
    session with ``peer``: a packet to ``peer_ip`` makes it initiate through the router's mailbox, a
    sans-IO ``Device`` holding ``peer``'s key answers, and this returns that device once the engine's
    staged packet has gone out too."""
    key = peer.public().to_text()
    dev = Device(peer)
    dev.set_peers([PeerConfig(rig.public, (f"{our_ip}/32",))])
    start = len(rig.router_log)
    rig.engine.tell(IpPacketOut(data=udp(our_ip, peer_ip, payload=b"first")))

    def sent(kind: int) -> bytes | None:
        for m in list(rig.router_log)[start:]:
            if getattr(m, "peer", None) == key:
                for d in _datas(m):
                    if d[0] == kind:
                        return d
        return None

    wait_until(lambda: sent(1) is not None, 5, "the initiation, through the router")
    initiation = sent(1)
    assert initiation is not None
    dev.receive(initiation, time.monotonic(), src=b"rig")
    [(_, response)] = dev.datagrams_to_send()
    rig.engine.tell(WgDatagramIn(peer=key, data=bytes(response), via="udp", src="127.0.0.1:9"))
    wait_until(lambda: sent(4) is not None, 5, "the staged packet, once the handshake completed")
    return dev
