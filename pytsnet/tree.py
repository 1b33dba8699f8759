"""The device's supervision tree, declared in one place.

    system root
    ├── node (one-for-one, 5 restarts / 10 s)
    │   ├── memory     MemoryKeeper     permanent  (restart memory: snapshots actors tell it, by message)
    │   ├── events     DeviceEvents     permanent  (the facade's inbox: PeersChanged, DataplaneState)
    │   ├── peers      PeerTracker      permanent  (control tells it netmaps; it tells dataplane, events)
    │   ├── dataplane  DataplaneBridge  permanent  (netmap/peers → the subtree below; endpoints → control)
    │   ├── dns        DnsActor         permanent  (MagicDNS at quad-100:53, via the engine; DnsQuery)
    │   ├── tka        TkaAuthorityActor permanent (21e: the verified AUM chain; syncs, tells peers)
    │   └── control    ControlRunner    permanent  (a crash restarts it; it re-registers and re-polls)
    └── dataplane.sup (one-for-one, 20 restarts / 10 s), spawned by the bridge at the first netmap
        ├── wgengine       WgEngine       (sessions, AllowedIPs routing, packet filter)
        ├── magicsock.sup  (one-for-one, 20 / 10 s: udp, disco, stun, derp.<region>; actors/magicsock/node.py)
        ├── forwarder.sup  (only when advertising routes / an exit node: forwarder ForwarderActor,
        │                   forwarder.flows one TcpForwarder/UdpForwarder/EchoForwarder per flow;
        │                   actors/forwarder/supervisor.py)
        └── netstack.sup   (netstack NetstackActor, netstack.flows its TcpFlowActors; actors/netstack/subtree)

Every edge between actors is a name: the PeerTracker's subscribers are in its spawn message
(``PeerTrackerSpawn``), the magicsock actors' siblings, sink and control side in theirs
(``MagicsockSpawn``), the netstack's link sink (the engine) in its spec. The data-plane subtree is one
spec, ``dataplane_spec``: the supervisor, engine, magicsock and ``netstack_spec``. It needs the node
key, our addresses and the DERP map, which only the first netmap brings, so the bridge builds it
(through ``build_dataplane``) rather than the node supervisor; a new node key, address set or DERP
map rebuilds it, and its actors' restart memory is forgotten first.
Packets go UDP socket → magicsock.udp → wgengine → flow actor (established TCP flows, by the routes
the netstack publishes) or netstack (everything else), and back: flow actor → wgengine → magicsock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from pytsnet.actors.control import ControlRunner, RunnerConfig, StateStore
from pytsnet.actors.dataplane import Built, DataplaneBridge
from pytsnet.actors.dns import DNS, DnsActor, Forwarder
from pytsnet.actors.forwarder import FORWARDER, ForwardTable, forwarder_spec
from pytsnet.actors.forwarder.lan import with_host_lan
from pytsnet.actors.keeper import MEMORY, MemoryKeeper
from pytsnet.actors.magicsock.config import timings_message
from pytsnet.actors.magicsock.node import first_home, magicsock_spec
from pytsnet.actors.netstack.channel import FlowRegistry
from pytsnet.actors.netstack.subtree import netstack_spec
from pytsnet.actors.peers import PeerTracker
from pytsnet.actors.runtime import (
    Actor,
    ActorSystem,
    ChildSpec,
    MailboxConfig,
    MailboxPolicy,
    Restart,
    Strategy,
    handles,
    supervisor_spec,
)
from pytsnet.actors.tka.authority_actor import TKA, TkaAuthorityActor  # 21e
from pytsnet.actors.wgengine import ENGINE_MAILBOX, WgEngine
from pytsnet.capture import CAPTURE
from pytsnet.messages.base import Message
from pytsnet.messages.dataplane import DataplaneNetmap, DataplaneState
from pytsnet.messages.dns import DnsSpawn
from pytsnet.messages.magicsock import MagicsockKeys, MagicsockSpawn
from pytsnet.messages.memory import Forget
from pytsnet.messages.peers import PeersChanged, PeerTrackerSpawn
from pytsnet.messages.portmap import PORTMAP_PROTOCOLS, PortmapSpawn
from pytsnet.messages.tka import TkaSpawn  # 21e
from pytsnet.messages.wgengine import IpPacketOut
from pytsnet.net.netstack import Netstack
from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.forward import ForwardPolicy
from pytsnet.wire.keys import DiscoPrivate, NodePrivate
from pytsnet.wire.magicsock.endpoint import Timings
from pytsnet.wire.wireguard.constants import TAILSCALE_PERSISTENT_KEEPALIVE

__all__ = ["CONTROL", "DATAPLANE", "DATAPLANE_SUP", "DNS", "EVENTS", "FORWARDER", "MAGICSOCK", "MEMORY",
           "NETSTACK", "NODE", "PEERS", "WGENGINE", "DataplaneOptions", "DeviceEvents", "build_dataplane",
           "dataplane_spec", "device_tree"]

NETSTACK_MAILBOX = MailboxConfig(65536, MailboxPolicy.DROP_NEWEST, max_bytes=8 << 20)
"""Decrypted packets waiting for the netstack: bounded in bytes as every data-plane edge is."""

NODE, PEERS, CONTROL, DATAPLANE, EVENTS = "node", "peers", "control", "dataplane", "events"
DATAPLANE_SUP, WGENGINE, MAGICSOCK, NETSTACK = "dataplane.sup", "wgengine", "magicsock", "netstack"


@dataclass
class DataplaneOptions:
    """Knobs of the data plane that are not in the netmap."""

    disco: DiscoPrivate
    bind_host: str = "0.0.0.0"
    bind_port: int = 0
    advertise_endpoints: bool = True
    """False: never tell peers our UDP endpoints (DERP only)."""
    ipv6: bool = False  # 24d: Config.ipv6 (the underlay: a dual-stack socket, IPv6 STUN and DERP)
    timings: Timings = field(default_factory=Timings)
    stun_interval: tuple[float, float] = (20.0, 26.0)
    on_netstack: Callable[[Netstack | None], None] | None = None
    """Told None when a rebuild stops the subtree, then the new netstack before the subtree carries
    traffic (the device re-binds its listeners)."""
    dns: DnsSpawn = field(default_factory=DnsSpawn)
    """The MagicDNS resolver's upstreams and bounds."""
    dns_forward: Forwarder | None = None
    """How the resolver sends a forwarded query (over the device's netstack); None: never forwards."""
    forward: ForwardPolicy | None = None
    """Subnet router / exit node: what the netstack forwards to the host network (None: nothing;
    then no forwarder subtree is started)."""
    peerapi_port: int = 0
    """The PeerAPI listener's port, named in our TSMP pongs (as Go's tstun ``PeerAPIPort``)."""
    port_mapping: bool = False  # start a port mapper (``Config.port_mapping``)
    port_mapping_protocols: tuple[str, ...] = PORTMAP_PROTOCOLS  # ``Config.port_mapping_protocols``
    wg_persistent_keepalive: float = TAILSCALE_PERSISTENT_KEEPALIVE  # ``Config.wg_persistent_keepalive``


