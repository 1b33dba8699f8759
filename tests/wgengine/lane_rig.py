"""An engine wired to recording stand-ins for magicsock's router (and a DERP client), with the
router's UDP socket published in ``udp_lane``: the rig of the engine's direct and DERP lane tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from pytsnet.actors.magicsock import udp_lane
from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, handles
from pytsnet.actors.wgengine import WgEngine
from pytsnet.messages.magicsock import (
    DerpSends,
    WgDirectActive,
    WgDirectPathsRequest,
    WgHandshakeQueueFull,
    WgLiveIndexes,
)
from pytsnet.messages.wgengine import WgDatagramOut, WgDatagramsOut
from pytsnet.wire.keys import NodePrivate


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
    engine = system.spawn(WgEngine, NodePrivate.generate(), name="wgengine")
    try:
        yield LaneRig(engine, magicsock, router_log, derp_log, router_sock, peer_sock)
    finally:
        udp_lane.withdraw(magicsock, router_sock)
        system.shutdown()
        router_sock.close()
        peer_sock.close()


def peers(n: int) -> list[str]:
    """``n`` fresh node keys, as text."""
    return [NodePrivate.generate().public().to_text() for _ in range(n)]
