"""``DataplaneBridge``: the glue between the control side and the two data-plane halves.

Like Go's ``LocalBackend`` → ``wgengine.Reconfig`` / ``magicsock.SetNetworkMap`` path:

* ``DataplaneNetmap`` (from the ControlRunner) carries the node key, our addresses, the DERP map and
  the packet filter. The first one — or one that changes the node key, our addresses or the DERP
  regions — (re)spawns the data-plane subtree through the injected ``spawn`` callable (declared in
  ``pytsnet.tree``; actors may not import the facade). Every one reconfigures the engine.
* ``PeersChanged`` (from the PeerTracker, the only place peers are admitted) becomes ``SetPeers`` for
  magicsock's DiscoPinger and the peer list of the engine's ``WgConfig``.
* Our home DERP region (at once, when the subtree starts) and our endpoints (``LocalEndpoints`` from
  the StunProber) become a ``LiteUpdate`` to control, so peers learn where to reach us;
  ``NetcheckReport`` is kept for status.
* A periodic ``DataplaneTick`` checks the home DERP connection and live WireGuard sessions and
  publishes ``DataplaneState`` when it changes: the device is "Running" only when it is up and control
  has acknowledged our home region (as Go's first map carries NetInfo): a peer that dials us the
  moment we are Running, or that we dial, knows where to answer.

Everything it learned lives in ``DataplaneMemory`` (held by the child spec), so a restarted bridge
resumes without waiting for the next netmap, and never spawns a second subtree.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pytsnet.actors.runtime import Actor, ActorRef, ActorStopped, AskTimeout, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.base import Message, Request
from pytsnet.messages.control import LiteUpdate, LiteUpdateDone
from pytsnet.messages.dataplane import (
    DataplaneInfo,
    DataplaneNetmap,
    DataplaneState,
    DataplaneTick,
    GetDataplaneInfo,
)
from pytsnet.messages.magicsock import (
    DerpStatus,
    DerpStatusRequest,
    LocalEndpoints,
    MagicsockPeer,
    NetcheckReport,
    SetPeers,
)
from pytsnet.messages.peers import PeersChanged
from pytsnet.messages.wgengine import GetWgStatus, WgConfig, WgPeer, WgStatus

log = subsystem_logger("dataplane")
_R = TypeVar("_R")

__all__ = ["TICK", "DataplaneBridge", "DataplaneMemory", "Spawned", "endpoint_types"]

TICK = 0.25
"""How often readiness is checked (cheap: one ask to the home DerpClient)."""

ENDPOINT_LOCAL, ENDPOINT_STUN = 1, 2
"""``tailcfg.EndpointType`` values control is told alongside the endpoints."""

ANNOUNCE_RETRY = 30.0
"""A ``LiteUpdate`` still unanswered after this long is sent again (the runner may have restarted)."""


@dataclass
class Spawned:
    """A running data-plane subtree and what it was built for."""

    identity: tuple[Any, ...]
    supervisor: ActorRef
    names: dict[str, str]
    """Role → actor name: ``engine``, ``udp``, ``disco``, ``stun``, ``derp.<region>``, ``netstack``."""
    home_region: Callable[[], int]
    netstack: Any = None
    """``pytsnet.net.Netstack`` handle (typed loosely: actors do not import the facade)."""


@dataclass
class DataplaneMemory:
    """What the bridge learned, kept outside the actor so a restart resumes (and the device reads it)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    netmap: DataplaneNetmap | None = None
    peers: PeersChanged | None = None
    endpoints: tuple[str, ...] = ()
    have_endpoints: bool = False
    told: tuple[tuple[str, ...], int] | None = None
    """(endpoints, home region) last sent to control."""
    told_at: float = float("-inf")
    acked: tuple[tuple[str, ...], int] | None = None
    """What control last acknowledged (``told`` when the ``LiteUpdateDone`` came)."""
    announced: bool = False
    """Control acknowledged an update of this subtree (our home region): peers can reach us."""
    netcheck: NetcheckReport | None = None
    spawned: Spawned | None = None
    state: DataplaneState = field(default_factory=DataplaneState)


def endpoint_types(endpoints: tuple[str, ...], report: NetcheckReport | None) -> list[int]:
    """STUN-discovered endpoints are ``EndpointSTUN``; the rest (bound, configured) ``EndpointLocal``."""
    stun = report.global_v4 if report is not None else None
    return [ENDPOINT_STUN if e == stun else ENDPOINT_LOCAL for e in endpoints]


def identity_of(nm: DataplaneNetmap) -> tuple[Any, ...]:
    """What the subtree is built from: changing any of it needs a new subtree."""
    return (nm.node_private, tuple(nm.self_node.addresses), nm.derp_regions)