class DeviceEvents(Actor):
    """The facade's inbox: what the tree tells the device by name reaches its callback here (the one
    actor whose spawn argument is a callable: the boundary between actors and the app's threads)."""

    def __init__(self, publish: Callable[[Message], None]) -> None:
        self.publish = publish

    @handles(PeersChanged, DataplaneState)
    def on_event(self, msg: Message) -> None:
        self.publish(msg)


def device_tree(system: ActorSystem, runner: RunnerConfig, store: StateStore,
                publish: Callable[[Message], None], options: DataplaneOptions,
                tka: TkaSpawn | None = None) -> ChildSpec:
    def build(nm: DataplaneNetmap) -> Built:
        return build_dataplane(system, nm, options)

    # -- the TKA authority actor (21e): after peers (told its updates), before control (tells it netmaps) --
    tka_specs = [] if tka is None else [ChildSpec(TkaAuthorityActor, TKA, args=(tka, store),
                                                  restart=Restart.PERMANENT)]
    return supervisor_spec(NODE, [
        ChildSpec(MemoryKeeper, MEMORY, restart=Restart.PERMANENT),
        ChildSpec(DeviceEvents, EVENTS, args=(publish,), restart=Restart.PERMANENT),
        ChildSpec(PeerTracker, PEERS,
                  args=(PeerTrackerSpawn(subscribers=(DATAPLANE, EVENTS, DNS), control=CONTROL,
                                         tka=TKA if tka is not None else ""),),  # tka: 21e
                  restart=Restart.PERMANENT),
        ChildSpec(DataplaneBridge, DATAPLANE, args=(build, EVENTS, CONTROL, MEMORY), kwargs={"dns": DNS},
                  restart=Restart.PERMANENT),
        ChildSpec(DnsActor, DNS, args=(options.dns, options.dns_forward), restart=Restart.PERMANENT),
        *tka_specs,
        ChildSpec(ControlRunner, CONTROL, args=(runner, store, publish), kwargs={"memory": MEMORY},  # 20d
                  restart=Restart.PERMANENT),
    ], strategy=Strategy.ONE_FOR_ONE, max_restarts=5, within=10.0)


