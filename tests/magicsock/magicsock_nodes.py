"""Two magicsock "nodes" on loopback, each its own ActorSystem with a fake W sink collecting datagrams
(and a ``MemoryKeeper``, as a device's tree has, so a restarted actor resumes as it does there)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from magicsock_relay import MiniDerp, MiniStun

from pytsnet.actors.keeper import MEMORY, MemoryKeeper
from pytsnet.actors.magicsock.config import timings_message
from pytsnet.actors.magicsock.node import spawn_magicsock
from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, handles
from pytsnet.messages.magicsock import (
    DerpRegion,
    DerpStatus,
    DerpStatusRequest,
    LocalAddrRequest,
    MagicsockKeys,
    MagicsockPeer,
    MagicsockSpawn,
    PathStatus,
    PathStatusRequest,
    SetPeers,
    WgDatagramIn,
    WgDatagramOut,
    WgDirectPaths,
)
from pytsnet.testing.polling import wait_until
from pytsnet.wire.keys import DiscoPrivate, NodePrivate
from pytsnet.wire.magicsock.endpoint import Timings

FAST = Timings(heartbeat=0.5, trust=1.2, session_active=10.0, upgrade=5.0, ping_timeout=0.8,
               ping_interval=0.3)
REGION = 900


class Sink(Actor):
    def __init__(self, got: list[WgDatagramIn], direct: list[WgDirectPaths]) -> None:
        self.got = got
        self.direct = direct

    @handles(WgDatagramIn)
    def on_in(self, msg: WgDatagramIn) -> None:
        self.got.append(msg)

    @handles(WgDirectPaths)
    def on_direct(self, msg: WgDirectPaths) -> None:
        self.direct.append(msg)


@dataclass
class Node:
    system: ActorSystem
    config: MagicsockSpawn
    private: NodePrivate
    disco: DiscoPrivate
    got: list[WgDatagramIn] = field(default_factory=list)
    direct: list[WgDirectPaths] = field(default_factory=list)  # the router's tables for W, in order

    @property
    def key(self) -> str:
        return self.private.public().to_text()

    @property
    def disco_key(self) -> str:
        return self.disco.public().to_text()

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
        return (self.ref("udp").ask(LocalAddrRequest(), timeout=5).addr,)


def make_node(name: str, derp_port: int, stun_port: int, advertise: bool = True,
              dispatcher: str = "thread", *, regions: tuple[DerpRegion, ...] | None = None,
              home: int = REGION, private: NodePrivate | None = None, **config: Any) -> Node:
    """One node; ``regions`` replaces the single plain region at ``derp_port`` (home 0: netcheck picks)."""
    system = ActorSystem(name, dispatcher=dispatcher)
    regions = regions or (DerpRegion(region_id=REGION, host="127.0.0.1", port=derp_port,
                                     stun_port=stun_port),)
    private = private or NodePrivate.generate()
    disco = DiscoPrivate.generate()
    cfg = MagicsockSpawn(
        node_public=private.public().to_text(), wg_sink="w", regions=regions, memory=MEMORY,
        home_region=home, bind_host="127.0.0.1", advertise_endpoints=advertise, timings=timings_message(FAST),
        **config,
    )
    node = Node(system, cfg, private, disco)
    system.spawn(Sink, node.got, node.direct, name="w")
    system.spawn(MemoryKeeper, name=MEMORY)
    spawn_magicsock(system, cfg, MagicsockKeys(node_private=private.to_text(), disco_private=disco.to_text()))
    return node


def introduce(a: Node, b: Node, *, endpoints: bool = True) -> None:
    """What the PeerTracker does from the netmap: each learns the other's keys, endpoints (unless
    ``endpoints`` is False: a DERP-only peer), home."""
    for x, y in ((a, b), (b, a)):
        x.ref("disco").tell(SetPeers(peers=(MagicsockPeer(node_key=y.key, disco_key=y.disco_key,
                                                          endpoints=y.endpoints() if endpoints else (),
                                                          home_derp=REGION),)))


def know(x: Node, y: Node, home: int) -> None:
    """``x`` admits ``y`` with home region ``home`` (0: control has not told x where y is yet), no
    endpoints; returns once x's router has y's path entry."""
    x.ref("disco").tell(SetPeers(peers=(MagicsockPeer(node_key=y.key, disco_key=y.disco_key,
                                                      home_derp=home),)))
    wait_until(lambda: any(p.peer == y.key for p in x.status().peers), what="path entry")


def paths_known(a: Node, b: Node) -> bool:
    return len(a.status().peers) == 1 and len(b.status().peers) == 1


@contextlib.contextmanager
def node_pair(advertise: bool, *, introduced: bool = True, endpoints: bool = True,
              **config: Any) -> Iterator[tuple[Node, Node]]:
    """Nodes ``a`` and ``b`` on one relay (a MiniDerp and a MiniStun, home ``REGION``), DERP connected,
    and (``introduced``) each knowing the other (``endpoints``: as ``introduce``); all closed after."""
    d, s = MiniDerp(), MiniStun()
    a = make_node("a", d.port, s.port, advertise, **config)
    b = make_node("b", d.port, s.port, advertise, **config)
    try:
        wait_until(lambda: a.derp_status().connected and b.derp_status().connected, what="DERP connected")
        if introduced:
            introduce(a, b, endpoints=endpoints)
            wait_until(lambda: paths_known(a, b), what="paths known")
        yield a, b
    finally:
        assert a.system.shutdown(10)
        assert b.system.shutdown(10)
        d.close()
        s.close()


def seqs(node: Node, via: str | None = None) -> set[int]:
    """The sequence numbers (``wg``) of what ``node``'s sink got (``via``: only over that path)."""
    return {int.from_bytes(m.data[4:12], "big") for m in list(node.got) if via is None or m.via == via}



def wg(seq: int) -> bytes:
    """A WireGuard-shaped transport datagram (type 4, reserved zeros) carrying ``seq``."""
    return b"\x04\x00\x00\x00" + seq.to_bytes(8, "big") + bytes(32)