class DataplaneBridge(Actor):
    def __init__(self, memory: DataplaneMemory, spawn: Callable[[DataplaneNetmap], Spawned],
                 publish: Callable[[Message], None], control: str = "control") -> None:
        self.memory = memory
        self._spawn = spawn
        self.publish = publish
        self.control = control

    def on_start(self) -> None:
        with self.memory.lock:
            nm = self.memory.netmap
        if nm is not None:
            self._apply(nm)
        self.send_interval(TICK, DataplaneTick())

    # -- inputs ------------------------------------------------------------------------------------
    @handles(DataplaneNetmap)
    def on_netmap(self, msg: DataplaneNetmap) -> None:
        with self.memory.lock:
            self.memory.netmap = msg
        self._apply(msg)

    @handles(PeersChanged)
    def on_peers(self, msg: PeersChanged) -> None:
        with self.memory.lock:
            self.memory.peers = msg
        self._configure()

    @handles(LocalEndpoints)
    def on_endpoints(self, msg: LocalEndpoints) -> None:
        with self.memory.lock:
            self.memory.endpoints = msg.endpoints
            self.memory.have_endpoints = True
        self._tell_control()

    def _tell_control(self) -> None:
        """``LiteUpdate`` control when our endpoints or home DERP region changed (peers learn both).

        The home region goes at once (endpoints follow netcheck): a peer must know where to reach us
        by the time we are Running. An update control has not answered is resent after
        ``ANNOUNCE_RETRY``; a failed one on the next tick."""
        mem = self.memory
        now = self.clock.monotonic()
        with mem.lock:
            sp = mem.spawned
            if sp is None:
                return
            told = (mem.endpoints, sp.home_region())
            if not (mem.have_endpoints or told[1]):
                return  # nothing to tell yet (a tailnet without DERP: wait for netcheck)
            if mem.told == told and (mem.acked == told or now - mem.told_at < ANNOUNCE_RETRY):
                return
            report = mem.netcheck
        control = self.lookup(self.control)
        if control is None:
            return
        with contextlib.suppress(ActorStopped):
            control.tell(LiteUpdate(endpoints=list(told[0]), endpoint_types=endpoint_types(told[0], report),
                                    preferred_derp=told[1], reply_to=self.name))
        with mem.lock:
            mem.told, mem.told_at = told, now

    @handles(LiteUpdateDone)
    def on_update_done(self, msg: LiteUpdateDone) -> None:
        mem = self.memory
        with mem.lock:
            if msg.ok:
                mem.acked, mem.announced = mem.told, mem.spawned is not None
            else:
                mem.told = None  # the next tick tries again
        if msg.ok:
            self._check()

    @handles(NetcheckReport)
    def on_netcheck(self, msg: NetcheckReport) -> None:
        with self.memory.lock:
            self.memory.netcheck = msg

    @handles(GetDataplaneInfo)
    def on_info(self, msg: GetDataplaneInfo) -> DataplaneInfo:
        mem = self.memory
        with mem.lock:
            rep = mem.netcheck
            return DataplaneInfo(netmap=mem.netmap, endpoints=mem.endpoints, state=mem.state,
                                 preferred_derp=rep.preferred_derp if rep else 0,
                                 region_latency=dict(rep.region_latency) if rep else {})

    # -- the subtree ---------------------------------------------------------------------------------
    def _apply(self, nm: DataplaneNetmap) -> None:
        mem = self.memory
        ident = identity_of(nm)
        with mem.lock:
            current = mem.spawned
        if current is None or current.identity != ident:
            if current is not None:
                log.info("node key, addresses or DERP map changed; rebuilding")
                with mem.lock:
                    mem.spawned = None
                current.supervisor.stop(10.0)
            spawned = self._spawn(nm)
            log.debug("data plane up: %s", ", ".join(sorted(spawned.names.values())))
            with mem.lock:
                mem.spawned = spawned
                mem.told, mem.have_endpoints = None, False  # the new subtree reports afresh
                mem.acked, mem.announced = None, False
        self._configure()
        self._tell_control()
        self._check()

    def _configure(self) -> None:
        """Tell both halves the current peers, addresses and filter (each replaces the last)."""
        mem = self.memory
        with mem.lock:
            nm, changed, sp = mem.netmap, mem.peers, mem.spawned
        if nm is None or sp is None:
            return
        peers = changed.peers if changed is not None else []
        wg = WgConfig(addresses=list(nm.self_node.addresses), packet_filter=nm.packet_filter,
                      peers=[WgPeer(node_key=p.node_key, allowed_ips=p.allowed_ips or p.addresses)
                             for p in peers])
        ms = SetPeers(peers=tuple(MagicsockPeer(node_key=p.node_key, disco_key=p.disco_key,
                                                endpoints=tuple(p.endpoints), home_derp=p.home_derp)
                                  for p in peers))
        # magicsock first: its paths (PathUpdate) are then queued at the router before the engine
        # can answer a new peer's handshake, which would otherwise find no route
        self.tell_named(sp.names["disco"], ms)
        self.tell_named(sp.names["engine"], wg)


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
        mem = self.memory
        with mem.lock:
            nm, sp, announced = mem.netmap, mem.spawned, mem.announced
        if nm is None or sp is None:
            return
        home = sp.home_region()
        derp_ok = False
        if home:
            st = self._ask(sp.names.get(f"derp.{home}", ""), DerpStatusRequest())
            derp_ok = isinstance(st, DerpStatus) and st.connected
        wg = self._ask(sp.names["engine"], GetWgStatus())
        live = sum(1 for p in wg.peers if p.has_session) if isinstance(wg, WgStatus) else 0
        regions = len(nm.derp_regions)
        # Go: Running once a DERP home is connected or a peer is live. A tailnet without any DERP
        # region can only ever use direct paths; it is up as soon as the subtree is.
        # And (ours) control has our home region: a peer dialing us at once knows where we are.
        up = (derp_ok or live > 0 or regions == 0) and announced
        new = DataplaneState(up=up, node_key=nm.self_node.node_key, derp_regions=regions,
                             home_region=home, derp_connected=derp_ok, live_peers=live,
                             announced=announced)
        with mem.lock:
            changed = new != mem.state
            mem.state = new
        if changed:
            self.publish(new)