def _addresses(nm: DataplaneNetmap) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    return tuple(ipaddress.ip_address(a.split("/")[0]) for a in nm.self_node.addresses)


def dataplane_spec(system: ActorSystem, nm: DataplaneNetmap, options: DataplaneOptions,
                   registry: FlowRegistry) -> ChildSpec:
    """The whole data-plane subtree for ``nm``'s node key, addresses and DERP regions: the supervisor,
    engine, magicsock and netstack (started in that order: each finds the one before it by name)."""
    private = NodePrivate.from_text(nm.node_private)
    addresses = _addresses(nm)
    v6 = any(a.version == 6 for a in addresses)
    fwd = options.forward if options.forward is not None and options.forward.active else None
    if fwd is not None:
        fwd = with_host_lan(fwd)  # read here, in the node's namespace (the bridge's thread)
    local_routes = () if fwd is None else tuple(str(n) for n in fwd.routes) + (
        ("0.0.0.0/0", "::/0") if fwd.exit_node else ())
    ms = MagicsockSpawn(
        node_public=private.public().to_text(), wg_sink=WGENGINE, regions=nm.derp_regions,
        bind_host=options.bind_host, bind_port=options.bind_port,
        advertise_endpoints=options.advertise_endpoints, control=DATAPLANE, memory=MEMORY, prefix=MAGICSOCK,
        timings=timings_message(options.timings), stun_interval=options.stun_interval,
        portmap=PortmapSpawn(protocols=options.port_mapping_protocols) if options.port_mapping else None,
        ipv6=options.ipv6)  # 24d
    keys = MagicsockKeys(node_private=nm.node_private, disco_private=options.disco.to_text())
    return supervisor_spec(DATAPLANE_SUP, [
        ChildSpec(WgEngine, WGENGINE, args=(private,),
                  kwargs={"magicsock": ms.name("udp"), "sink": NETSTACK, "memory": MEMORY, "ipv6": v6,
                          "capture": CAPTURE, "service": DNS, "local_routes": local_routes,
                          "peerapi_port": options.peerapi_port,  # 21h: unsigned peerAPI-only peers
                          "persistent_keepalive": options.wg_persistent_keepalive},
                  mailbox=ENGINE_MAILBOX),
        magicsock_spec(ms, keys),
        *([] if fwd is None else [forwarder_spec(system, NETSTACK, registry, ForwardTable())]),
        netstack_spec(system, NETSTACK, StackConfig(addresses=addresses, enable_ipv6=v6, forward=fwd,
                                                    tsmp_peerapi_port=options.peerapi_port),
                      WGENGINE, registry, out_message=IpPacketOut, mailbox=NETSTACK_MAILBOX,
                      forwarder=None if fwd is None else FORWARDER),
    ], strategy=Strategy.ONE_FOR_ONE, max_restarts=20, within=10.0)


def _names(nm: DataplaneNetmap) -> dict[str, str]:
    ms = MagicsockSpawn(node_public="", wg_sink=WGENGINE, prefix=MAGICSOCK, regions=nm.derp_regions)
    return {"engine": WGENGINE, "netstack": NETSTACK,
            **{w: ms.name(w) for w in ("udp", "disco", "stun", "sup")},
            **{f"derp.{r.region_id}": ms.derp_name(r.region_id) for r in nm.derp_regions}}


def build_dataplane(system: ActorSystem, nm: DataplaneNetmap, options: DataplaneOptions,
                    stop_timeout: float = 10.0) -> Built:
    """(Re)build the data plane for ``nm``: stop the running subtree (the device hears ``None``), forget
    its actors' restart memory (a new key starts afresh), start ``dataplane_spec``, hand the device
    the new netstack."""
    if options.on_netstack is not None:
        options.on_netstack(None)
    old = system.lookup(DATAPLANE_SUP)
    if old is not None:
        old.stop(stop_timeout)
    names = _names(nm)
    keeper = system.lookup(MEMORY)
    if keeper is not None:
        keeper.tell(Forget(owners=tuple(names.values())))
    registry = FlowRegistry()
    system.spawn_spec(dataplane_spec(system, nm, options, registry))
    ns_ref = system.lookup(NETSTACK)
    assert ns_ref is not None
    if options.on_netstack is not None:
        options.on_netstack(Netstack(ns_ref, registry))
    return Built(names=names, home_region=first_home(nm.derp_regions))
