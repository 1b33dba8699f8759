"""ControlRunner: the node's conversation with its coordination server, as one supervised actor.

Thin by design: the login/register/map-poll logic is the sans-IO ``LoginMachine``
(``pytsnet.wire.control``), which owns every piece of login state and lives on this actor's thread
only. The actor feeds it events (its asks, timer wake-ups, and the results its I/O threads tell it)
and performs the actions it returns: network requests go to the ``ControlPerformer``'s two I/O
threads (requests in order; the open map poll read separately, so a lite update never waits
behind it), state goes to the store, ``DeviceState`` to the facade, netmaps to PeerTracker and the
data-plane bridge. No handler blocks on the network: ``Logout`` and ``LiteUpdate`` defer their
reply until the machine reports the request done.

Lifecycle (Go's ``ipn.State`` subset): Starting → (NeedsLogin with an AuthURL | NeedsMachineAuth) →
**Running = registered + authorized + first netmap received**. ``auth_rejected`` and
``key_expired`` are permanent; ``network_unreachable`` (the machine's ``server_error`` too: an HTTP
error from control) is retried with backoff. A restart of this actor (crash, fault injection)
reloads keys from the store, re-registers and starts a fresh map session, whose first full map
makes PeerTracker converge to control's state.
"""

from __future__ import annotations

import itertools
import json
import random
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import pytsnet.wire.control as login
from pytsnet.actors.control.performer import (
    ControlPerformer,
    SendIdToken,
    SendSetDns,
    SendSshActionFetch,
    SendTkaCall,
)
from pytsnet.actors.control.store import MACHINE_KEY, NETMAP, NODE, StateStore
from pytsnet.actors.dataplane.netmap import netmap_for_dataplane
from pytsnet.actors.keeper import recall, remember
from pytsnet.actors.runtime import Actor, ActorStopped, MailboxFull, StopReason, TimerHandle, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.actors.runtime.ref import Reply
from pytsnet.messages.base import Message
from pytsnet.messages.cert import IoSetDnsAnswer, SetDns, SetDnsAnswer
from pytsnet.messages.control import (
    ControlWakeup,
    DeviceState,
    ErrorKind,
    GetState,
    IdToken,
    IdTokenAnswer,
    IoConnected,
    IoIdTokenAnswer,
    IoLiteUpdateAnswer,
    IoMapPollEnded,
    IoMapPollStatus,
    IoRegisterAnswer,
    LiteUpdate,
    LiteUpdateDone,
    Logout,
    LogoutDone,
    MapFrame,
)
from pytsnet.messages.peers import ClearPeers, NetmapUpdate, PeerInfo, ResendNetmap
from pytsnet.messages.services import ServicesMemory
from pytsnet.messages.ssh import IoSshActionAnswer, SshActionAnswer, SshActionCancel, SshActionFetch  # 22d
from pytsnet.messages.tka import (
    IoTkaControlAnswer,
    TkaAuthorityUpdate,
    TkaAuthorityWanted,
    TkaControlAnswer,
    TkaControlCall,
    TkaNetmapInfo,
    TkaNetmapInfoWanted,
)
from pytsnet.wire.keys import DiscoPublic, MachinePrivate
from pytsnet.wire.tailcfg import CURRENT_CAPABILITY_VERSION, Hostinfo, NetInfo, Service

log = subsystem_logger("control")

__all__ = ["ControlRunner", "RunnerConfig"]

TKA_PATH_PREFIX = "/machine/tka/"


MAX_SSH_ACTION_FETCHES = 64
"""SSH checks waiting on control at once (each holds a stream and a deferred reply)."""


def control_path(url: str, control_url: str) -> str | None:
    """The path and query to send over Noise for ``url`` when it is one of control's own (host ``unused``
    as Go's Noise requests name it, or the control URL's host) under ``/machine/``; else None."""
    try:
        u, c = urllib.parse.urlsplit(url), urllib.parse.urlsplit(control_url)
    except ValueError:
        return None
    if u.scheme not in ("https", "http") or u.username or u.password or u.fragment:
        return None
    if u.netloc != "unused" and u.netloc.lower() != c.netloc.lower():
        return None
    if not u.path.startswith("/machine/") or ".." in u.path or any(ch in url for ch in "\r\n\x00 "):
        return None
    return u.path + (f"?{u.query}" if u.query else "")

