"""Two magicsock "nodes" on loopback, each its own ActorSystem with a fake W sink collecting datagrams."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytsnet.actors.magicsock.config import MagicsockConfig
from pytsnet.actors.magicsock.node import spawn_magicsock
from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, handles
from pytsnet.messages.magicsock import (
    DerpRegion,
    DerpStatus,
    DerpStatusRequest,
    MagicsockPeer,
    PathStatus,
    PathStatusRequest,
    SetPeers,
    WgDatagramIn,
    WgDatagramOut,
)
from pytsnet.wire.keys import DiscoPrivate, NodePrivate
from pytsnet.wire.magicsock.endpoint import Timings

FAST = Timings(heartbeat=0.5, trust=1.2, session_active=10.0, upgrade=5.0, ping_timeout=0.8,
               ping_interval=0.3)
REGION = 900


class Sink(Actor):
    def __init__(self, got: list[WgDatagramIn]) -> None:
        self.got = got

    @handles(WgDatagramIn)
    def on_in(self, msg: WgDatagramIn) -> None:
        self.got.append(msg)


@dataclass
class Node:
    system: ActorSystem
    config: MagicsockConfig
    got: list[WgDatagramIn] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.config.node_private.public().to_text()

    @property
    def disco_key(self) -> str:
        return self.config.disco_private.public().to_text()

    def ref(self, what: str) -> ActorRef:
        r = self.system.lookup(self.config.name(what))
        assert r is not None
        return r

    def send(self, peer: Node, data: bytes) -> None:
        self.ref("udp").tell(WgDatagramOut(peer=peer.key, data=data))

    def status(self) -> PathStatus:
        return self.ref("udp").ask(PathStatusRequest(), timeout=5)

    def derp_status(self) -> DerpStatus:
        r = self.system.lookup(self.config.derp_name(REGION))
        assert r is not None
        return r.ask(DerpStatusRequest(), timeout=5)

    def endpoints(self) -> tuple[str, ...]:
        if not self.config.advertise_endpoints:
            return ()
        return (f"127.0.0.1:{self.config.bound_port}",)


def make_node(name: str, derp_port: int, stun_port: int, advertise: bool = True,
              dispatcher: str = "thread", *, regions: tuple[DerpRegion, ...] | None = None,
              home: int = REGION, private: NodePrivate | None = None, **config: Any) -> Node:
    """One node; ``regions`` replaces the single plain region at ``derp_port`` (home 0: netcheck picks)."""
    system = ActorSystem(name, dispatcher=dispatcher)
    regions = regions or (DerpRegion(region_id=REGION, host="127.0.0.1", port=derp_port,
                                     stun_port=stun_port),)
    cfg = MagicsockConfig(
        node_private=private or NodePrivate.generate(), disco_private=DiscoPrivate.generate(), wg_sink="w",
        regions=regions,
        home_region=home, bind_host="127.0.0.1", advertise_endpoints=advertise, timings=FAST, **config,
    )
    node = Node(system, cfg)
    system.spawn(Sink, node.got, name="w")
    spawn_magicsock(system, cfg)
    return node


def introduce(a: Node, b: Node) -> None:
    """What the PeerTracker does from the netmap: each learns the other's keys, endpoints, home."""
    for x, y in ((a, b), (b, a)):
        x.ref("disco").tell(SetPeers(peers=(MagicsockPeer(node_key=y.key, disco_key=y.disco_key,
                                                          endpoints=y.endpoints(), home_derp=REGION),)))



def wg(seq: int) -> bytes:
    """A WireGuard-shaped transport datagram (type 4, reserved zeros) carrying ``seq``."""
    return b"\x04\x00\x00\x00" + seq.to_bytes(8, "big") + bytes(32)
