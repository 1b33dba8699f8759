"""The device's supervision tree, declared in one place.

    system root
    ├── node (one-for-one, 5 restarts / 10 s)
    │   ├── peers      PeerTracker      permanent  (first: control tells it netmaps by name)
    │   ├── dataplane  DataplaneBridge  permanent  (netmap/peers → the subtree below; endpoints → control)
    │   └── control    ControlRunner    permanent  (a crash restarts it; it re-registers and re-polls)
    └── dataplane.sup (one-for-one, 20 restarts / 10 s), spawned by the bridge at the first netmap
        ├── wgengine       WgEngine       (sessions, AllowedIPs routing, packet filter)
        ├── magicsock.sup  (udp, disco, stun, derp.<region>; see actors/magicsock/node.py)
        └── netstack.sup   (netstack NetstackActor, netstack.flows its TcpFlowActors; actors/netstack/subtree)

The data-plane subtree needs the node key, our addresses and the DERP map, which only the first
netmap brings, so the bridge spawns it (through ``spawn_dataplane``) rather than the node
supervisor; a new node key, address set or DERP map rebuilds it. Packets go
UDP socket → magicsock.udp → wgengine → netstack → flow actor, and back.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from pytsnet.actors.control import ControlRunner, RunnerConfig, StateStore
from pytsnet.actors.dataplane import DataplaneBridge, DataplaneMemory, Spawned
from pytsnet.actors.magicsock.config import MagicsockConfig
from pytsnet.actors.magicsock.node import spawn_magicsock
from pytsnet.actors.peers import PeerTracker
from pytsnet.actors.runtime import (
    ActorSystem,
    ChildSpec,
    MailboxConfig,
    MailboxPolicy,
    Restart,
    Strategy,
    supervisor_spec,
)
from pytsnet.actors.wgengine import ENGINE_MAILBOX, EngineMemory, WgEngine
from pytsnet.capture import CAPTURE
from pytsnet.messages.base import Message
from pytsnet.messages.dataplane import DataplaneNetmap
from pytsnet.messages.peers import PeersChanged
from pytsnet.messages.wgengine import IpPacketOut
from pytsnet.net.netstack import Netstack
from pytsnet.netstack.config import StackConfig
from pytsnet.wire.keys import DiscoPrivate, NodePrivate
from pytsnet.wire.magicsock.endpoint import Timings

__all__ = ["CONTROL", "DATAPLANE", "DATAPLANE_SUP", "MAGICSOCK", "NETSTACK", "NODE", "PEERS", "WGENGINE",
           "DataplaneOptions", "device_tree", "spawn_dataplane"]

NETSTACK_MAILBOX = MailboxConfig(65536, MailboxPolicy.DROP_NEWEST, max_bytes=8 << 20)
"""Decrypted packets waiting for the netstack: bounded in bytes as every data-plane edge is."""

NODE, PEERS, CONTROL, DATAPLANE = "node", "peers", "control", "dataplane"
DATAPLANE_SUP, WGENGINE, MAGICSOCK, NETSTACK = "dataplane.sup", "wgengine", "magicsock", "netstack"


@dataclass
class DataplaneOptions:
    """Knobs of the data plane that are not in the netmap."""

    disco: DiscoPrivate
    bind_host: str = "0.0.0.0"
    bind_port: int = 0
    advertise_endpoints: bool = True
    """False: never tell peers our UDP endpoints (DERP only)."""
    timings: Timings = field(default_factory=Timings)
    stun_interval: tuple[float, float] = (20.0, 26.0)
    engine_memory: EngineMemory = field(default_factory=EngineMemory)
    on_netstack: Callable[[Netstack], None] | None = None
    """Told each new netstack before the subtree carries traffic (the device re-binds its listeners)."""


def device_tree(system: ActorSystem, runner: RunnerConfig, store: StateStore,
                publish: Callable[[Message], None], options: DataplaneOptions,
                memory: DataplaneMemory) -> ChildSpec:
    def peers_publish(msg: Message) -> None:
        publish(msg)
        if isinstance(msg, PeersChanged) and (bridge := system.lookup(DATAPLANE)) is not None:
            bridge.tell(msg)

    def spawn(nm: DataplaneNetmap) -> Spawned:
        return spawn_dataplane(system, nm, options)

    return supervisor_spec(NODE, [
        ChildSpec(PeerTracker, PEERS, args=(peers_publish,), kwargs={"control": CONTROL},
                  restart=Restart.PERMANENT),
        ChildSpec(DataplaneBridge, DATAPLANE, args=(memory, spawn, publish, CONTROL),
                  restart=Restart.PERMANENT),
        ChildSpec(ControlRunner, CONTROL, args=(runner, store, publish), restart=Restart.PERMANENT),
    ], strategy=Strategy.ONE_FOR_ONE, max_restarts=5, within=10.0)


def spawn_dataplane(system: ActorSystem, nm: DataplaneNetmap, options: DataplaneOptions) -> Spawned:
    """Start the engine, magicsock and netstack for ``nm``'s node key, addresses and DERP regions."""
    private = NodePrivate.from_text(nm.node_private)
    options.engine_memory = EngineMemory()  # a new node key: no configuration carries over
    addresses = tuple(ipaddress.ip_address(a.split("/")[0]) for a in nm.self_node.addresses)
    v6 = any(a.version == 6 for a in addresses)
    sup = system.spawn_spec(supervisor_spec(DATAPLANE_SUP, [
        ChildSpec(WgEngine, WGENGINE, args=(private,),
                  kwargs={"magicsock": f"{MAGICSOCK}.udp", "sink": NETSTACK, "memory": options.engine_memory,
                          "ipv6": v6, "capture": CAPTURE},
                  mailbox=ENGINE_MAILBOX),
    ], strategy=Strategy.ONE_FOR_ONE, max_restarts=20, within=10.0))
    ms = MagicsockConfig(
        node_private=private, disco_private=options.disco, wg_sink=WGENGINE, regions=nm.derp_regions,
        bind_host=options.bind_host, bind_port=options.bind_port,
        advertise_endpoints=options.advertise_endpoints, control=DATAPLANE, prefix=MAGICSOCK,
        timings=options.timings, stun_interval=options.stun_interval)
    spawn_magicsock(system, ms, parent=sup)
    engine = system.lookup(WGENGINE)
    assert engine is not None
    netstack = Netstack.start(system, StackConfig(addresses=addresses, enable_ipv6=v6), engine, name=NETSTACK,
                              out_message=IpPacketOut, mailbox=NETSTACK_MAILBOX, parent=sup)
    names = {"engine": WGENGINE, "netstack": NETSTACK,
             **{w: ms.name(w) for w in ("udp", "disco", "stun", "sup")},
             **{f"derp.{r.region_id}": ms.derp_name(r.region_id) for r in nm.derp_regions}}
    if options.on_netstack is not None:
        options.on_netstack(netstack)
    return Spawned(identity=(nm.node_private, tuple(nm.self_node.addresses), nm.derp_regions),
                   supervisor=sup, names=names, home_region=lambda: ms.home_region, netstack=netstack)