WATCHDOG_TIMEOUT = 120.0
"""``watchdogTimeout`` in ``direct.go``: a long poll silent this long is dead."""


@dataclass(frozen=True)
class RunnerConfig:
    control_url: str
    hostname: str
    auth_key: str = field(default="", repr=False)  # a credential: never in a repr
    ephemeral: bool = False
    tags: tuple[str, ...] = ()
    disco_public: str = ""
    """``discokey:…`` of the data plane; a fresh one is made if empty (Go's is per process too)."""
    backoff_min: float = 0.25
    backoff_max: float = 30.0
    request_timeout: float = 10.0
    followup_timeout: float = 3600.0
    peers_name: str = "peers"
    dataplane_name: str = ""
    """The data-plane bridge told ``DataplaneNetmap`` after each netmap (empty: none)."""
    hostinfo_extra: tuple[tuple[str, str], ...] = ()
    """More Hostinfo fields, as (name, value) pairs (a tuple: the config is shared by incarnations)."""
    services: tuple[tuple[str, int], ...] = ()
    """Hostinfo ``Services`` as (proto, port): the peerAPI's ``peerapi4``/``peerapi6`` port."""
    routable_ips: tuple[str, ...] = ()
    """Hostinfo ``RoutableIPs``: the routes we advertise (an exit node's 0.0.0.0/0 and ::/0 among them)."""
    force_login: bool = False
    """Re-login at the first start even with stored state (``TSNET_FORCE_LOGIN``; not on actor restarts)."""
    tka_name: str = ""
    """The TKA authority actor told ``TkaNetmapInfo`` after each netmap (empty: none)."""
    ipv6: bool = False  # 24d: Config.ipv6 (False: our IPv6 tailnet address is ignored)

    def login_config(self) -> login.LoginConfig:
        hostinfo = Hostinfo(Hostname=self.hostname, OS="linux", Package="tsnet", IPNVersion="pytsnet",
                            RequestTags=list(self.tags), RoutableIPs=list(self.routable_ips),
                            **dict(self.hostinfo_extra),
                            Services=[Service(Proto=p, Port=n) for p, n in self.services])
        return login.LoginConfig(
            control_url=self.control_url, hostinfo=hostinfo, auth_key=self.auth_key, ephemeral=self.ephemeral,
            disco=DiscoPublic.from_text(self.disco_public) if self.disco_public else None,
            backoff_min=self.backoff_min, backoff_max=self.backoff_max, request_timeout=self.request_timeout,
            followup_timeout=self.followup_timeout, force_login=self.force_login,
            ipv6=self.ipv6)  # 24d


_KIND: dict[login.StatusKind, ErrorKind] = {
    "": "", "auth_rejected": "auth_rejected", "key_expired": "key_expired",
    "network_unreachable": "network_unreachable",
    "server_error": "network_unreachable",  # control answered, but not usably: retried the same way
}


