"""Two WgEngine actors wired through a fake magicsock (tests and chaos share this rig)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pytsnet.actors.keeper import MEMORY, MemoryKeeper
from pytsnet.actors.runtime import Actor, ActorRef, ActorSystem, Clock, handles
from pytsnet.actors.wgengine import WgEngine
from pytsnet.messages.wgengine import (
    IpPacketIn,
    WgConfig,
    WgDatagramIn,
    WgDatagramOut,
    WgFilterRule,
    WgNetPortRange,
    WgPeer,
)
from pytsnet.wire.keys import NodePrivate

ALLOW_ALL = [WgFilterRule(SrcIPs=["*"], DstPorts=[WgNetPortRange(IP="*")])]



@dataclass
class Wire:
    """The fake network: node key text -> that node's engine; ``cut`` drops everything."""

    engines: dict[str, ActorRef] = field(default_factory=dict)
    cut: bool = False
    carried: int = 0


class FakeMagicsock(Actor):
    """Forwards one node's WgDatagramOut as the addressed node's WgDatagramIn (as if via DERP)."""

    def __init__(self, wire: Wire, me: str) -> None:
        self.wire = wire
        self.me = me

    @handles(WgDatagramOut)
    def out(self, msg: WgDatagramOut) -> None:
        target = self.wire.engines.get(msg.peer)
        if target is None or self.wire.cut:
            return
        self.wire.carried += 1
        target.tell(WgDatagramIn(peer=self.me, data=msg.data, via="derp", src="derp:1"))


class Sink(Actor):
    def __init__(self, got: list[bytes]) -> None:
        self.got = got

    @handles(IpPacketIn)
    def on_in(self, msg: IpPacketIn) -> None:
        self.got.append(msg.data)


@dataclass
class Node:
    system: ActorSystem
    engine: ActorRef
    key: NodePrivate
    addr: str
    got: list[bytes]

    @property
    def text(self) -> str:
        return self.key.public().to_text()


def make_pair(clock: Clock | None = None, *, peerapi_port: int = 0) -> tuple[Node, Node, Wire]:
    wire = Wire()
    nodes = []
    for i in (1, 2):
        key = NodePrivate.generate()
        system = ActorSystem(f"wg-node{i}", clock=clock)
        got: list[bytes] = []
        system.spawn(FakeMagicsock, wire, key.public().to_text(), name="magicsock")
        system.spawn(Sink, got, name="netstack")
        system.spawn(MemoryKeeper, name=MEMORY)  # the engine's WgConfig survives its restarts there
        engine = system.spawn(WgEngine, key, memory=MEMORY, peerapi_port=peerapi_port, name="wgengine")
        nodes.append(Node(system, engine, key, f"100.64.0.{i}", got))
        wire.engines[key.public().to_text()] = engine
    a, b = nodes
    for me, other in ((a, b), (b, a)):
        me.engine.tell(WgConfig(addresses=[f"{me.addr}/32"], peers=[WgPeer(node_key=other.text,
                                allowed_ips=[f"{other.addr}/32"])], packet_filter=ALLOW_ALL))
    return a, b, wire
