"""``DataplaneBridge``: the glue between the control side and the two data-plane halves.

Like Go's ``LocalBackend`` → ``wgengine.Reconfig`` / ``magicsock.SetNetworkMap`` path:

* ``DataplaneNetmap`` (from the ControlRunner) carries the node key, our addresses, the DERP map and
  the packet filter. The first one — or one that changes the node key, our addresses or the DERP
  regions — (re)builds the data-plane subtree through the injected ``build`` callable (declared in
  ``pytsnet.tree``; actors may not import the facade: it also hands the device the new netstack).
  Every one reconfigures the engine.
* ``PeersChanged`` (from the PeerTracker, the only place peers are admitted) becomes ``SetPeers`` for
  magicsock's DiscoPinger and the peer list of the engine's ``WgConfig``.
* Our home DERP region (at once, when the subtree starts, then each ``HomeRegion`` the StunProber
  tells) and our endpoints (``LocalEndpoints`` from the StunProber) become a ``LiteUpdate`` to
  control, so peers learn where to reach us;
  ``NetcheckReport`` is kept for status, and what it found rides along to control as Go's
  ``Hostinfo.NetInfo`` (``net_info_facts``), a new update only when it basically changed.
* A periodic ``DataplaneTick`` checks the home DERP connection and live WireGuard sessions and
  tells ``DataplaneState`` to the device's events actor when it changes: the device is "Running"
  only when it is up and control
  has acknowledged our home region (as Go's first map carries NetInfo): a peer that dials us the
  moment we are Running, or that we dial, knows where to answer.

Everything it learned is one immutable ``BridgeMemory``, told to the tree's ``MemoryKeeper`` at each
change and recalled on a restart, so a restarted bridge resumes without waiting for the next netmap
and never spawns a second subtree. The device asks (``GetDataplaneInfo``); it reads nothing here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pytsnet.actors.keeper import recall, remember
from pytsnet.actors.peers.routes import ExitNodeSelection, allowed_ips, select_exit_node
from pytsnet.actors.runtime import Actor, ActorStopped, AskTimeout, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.actors.wgengine.filter_rules import unlocked_allowed_ips
from pytsnet.messages.base import Request
from pytsnet.messages.control import LiteUpdate, LiteUpdateDone, NetInfoFacts
from pytsnet.messages.dataplane import (
    BridgeMemory,
    DataplaneInfo,
    DataplaneNetmap,
    DataplaneState,
    DataplaneTick,
    GetDataplaneInfo,
    LiteTold,
)
from pytsnet.messages.dns import DnsExitNode, DnsNetmap
from pytsnet.messages.magicsock import (
    DerpStatus,
    DerpStatusRequest,
    HomeRegion,
    LocalEndpoints,
    MagicsockPeer,
    NetcheckReport,
    SetPeers,
)
from pytsnet.messages.peers import ExitNodeInfo, PeersChanged, RoutePrefsSet, SetRoutePrefs
from pytsnet.messages.services import TcpServiceAddresses
from pytsnet.messages.wgengine import GetWgStatus, WgConfig, WgPeer, WgStatus

log = subsystem_logger("dataplane")
_R = TypeVar("_R")

__all__ = ["TICK", "Built", "DataplaneBridge", "endpoint_types"]

TICK = 0.25
"""How often readiness is checked (cheap: one ask to the home DerpClient)."""

ENDPOINT_LOCAL, ENDPOINT_STUN = 1, 2
"""``tailcfg.EndpointType`` values control is told alongside the endpoints."""

ANNOUNCE_RETRY = 30.0
"""A ``LiteUpdate`` still unanswered after this long is sent again (the runner may have restarted)."""


@dataclass(frozen=True)
class Built:
    """What ``build`` reports of the subtree it started."""

    names: dict[str, str]
    """Role → actor name: ``engine``, ``udp``, ``disco``, ``stun``, ``derp.<region>``, ``netstack``."""
    home_region: int
    """The home DERP region it starts with (the StunProber tells changes: ``HomeRegion``)."""


def endpoint_types(endpoints: tuple[str, ...], report: NetcheckReport | None) -> list[int]:
    """STUN-discovered endpoints are ``EndpointSTUN``; the rest (bound, configured) ``EndpointLocal``."""
    stun = report.global_v4 if report is not None else None
    return [ENDPOINT_STUN if e == stun else ENDPOINT_LOCAL for e in endpoints]


def identity_of(nm: DataplaneNetmap) -> tuple[Any, ...]:
    """What the subtree is built from: changing any of it needs a new subtree."""
    return (nm.node_private, tuple(nm.self_node.addresses), nm.derp_regions)


class DataplaneBridge(Actor):
    def __init__(self, build: Callable[[DataplaneNetmap], Built], events: str = "events",
                 control: str = "control", memory: str | None = None, dns: str | None = None) -> None:
        self._build = build
        self.dns = dns
        """The MagicDNS resolver, told each netmap's DNS part (None: the tree has none)."""
        self.events = events
        self.control = control
        self.keeper = memory
        self.mem = BridgeMemory()
        self.exit_dns = DnsExitNode()
        """Where the resolver sends names beyond the tailnet, as last told (``DnsExitNode``)."""
        self._told_exit_dns: DnsExitNode | None = None

    def _set(self, **changes: Any) -> None:
        """A new snapshot (ours alone); the keeper gets it for our next incarnation."""
        self.mem = self.mem.model_copy(update=changes)
        remember(self, self.keeper, self.mem)

    def on_start(self) -> None:
        before = recall(self, self.keeper)
        if isinstance(before, BridgeMemory):
            self.mem = before
        if self.mem.netmap is not None:
            self._apply(self.mem.netmap)
        self.send_interval(TICK, DataplaneTick())

    # -- inputs ------------------------------------------------------------------------------------
    @handles(DataplaneNetmap)
    def on_netmap(self, msg: DataplaneNetmap) -> None:
        self._set(netmap=msg)
        if self.dns:
            self.tell_named(self.dns, DnsNetmap(self_node=msg.self_node, settings=msg.dns))
        self._apply(msg)

    @handles(PeersChanged)
    def on_peers(self, msg: PeersChanged) -> None:
        self._set(peers=msg)
        self._configure()

    @handles(SetRoutePrefs)
    def on_route_prefs(self, msg: SetRoutePrefs) -> RoutePrefsSet:
        """The app chose an exit node or route acceptance: re-plumb the engine now."""
        self._set(route_prefs=msg.prefs)
        engaged = self._configure()
        return RoutePrefsSet(prefs=msg.prefs, exit_node=engaged)

    @handles(LocalEndpoints)
    def on_endpoints(self, msg: LocalEndpoints) -> None:
        self._set(endpoints=msg.endpoints, have_endpoints=True)
        self._tell_control()

    @handles(HomeRegion)
    def on_home(self, msg: HomeRegion) -> None:
        self._set(home=msg.region)
        self._tell_control()

    def _tell_control(self) -> None:
        """``LiteUpdate`` control when our endpoints or home DERP region changed (peers learn both).

        The home region goes at once (endpoints follow netcheck): a peer must know where to reach us
        by the time we are Running. An update control has not answered is resent after
        ``ANNOUNCE_RETRY``; a failed one on the next tick."""
        mem = self.mem
        now = self.clock.monotonic()
        if mem.built_for is None:
            return
        facts = net_info_facts(mem.netcheck)
        told = LiteTold(endpoints=mem.endpoints, home=mem.home, net=facts.basic() if facts else None)
        if not (mem.have_endpoints or told.home):
            return  # nothing to tell yet (a tailnet without DERP: wait for netcheck)
        if mem.told == told and (mem.acked == told or now - (mem.told_at or 0.0) < ANNOUNCE_RETRY):
            return
        control = self.lookup(self.control)
        if control is None:
            return
        with contextlib.suppress(ActorStopped):
            control.tell(LiteUpdate(endpoints=list(told.endpoints),
                                    endpoint_types=endpoint_types(told.endpoints, mem.netcheck),
                                    preferred_derp=told.home, reply_to=self.name, net_info=facts))
        self._set(told=told, told_at=now)

    @handles(LiteUpdateDone)
    def on_update_done(self, msg: LiteUpdateDone) -> None:
        if msg.ok:
            self._set(acked=self.mem.told, announced=self.mem.built_for is not None)
            self._check()
        else:
            self._set(told=None)  # the next tick tries again

    @handles(NetcheckReport)
    def on_netcheck(self, msg: NetcheckReport) -> None:
        self._set(netcheck=msg)
        self._tell_control()  # what it found goes to Hostinfo.NetInfo when it basically changed

    @handles(GetDataplaneInfo)
    def on_info(self, msg: GetDataplaneInfo) -> DataplaneInfo:
        mem, rep = self.mem, self.mem.netcheck
        return DataplaneInfo(netmap=mem.netmap, endpoints=mem.endpoints, state=mem.state, names=mem.names,
                             exit_dns=self.exit_dns,
                             preferred_derp=rep.preferred_derp if rep else 0,
                             region_latency=dict(rep.region_latency) if rep else {})

    # -- the subtree ---------------------------------------------------------------------------------
    def _apply(self, nm: DataplaneNetmap) -> None:
        built = self.mem.built_for
        if built is None or identity_of(built) != identity_of(nm):
            if built is not None:
                log.info("node key, addresses or DERP map changed; rebuilding")
            self._set(built_for=None, names={})
            new = self._build(nm)  # stops the running subtree first
            log.debug("data plane up: %s", ", ".join(sorted(new.names.values())))
            # the new subtree reports afresh
            self._set(built_for=nm, names=new.names, home=new.home_region, told=None, have_endpoints=False,
                      acked=None, announced=False)
        self._configure()
        self._tell_control()
        self._check()

    def _configure(self) -> ExitNodeInfo | None:
        """Tell both halves the current peers, addresses and filter (each replaces the last); the exit
        node they now route through, if any."""
        nm, changed, names = self.mem.netmap, self.mem.peers, self.mem.names
        if nm is None or not names:
            return None
        peers = changed.peers if changed is not None else []
        # AllowedIPs as Go's route manager: own addresses, accepted subnet routes, and the default
        # routes for the engaged exit node only (actors.peers.routes); nothing else is routed
        prefs = self.mem.route_prefs
        exit_node = select_exit_node(prefs.exit_node, peers, have_netmap=True)
        ipv6 = any(":" in a for a in nm.self_node.addresses)
        vips = sorted({ip for ips in nm.service_ips.values() for ip in ips})  # 20d: VIPs we host
        if "netstack" in names:
            self.tell_named(names["netstack"], TcpServiceAddresses(services=nm.service_ips))
        wg = WgConfig(addresses=list(nm.self_node.addresses) + [f"{ip}/{32 if '.' in ip else 128}"
                                                                for ip in vips],
                      packet_filter=nm.packet_filter,
                      unlocked_allowed_ips=unlocked_allowed_ips(peers),  # 21h: peerAPI-only, unsigned
                      peers=[WgPeer(node_key=p.node_key,
                                    allowed_ips=allowed_ips(p, prefs, exit_node, ipv6=ipv6)) for p in peers])
        ms = SetPeers(peers=tuple(MagicsockPeer(node_key=p.node_key, disco_key=p.disco_key,
                                                endpoints=tuple(p.endpoints), home_derp=p.home_derp)
                                  for p in peers))
        self._tell_exit_dns(exit_node)
        # magicsock first: its paths (PathUpdate) are then queued at the router before the engine
        # can answer a new peer's handshake, which would otherwise find no route
        self.tell_named(names["disco"], ms)
        self.tell_named(names["engine"], wg)
        return exit_node.info()

    def _tell_exit_dns(self, sel: ExitNodeSelection) -> None:
        """The resolver learns the engaged exit node's DoH (Go ``exitNodeCanProxyDNS``: its
        ``peerapi-dns-proxy`` service, reached at its peerAPI), or that names beyond the tailnet have
        nowhere to go while one is selected without it."""
        n, ip, port = sel.node, "", 0
        if n is not None and n.dns_proxy:
            info = sel.info()
            fam = "peerapi6" if info is not None and ":" in info.address else "peerapi4"
            if info is not None and info.address and n.peerapi_ports.get(fam, 0) > 0:
                ip, port = info.address, n.peerapi_ports[fam]
        self.exit_dns = DnsExitNode(selected=sel.selected, ip=ip, port=port)
        if self.dns and self.exit_dns != self._told_exit_dns:
            self.tell_named(self.dns, self.exit_dns)
            self._told_exit_dns = self.exit_dns

    # -- readiness -----------------------------------------------------------------------------------
    @handles(DataplaneTick)
    def on_tick(self, msg: DataplaneTick) -> None:
        self._check()
        self._tell_control()

    def _ask(self, name: str, msg: Request[_R]) -> _R | None:
        ref = self.lookup(name)
        if ref is None:
            return None
        try:
            return ref.ask(msg, timeout=1.0)
        except (AskTimeout, ActorStopped):
            return None

    def _check(self) -> None:
        mem = self.mem
        nm, names, announced, home = mem.netmap, mem.names, mem.announced, mem.home
        if nm is None or not names:
            return
        derp_ok = False
        if home:
            st = self._ask(names.get(f"derp.{home}", ""), DerpStatusRequest())
            derp_ok = isinstance(st, DerpStatus) and st.connected
        wg = self._ask(names["engine"], GetWgStatus())
        live = sum(1 for p in wg.peers if p.has_session) if isinstance(wg, WgStatus) else 0
        regions = len(nm.derp_regions)
        # Go: Running once a DERP home is connected or a peer is live. A tailnet without any DERP
        # region can only ever use direct paths; it is up as soon as the subtree is.
        # And (ours) control has our home region: a peer dialing us at once knows where we are.
        up = (derp_ok or live > 0 or regions == 0) and announced
        new = DataplaneState(up=up, node_key=nm.self_node.node_key, derp_regions=regions,
                             home_region=home, derp_connected=derp_ok, live_peers=live,
                             announced=announced)
        if new != self.mem.state:
            self._set(state=new)
            self.tell_named(self.events, new)


def net_info_facts(rep: NetcheckReport | None) -> NetInfoFacts | None:
    """Go magicsock ``updateNetInfo``'s fields from a netcheck report (None before the first one).
    ``WorkingICMPv4`` is not probed here (left unset); a mapping protocol the port mapper has not
    tried is unset too (Go probes all three)."""
    if rep is None:
        return None
    offer = rep.portmap_protocols
    return NetInfoFacts(working_udp=rep.udp, working_ipv6=rep.global_v6 is not None,
                        os_has_ipv6=rep.os_has_ipv6, mapping_varies_by_dest_ip=rep.mapping_varies_by_dest_ip,
                        have_port_map=rep.have_port_map, upnp=offer.get("upnp"), pmp=offer.get("pmp"),
                        pcp=offer.get("pcp"), derp_latency=dict(rep.derp_latency))