class ControlRunner(Actor):
    def __init__(self, config: RunnerConfig, store: StateStore,
                 publish: Callable[[Message], None] | None = None, *, memory: str | None = None) -> None:
        self.cfg = config
        self.memory = memory
        """The tree's MemoryKeeper (20d: the services hash outlives a restart), or None."""
        self.store = store
        self.publish = publish or (lambda m: None)
        self.state = DeviceState(state="NoState")
        self.machine: login.LoginMachine
        self._io: ControlPerformer | None = None
        self._tokens = itertools.count(1)
        self._lite_waiting: dict[int, tuple[Reply | None, str]] = {}
        self._logout_waiting: dict[int, Reply | None] = {}
        self._id_token_waiting: dict[int, Reply | None] = {}
        self._set_dns_waiting: dict[int, Reply | None] = {}  # 20a: the cert manager's DNS-01 records
        self._tka_waiting: dict[int, Reply | None] = {}  # 21d: the TKA actor's /machine/tka/* calls
        self._ssh_waiting: dict[int, Reply | None] = {}  # 22d: SSH check mode's held action fetches
        self._ssh_ids: dict[str, int] = {}
        """22d: ``SshActionFetch.fetch_id`` → token (for ``SshActionCancel``)."""
        self._tka_info: TkaNetmapInfo | None = None
        """The last ``TkaNetmapInfo`` told (told again only when it changes)."""
        self._timers: dict[float, TimerHandle] = {}
        self._peers_update: NetmapUpdate | None = None
        """The last peer list told to PeerTracker (re-sent when a restarted tracker asks)."""

    # -- lifecycle -------------------------------------------------------------------------------
    def on_start(self) -> None:
        # Numbered per incarnation: a result the previous incarnation's I/O thread still tells is stale.
        self.machine = login.LoginMachine(self.cfg.login_config(), rng=random.Random(),
                                          first_number=self.incarnation << 32)
        io = self._io = ControlPerformer(self.cfg.control_url, self._machine_key(),
                                         request_timeout=self.cfg.request_timeout, watchdog=WATCHDOG_TIMEOUT)
        self.start_io_loop(io.step_requests, io.close)
        self.start_io_loop(io.step_poll, io.close)
        self.start_io_loop(io.step_ssh_actions, io.close)  # 22d
        self._perform(self.machine.start(self.clock.time(), stored_node=self.store.read_state(NODE),
                                         stored_netmap=self.store.read_state(NETMAP),
                                         restarted=self.incarnation > 1))
        self._advertised = ServicesMemory()  # 20d/20g: what a restarted incarnation must send again
        if self.cfg.tka_name and (tka := self.ctx.lookup(self.cfg.tka_name)) is not None:
            try:  # 21d: a fresh login machine sends no TKAHead until the TKA actor tells us its head
                tka.tell(TkaAuthorityWanted(reply_to=self.name))
            except (ActorStopped, MailboxFull):
                log.info("%s cannot ask %s for its head now", self.name, self.cfg.tka_name)
        if self.incarnation > 1:  # 20d: keep advertising the services we host
            snap = recall(self, self.memory)
            if isinstance(snap, ServicesMemory):
                self._advertised = snap
            if isinstance(snap, ServicesMemory) and snap.services_hash:
                self._feed(login.LiteUpdateAsked(next(self._tokens), services_hash=snap.services_hash))
            if isinstance(snap, ServicesMemory) and (snap.ingress_enabled or snap.wire_ingress):  # 20g
                self._feed(login.LiteUpdateAsked(next(self._tokens),
                                                 ingress=(snap.ingress_enabled, snap.wire_ingress)))

    def on_stop(self, reason: StopReason) -> None:
        if self._io is not None:
            self._io.close()
        waiting = ([r for r, _ in self._lite_waiting.values()] + list(self._logout_waiting.values())
                   + list(self._id_token_waiting.values()) + list(self._set_dns_waiting.values())
                   + list(self._tka_waiting.values()) + list(self._ssh_waiting.values()))
        self._ssh_waiting.clear()
        self._ssh_ids.clear()
        self._set_dns_waiting.clear()
        self._tka_waiting.clear()
        self._lite_waiting.clear()
        self._logout_waiting.clear()
        self._id_token_waiting.clear()
        for reply in waiting:
            if reply is not None:
                reply.set_exception(ActorStopped(f"{self.name} stopped before control answered"))

    def _machine_key(self) -> MachinePrivate:
        raw = self.store.read_state(MACHINE_KEY)
        if raw:
            return MachinePrivate.from_text(raw.decode())
        key = MachinePrivate.generate()
        self.store.write_state(MACHINE_KEY, key.to_text().encode())
        return key

    # -- events for the machine -----------------------------------------------------------------
    def _feed(self, event: login.Event) -> None:
        self._perform(self.machine.handle(event, self.clock.time()))

    @handles(IoConnected)
    def on_connected(self, msg: IoConnected) -> None:
        self._feed(login.Connected(msg.conn, msg.error))

    @handles(IoRegisterAnswer)
    def on_register_answer(self, msg: IoRegisterAnswer) -> None:
        self._feed(login.RegisterAnswered(msg.conn, msg.status, msg.body, msg.error))

    @handles(IoMapPollStatus)
    def on_map_poll_status(self, msg: IoMapPollStatus) -> None:
        self._feed(login.MapPollAnswered(msg.stream, msg.status))

    @handles(MapFrame)
    def on_map_frame(self, msg: MapFrame) -> None:
        self._feed(login.MapFrameReceived(msg.stream, msg.payload))

    @handles(IoMapPollEnded)
    def on_map_poll_ended(self, msg: IoMapPollEnded) -> None:
        self._feed(login.MapPollEnded(msg.stream, msg.error))

    @handles(IoLiteUpdateAnswer)
    def on_lite_update_answer(self, msg: IoLiteUpdateAnswer) -> None:
        self._feed(login.LiteUpdateAnswered(msg.token, msg.status, msg.error))

    @handles(ControlWakeup)
    def on_wakeup(self, msg: ControlWakeup) -> None:
        self._timers.pop(msg.at, None)
        self._feed(login.Tick(msg.at))

    @handles(GetState)
    def on_get_state(self, msg: GetState) -> DeviceState:
        return self.state

    @handles(LiteUpdate)
    def on_lite_update(self, msg: LiteUpdate) -> None:
        """Endpoints/disco/Hostinfo to control on the current connection (also used by future polls).
        The ``LiteUpdateDone`` answers the ask (if asked) and goes to ``reply_to`` (if named) once
        control answered; the handler itself returns at once."""
        token = next(self._tokens)
        self._lite_waiting[token] = (self.defer_reply(), msg.reply_to)
        if msg.services_hash is not None:  # 20d
            self._advertised = self._advertised.model_copy(update={"services_hash": msg.services_hash})
            remember(self, self.memory, self._advertised)
        ingress = (None if msg.ingress_enabled is None  # 20g: Hostinfo.IngressEnabled / WireIngress
                   else (msg.ingress_enabled, bool(msg.wire_ingress)))
        if ingress is not None:  # 20g: kept with the services hash for a restarted incarnation
            self._advertised = self._advertised.model_copy(
                update={"ingress_enabled": ingress[0], "wire_ingress": ingress[1]})
            remember(self, self.memory, self._advertised)
        f = msg.net_info
        net_info = None if f is None else NetInfo(
            MappingVariesByDestIP=f.mapping_varies_by_dest_ip, WorkingIPv6=f.working_ipv6,
            OSHasIPv6=f.os_has_ipv6, WorkingUDP=f.working_udp, HavePortMap=f.have_port_map,
            UPnP=f.upnp, PMP=f.pmp, PCP=f.pcp, DERPLatency=dict(f.derp_latency))
        self._feed(login.LiteUpdateAsked(token, tuple(msg.endpoints), tuple(msg.endpoint_types),
                                         msg.disco_key, msg.preferred_derp, msg.services_hash, ingress,
                                         net_info))

    @handles(Logout)
    def on_logout(self, msg: Logout) -> None:
        """RegisterRequest with ``Expiry = time.Unix(123, 0)``, then forget the node (``TryLogout``);
        the ``LogoutDone`` is sent when that is done."""
        token = next(self._tokens)
        self._logout_waiting[token] = self.defer_reply()
        self._feed(login.LogoutAsked(token))

    @handles(IdToken)
    def on_id_token(self, msg: IdToken) -> IdTokenAnswer | None:
        """Ask control for an ID token (``tailcfg.TokenRequest`` over Noise); the answer comes when
        control gives it, the handler returns at once. No session (no netmap, logged out, reconnecting)
        → 503 "no netmap" now, as Go's LocalAPI."""
        io = self._io
        if io is None or not self.machine.session_up:
            return IdTokenAnswer(status=503, error="no netmap")
        token = next(self._tokens)
        self._id_token_waiting[token] = self.defer_reply()
        node_key = self.machine.node.public().to_text()
        body = json.dumps({"CapVersion": CURRENT_CAPABILITY_VERSION, "NodeKey": node_key,
                           "Audience": msg.audience}).encode()
        io.submit(SendIdToken(self.machine.conn, token, body, self.cfg.request_timeout))
        return None

    @handles(IoIdTokenAnswer)
    def on_id_token_answer(self, msg: IoIdTokenAnswer) -> None:
        reply = self._id_token_waiting.pop(msg.token, None)
        if reply is not None:
            reply.set(IdTokenAnswer(status=msg.status, body=msg.body, error=msg.error))

    # -- set-dns (20a) --
    @handles(SetDns)
    def on_set_dns(self, msg: SetDns) -> SetDnsAnswer | None:
        """``POST /machine/set-dns`` (Go ``Direct.SetDNS``: a ``tailcfg.SetDNSRequest`` with our node
        key); the answer comes when control gives it. No session → 503 "no netmap" at once."""
        io = self._io
        if io is None or not self.machine.session_up:
            return SetDnsAnswer(status=503, error="no netmap")
        token = next(self._tokens)
        self._set_dns_waiting[token] = self.defer_reply()
        node_key = self.machine.node.public().to_text()
        body = json.dumps({"Version": CURRENT_CAPABILITY_VERSION, "NodeKey": node_key,
                           "Name": msg.name, "Type": msg.type, "Value": msg.value}).encode()
        io.submit(SendSetDns(self.machine.conn, token, body, self.cfg.request_timeout))
        return None

    @handles(IoSetDnsAnswer)
    def on_set_dns_answer(self, msg: IoSetDnsAnswer) -> None:
        reply = self._set_dns_waiting.pop(msg.token, None)
        if reply is not None:
            reply.set(SetDnsAnswer(status=msg.status, body=msg.body, error=msg.error))

    @handles(TkaControlCall)
    def on_tka_call(self, msg: TkaControlCall) -> TkaControlAnswer | None:
        """A ``/machine/tka/*`` call for the TKA actor, sent as Go sends it (GET with a JSON body to
        ``https://unused/machine/tka/...``); the answer comes when control gives it. No session → 503
        "no netmap" at once; a path outside ``/machine/tka/`` is refused (the actor speaks only TKA)."""
        if not msg.path.startswith(TKA_PATH_PREFIX) or ".." in msg.path:
            return TkaControlAnswer(status=400, error=f"not a TKA call: {msg.path[:64]!r}")
        io = self._io
        if io is None or not self.machine.session_up:
            return TkaControlAnswer(status=503, error="no netmap")
        token = next(self._tokens)
        self._tka_waiting[token] = self.defer_reply()
        io.submit(SendTkaCall(self.machine.conn, token, msg.path, msg.body, self.cfg.request_timeout))
        return None

    @handles(IoTkaControlAnswer)
    def on_tka_answer(self, msg: IoTkaControlAnswer) -> None:
        reply = self._tka_waiting.pop(msg.token, None)
        if reply is not None:
            reply.set(TkaControlAnswer(status=msg.status, body=msg.body, error=msg.error))

    @handles(SshActionFetch)
    def on_ssh_action_fetch(self, msg: SshActionFetch) -> SshActionAnswer | None:
        """Tailscale SSH check mode: ``GET`` a ``holdAndDelegate`` URL over Noise (Go ``fetchSSHAction``);
        answered when control answers or ``msg.timeout`` runs out. Only control's own URLs: a URL naming
        another host (or not ``/machine/``) is refused, so a policy cannot make the node ask elsewhere."""
        path = control_path(msg.url, self.cfg.control_url)
        if path is None:
            return SshActionAnswer(status=400, error=f"not a control URL: {msg.url[:80]!r}")
        io = self._io
        if io is None or not self.machine.session_up:
            return SshActionAnswer(status=503, error="no netmap")
        if len(self._ssh_waiting) >= MAX_SSH_ACTION_FETCHES:
            return SshActionAnswer(status=429, error="too many SSH checks pending")
        token = next(self._tokens)
        self._ssh_waiting[token] = self.defer_reply()
        if msg.fetch_id:
            self._ssh_ids[msg.fetch_id] = token
        io.submit(SendSshActionFetch(self.machine.conn, token, path, max(0.0, min(msg.timeout, 1800.0))))
        return None

    @handles(IoSshActionAnswer)
    def on_ssh_action_answer(self, msg: IoSshActionAnswer) -> None:
        self._ssh_ids = {k: v for k, v in self._ssh_ids.items() if v != msg.token}
        reply = self._ssh_waiting.pop(msg.token, None)
        if reply is not None:
            reply.set(SshActionAnswer(status=msg.status, body=msg.body, error=msg.error))

    @handles(SshActionCancel)
    def on_ssh_action_cancel(self, msg: SshActionCancel) -> None:
        token = self._ssh_ids.pop(msg.fetch_id, None)
        if token is None:
            return
        reply = self._ssh_waiting.pop(token, None)
        if reply is not None:
            reply.set(SshActionAnswer(error="cancelled"))
        if self._io is not None:
            self._io.cancel_ssh_action(token)

    @handles(TkaAuthorityUpdate)
    def on_tka_authority(self, msg: TkaAuthorityUpdate) -> None:
        """The TKA actor adopted a head: later map requests carry it as ``TKAHead`` and, if it changed,
        control hears it now in a lite update (Go ``Auto.SetTKAHead`` → ``updateControl``)."""
        self._feed(login.TkaHeadAdopted(next(self._tokens), msg.head if msg.enabled else ""))

    @handles(TkaNetmapInfoWanted)
    def on_tka_info_wanted(self, msg: TkaNetmapInfoWanted) -> None:
        """A restarted TKA actor starts empty: tell it the last netmap's lock info again."""
        if self._tka_info is not None and self.cfg.tka_name:
            self.tell_named(self.cfg.tka_name, self._tka_info)

    @handles(ResendNetmap)
    def on_resend_netmap(self, msg: ResendNetmap) -> None:
        """A restarted PeerTracker starts empty: tell it the current peer list again (it re-admits)."""
        if self._peers_update is not None:
            self.tell_named(self.cfg.peers_name, self._peers_update)

    # -- performing the machine's actions --------------------------------------------------------
    def _perform(self, actions: list[login.Action]) -> None:
        io = self._io
        assert io is not None
        for a in actions:
            match a:
                case login.Connect() | login.SendRegister() | login.OpenMapPoll() | login.SendLiteUpdate():
                    io.submit(a)
                case login.CloseConnection():
                    io.abort()
                case login.PersistNode():
                    self.store.write_state(NODE, a.blob)
                case login.PersistNetmap():
                    self.store.write_state(NETMAP, a.blob)
                case login.PublishStatus():
                    self._set_state(_device_state(a.status))
                case login.PublishNetmap():
                    self._hand_out(a)
                case login.ClearPeers():
                    self._peers_update = None
                    self.tell_named(self.cfg.peers_name, ClearPeers())
                case login.WakeAt():
                    if a.at not in self._timers:
                        delay = max(0.0, a.at - self.clock.time())
                        self._timers[a.at] = self.send_after(delay, ControlWakeup(at=a.at))
                case login.LiteUpdateFinished():
                    reply, reply_to = self._lite_waiting.pop(a.token, (None, ""))
                    done = LiteUpdateDone(ok=a.ok, status=a.status)
                    if reply is not None:
                        reply.set(done)
                    if reply_to:
                        self.tell_named(reply_to, done)
                case login.LogoutFinished():
                    for token in a.tokens:
                        waiting = self._logout_waiting.pop(token, None)
                        if waiting is not None:
                            waiting.set(LogoutDone(ok=a.ok, error=a.error))
                case login.Note():
                    getattr(log, a.level)("%s", a.text)

    def _hand_out(self, a: login.PublishNetmap) -> None:
        nm = a.netmap
        self._peers_update = NetmapUpdate(
            self_node=PeerInfo.from_node(nm.self_node), peers=[PeerInfo.from_node(p) for p in nm.peers],
            domain=nm.domain, tka_enabled=nm.tka_enabled, tka_head=nm.tka_head)
        self.tell_named(self.cfg.peers_name, self._peers_update)
        if self.cfg.tka_name:  # 21d: Go's tkaSyncIfNeeded input, every netmap (the actor decides)
            self._tka_info = TkaNetmapInfo(
                enabled=nm.tka_enabled, head=nm.tka_head, disabled=nm.tka_disabled,
                self_node_key=self._peers_update.self_node.node_key,
                self_key_signature=self._peers_update.self_node.key_signature)
            self.tell_named(self.cfg.tka_name, self._tka_info)
        if self.cfg.dataplane_name:
            self.tell_named(self.cfg.dataplane_name, netmap_for_dataplane(nm, a.node, self.cfg.control_url))

    def _set_state(self, new: DeviceState) -> None:
        if new != self.state:
            if new.state != self.state.state:
                log.debug("control state %s -> %s", self.state.state, new.state)
            self.state = new
            self.publish(new)


def _device_state(st: login.LoginStatus) -> DeviceState:
    return DeviceState(state=st.state, auth_url=st.auth_url, error_kind=_KIND[st.error_kind], error=st.error,
                       addresses=list(st.addresses), name=st.name, node_id=st.node_id)
