"""``ActorDevice``: the public facade of an embedded node (Go's ``tsnet.Server``).

::

    async with ActorDevice(Config(dir="state", hostname="app")) as dev:   # start; close on exit
        await dev.up(30)                         # Go's Up: wait until Running, return status()
        stream = await dev.tcp_connect("web", 80)   # tailnet IP, MagicDNS short name or FQDN
        await dev.lookup("app.corp.example")    # through the node's MagicDNS resolver (100.100.100.100)
        listener = await dev.listen(8080); sock = await dev.listen_packet(5353)
        async for st in dev.watch_state(): ...  # DeviceState values as they change
        dev.status(); dev.whois("100.64.0.2"); dev.tailscale_ips(); await dev.logout()

Everything is configured through ``Config`` (one source of truth). The async API is anyio-native
(asyncio or trio); every call has a blocking twin (``*_blocking``) for synchronous code.

"Running" means registered + authorized + a netmap received (control) and, as in Go, the data plane
up: the home DERP region connected or a live WireGuard session (a tailnet without DERP regions needs
neither). Its actors live in one ``ActorSystem`` per device, shaped by ``pytsnet.tree``. Tailnet
dials go through the userspace netstack only; an unknown host raises ``UnknownTailnetHost`` and never
touches a host socket. A name the netmap does not hold is asked of the node's MagicDNS resolver (the
``dns`` actor, also at 100.100.100.100:53 inside the netstack); whatever it answers must still be a
tailnet address to be dialed — or, with an exit node engaged (``Config.exit_node``,
``set_exit_node``), any address beyond the tailnet, through it (names then resolved by its peerAPI
DoH); while the selected exit node is unusable such dials raise ``ExitNodeUnavailable``. Listeners
and UDP sockets belong to the device (``pytsnet.net.bindings``): they may be opened before Running and
survive data-plane rebuilds. An ephemeral node logs out on ``close``
(as tsnet's shutdown does).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import ipaddress
import logging
import os
import secrets
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TypeVar, overload

import anyio
import anyio.abc
import anyio.to_thread
import asyncssh  # ListenSSH (22b)
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import h11

from pytsnet import taildrop as taildrop_facade  # 22a
from pytsnet import tka as tka_facade  # 21e
from pytsnet.actors.cert.tls import CertProvider  # Serve (20b)
from pytsnet.actors.control import RunnerConfig
from pytsnet.actors.control.store import NODE as NODE_RECORD  # 21e
from pytsnet.actors.control.transport import ControlURLError, parse_control_url
from pytsnet.actors.netstack.splice import abort_flow
from pytsnet.actors.peers.routes import ExitNodeSelection, select_exit_node, wg_peer_routes
from pytsnet.actors.runtime import ActorRef, ActorStopped, ActorSystem, AskTimeout, MailboxFull, logs
from pytsnet.actors.runtime.waker import ThreadWaker
from pytsnet.actors.taildrop.store import PutRecord, TaildropStore, WaitingFile  # 22a
from pytsnet.actors.tka.authority_actor import TKA  # 21e
from pytsnet.capture import PcapCapture, start_capture
from pytsnet.closing import reset_flows_and_flush
from pytsnet.config import DEFAULT_CONTROL_URL, Config
from pytsnet.dial import resolve
from pytsnet.errors import (  # 22a
    AuthRejected,
    ConfigError,
    ConnectionRefused,
    DataplaneNotReady,
    DeviceClosed,
    DialTimeout,
    ExitNodeUnavailable,
    KeyExpired,
    NeedsLogin,
    NetworkUnreachable,
    NotTailnetConnection,
    RegistrationError,
    RegistrationTimeout,
    ServeConfigInvalid,
    ServeETagMismatch,
    TaildropError,
    TaildropRefused,
    TailnetLockError,  # 21e
    UnknownTailnetHost,
    UntaggedServiceHost,
)
from pytsnet.loopback import Loopback
from pytsnet.messages.base import Message, Request
from pytsnet.messages.control import DeviceState, IdToken, IdTokenAnswer, LiteUpdate, Logout, LogoutDone
from pytsnet.messages.dataplane import (
    DataplaneInfo,
    DataplaneState,
    DeviceStatus,
    GetDataplaneInfo,
    PeerStatus,
    UserInfo,
)
from pytsnet.messages.dns import DnsQuery, DnsSpawn, DnsStatus, DnsStatusRequest
from pytsnet.messages.forwarder import ForwarderStatus, ForwarderStatusRequest
from pytsnet.messages.loopback import LoopbackStatus
from pytsnet.messages.magicsock import (
    DerpStatus,
    DerpStatusRequest,
    DiscoStatus,
    DiscoStatusRequest,
    PathStatus,
    PathStatusRequest,
    StunStatus,
    StunStatusRequest,
)
from pytsnet.messages.netstack import (
    IcmpEchoCancel,
    IcmpEchoPoll,
    IcmpEchoResult,
    IcmpEchoStart,
    NetstackStatus,
    NetstackStatusRequest,
    TsmpPingCancel,
    TsmpPingPoll,
    TsmpPingResult,
    TsmpPingStart,
)
from pytsnet.messages.peerapi import PeerApiStatus, PeerApiStatusRequest
from pytsnet.messages.peers import (
    ExitNodeInfo,
    GetPeers,
    PeerInfo,
    PeersChanged,
    PeerTable,
    RoutePrefs,
    RoutePrefsSet,
    SetRoutePrefs,
)
from pytsnet.messages.serve import GetServeConfig, ServeSpawn, ServeStatus, ServeStatusRequest, SetServeConfig
from pytsnet.messages.ssh import SshActionAnswer, SshActionCancel, SshActionFetch  # 22d
from pytsnet.messages.tka import (  # 21e  # 21e
    TkaAffectedSigs,  # 21i
    TkaAnswer,
    TkaDisable,
    TkaInit,
    TkaLog,
    TkaLogEntry,
    TkaModify,
    TkaSign,
    TkaSpawn,
    TkaStatusAsk,
)
from pytsnet.messages.wgengine import GetWgStatus, WgStatus
from pytsnet.net import SocketLike, SocketListener, TcpListener, TcpStream, UdpSocket
from pytsnet.net.bindings import Bindings
from pytsnet.net.bridge import (
    DEFAULT_BACKLOG,
    TailnetConnection,
    TailnetListenSocket,
    bridge_flow,
    bridged_connection,
)
from pytsnet.net.http import HttpAnswerTooLarge, http_request
from pytsnet.net.netstack import Netstack
from pytsnet.peerapi import PEERAPI, PeerApi
from pytsnet.services.fallback import FallbackHandlers, FallbackTcpHandler
from pytsnet.services.hosting import ServiceHosting
from pytsnet.services.listener import (
    ForwardServiceListener,
    HttpServiceListener,
    ServiceListener,
    ServiceModeHTTP,
    ServiceModeTCP,
    check_service_name,
)
from pytsnet.ssh import SessionHandler, SSHListener  # ListenSSH (22b)
from pytsnet.ssh.hostkeys import load_or_create_host_key  # ListenSSH (22b)
from pytsnet.state import FileStore, MemoryStore, StateDirLock, check_state
from pytsnet.tree import CONTROL, DATAPLANE, DNS, FORWARDER, PEERS, DataplaneOptions, device_tree
from pytsnet.wire.control.record import NodeRecord  # 21e
from pytsnet.wire.dns import Upstream
from pytsnet.wire.keys import DiscoPrivate
from pytsnet.wire.magicsock.endpoint import Timings
from pytsnet.wire.peerapi import DNS_MESSAGE
from pytsnet.wire.serve import ServeConfig

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    import httpx  # http_client's types only: importing the device does not import httpx
    import requests

    from pytsnet.actors.peerapi.ingress import IngressRoutes  # Funnel (20c)
    from pytsnet.cert.listener import TlsListener  # 20a
    from pytsnet.funnel.listener import ContextSource, FunnelListener  # Funnel (20c)
    from pytsnet.localapi.client import LocalClient
    from pytsnet.localapi.server import LocalApi
    from pytsnet.localapi.types import TokenResponse
    from pytsnet.localapi.unix import LocalApiSocket
    from pytsnet.messages.cert import CertPairAnswer, CertStatus, GetCertPair  # 20a
    from pytsnet.messages.ping import DiscoPingResult

__all__ = ["DIAL_TIMEOUT", "ActorDevice", "DataplaneNotReady", "DeviceState", "DeviceStatus",
           "UnknownTailnetHost", "WhoIs"]

log = logs.subsystem_logger("device")
_R = TypeVar("_R")
_P = TypeVar("_P", IcmpEchoResult, TsmpPingResult)  # what a netstack probe answers
_Srv = TypeVar("_Srv", bound=socketserver.BaseServer)

LOGOUT_TIMEOUT = 5.0
SERVICE_ADVERTISE_TIMEOUT = 15.0
"""Bounds telling control the services we host (one lite map request)."""
"""tsnet gives an ephemeral node's shutdown logout 5 s."""

DIAL_TIMEOUT = 30.0
"""Default bound on a dial, async and blocking alike (an offline peer's SYNs would retry for minutes)."""

REBUILD_POLL = 0.02
"""How often a dial looks for the new netstack while the data plane is rebuilt (a brief window)."""

WHOIS_TIMEOUT = 2.0
"""``whois`` asks the bridge for the netmap: answered at once unless it is mid-rebuild."""

PING_POLL = 0.01
"""How often ``disco_ping_blocking`` asks the pinger whether the Pong came (19a)."""

MAX_DNS_MESSAGE = 65535
"""A DoH answer longer than any DNS message is refused."""

SERVE = "serve"
"""The ServeManager's name (``actors/serve``)."""

LOOKUP_TIMEOUT = 5.0
"""Default bound on ``lookup``: a forwarded name gets two upstream tries of 2 s each (``DnsSpawn``)."""


class _Watcher:
    """A queue of events for one async waiter; ``push`` from any thread, ``get`` in the waiter's loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[Message] = collections.deque()
        self._waker = ThreadWaker()

    def push(self, msg: Message) -> None:
        with self._lock:
            self._items.append(msg)
            waker = self._waker
        waker.set()

    async def get(self) -> Message:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                self._waker = waker = ThreadWaker()
            await waker.wait()


@dataclass(frozen=True)
class WhoIs:
    """``whois`` answer: the node owning an address, its user and its capabilities."""

    node: PeerInfo
    user: UserInfo
    capabilities: tuple[str, ...]


def _backlogs(system: ActorSystem | None, names: dict[str, str], handshake_bytes: int) -> dict[str, int]:
    """Queued bytes/messages per data-plane actor, read off the mailboxes (an ask would wait behind
    the very backlog it reports); the engine's also counts its handshake queue."""
    out: dict[str, int] = {}
    for role in ("engine", "udp", "netstack"):
        ref = system.lookup(names[role]) if system is not None and role in names else None
        if ref is None:
            continue
        b = ref.backlog()
        key = {"engine": "wgengine", "udp": "magicsock_udp", "netstack": "netstack"}[role]
        out[f"{key}_bytes"] = b.bytes + (handshake_bytes if role == "engine" else 0)
        out[f"{key}_messages"] = b.messages
        out[f"{key}_dropped_bytes"] = ref.dropped_bytes
    return out


def _error_for(st: DeviceState) -> RegistrationError | None:
    """The permanent error a state carries, if any."""
    if st.error_kind == "auth_rejected":
        return AuthRejected(st.error)
    if st.error_kind == "key_expired":
        return KeyExpired(st.error)
    return None


def _log_change(old: DeviceState, new: DeviceState, route: logs.LogRoute) -> None:
    """INFO per state change (control logs the login URL and errors where they happen)."""
    if new.state == old.state:
        return
    extra = ""
    if new.state == "Running":
        extra = f" as {new.name} {' '.join(a.split('/')[0] for a in new.addresses)}"
    with logs.scope(route):
        log.info("state %s -> %s%s", old.state, new.state, extra)


def _dial_timeout(host: str, port: int, addr: str, timeout: float) -> DialTimeout:
    return DialTimeout(f"dial {host}:{port} ({addr}) timed out after {timeout}s: is the peer online, and "
                       "does the tailnet policy let us reach it? (see dev.status().peers)")


def _refused(host: str, port: int, addr: str) -> ConnectionRefused:
    return ConnectionRefused(f"{host}:{port} ({addr}) refused the connection: nothing listens on that port "
                             "of the peer (start its listener, or check the port)")


class ActorDevice:
    def __init__(self, config: Config | None = None, *,
                 logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:  # type: ignore[type-arg]
        """Everything else is in ``config`` (one source of truth). ``logger`` (Go's
        ``UserLogf``/``Logf``): this device's records go there instead of the ``pytsnet.<subsystem>``
        loggers; lifecycle at INFO, per-subsystem detail at DEBUG."""
        self.config = cfg = (config or Config()).resolved()
        self._log_route = logs.LogRoute(str(cfg.hostname), logger)
        store = cfg.store
        if store is None:
            store = FileStore.in_dir(cfg.dir) if cfg.dir is not None else MemoryStore()
        self.store = store
        self._dir_lock = StateDirLock(cfg.dir) if cfg.store is None and cfg.dir is not None else None
        """One device per state dir (taken at ``start``, dropped at ``close`` or by the OS on a crash)."""
        self.disco = DiscoPrivate.generate()
        """The data plane's disco key (per process, like Go's magicsock); control learns its public half."""
        self._cond = threading.Condition()
        self._state = DeviceState(state="NoState")
        self._control_state = self._state
        self._dp_state = DataplaneState()
        self._ns: Netstack | None = None
        """The running netstack, as the tree hands it over (None before the first and during a rebuild)."""
        self._ns_rebuilding = False
        self._bindings = Bindings()
        self._services = ServiceHosting(self._advertise_services)  # 20d: ListenService
        self._fallback_tcp = FallbackHandlers(self._services.listener)  # 20d: fallback handlers, VIP SYNs
        self.peerapi_port = 0
        """The peerAPI's tailnet TCP port (Hostinfo ``Services``), drawn at ``start``."""
        self._dp_options = DataplaneOptions(
            disco=self.disco, bind_host=cfg.bind_host, bind_port=cfg.port,
            advertise_endpoints=cfg.advertise_endpoints, timings=cfg.timings or Timings(),
            stun_interval=cfg.stun_interval, on_netstack=self._on_netstack,
            dns=DnsSpawn(fallback_resolvers=tuple(cfg.fallback_resolvers)), dns_forward=self._dns_forward,
            forward=cfg.forward_policy(), ipv6=cfg.ipv6,  # 24d: the underlay's IPv6
            port_mapping=cfg.port_mapping, port_mapping_protocols=tuple(cfg.port_mapping_protocols),  # 24c
            wg_persistent_keepalive=cfg.wg_persistent_keepalive)
        self._peers: list[PeerInfo] = []
        self._route_prefs = RoutePrefs(exit_node=cfg.exit_node, accept_routes=cfg.accept_routes)
        """The exit node selector and route acceptance (the bridge holds the same: ``SetRoutePrefs``)."""
        self._watchers: list[_Watcher] = []
        self.system: ActorSystem | None = None
        self._closed = False
        self._life = threading.Lock()
        """Serialises start and close, so a close racing a start never leaves actors running."""

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> ActorDevice:
        """Start the actors; returns at once (registration proceeds in the background).
        ``ConfigError`` at once for a control URL that cannot work."""
        with self._life:
            return self._start()

    def _start(self) -> ActorDevice:
        if self._closed:
            raise DeviceClosed("device was closed")
        if self.system is not None:
            return self
        cfg = self.config
        try:
            parse_control_url(str(cfg.control_url))
        except ControlURLError as e:
            raise ConfigError(f"{e} (Config.control_url or TS_CONTROL_URL)") from None
        if self._dir_lock is not None:
            self._dir_lock.acquire()  # StateDirLocked: another device runs on this dir
        try:
            check_state(self.store)  # StateStoreError naming the key, never a silent new node
            auth_key = self._bootstrap_auth_key()  # bootstrap (19c): may mint one (OAuth, WIF)
            peerapi = PeerApi(self._bindings)  # its port goes in our first Hostinfo
            self._dp_options = dataclasses.replace(self._dp_options, peerapi_port=peerapi.port)  # TSMP pongs
        except BaseException:
            if self._dir_lock is not None:
                self._dir_lock.release()
            raise
        with logs.scope(self._log_route):
            if cfg.control_url == DEFAULT_CONTROL_URL:
                log.info("no control URL set (Config.control_url, TS_CONTROL_URL): using %s", cfg.control_url)
            log.debug("starting %s against %s", cfg.hostname, cfg.control_url)
        runner = RunnerConfig(
            control_url=str(cfg.control_url), hostname=str(cfg.hostname), auth_key=auth_key,
            force_login=self._force_login(),
            ephemeral=cfg.ephemeral, tags=tuple(cfg.tags), disco_public=self.disco.public().to_text(),
            backoff_max=cfg.backoff_max, dataplane_name=DATAPLANE, routable_ips=cfg.routable_ips(),
            services=peerapi.services + ((("peerapi-dns-proxy", 1),) if cfg.advertise_exit_node else ()),
            tka_name=TKA, ipv6=cfg.ipv6)  # 21e; 24d: Config.ipv6
        self.system = ActorSystem(f"device-{cfg.hostname}", clock=cfg.clock, log_route=self._log_route)
        self.system.spawn_spec(device_tree(self.system, runner, self.store, self._on_event, self._dp_options,
                                           tka=self._tka_spawn()))  # 21e
        bridge = self.system.lookup(DATAPLANE)
        if bridge is not None:  # before any netmap can arrive; the bridge keeps it across restarts
            bridge.tell(SetRoutePrefs(prefs=self._route_prefs))
        peerapi.start(self.system, exit_dns=cfg.advertise_exit_node, ingress=self._funnel_routes(),  # 20c
                      taildrop=self._taildrop())  # 22a
        self._start_taildrop_janitor()  # 22a
        self.peerapi_port = peerapi.port
        self._serve_local_api_socket()  # 19a: Config.local_api_socket
        self._start_cert_manager()  # 20a
        self._start_serve()  # 20b: Serve's ServeManager (its stored config applied again)
        return self

    def close(self) -> None:
        """Stop the node: every open connection is reset first (peers see it at once); an
        ephemeral node logs out (best effort, 5 s). Safe to call from any thread, twice, or while
        ``start`` runs."""
        with self._life:
            if self._closed:
                return
            self._closed = True
        if self.system is not None:
            with logs.scope(self._log_route):
                n = reset_flows_and_flush(self.system, DATAPLANE)
                log.debug("close: %d connections reset", n)
            if self.config.ephemeral and self._state.state not in ("NoState", "NeedsLogin"):
                with contextlib.suppress(AskTimeout, ActorStopped, DeviceClosed):
                    self._ref(CONTROL).ask(Logout(), timeout=LOGOUT_TIMEOUT)
            self.system.shutdown()
        if self._local_api_socket is not None:  # 19a: the socket file goes
            self._local_api_socket.close()
        if self._dir_lock is not None:
            self._dir_lock.release()
        self._bindings.close()
        self._fallback_tcp.close()  # 20d
        self._services.close_all()  # 20d
        self._on_event(self._control_state.model_copy(update={"state": "Stopped"}))

    async def aclose(self) -> None:
        """``close`` in a worker thread, so the event loop keeps running while actors stop."""
        await anyio.to_thread.run_sync(self.close)

    def __enter__(self) -> ActorDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ActorDevice:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def up(self, timeout: float = 60.0) -> DeviceStatus:
        """Go's ``Up``: start if needed, wait until Running (the typed ``RegistrationError``s of
        ``wait_until_running``), and return ``status()``."""
        if self.system is None and self._bootstraps():  # (19c) minting an auth key is blocking HTTP:
            await anyio.to_thread.run_sync(self.start)  # keep the caller's event loop running
        else:
            self.start()
        await self.wait_until_running(timeout)
        return await self.status_async()

    def up_blocking(self, timeout: float = 60.0) -> DeviceStatus:
        self.start()
        self.wait_until_running_blocking(timeout)
        return self.status()

    # -- events from the actors (any thread) ---------------------------------------------------------
    def _effective(self) -> DeviceState:
        """Control's state, except that "Running" waits for the data plane (as Go's does)."""
        st = self._control_state
        if st.state == "Running" and not self._dp_state.up:
            return st.model_copy(update={"state": "Starting"})
        return st

    def _on_event(self, msg: Message) -> None:
        change: tuple[DeviceState, DeviceState] | None = None
        with self._cond:
            if isinstance(msg, (DeviceState, DataplaneState)):
                if isinstance(msg, DeviceState):
                    self._control_state = msg
                elif self._closed:
                    return  # the data plane going down during close is not news
                else:
                    self._dp_state = msg
                new = self._effective()
                if new == self._state:
                    self._cond.notify_all()
                    return
                change = (self._state, new)
                self._state = msg = new
            elif isinstance(msg, PeersChanged):
                self._peers = list(msg.peers)
            watchers = list(self._watchers)
            self._cond.notify_all()
        if change is not None:  # outside the lock: an app's handler may be slow or ask for the state
            _log_change(*change, self._log_route)
        for w in watchers:
            w.push(msg)

    # -- state ---------------------------------------------------------------------------------------
    @property
    def state(self) -> DeviceState:
        with self._cond:
            return self._state

    def tailscale_ips(self) -> list[str]:
        """The node's tailnet addresses (without prefix length), known once registered."""
        return [a.split("/")[0] for a in self.state.addresses]

    def _check(self, st: DeviceState, fail_fast: bool = False) -> bool:
        """True when Running; raises a permanent error at once (and, if ``fail_fast``, a transient one)."""
        if st.state == "Running":
            return True
        err = _error_for(st)
        if err is not None:
            raise err
        if st.state == "Stopped":
            raise DeviceClosed("device stopped")
        if fail_fast and (st.state == "NeedsLogin" or st.error_kind == "network_unreachable"):
            raise self._timeout_error(st, 0)
        return False

    @staticmethod
    def _timeout_error(st: DeviceState, timeout: float) -> RegistrationError:
        if st.state == "NeedsLogin":
            return NeedsLogin(st.auth_url)
        if st.error_kind == "network_unreachable":
            return NetworkUnreachable(st.error)
        return RegistrationTimeout(f"not running after {timeout}s (state {st.state})")

    def wait_until_running_blocking(self, timeout: float, *, fail_fast: bool = False) -> DeviceState:
        """Block until Running. ``AuthRejected``/``KeyExpired`` raise at once; at the timeout the
        transient reason (``NeedsLogin`` with its URL, ``NetworkUnreachable``, else
        ``RegistrationTimeout``) is raised while the node keeps trying. ``fail_fast``: raise a
        transient reason as soon as it appears (the first failed attempt to reach control, a login
        URL) instead of at the timeout; the node keeps trying either way."""
        self._require_started()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._check(self._state, fail_fast):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timeout_error(self._state, timeout)
                self._cond.wait(left)
            return self._state

    async def wait_until_running(self, timeout: float, *, fail_fast: bool = False) -> DeviceState:
        """Async twin of ``wait_until_running_blocking``; never blocks the event loop."""
        self._require_started()
        entry = _Watcher()
        with self._cond:
            self._watchers.append(entry)
        try:
            deadline = anyio.current_time() + timeout
            while not self._check(self.state, fail_fast):
                left = deadline - anyio.current_time()
                if left <= 0:
                    raise self._timeout_error(self.state, timeout)
                with anyio.move_on_after(left):
                    await entry.get()
            return self.state
        finally:
            with self._cond:
                self._watchers.remove(entry)

    async def watch_state(self) -> AsyncIterator[DeviceState]:
        """The current ``DeviceState``, then every change, until the device stops."""
        async for msg in self._watch(DeviceState):
            yield msg  # type: ignore[misc]

    async def watch_peers(self) -> AsyncIterator[PeersChanged]:
        """Every change to the admitted peer table (starts with the current table)."""
        async for msg in self._watch(PeersChanged):
            yield msg  # type: ignore[misc]

    async def _watch(self, kind: type[Message]) -> AsyncIterator[Message]:
        entry = _Watcher()
        with self._cond:
            self._watchers.append(entry)
            first: Message = self._state if kind is DeviceState else PeersChanged(peers=self._peers)
        try:
            yield first
            last = first
            if isinstance(first, DeviceState) and first.state == "Stopped":
                return
            while True:
                msg = await entry.get()
                if isinstance(msg, kind) and msg != last:
                    last = msg
                    yield msg
                elif isinstance(msg, DeviceState) and msg.state == "Stopped":
                    return
        finally:
            with self._cond:
                self._watchers.remove(entry)

    # -- peers and logout ----------------------------------------------------------------------------
    def peers(self, timeout: float = 5.0) -> list[PeerInfo]:
        """The admitted peers, sorted by node ID (asks PeerTracker, the trust chokepoint)."""
        return list(self._ask(PEERS, GetPeers(), timeout).peers)

    def peer_table(self, timeout: float = 5.0) -> PeerTable:
        return self._ask(PEERS, GetPeers(), timeout)

    def logout_blocking(self, timeout: float = 15.0) -> LogoutDone:
        """Deregister from control (past Expiry) and forget the node key; state becomes NeedsLogin."""
        return self._ask(CONTROL, Logout(), timeout)

    async def logout(self, timeout: float = 15.0) -> LogoutDone:
        try:
            return await self._ref(CONTROL).ask_async(Logout(), timeout=timeout)
        except ActorStopped as e:
            raise DeviceClosed(f"{CONTROL} stopped: the device is closing") from e

    def id_token_answer(self, aud: str, timeout: float = 15.0) -> IdTokenAnswer:
        """Control's answer to ``POST /machine/id-token`` for ``aud``, as it came (the LocalAPI copies it)."""
        return self._ask(CONTROL, IdToken(audience=aud), timeout)

    def id_token(self, aud: str, timeout: float = 15.0) -> TokenResponse:
        """Go ``LocalClient.IDToken``: an OIDC ID token for ``aud`` signed by control (a
        ``tailcfg.TokenResponse``). ``LocalApiError`` with Go's status otherwise: 400 bad audience,
        503 no netmap (not running, logged out), control's own status when it refuses."""
        from pytsnet.localapi.client import LocalClient
        self.start()
        return LocalClient.in_process(self.local_api()).id_token(aud)

    def _ask(self, name: str, msg: Request[_R], timeout: float) -> _R:
        """Ask a device actor; its stopping surfaces as ``DeviceClosed`` (``AskTimeout`` is a
        ``TimeoutError``)."""
        try:
            return self._ref(name).ask(msg, timeout=timeout)
        except ActorStopped as e:
            raise DeviceClosed(f"{name} stopped: the device is closing") from e

    def _require_started(self) -> None:
        if self.system is None:
            raise DeviceClosed("call start() first")

    def _ref(self, name: str) -> ActorRef:
        self._require_started()
        assert self.system is not None
        ref = self.system.lookup(name)
        if ref is None:
            raise DeviceClosed(f"{name} is not running")
        return ref

    # -- the data plane: dial, listen, status, whois ---------------------------------------------------
    def _on_netstack(self, ns: Netstack | None) -> None:
        """The tree's hand-over: None when a (re)build stops the subtree, then the new netstack."""
        with self._cond:
            self._ns, self._ns_rebuilding = ns, ns is None
        if ns is not None:
            self._bindings.attach(ns)
        self._fallback_tcp.attach(ns)  # 20d

    def _netstack(self) -> Netstack:
        self._require_started()
        with self._cond:
            ns = self._ns
        if ns is None:
            raise DataplaneNotReady("the node is not Running yet: await dev.up() (or wait_until_running) "
                                    "before dialing")
        return ns

    def _rebuilding(self) -> bool:
        """The bridge is (re)building the subtree: no netstack, for a moment."""
        with self._cond:
            return self._ns is None and self._ns_rebuilding

    async def _netstack_async(self) -> Netstack:
        """The netstack; during a rebuild, wait for the new one (the caller bounds the wait)."""
        while True:
            try:
                return self._netstack()
            except DataplaneNotReady:
                if not self._rebuilding():
                    raise
            await anyio.sleep(REBUILD_POLL)

    def _netstack_blocking(self, deadline: float) -> Netstack:
        while True:
            try:
                return self._netstack()
            except DataplaneNotReady:
                if not self._rebuilding() or time.monotonic() >= deadline:
                    raise
            time.sleep(REBUILD_POLL)

    def resolve(self, host: str) -> str:
        """The tailnet address ``host`` (IP, MagicDNS short name or FQDN of a peer, or an IP inside a
        route the node uses: an accepted subnet route, the engaged exit node) dials; else
        ``ExitNodeUnavailable`` (a non-tailnet IP while the selected exit node is unusable) or
        ``UnknownTailnetHost``."""
        peers, exit_node, routes = self._routing()
        try:
            return resolve(host, peers, routes=routes, exit_node=exit_node)
        except (UnknownTailnetHost, ExitNodeUnavailable):
            # Our copy of the peer table follows the PeerTracker's by an event, which a loaded
            # machine delivers late: before refusing, decide on the tracker's own table (what
            # ``peers()`` shows), so a peer or route it already admitted is dialable.
            table = self._ask_quiet(PEERS, GetPeers(), WHOIS_TIMEOUT)
            if table is None or list(table.peers) == peers:
                raise
            fresh = list(table.peers)
            _, exit_node, routes = self._routing(fresh)
            return resolve(host, fresh, routes=routes, exit_node=exit_node)

    # -- exit node and routes ------------------------------------------------------------------------
    def _routing(self, peers: list[PeerInfo] | None = None
                 ) -> tuple[list[PeerInfo], ExitNodeSelection, dict[int, list[str]]]:
        """The peers (ours, or ``peers``), the exit node selection and each peer's routes, as the
        bridge computes them for the engine (``actors.peers.routes``) from the same table and prefs."""
        with self._cond:
            peers, prefs = (list(self._peers) if peers is None else peers), self._route_prefs
            have_netmap = bool(self._dp_state.node_key) or bool(peers)
            ipv6 = any(":" in a for a in self._state.addresses)
        sel = select_exit_node(prefs.exit_node, peers, have_netmap=have_netmap)
        return peers, sel, wg_peer_routes(peers, prefs, sel, ipv6=ipv6)

    def active_exit_node(self) -> ExitNodeInfo | None:
        """The exit node traffic beyond the tailnet goes through now (resolved from the selector:
        stable ID, name, tailnet IP), or None: none selected, or the selected one is unavailable
        (``status().exit_node_unavailable`` says why)."""
        return self._routing()[1].info()

    def set_exit_node_blocking(self, selector: str | None, timeout: float = 5.0) -> ExitNodeInfo | None:
        """Select the exit node (stable ID, tailnet IP or MagicDNS name; None: clear) and re-plumb the
        engine before returning; the engaged node (this device's next dial goes through it), or None
        if none (or it is unavailable: dials beyond the tailnet then raise ``ExitNodeUnavailable``)."""
        if selector is not None and (not isinstance(selector, str) or not selector.strip()):
            raise ConfigError(f"exit node {selector!r}: want a stable node ID, tailnet IP or MagicDNS name, "
                              "or None")
        return self._set_route_prefs(self._route_prefs.model_copy(update={"exit_node": selector}), timeout)

    async def set_exit_node(self, selector: str | None, timeout: float = 5.0) -> ExitNodeInfo | None:
        """Async twin of ``set_exit_node_blocking``."""
        return await anyio.to_thread.run_sync(self.set_exit_node_blocking, selector, timeout)

    def _set_route_prefs(self, prefs: RoutePrefs, timeout: float) -> ExitNodeInfo | None:
        """Hand the bridge ``prefs``; the exit node as it plumbed the engine and resolver (its netmap
        can lag ours, so engaged by this answer means a name lookup already goes to its DoH)."""
        self._require_started()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._route_prefs = prefs  # dials check the new selection at once (fail closed meanwhile)
        got = self._ask(DATAPLANE, SetRoutePrefs(prefs=prefs), timeout)
        assert isinstance(got, RoutePrefsSet)
        # The tracker tells the bridge and us (via events) each peer-table change separately. Engaged:
        # wait (within the timeout) until our dials resolve it too, so a send right after this answer
        # is not refused on a table one change older. (Not engaged needs no wait: fail closed.)
        with self._cond:
            while (got.exit_node is not None and self._routing()[1].info() != got.exit_node
                   and (left := deadline - time.monotonic()) > 0):
                self._cond.wait(left)
        return got.exit_node

    def _beyond_tailnet(self, host: str) -> None:
        """Refuse a name lookup beyond the tailnet while the selected exit node is unusable, or engaged
        without DoH for us (no ``peerapi-dns-proxy``: reason ``no-dns-proxy``): no query leaves."""
        sel = self._routing()[1]
        if sel.reason is not None:
            raise ExitNodeUnavailable(str(sel.selector), sel.reason, host)
        if sel.node is not None and not sel.node.dns_proxy:
            raise ExitNodeUnavailable(str(sel.selector), "no-dns-proxy", host)

    # -- MagicDNS ------------------------------------------------------------------------------------
    async def lookup(self, name: str, timeout: float = LOOKUP_TIMEOUT) -> list[str]:
        """The addresses the node's MagicDNS resolver answers for ``name`` (A, plus AAAA when our node
        has IPv6): tailnet names, ExtraRecords, split DNS, and ``Config.fallback_resolvers`` if set.
        ``UnknownTailnetHost`` for NXDOMAIN, a failed upstream or no address. ``resolve`` stays the
        synchronous netmap-only lookup."""
        return await anyio.to_thread.run_sync(self.lookup_blocking, name, timeout)

    def lookup_blocking(self, name: str, timeout: float = LOOKUP_TIMEOUT) -> list[str]:
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(name.strip("[]")))]
        if not self._is_tailnet_name(name):
            self._beyond_tailnet(name)  # ExitNodeUnavailable: no query leaves for it
        types = ["A"] + (["AAAA"] if any(":" in a for a in self.tailscale_ips()) else [])
        out: list[str] = []
        deadline = time.monotonic() + timeout
        for rdtype in types:
            try:
                q = dns.message.make_query(name, rdtype)
            except (dns.exception.DNSException, ValueError) as e:
                raise UnknownTailnetHost(f"{name!r} is not a DNS name: {e}") from None
            ans = self._ask(DNS, DnsQuery(query=q.to_wire(), transport="local"),
                            max(0.1, deadline - time.monotonic()))
            try:
                m = dns.message.from_wire(ans.response)
            except dns.exception.DNSException:
                raise UnknownTailnetHost(f"lookup {name}: the resolver could not read the query") from None
            rcode = m.rcode()
            if rcode != dns.rcode.NOERROR:
                raise UnknownTailnetHost(f"lookup {name}: {dns.rcode.to_text(rcode)} (MagicDNS answers "
                                         "tailnet names; others only through split DNS or "
                                         "Config.fallback_resolvers)")
            out += [rd.to_text() for rrset in m.answer
                    if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rd in rrset]
        if not out:
            raise UnknownTailnetHost(f"lookup {name}: no address")
        return out

    def _is_tailnet_name(self, name: str) -> bool:
        """A single label (the resolver tries it under the tailnet's search domains), a peer's name,
        or a name under our MagicDNS suffix: answered inside the tailnet, never by an exit node."""
        want = name.lower().rstrip(".")
        if "." not in want:
            return True
        suffix = self.state.name.lower().rstrip(".").partition(".")[2]
        if suffix and (want == suffix or want.endswith("." + suffix)):
            return True
        with self._cond:
            return any(want == p.name.lower().rstrip(".") for p in self._peers)

    def _dial_address(self, host: str, timeout: float = LOOKUP_TIMEOUT) -> str:
        """Where a dial to ``host`` goes: the netmap's answer, else the resolver's (which must still
        be a tailnet address: a dial never leaves the tailnet)."""
        try:
            return self.resolve(host)
        except UnknownTailnetHost:
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                pass
            else:
                raise
        addrs = sorted(self.lookup_blocking(host, timeout), key=lambda a: ":" in a)
        for a in addrs:
            with contextlib.suppress(UnknownTailnetHost):
                return self.resolve(a)
        raise UnknownTailnetHost(f"{host!r} resolves to {', '.join(addrs)}, not a tailnet address: tailnet "
                                 "dials never leave the tailnet")

    def _send_address(self, host: str) -> str:
        return self._dial_address(host)

    def _dns_forward(self, query: bytes, upstream: Upstream, timeout: float) -> bytes | None:
        """The resolver's forwarder: ``query`` to ``upstream`` over our netstack (never a host socket),
        the answer from that very address, or None at ``timeout``. A DoH upstream (an exit node's
        peerAPI) gets an RFC 8484 POST over a tailnet TCP connection."""
        try:
            ns = self._netstack()
        except (DataplaneNotReady, DeviceClosed):
            return None
        ip, port = str(upstream.ip), upstream.port
        if upstream.doh_path:
            return self._doh(ns, query, upstream, timeout)
        sock = self._bindings.bind_udp(0, lambda h: h)
        want = (ipaddress.ip_address(ip), port)
        try:
            sock.sendto_blocking(query, (ip, port))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                data, src = sock.recvfrom_blocking(left)
                if (ipaddress.ip_address(src[0]), src[1]) == want:
                    return data
        except TimeoutError:
            return None
        finally:
            sock.close()
        return None

    @staticmethod
    def _doh(ns: Netstack, query: bytes, upstream: Upstream, timeout: float) -> bytes | None:
        """One DoH exchange (Go's exit-node DNS: ``POST /dns-query``, ``application/dns-message``)."""
        ip = str(upstream.ip)
        hostport = f"[{ip}]:{upstream.port}" if ":" in ip else f"{ip}:{upstream.port}"
        try:
            sock = ns.create_connection((ip, upstream.port), timeout)
        except (OSError, ActorStopped) as e:
            log.debug("DoH to %s: no connection: %s", upstream, e)
            return None
        try:
            sock.settimeout(timeout)
            ans = http_request(sock, "POST", upstream.doh_path, host=hostport, body=query,
                               headers=[("Content-Type", DNS_MESSAGE), ("Accept", DNS_MESSAGE)],
                               max_body=MAX_DNS_MESSAGE)
        except (OSError, HttpAnswerTooLarge, h11.ProtocolError) as e:
            log.debug("DoH to %s failed: %s", upstream, e)
            return None
        finally:
            sock.close()
        if ans is None or ans.status != 200:
            log.debug("DoH to %s: HTTP %s", upstream, ans.status if ans is not None else "closed")
            return None
        return ans.body

    async def tcp_connect(self, host: str, port: int, timeout: float = DIAL_TIMEOUT) -> TcpStream:
        """Dial ``host:port`` across the tailnet (an anyio byte stream); never via a host socket.

        ``DialTimeout`` (a ``TimeoutError``) if not connected within ``timeout`` seconds; the TCP
        outcomes (``ConnectionRefused``…) as they happen; ``DataplaneNotReady`` before Running (while
        the data plane is being rebuilt, the dial waits for it within ``timeout``)."""
        with anyio.move_on_after(timeout) as scope:
            addr = await anyio.to_thread.run_sync(self._dial_address, host, timeout)
            ns = await self._netstack_async()
            try:
                return await ns.connect_tcp(addr, port)
            except ConnectionRefused:
                raise _refused(host, port, addr) from None
            except ActorStopped:
                raise DataplaneNotReady("the data plane was rebuilt during the dial: dial again") from None
        assert scope.cancelled_caught
        raise _dial_timeout(host, port, host, timeout)

    async def listen(self, port: int, backlog: int | None = None) -> TcpListener:
        """Accept TCP connections from the tailnet on ``port`` (of our tailnet addresses). Allowed at
        once after ``start`` (as Go's ``Listen``): connections arrive once the node is Running, and the
        listener keeps working across data-plane rebuilds. ``AddressInUse`` if the port has one."""
        self.start()
        return await anyio.to_thread.run_sync(self._bindings.listen, port, backlog)

    async def listen_packet(self, port: int = 0) -> UdpSocket:
        """A UDP socket on our tailnet addresses (``port`` 0: an ephemeral port, known once Running).
        ``sendto`` takes a tailnet IP or a peer's MagicDNS name, like ``tcp_connect``."""
        self.start()
        return await anyio.to_thread.run_sync(self._bindings.bind_udp, port, self._send_address)

    def tcp_connect_blocking(self, host: str, port: int, timeout: float = DIAL_TIMEOUT) -> SocketLike:
        """Blocking twin of ``tcp_connect``; ``timeout`` bounds the dial (use ``settimeout`` on the
        socket for its reads and writes, which block by default)."""
        deadline = time.monotonic() + timeout
        addr = self._dial_address(host, timeout)
        ns = self._netstack_blocking(deadline)
        try:
            sock = ns.create_connection((addr, port), max(0.0, deadline - time.monotonic()))
        except ConnectionRefused:
            raise _refused(host, port, addr) from None
        except ActorStopped:
            raise DataplaneNotReady("the data plane was rebuilt during the dial: dial again") from None
        except TimeoutError as e:
            if type(e) is not TimeoutError:  # a typed TCP outcome (ConnectionTimedOut) passes as is
                raise
            raise _dial_timeout(host, port, addr, timeout) from None
        sock.settimeout(None)
        return sock

    def listen_blocking(self, port: int, backlog: int | None = None) -> SocketListener:
        self.start()
        return SocketListener(self._bindings.listen(port, backlog))

    def listen_packet_blocking(self, port: int = 0) -> UdpSocket:
        self.start()
        return self._bindings.bind_udp(port, self._send_address)

    def _ask_quiet(self, name: str, msg: Request[_R], timeout: float) -> _R | None:
        ref = self.system.lookup(name) if self.system is not None else None
        if ref is None:
            return None
        try:
            return ref.ask(msg, timeout=timeout)
        except (AskTimeout, ActorStopped):
            return None

    def status(self, timeout: float = 5.0) -> DeviceStatus:
        """Self, peers (path, RTT, bytes), home region, DERP connections and drop counters."""
        self._require_started()
        info = self._ask_quiet(DATAPLANE, GetDataplaneInfo(), timeout) or DataplaneInfo()
        names, nm, endpoints, dps = info.names, info.netmap, info.endpoints, info.state
        with self._cond:
            peers, st = list(self._peers), self._state
        paths: dict[str, Any] = {}
        derp_peer: dict[str, tuple[int, int]] = {}
        sessions: dict[str, Any] = {}
        connected: dict[int, bool] = {}
        drops: dict[str, int] = {}
        backlog: dict[str, int] = {}
        counters: dict[str, int] = {}
        hs_bytes = 0
        if names:
            ps = self._ask_quiet(names["udp"], PathStatusRequest(), timeout)
            if isinstance(ps, PathStatus):
                paths = {p.peer: p for p in ps.peers}
                drops.update(magicsock_unknown_peer=ps.dropped_unknown_peer,
                             magicsock_no_path=ps.dropped_no_path, magicsock_blackhole=ps.dropped_blackhole,
                             magicsock_unknown_udp_source=ps.unknown_udp_source,
                             magicsock_unknown_kind=ps.dropped_unknown_kind,
                             magicsock_queue_full=ps.dropped_queue_full,
                             magicsock_derp_full=ps.dropped_derp_full)
                for reason, n in ps.early_drops.items():  # the reader's, before queueing
                    drops[f"magicsock_{reason}"] = drops.get(f"magicsock_{reason}", 0) + n
                counters.update(udp_datagrams_read=ps.datagrams_read, udp_bytes_read=ps.bytes_read,
                                udp_parked_sent=ps.parked_sent,
                                udp_gso_sends=ps.gso_sends, udp_gso_datagrams=ps.gso_datagrams,
                                udp_gro_reads=ps.gro_reads, udp_gro_datagrams=ps.gro_datagrams,
                                udp_peer_sockets=ps.peer_sockets,
                                udp_peer_socket_datagrams=ps.peer_socket_datagrams,
                                udp_peer_socket_failures=ps.peer_socket_failures)
            for role, name in names.items():
                if not role.startswith("derp."):
                    continue
                ds = self._ask_quiet(name, DerpStatusRequest(), timeout)
                if isinstance(ds, DerpStatus):
                    connected[ds.region] = ds.connected
                    drops[f"derp{ds.region}_dropped"] = ds.dropped
                    drops[f"derp{ds.region}_bytes_in_unknown_sources"] = ds.bytes_in_unknown_sources
                    for c in ds.peers:
                        i, o = derp_peer.get(c.peer, (0, 0))
                        derp_peer[c.peer] = (i + c.bytes_in, o + c.bytes_out)
            wg = self._ask_quiet(names["engine"], GetWgStatus(), timeout)
            if isinstance(wg, WgStatus):
                sessions = {p.node_key: p for p in wg.peers}
                drops.update({f"wg_{k}": v for k, v in wg.device_drops.items()})
                drops.update({f"filter_{k}": v for k, v in wg.filter_drops.items()})
                counters.update({f"wg_{k}": v for k, v in wg.work.items()})
                backlog.update(wgengine_handshakes=wg.handshake_queue)
                hs_bytes = wg.handshake_queue_bytes
            backlog.update(_backlogs(self.system, names, hs_bytes))
            dsc = self._ask_quiet(names["disco"], DiscoStatusRequest(), timeout)
            if isinstance(dsc, DiscoStatus):
                drops.update(disco_unknown_key=dsc.dropped_unknown_disco, disco_bad_box=dsc.dropped_bad_box,
                             disco_malformed=dsc.dropped_malformed, disco_bad_source=dsc.dropped_bad_source)
            stn = self._ask_quiet(names["stun"], StunStatusRequest(), timeout)
            if isinstance(stn, StunStatus):
                drops["stun_unsolicited"] = stn.dropped_unsolicited
            ns = self._ask_quiet(names["netstack"], NetstackStatusRequest(), timeout)
            if isinstance(ns, NetstackStatus):
                drops.update({f"netstack_{k}": v for k, v in (ns.drops | ns.counters).items()})
        dn = self._ask_quiet(DNS, DnsStatusRequest(), timeout)
        if isinstance(dn, DnsStatus):
            counters.update({f"dns_{k}": v for k, v in dn.counters.items()})
        fw = self._ask_quiet(FORWARDER, ForwarderStatusRequest(), timeout)
        if isinstance(fw, ForwarderStatus):  # subnet router / exit node: flows, bytes, refusals
            counters.update({f"forward_{k}": v for k, v in fw.counters.items()},
                            forward_tcp_open=fw.tcp_flows, forward_udp_open=fw.udp_flows,
                            forward_echo_open=fw.echo_flows)
        pa = self._ask_quiet(PEERAPI, PeerApiStatusRequest(), timeout)
        if isinstance(pa, PeerApiStatus):  # the peerAPI's requests by outcome, and refusals
            counters.update({f"peerapi_{k}": v for k, v in pa.counters.items()}, peerapi_open=pa.open)
        rows = []
        for p in peers:
            pp, ss = paths.get(p.node_key), sessions.get(p.node_key)
            d_in, d_out = derp_peer.get(p.node_key, (0, 0))
            u_in, u_out = (pp.udp_bytes_in, pp.udp_bytes_out) if pp is not None else (0, 0)
            rows.append(PeerStatus(
                node_id=p.node_id, name=p.name, hostname=p.hostname, node_key=p.node_key,
                addresses=list(p.addresses), path=pp.path if pp is not None else "none",
                addr=pp.addr if pp is not None else None, derp_region=pp.derp_region if pp is not None else 0,
                home_derp=p.home_derp, rtt=pp.rtt if pp is not None else None,
                udp_bytes_in=u_in, udp_bytes_out=u_out, derp_bytes_in=d_in, derp_bytes_out=d_out,
                bytes_in=u_in + d_in, bytes_out=u_out + d_out,
                has_session=bool(ss and ss.has_session), last_handshake=ss.last_handshake if ss else None,
                key_expiry=p.key_expiry))
        sel = self._routing()[1]
        return DeviceStatus(state=st.state, self_node=nm.self_node if nm is not None else None,
                            tailscale_ips=self.tailscale_ips(), home_region=dps.home_region,
                            derp_connected=connected, endpoints=endpoints, peers=rows, drops=drops,
                            backlog=backlog, counters=counters, exit_node=sel.info(),
                            exit_node_unavailable=sel.reason)

    async def status_async(self, timeout: float = 5.0) -> DeviceStatus:
        return await anyio.to_thread.run_sync(self.status, timeout)

    def capture_pcap(self, path: str | os.PathLike[str]) -> PcapCapture:
        """Go tsnet ``CapturePcap``: write every plaintext packet through the tunnel to ``path``
        (pcap, Go's format) until the handle's ``stop()`` or ``close()``; ``CaptureError`` if one
        is already running or the file cannot be written."""
        self._require_started()
        assert self.system is not None
        return start_capture(self.system, path)

    def whois(self, addr: str) -> WhoIs:
        """The node (a peer or ourselves) owning tailnet address ``addr`` (``ip`` or ``ip:port``),
        its user profile and capabilities; ``UnknownTailnetHost`` if none does."""
        host = addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr
        host = host.strip("[]").split("]")[0]
        info = self._ask_quiet(DATAPLANE, GetDataplaneInfo(), WHOIS_TIMEOUT)
        nm = info.netmap if info is not None else None
        with self._cond:
            nodes = list(self._peers)
        if nm is not None:
            nodes.append(nm.self_node)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError as e:
            raise UnknownTailnetHost(f"{addr!r} is not an IP address") from e
        for n in nodes:
            if any(ip == ipaddress.ip_interface(a).ip for a in n.addresses):
                profiles = nm.user_profiles if nm is not None else {}
                user = profiles.get(n.user, UserInfo(id=n.user))
                caps = tuple(nm.capabilities.get(n.node_id, [])) if nm is not None else ()
                return WhoIs(node=n, user=user, capabilities=caps)
        raise UnknownTailnetHost(f"no tailnet node has address {host}")

    def http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """Go tsnet's ``HTTPClient``: an ``httpx.AsyncClient`` (``async with dev.http_client() as c``)
        whose every connection is a tailnet dial (``tcp_connect``: MagicDNS names, the exit node, fail
        closed). ``kwargs`` are httpx's (``timeout``, ``base_url``, ``http2``, ``verify``…) except
        ``transport``/``mounts``/``proxy``; ``trust_env`` defaults to False. See ``pytsnet.http.client``."""
        from pytsnet.http.client import async_client
        return async_client(self.tcp_connect, DIAL_TIMEOUT, **kwargs)

    def sync_http_client(self, **kwargs: Any) -> httpx.Client:
        """The blocking twin of ``http_client``: an ``httpx.Client`` over ``tcp_connect_blocking``."""
        from pytsnet.http.client import sync_client
        return sync_client(self.tcp_connect_blocking, DIAL_TIMEOUT, **kwargs)

    _loopback: Loopback | None = None

    def loopback(self) -> tuple[str, str, str]:
        """Go tsnet ``Loopback``: ``(addr, proxy_cred, local_api_cred)``; ``addr`` (``127.0.0.1:PORT``)
        is a SOCKS5 proxy (user ``tsnet``, password ``proxy_cred``) and an HTTP proxy (CONNECT and
        ``http://`` URIs, the same credential as Basic ``Proxy-Authorization``) onto the tailnet, for
        curl, git, httpx/requests ``proxy=``… Started on the first call (it starts the device), the
        same answer afterwards; closed with the device. ``pytsnet.loopback``."""
        self.start()
        with self._life:
            if self._closed:
                raise DeviceClosed("device was closed")
            if self._loopback is None:
                assert self.system is not None
                self._loopback = Loopback(self.system, self)
            lb = self._loopback
        return lb.address, lb.creds.proxy, lb.creds.local_api

    def loopback_status(self, timeout: float = 5.0) -> LoopbackStatus | None:
        """The loopback proxies' open connections and counters (None before ``loopback()``)."""
        return self._loopback.status(timeout) if self._loopback is not None else None

    def listen_socket(self, port: int, backlog: int = DEFAULT_BACKLOG) -> TailnetListenSocket:
        """A real listening socket (a real fd) on tailnet ``port``: socketserver/http.server,
        ``uvicorn.Server.serve(sockets=[…])``, aiohttp's ``SockSite`` and ``loop.create_server(sock=…)``
        take it as is. Each accepted ``TailnetConnection``'s ``getpeername()`` is the tailnet peer
        (``whois_connection``). At most ``backlog`` connections wait for ``accept``."""
        self.start()
        return TailnetListenSocket(self._bindings.listen(port, backlog), backlog, self._bridge_address)

    def _bridge_address(self) -> str:
        ips = self.tailscale_ips()
        return next((ip for ip in ips if ":" not in ip), ips[0] if ips else "0.0.0.0")

    def connect_socket(self, host: str, port: int, timeout: float = DIAL_TIMEOUT) -> TailnetConnection:
        """``tcp_connect_blocking`` as a real connected socket (a real fd, blocking; ``settimeout`` as
        usual), for libraries that need one (selectors, asyncio's ``sock=``, urllib3)."""
        sock = self.tcp_connect_blocking(host, port, timeout)
        try:
            return bridge_flow(sock._ch, name=f"bridge-dial-{host}:{port}")
        except BaseException:
            abort_flow(sock._ch)  # no fds or threads left to bridge it: the dial is undone
            raise

    def whois_connection(self, conn: socket.socket | tuple[str, int] | Any) -> WhoIs:
        """``whois`` of a bridged connection's tailnet peer: a ``TailnetConnection``, a wrapper of one
        (asyncio's transport ``get_extra_info("socket")``), or the ``(ip, port)`` its ``accept``
        returned; ``NotTailnetConnection`` for any other socket (or a closed one)."""
        if isinstance(conn, tuple) and len(conn) >= 2 and isinstance(conn[0], str):
            return self.whois(conn[0])
        bridged = bridged_connection(conn)
        if bridged is not None:
            return self.whois(bridged.getpeername()[0])
        raise NotTailnetConnection(f"{conn!r} is not an open tailnet connection (want a socket accepted "
                                   "from dev.listen_socket or made by dev.connect_socket, or its (ip, port))")

    @overload
    def http_server(self, port: int, handler: Callable[..., socketserver.BaseRequestHandler],
                    server_class: None = None, backlog: int = DEFAULT_BACKLOG) -> ThreadingHTTPServer: ...

    @overload
    def http_server(self, port: int, handler: Callable[..., socketserver.BaseRequestHandler],
                    server_class: type[_Srv], backlog: int = DEFAULT_BACKLOG) -> _Srv: ...

    def http_server(self, port: int, handler: Callable[..., socketserver.BaseRequestHandler],
                    server_class: type[socketserver.BaseServer] | None = None,
                    backlog: int = DEFAULT_BACKLOG) -> socketserver.BaseServer:
        """A ``socketserver`` server (default ``ThreadingHTTPServer``) on tailnet ``port`` with
        ``handler``, not yet serving: call its ``serve_forever``/``shutdown`` as usual."""
        from http.server import ThreadingHTTPServer

        from pytsnet.http.serve import stdlib_server
        return stdlib_server(self.listen_socket(port, backlog), handler, server_class or ThreadingHTTPServer,
                             name=self.state.name.rstrip("."))

    async def serve_wsgi(self, app: Any, port: int, *, backlog: int = DEFAULT_BACKLOG,
                         task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
                         ) -> None:
        """Serve a WSGI app (Flask, Django…) on tailnet ``port`` until cancelled (threaded wsgiref);
        ``REMOTE_ADDR`` is the caller's tailnet IP. ``await tg.start(dev.serve_wsgi, app, port)``
        returns once listening."""
        from pytsnet.http.serve import serve_wsgi
        sock = await anyio.to_thread.run_sync(self.listen_socket, port, backlog)
        await serve_wsgi(sock, app, task_status=task_status)

    async def serve_asgi(self, app: Any, port: int, *, backlog: int = DEFAULT_BACKLOG,
                         task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
                         **config: Any) -> None:
        """Serve an ASGI app (FastAPI, Starlette…) on tailnet ``port`` with uvicorn until cancelled
        (asyncio); ``scope["client"]`` is the caller's tailnet ``(ip, port)``. ``config``: more
        ``uvicorn.Config`` options."""
        from pytsnet.http.serve import serve_asgi
        sock = await anyio.to_thread.run_sync(self.listen_socket, port, backlog)
        await serve_asgi(sock, app, task_status=task_status, **config)

    def requests_session(self, connect_timeout: float = DIAL_TIMEOUT) -> requests.Session:
        """A ``requests.Session`` that reaches tailnet names and addresses only (connection reuse,
        ``https://`` included); anything else raises ``requests.ConnectionError`` caused by the
        device's typed error, and proxies are refused (``pytsnet.http.requests_adapter``)."""
        from pytsnet.http.requests_adapter import tailnet_session
        return tailnet_session(self.connect_socket, connect_timeout)

    def _bootstrap_auth_key(self) -> str:
        """The auth key the control client registers with: ``Config.auth_key``, or one minted from an
        OAuth client secret or an ID token (``pytsnet.bootstrap``) when the node has no state or
        ``TSNET_FORCE_LOGIN`` is set. Blocks for the API round trips, as Go's ``Server.Start``."""
        from pytsnet.actors.control.store import NODE
        from pytsnet.bootstrap import resolve_auth_key
        return resolve_auth_key(self.config, has_state=self.store.read_state(NODE) is not None)

    def _force_login(self) -> bool:
        """``TSNET_FORCE_LOGIN``: log in again (new node key, the auth key) even with stored state."""
        from pytsnet.bootstrap.resolve import force_login
        return force_login()

    def _bootstraps(self) -> bool:
        """Whether ``start()`` may call the API to mint an auth key (an OAuth secret or a client ID)."""
        from pytsnet.bootstrap.attributes import is_client_secret
        cfg = self.config
        return bool(cfg.client_secret or cfg.client_id or is_client_secret(str(cfg.auth_key or "")))

    _local_api: LocalApi | None = None
    _local_api_socket: LocalApiSocket | None = None

    def local_api(self) -> LocalApi:
        """The LocalAPI's route table over this device (``pytsnet.localapi.server``): what the
        in-process client, the unix socket and the loopback listener all serve."""
        with self._life:
            if self._local_api is None:
                self._local_api = self._new_local_api()
            return self._local_api

    def _new_local_api(self) -> LocalApi:
        from pytsnet.localapi import idtoken
        from pytsnet.localapi.server import LocalApi
        api = LocalApi(self)
        idtoken.register(api, self)
        from pytsnet.localapi import cert as cert_api  # 20a
        cert_api.register(api, self)
        from pytsnet.serve.localapi import register as register_serve
        register_serve(api, self)  # 20b: serve-config
        from pytsnet.localapi import tka as tka_api  # 21e: tka/*
        tka_api.register(api, self)
        from pytsnet.localapi import taildrop as taildrop_api  # 22c: file-targets, file-put/, files/
        taildrop_api.register(api, taildrop_api.DeviceTaildrop(self))
        return api

    def local_client(self) -> LocalClient:
        """Go tsnet ``LocalClient``: the LocalAPI in-process (no socket), answers as Go's structs
        (``pytsnet.localapi.types``): ``status()``, ``whois(addr)``, ``prefs()``, ``logout()``…"""
        from pytsnet.localapi.client import LocalClient
        self.start()
        return LocalClient.in_process(self.local_api())

    def _serve_local_api_socket(self) -> None:
        if self.config.local_api_socket is None:
            return
        from pytsnet.localapi.unix import LocalApiSocket
        assert self.system is not None
        if self._local_api is None:
            self._local_api = self._new_local_api()
        self._local_api_socket = LocalApiSocket(self.system, self._local_api, self.config.local_api_socket)

    def dataplane_info(self) -> DataplaneInfo:
        """The bridge's last netmap, endpoints and netcheck (empty while it does not answer)."""
        return self._ask_quiet(DATAPLANE, GetDataplaneInfo(), WHOIS_TIMEOUT) or DataplaneInfo()

    def route_prefs(self) -> RoutePrefs:
        """The exit node selector and route acceptance in force (Go prefs ``ExitNodeID``, ``RouteAll``)."""
        with self._cond:
            return self._route_prefs

    def set_route_prefs_blocking(self, prefs: RoutePrefs, timeout: float = 5.0) -> ExitNodeInfo | None:
        """Apply both prefs at once (the LocalAPI's ``PATCH prefs``); the engaged exit node."""
        return self._set_route_prefs(prefs, timeout)

    def icmp_ping_blocking(self, ip: str, timeout: float = 5.0) -> IcmpEchoResult:
        """One ICMP echo request from our netstack to the tailnet address ``ip`` (a random 32-bit
        id/seq, as Go's ``ICMPEchoPayload``) and its round trip; ``done=False`` if no reply came
        within ``timeout`` (the peer's filter dropped it, or it is down). The LocalAPI's
        ``ping?type=ICMP``; the caller has checked that a peer owns ``ip``."""
        ident, seq = secrets.randbits(16), secrets.randbits(16)
        return self._netstack_probe(IcmpEchoResult, IcmpEchoStart(dst=ip, ident=ident, seq=seq),
                                    IcmpEchoPoll(dst=ip, ident=ident, seq=seq),
                                    IcmpEchoCancel(dst=ip, ident=ident, seq=seq), timeout)

    def tsmp_ping_blocking(self, ip: str, timeout: float = 5.0) -> TsmpPingResult:
        """One TSMP ping (Go's ``sendTSMPPing``: 8 random bytes, IP protocol 99) from our netstack to
        ``ip`` and its pong's round trip and PeerAPI port; ``done=False`` if none came in ``timeout``."""
        data = secrets.token_bytes(8)
        return self._netstack_probe(TsmpPingResult, TsmpPingStart(dst=ip, data=data),
                                    TsmpPingPoll(dst=ip, data=data), TsmpPingCancel(dst=ip, data=data),
                                    timeout)

    def _netstack_probe(self, result: type[_P], start: Request[_P], poll: Request[_P], cancel: Message,
                        timeout: float) -> _P:
        """Start a probe the netstack answers later (an ICMP echo, a TSMP ping), poll for its answer
        until ``timeout``, then cancel it: the answer, or ``result()`` (not done) when none came."""
        names = self.dataplane_info().names
        if self.system is None or "netstack" not in names:
            return result(done=True, error="data plane not running")
        deadline = time.monotonic() + timeout
        got = self._ask_quiet(names["netstack"], start, timeout)
        if got is None:
            return result(done=True, error="netstack not answering")
        while not got.done:
            if time.monotonic() >= deadline:
                ref = self.system.lookup(names["netstack"])
                if ref is not None:
                    with contextlib.suppress(ActorStopped, MailboxFull):
                        ref.tell(cancel)
                return result()
            time.sleep(PING_POLL)
            got = self._ask_quiet(names["netstack"], poll, max(0.1, deadline - time.monotonic())) or result()
        return got

    def disco_ping_blocking(self, node_key: str, timeout: float = 5.0) -> DiscoPingResult:
        """One disco Ping to a peer (every candidate address and its DERP region); the first Pong's
        latency and path, or ``done=False`` if none came within ``timeout`` (the LocalAPI's ping)."""
        from pytsnet.messages.ping import DiscoPingPoll, DiscoPingResult, DiscoPingStart
        names = self.dataplane_info().names
        ref = self.system.lookup(names["disco"]) if self.system is not None and "disco" in names else None
        if ref is None:
            return DiscoPingResult(done=True, error="data plane not running")
        tx = secrets.token_hex(12)
        ref.tell(DiscoPingStart(peer=node_key, tx=tx))
        deadline = time.monotonic() + timeout
        while True:
            got = self._ask_quiet(names["disco"], DiscoPingPoll(tx=tx), max(0.1, deadline - time.monotonic()))
            if got is not None and got.done:
                return got
            if time.monotonic() >= deadline:
                return DiscoPingResult()
            time.sleep(PING_POLL)

    # -- Certificates and ListenTLS -------------------------------------------------------------
    def _start_cert_manager(self) -> None:
        """Spawn the ``cert`` actor under the node supervisor (permanent: a crash restarts it; its
        state is in the store)."""
        from pytsnet.actors.cert import CERT, CertManager
        from pytsnet.actors.runtime import ChildSpec, Restart
        from pytsnet.messages.cert import CertManagerSpawn
        from pytsnet.tree import NODE
        assert self.system is not None
        cfg = self.config
        spawn = CertManagerSpawn(directory_url=str(cfg.acme_directory_url),
                                 ca_file=str(cfg.acme_ca_file or ""), control=CONTROL)
        self.system.spawn_spec(ChildSpec(CertManager, CERT, args=(spawn, self.store),
                                         restart=Restart.PERMANENT), parent=self.system.lookup(NODE))

    def cert_domains(self) -> list[str]:
        """The names this node may get TLS certs for (the netmap's ``DNSConfig.CertDomains``; Go's
        ``tsnet.Server.CertDomains``). Empty: HTTPS is not enabled on the tailnet, or no netmap yet."""
        nm = self.dataplane_info().netmap
        return list(nm.dns.cert_domains) if nm is not None and nm.dns is not None else []

    def _cert_request(self, domain: str) -> GetCertPair:
        """``DataplaneNotReady`` before the first netmap (CertDomains come with it)."""
        from pytsnet.messages.cert import GetCertPair
        self._require_started()
        nm = self.dataplane_info().netmap
        if nm is None:
            raise DataplaneNotReady("no netmap yet (CertDomains come with it): wait until Running")
        domains = tuple(nm.dns.cert_domains) if nm.dns is not None else ()
        return GetCertPair(domain=domain.lower().rstrip("."), cert_domains=domains)

    @staticmethod
    def _cert_result(domain: str, ans: CertPairAnswer, allowed: tuple[str, ...]) -> tuple[bytes, bytes]:
        from pytsnet.errors import AcmeFailed, HttpsNotEnabled, InvalidCertDomain
        if ans.failure == "https_disabled":
            raise HttpsNotEnabled()
        if ans.failure == "invalid_domain":
            raise InvalidCertDomain(domain, allowed)
        if ans.failure or not ans.cert_pem:
            raise AcmeFailed(f"no cert for {domain}: {ans.error or 'the ACME order failed'}")
        return ans.cert_pem.encode(), ans.key_pem.encode()

    def cert_pair_blocking(self, domain: str, timeout: float = 60.0) -> tuple[bytes, bytes]:
        """``(cert chain PEM, private key PEM)`` for ``domain`` (one of ``cert_domains()``; Go's
        ``LocalClient.CertPair``): the cached cert while valid, else a new one from the ACME server
        (DNS-01 through control's set-dns). ``HttpsNotEnabled``, ``InvalidCertDomain``, ``AcmeFailed``;
        ``AskTimeout`` (a ``TimeoutError``) when the order takes longer than ``timeout``."""
        from pytsnet.actors.cert import CERT
        req = self._cert_request(domain)
        return self._cert_result(req.domain, self._ask(CERT, req, timeout), req.cert_domains)

    async def cert_pair(self, domain: str, timeout: float = 60.0) -> tuple[bytes, bytes]:
        """The async twin of ``cert_pair_blocking`` (the event loop keeps running during an order)."""
        from pytsnet.actors.cert import CERT
        req = await anyio.to_thread.run_sync(self._cert_request, domain)
        try:
            ans = await self._ref(CERT).ask_async(req, timeout=timeout)
        except ActorStopped as e:
            raise DeviceClosed(f"{CERT} stopped: the device is closing") from e
        return self._cert_result(req.domain, ans, req.cert_domains)

    def cert_status(self, timeout: float = 5.0) -> CertStatus:
        """The cert manager's counters (``orders``, ``issued``, ``failed``, ``cache_hits``, ``renewals``)."""
        from pytsnet.actors.cert import CERT
        from pytsnet.messages.cert import GetCertStatus
        return self._ask(CERT, GetCertStatus(), timeout)

    async def listen_tls(self, port: int, backlog: int | None = None, *,
                         timeout: float = 60.0) -> TlsListener:
        """Go's ``ListenTLS``: wait until Running (``up``), then accept TLS connections on ``port`` with
        a certificate for this node's MagicDNS name (its first ``CertDomains`` entry), renewed as Go
        renews. ``HttpsNotEnabled`` when the tailnet has MagicDNS off or gives no CertDomains. Unlike
        Go, a client without SNI gets that cert too (Go refuses the handshake)."""
        from pytsnet.cert.listener import TlsListener
        from pytsnet.errors import HttpsNotEnabled
        await self.up(timeout)
        nm = (await anyio.to_thread.run_sync(self.dataplane_info)).netmap
        if nm is None or nm.dns is None or not nm.dns.proxied:
            raise HttpsNotEnabled("MagicDNS is off on the tailnet: enable it (and HTTPS) in the admin panel")
        domains = list(nm.dns.cert_domains)
        if not domains:
            raise HttpsNotEnabled()
        lst = await self.listen(port, backlog)
        return TlsListener(lst, domains[0], self.cert_pair)

    # -- Serve -----------------------------------------------------------------------------------------
    serve_cert_provider: CertProvider | None = None
    """The certificates Serve's HTTPS and TerminateTLS handlers present: domain → (PEM chain, PEM key).
    None: the node's own ACME certificates (``cert_pair_blocking``: HTTPS must be on for the tailnet)."""

    def _start_serve(self) -> None:
        from pytsnet.actors.serve import serve_spec
        from pytsnet.serve import SERVE_STATE_KEY, ServeListeners
        assert self.system is not None
        spawn = ServeSpawn(state_key=SERVE_STATE_KEY, peers=PEERS, dataplane=DATAPLANE, control=CONTROL)
        listeners = ServeListeners(self._bindings, self._services)  # 20f: service ports via ServiceHosting
        self.system.spawn_spec(serve_spec(self.system, spawn, self.store, listeners,
                                          self._serve_cert, ingress=self._funnel_routes()))  # 20g: Funnel

    def _serve_cert(self, domain: str) -> tuple[bytes, bytes]:
        provider: CertProvider = self.serve_cert_provider or self.cert_pair_blocking
        return provider(domain)

    def get_serve_config_blocking(self, timeout: float = 10.0) -> tuple[ServeConfig | None, str]:
        """Go ``ServeConfigETag``: the config in force (None: nothing served) and its ETag."""
        from pytsnet.serve import parse_serve_config
        self.start()
        st = self._ask(SERVE, GetServeConfig(), timeout)
        return parse_serve_config(st.config), st.etag

    async def get_serve_config(self, timeout: float = 10.0) -> tuple[ServeConfig | None, str]:
        return await anyio.to_thread.run_sync(self.get_serve_config_blocking, timeout)

    def set_serve_config_blocking(self, cfg: ServeConfig | str | bytes | None, *, etag: str = "",
                                  timeout: float = 10.0) -> str:
        """Go ``SetServeConfig(config, etag)``: check, store and apply ``cfg`` (a ``ServeConfig`` or Go's
        JSON; None serves nothing) and return its ETag. No open connection is dropped: a TCP forward
        keeps going, a web connection sees the new config at its next request (as Go).
        ``ServeETagMismatch`` if ``etag`` is given and is not the current one;
        ``ServeConfigInvalid`` for a config that cannot be served (the one in force stays).
        ``AllowFunnel`` (20g): each port it turns on must pass Go's ``CheckFunnelAccess`` for this node
        (``FunnelUnavailable`` / ``FunnelPortNotAllowed`` with Go's texts, nothing applied); public
        connections for those ``host:port`` targets are then served by the port's handler."""
        from pytsnet.serve import ServeConfigError, parse_serve_config, to_go_json
        self.start()
        if isinstance(cfg, str | bytes):
            try:
                cfg = parse_serve_config(cfg)
            except ServeConfigError as e:
                raise ServeConfigInvalid(str(e)) from None
        self._check_serve_funnel(cfg)  # 20g
        res = self._ask(SERVE, SetServeConfig(config=to_go_json(cfg).decode(), if_match=etag), timeout)
        if res.etag_mismatch:
            raise ServeETagMismatch("etag mismatch: the serve config changed since it was read")
        if res.error:
            raise ServeConfigInvalid(res.error)
        return res.etag

    async def set_serve_config(self, cfg: ServeConfig | str | bytes | None, *, etag: str = "",
                               timeout: float = 10.0) -> str:
        return await anyio.to_thread.run_sync(lambda: self.set_serve_config_blocking(cfg, etag=etag,
                                                                                     timeout=timeout))

    def _check_serve_funnel(self, cfg: ServeConfig | None) -> None:
        """20g: Go's CLI and tsnet run ``CheckFunnelAccess`` before turning Funnel on (Go's
        ``SetServeConfig`` itself does not); here every ``set_serve_config`` does, so a config never
        claims a Funnel the tailnet does not grant."""
        from pytsnet.errors import FunnelUnavailable
        from pytsnet.funnel.access import check_funnel_access
        from pytsnet.wire.serve import funnel_ports
        ports = funnel_ports(cfg)
        if not ports:
            return
        nm = self.dataplane_info().netmap
        if nm is None:
            raise FunnelUnavailable("Funnel not available: no network map from control yet")
        caps = nm.capabilities.get(nm.self_node.node_id, [])
        for port in ports:
            check_funnel_access(port, caps)

    def serve_status(self, timeout: float = 5.0) -> ServeStatus:
        """The served ports, connections open and per-kind counters (requests, 404s, backend errors…)."""
        return self._ask(SERVE, ServeStatusRequest(), timeout)
    _funnel_ingress: IngressRoutes | None = None

    def _funnel_routes(self) -> IngressRoutes:
        """The device's Funnel listeners by port, which the peerAPI's ``/v0/ingress`` hands public
        connections to (made once, before the peerAPI starts)."""
        if self._funnel_ingress is None:
            from pytsnet.actors.peerapi.ingress import IngressRoutes
            self._funnel_ingress = IngressRoutes()
        return self._funnel_ingress

    async def listen_funnel(self, port: int, *, funnel_only: bool = False,
                            cert_provider: Callable[[str], tuple[bytes, bytes]] | None = None,
                            ssl_context: ssl.SSLContext | None = None, backlog: int = 64,
                            handshake_timeout: float = 10.0, timeout: float = 60.0) -> FunnelListener:
        """Go ``ListenFunnel``: TLS connections from the public internet on ``port`` (443, 8443 or
        10000 as the tailnet allows), brought by an ingress node, and from the tailnet on the same port
        unless ``funnel_only``. TLS is terminated here, at each connection's first use, with the
        node's certificate for its first ``CertDomains`` entry (as Go): ``cert_pair`` (the node's
        ACME cert, renewals followed), or ``cert_provider(domain) -> (cert_pem, key_pem)``, or the
        app's own ``ssl_context`` (Go's ``FunnelTLSConfig``, for the tailnet connections too).
        Waits until Running (``timeout``), then Go's checks: ``FunnelUnavailable`` without HTTPS
        (the ``https`` capability and ``CertDomains``), the ``funnel`` attribute or any ingress node
        able to reach us; ``FunnelPortNotAllowed`` for another port; ``AddressInUse`` if the port
        has one. With the node's own cert, the first one is had before this returns (its
        ``AcmeFailed``/``HttpsNotEnabled`` here, not at a client's handshake)."""
        await self.up(timeout)
        return await anyio.to_thread.run_sync(
            lambda: self._open_funnel(port, funnel_only, cert_provider, ssl_context, backlog,
                                      handshake_timeout))

    def _open_funnel(self, port: int, funnel_only: bool,
                     cert_provider: Callable[[str], tuple[bytes, bytes]] | None,
                     ssl_context: ssl.SSLContext | None, backlog: int,
                     handshake_timeout: float) -> FunnelListener:
        from pytsnet.actors.peerapi.ingress import ingress_sources
        from pytsnet.errors import AddressInUse, FunnelUnavailable
        from pytsnet.funnel.access import check_funnel_access
        from pytsnet.funnel.listener import FunnelListener
        if not 0 < port < 65536:
            raise ConfigError(f"listen_funnel: port {port} is not a TCP port (1-65535)")
        nm = self.dataplane_info().netmap
        if nm is None:
            raise FunnelUnavailable("Funnel not available: no network map from control yet")
        check_funnel_access(port, nm.capabilities.get(nm.self_node.node_id, []))
        domains = list(nm.dns.cert_domains) if nm.dns is not None else []
        if not domains:  # Go's ListenFunnel: no CertDomains, no Funnel
            raise FunnelUnavailable("Funnel not available; HTTPS must be enabled. "
                                    "See https://tailscale.com/s/https")
        ours = [ipaddress.ip_interface(a).ip for a in nm.self_node.addresses]
        if not ingress_sources(nm.packet_filter, ours):
            raise FunnelUnavailable("Funnel not available: no ingress node of this tailnet may reach this "
                                    "node (no peer holds the ingress capability towards it), so no public "
                                    "connection could arrive")
        if cert_provider is None and ssl_context is None:
            self.cert_pair_blocking(domains[0])  # the first order now: its errors here, not per client
        tailnet = None if funnel_only else self._bindings.listen(port, None)
        try:
            return FunnelListener(self._funnel_routes(), port,
                                  self._funnel_context(domains[0], cert_provider, ssl_context), tailnet,
                                  backlog=backlog, handshake_timeout=handshake_timeout)
        except KeyError:
            if tailnet is not None:
                tailnet.close()
            raise AddressInUse(98, f"listen_funnel: port {port} already has a Funnel listener") from None

    def _funnel_context(self, domain: str, cert_provider: Callable[[str], tuple[bytes, bytes]] | None,
                        ssl_context: ssl.SSLContext | None) -> ContextSource:
        """Each Funnel handshake's server context: the app's own, or one for the node's cert as it is
        at that handshake (Go's ``GetCertificate``: a renewed cert is served from then on; no ALPN,
        as Go's ``ListenFunnel`` default config); one context per distinct pair (``ContextCache``)."""
        from pytsnet.cert.tls import ContextCache
        if ssl_context is not None:
            fixed = ssl_context

            async def constant() -> ssl.SSLContext:
                return fixed
            return constant
        cache = ContextCache(alpn=())

        async def current() -> ssl.SSLContext:
            if cert_provider is not None:
                pair = await anyio.to_thread.run_sync(cert_provider, domain)
            else:
                pair = await self.cert_pair(domain)
            return cache.context(*pair)
        return current


    # -- Services (20d): fallback TCP handlers ---------------------------------------------------------
    def register_fallback_tcp_handler(self, cb: FallbackTcpHandler) -> Callable[[], None]:
        """Go's ``RegisterFallbackTCPHandler``: ``cb(src, dst) -> (handler, intercept)`` decides a TCP
        flow to this node that no listener takes (``pytsnet.services.fallback`` has the rules: the
        first ``intercept=True`` wins, ``handler=None`` or nobody intercepting resets it). Returns the
        callable that unregisters ``cb``."""
        return self._fallback_tcp.register(cb)

    # -- Services (20d): ListenService ----------------------------------------------------------------
    @overload
    def listen_service_blocking(self, name: str, mode: ServiceModeTCP, *, timeout: float = 60.0,
                                backlog: int = 128) -> ServiceListener | ForwardServiceListener: ...

    @overload
    def listen_service_blocking(self, name: str, mode: ServiceModeHTTP, *, timeout: float = 60.0,
                                backlog: int = 128) -> HttpServiceListener: ...

    def listen_service_blocking(self, name: str, mode: ServiceModeTCP | ServiceModeHTTP, *,
                                timeout: float = 60.0, backlog: int = 128
                                ) -> ServiceListener | HttpServiceListener:
        """Go's ``ListenService``: host the Tailscale Service ``name`` (``svc:web``) on ``mode.port``
        (``pytsnet.services.listener`` has the details). Brings the node up first (``timeout``);
        ``UntaggedServiceHost`` unless the node has tags. The node advertises the service; peers reach
        it once control approves and hands out its VIP (``listener.vips()``). HTTP mode (20f) puts the
        port in the serve config's ``Services`` (Serve proxies each request, with the caller's
        identity headers, to the returned listener) and takes it out again on close."""
        check_service_name(name)
        mode.check()
        self.up_blocking(timeout)
        nm = self.dataplane_info().netmap
        if nm is None or not nm.self_node.tags:
            raise UntaggedServiceHost("service hosts must be tagged nodes (Config.tags, with an auth key "
                                      "allowed those tags)")
        fqdn = f"{name.removeprefix('svc:')}.{nm.domain}" if nm.domain else name.removeprefix("svc:")
        if isinstance(mode, ServiceModeHTTP):
            return self._listen_service_http(name, mode, fqdn, backlog)
        if mode.forwarded:  # 20h: TerminateTLS / PROXY protocol through Serve, as Go
            return self._listen_service_http(name, mode, fqdn, backlog)
        return self._services.open(name, mode.port, fqdn, lambda: self.service_ips(name), backlog)

    @overload
    async def listen_service(self, name: str, mode: ServiceModeTCP, *, timeout: float = 60.0,
                             backlog: int = 128) -> ServiceListener | ForwardServiceListener: ...

    @overload
    async def listen_service(self, name: str, mode: ServiceModeHTTP, *, timeout: float = 60.0,
                             backlog: int = 128) -> HttpServiceListener: ...

    async def listen_service(self, name: str, mode: ServiceModeTCP | ServiceModeHTTP, *,
                             timeout: float = 60.0, backlog: int = 128
                             ) -> ServiceListener | HttpServiceListener:
        return await anyio.to_thread.run_sync(
            lambda: self.listen_service_blocking(name, mode, timeout=timeout, backlog=backlog))

    def _listen_service_http(self, name: str, mode: ServiceModeHTTP | ServiceModeTCP, fqdn: str,
                             backlog: int) -> HttpServiceListener:
        """Go ``ListenService`` for ``ServiceModeHTTP`` (20f): advertise, then ``SetWebHandler`` for the
        service (``/`` → Proxy to our loopback listener) under the config's ETag, as one update. A
        forwarded ``ServiceModeTCP`` (20h) the same way with Go's ``SetTCPForwardingForService``."""
        from pytsnet.services.serving_config import (
            with_service_forward,
            with_service_web,
            without_service_forward,
            without_service_web,
        )

        def edit(cfg: ServeConfig | None, lst: HttpServiceListener) -> ServeConfig:
            if isinstance(mode, ServiceModeTCP):
                return with_service_forward(cfg, name, fqdn, mode.port, lst.local_addr, mode.terminate_tls,
                                            mode.proxy_protocol)
            return with_service_web(cfg, name, fqdn, mode.port, mode.https, lst.local_addr)

        def on_close(lst: HttpServiceListener) -> None:  # Go cleanServeConfig
            if self._closed:  # the device is going: the stored entry stays, a leftover the next run replaces
                return
            for _ in range(3):  # another writer between our read and write: read again
                cfg, tag = self.get_serve_config_blocking()
                new = (without_service_forward(cfg, name, lst.port, lst.local_addr)
                       if isinstance(mode, ServiceModeTCP) else
                       without_service_web(cfg, name, fqdn, lst.port, lst.local_addr))
                if new == cfg:  # not (or no longer) ours: nothing to take out
                    return
                try:
                    self.set_serve_config_blocking(new, etag=tag)
                    return
                except ServeETagMismatch:
                    continue

        tls = mode.https if isinstance(mode, ServiceModeHTTP) else mode.terminate_tls
        kind = ForwardServiceListener if isinstance(mode, ServiceModeTCP) else HttpServiceListener
        lst = self._services.open_http(name, mode.port, fqdn, tls, lambda: self.service_ips(name),
                                       on_close, backlog, kind=kind)
        try:
            cfg, tag = self.get_serve_config_blocking()
            self.set_serve_config_blocking(edit(cfg, lst), etag=tag)
        except BaseException:
            lst.close()
            raise
        return lst

    def service_ips(self, name: str) -> list[str]:
        """The VIPs control gave us for the service ``name`` we host (empty until it approves)."""
        nm = self.dataplane_info().netmap
        return list(nm.service_ips.get(name, [])) if nm is not None else []

    def _advertise_services(self, services_hash: str) -> None:
        """Tell control the services we host now (Go: ``Hostinfo.ServicesHash`` on a map request)."""
        self._ask(CONTROL, LiteUpdate(services_hash=services_hash), SERVICE_ADVERTISE_TIMEOUT)

    # -- Tailnet Lock (21e): the TKA actor's asks; conversions in pytsnet/tka.py ----------------------
    def _tka_spawn(self) -> TkaSpawn:
        """The TKA actor's settings: its chain under ``<dir>/tka-profiles/default`` (Go
        ``<varRoot>/tka-profiles/<profile>``; one profile here), in memory with no state dir."""
        d = self.config.dir
        in_memory = d is None or isinstance(self.store, MemoryStore)
        chonk = "" if in_memory else str(Path(str(d)) / "tka-profiles" / "default")
        return TkaSpawn(control=CONTROL, subscribers=(PEERS, CONTROL), chonk_dir=chonk)  # control: TKAHead

    def lock_key(self) -> str:
        """This node's network-lock key, ``tlpub:…`` (Go ``tailscale lock status`` "This node's
        tailnet-lock key"): give it to ``lock_init``/``lock_add_key`` on a trusted node. Made with the
        node record: ``TailnetLockError`` before the node first started."""
        rec = NodeRecord.from_blob(self.store.read_state(NODE_RECORD))
        if rec is None or rec.nl is None:
            raise TailnetLockError("no network-lock key yet: start the device (the node record holds it)")
        return rec.nl.public().cli_string()

    def _lock_blocking(self, msg: Request[TkaAnswer], timeout: float) -> str:
        ans = self._ask(TKA, msg, timeout)
        tka_facade.raise_for(ans)
        return ans.head

    async def _lock_ask(self, msg: Request[TkaAnswer], timeout: float) -> str:
        try:
            ans = await self._ref(TKA).ask_async(msg, timeout=timeout)
        except ActorStopped as e:
            raise DeviceClosed("tka stopped: the device is closing") from e
        tka_facade.raise_for(ans)
        return ans.head

    @staticmethod
    def _lock_init_msg(keys: Sequence[tka_facade.LockKey], disablement_secrets: Sequence[bytes | str],
                       support_disablement: bytes) -> TkaInit:
        if not disablement_secrets:
            raise TailnetLockError("at least one disablement secret is required (Go: --gen-disablements)")
        return TkaInit(keys=tka_facade.key_infos(keys),
                       disablement_values=tka_facade.disablement_values(list(disablement_secrets)),
                       support_disablement_hex=support_disablement.hex())

    async def lock_init(self, keys: Sequence[tka_facade.LockKey],
                        disablement_secrets: Sequence[bytes | str] = (), *, support_disablement: bytes = b"",
                        timeout: float = 120.0) -> str:
        """Go ``tailscale lock init``: enable Tailnet Lock trusting ``keys`` (``tlpub:…``, or (key, votes));
        every node of the tailnet, this one included, is signed by our key as part of it, so it must be
        among ``keys``. ``disablement_secrets`` (bytes, or ``disablement-secret:HEX``; at least one, as Go
        asks) are what ``lock_disable`` takes later: only their KDF (``disablement:HEX`` values are taken
        as they are) leaves this process. Returns the genesis AUM's hash. ``TailnetLockError``."""
        msg = await anyio.to_thread.run_sync(self._lock_init_msg, keys, disablement_secrets,
                                             support_disablement)
        return await self._lock_ask(msg, timeout)

    def lock_init_blocking(self, keys: Sequence[tka_facade.LockKey],
                           disablement_secrets: Sequence[bytes | str] = (), *,
                           support_disablement: bytes = b"", timeout: float = 120.0) -> str:
        """``lock_init`` for threads (the LocalAPI's ``tka/init``)."""
        msg = self._lock_init_msg(keys, disablement_secrets, support_disablement)
        return self._lock_blocking(msg, timeout)

    async def lock_sign(self, node_key: str, rotation_key: bytes | str | None = None, *,
                        timeout: float = 30.0) -> None:
        """Go ``tailscale lock sign <node-key> [<rotation-key>]``: sign ``node_key`` (``nodekey:…``) with our
        key and submit it to control; ``rotation_key`` (``tlpub:…`` or 32 bytes) lets that node re-sign
        its own new keys on rotation. ``TailnetLockNotEnabled``, ``TailnetLockNotTrusted``."""
        rotation = tka_facade.rotation_public(rotation_key)
        await self._lock_ask(TkaSign(node_key=node_key, rotation_key=rotation), timeout)

    def lock_sign_blocking(self, node_key: str, rotation_key: bytes | str | None = None, *,
                           timeout: float = 30.0) -> None:
        rotation = tka_facade.rotation_public(rotation_key)
        self._lock_blocking(TkaSign(node_key=node_key, rotation_key=rotation), timeout)

    async def lock_add_key(self, key: str, votes: int = 1, *, meta: dict[str, str] | None = None,
                           timeout: float = 30.0) -> str:
        """Go ``tailscale lock add``: trust ``key`` too (an AddKey AUM signed by our key); returns the
        new head. ``meta``: Go's free-form key metadata (``lock sign tskey-auth-…`` marks its wrapping
        key ``{"purpose": "pre-auth key", …}``; ``lock status`` shows "(pre-auth key)")."""
        return await self._lock_ask(TkaModify(add=(tka_facade.key_info((key, votes, meta or {})),)), timeout)

    async def lock_remove_key(self, key: str, *, re_sign: bool = True, timeout: float = 30.0) -> str:
        """Go ``tailscale lock remove``: stop trusting ``key`` (a RemoveKey AUM); returns the new head.
        With ``re_sign`` (Go's default) every node signature resting on ``key`` is first signed again by
        our key, keeping its rotation key (Go ``NetworkLockAffectedSigs`` then ``NetworkLockSign``), so
        those nodes stay admitted; our own key cannot be removed that way (``TailnetLockError``, Go's
        text). With ``re_sign=False`` the nodes it signed lose connectivity."""
        text = tka_facade.key_info(key).key
        if re_sign:
            if text == self.lock_key():
                raise TailnetLockError(tka_facade.REMOVE_SELF_WHILE_RESIGNING)
            sigs = await self.lock_affected_sigs(text, timeout=timeout)
            for node_key, rotation in tka_facade.resign_targets(sigs):
                await self._lock_ask(TkaSign(node_key=node_key, rotation_key=rotation), timeout)
        return await self._lock_ask(TkaModify(remove=(text,)), timeout)

    async def lock_affected_sigs(self, key: str | bytes, *, timeout: float = 30.0) -> list[bytes]:
        """Go ``NetworkLockAffectedSigs``: the node signatures control holds that rest on ``key``
        (``tlpub:…`` or its key ID), each checked by us against the authority (else ``TailnetLockError``);
        what removing ``key`` would invalidate."""
        msg = TkaAffectedSigs(key_id=tka_facade.key_id(key))
        try:
            ans = await self._ref(TKA).ask_async(msg, timeout=timeout)
        except ActorStopped as e:
            raise DeviceClosed("tka stopped: the device is closing") from e
        tka_facade.raise_for(ans)
        return list(ans.signatures)

    def lock_affected_sigs_blocking(self, key: str | bytes, *, timeout: float = 30.0) -> list[bytes]:
        """``lock_affected_sigs`` for threads (the LocalAPI's ``tka/affected-sigs``)."""
        ans = self._ask(TKA, TkaAffectedSigs(key_id=tka_facade.key_id(key)), timeout)
        tka_facade.raise_for(ans)
        return list(ans.signatures)

    def lock_modify_blocking(self, add: Sequence[tka_facade.LockKey] = (), remove: Sequence[str] = (), *,
                             timeout: float = 30.0) -> str:
        """Add and remove trusted keys in one go (Go ``NetworkLockModify``, LocalAPI ``tka/modify``)."""
        drop = tuple(tka_facade.key_info(k).key for k in remove)
        return self._lock_blocking(TkaModify(add=tka_facade.key_infos(add), remove=drop), timeout)

    async def lock_disable(self, secret: bytes | str, *, timeout: float = 30.0) -> None:
        """Go ``tailscale lock disable``: turn the lock off for the whole tailnet with a disablement
        secret. A wrong one raises ``TailnetLockDisablementRefused`` here, before control hears it."""
        raw = tka_facade.disablement_secret(secret)
        await self._lock_ask(TkaDisable(secret_hex=raw.hex()), timeout)

    def lock_disable_blocking(self, secret: bytes | str, *, timeout: float = 30.0) -> None:
        self._lock_blocking(TkaDisable(secret_hex=tka_facade.disablement_secret(secret).hex()), timeout)

    def lock_status(self, timeout: float = 5.0) -> tka_facade.LockStatus:
        """Go ``tailscale lock status``: enabled, head, trusted keys, whether our key is signed, the peers
        the lock filters out, and ``locked_out`` (+ the warning Go's health shows) on an unsigned node."""
        st = self._ask(TKA, TkaStatusAsk(), timeout)
        table = self._ask_quiet(PEERS, GetPeers(), timeout)
        return tka_facade.lock_status(st, table, bool(table is not None and table.locked_out))

    def lock_log(self, limit: int = 50, timeout: float = 5.0) -> list[TkaLogEntry]:
        """Go ``tailscale lock log``: the newest ``limit`` AUMs, head first."""
        return tka_facade.log_entries(self._ask(TKA, TkaLog(limit=limit), timeout))

    async def listen_ssh(self, port: int = 22, handler: SessionHandler | None = None, *,
                         host_keys: Sequence[asyncssh.SSHKey] | None = None,
                         backlog: int = DEFAULT_BACKLOG) -> SSHListener:
        """Go ``ListenSSH``/Tailscale SSH on tailnet ``port``: callers authorized by the netmap's
        ``SSHPolicy`` (a caller no rule admits is closed before the SSH banner; the SSH user is checked
        at authentication), "none" authentication as Go. ``handler(session)`` serves each session (its
        ``peer``: node, login, addresses, SSH and mapped local user); without one, a login shell as the
        user running this process, which refuses any other local user (no privilege change).
        ``host_keys``: default one Ed25519 key made once and kept in the state store. Runs on the
        calling event loop until ``close()``/``aclose()``. :mod:`pytsnet.ssh`."""
        self.start()
        keys = list(host_keys) if host_keys else [await anyio.to_thread.run_sync(load_or_create_host_key,
                                                                                  self.store)]
        return await SSHListener(self, port, keys, handler).start(backlog)

    async def ssh_action_fetch(self, url: str, timeout: float, fetch_id: str = "") -> SshActionAnswer:
        """22d, SSH check mode: ``GET`` a ``holdAndDelegate`` URL over the Noise connection to control
        (the ControlRunner refuses any other host); control may hold it until the check is decided."""
        try:
            ask = SshActionFetch(url=url, timeout=timeout, fetch_id=fetch_id)
            return await self._ref(CONTROL).ask_async(ask, timeout=timeout + 10.0)
        except ActorStopped as e:
            raise DeviceClosed(f"{CONTROL} stopped: the device is closing") from e

    def ssh_action_cancel(self, fetch_id: str) -> None:
        """22d: the SSH client left while held: the fetch ends and control forgets the check."""
        with contextlib.suppress(ActorStopped, MailboxFull, OSError):
            self._ref(CONTROL).tell(SshActionCancel(fetch_id=fetch_id))

    # -- taildrop (22a): sending, file targets, received files (pytsnet/taildrop.py, actors/taildrop) --
    def _taildrop(self) -> TaildropStore | None:
        """The receiving directory (Config.taildrop_dir, else ``<dir>/files``; None: no Taildrop)."""
        store: TaildropStore | None = getattr(self, "_taildrop_store", None)
        if store is None:
            cfg = self.config
            where = cfg.taildrop_dir if cfg.taildrop_dir is not None else (
                Path(cfg.dir) / "files" if cfg.dir is not None else None)
            if where is None:
                return None
            store = self._taildrop_store = TaildropStore(
                where, max_file_size=cfg.taildrop_max_file_size, min_free=cfg.taildrop_min_free)
        return store

    def _start_taildrop_janitor(self) -> None:
        """The supervised actor that removes partial files nobody resumed (Go's ``fileDeleter``)."""
        from pytsnet.actors.runtime.supervisor import ChildSpec, Restart
        from pytsnet.actors.taildrop.janitor import TAILDROP, TaildropJanitor
        from pytsnet.tree import NODE
        store = self._taildrop()
        if store is None or self.system is None:
            return
        self.system.spawn_spec(ChildSpec(TaildropJanitor, TAILDROP, args=(store,), restart=Restart.PERMANENT),
                               parent=self.system.lookup(NODE))

    def file_targets(self, timeout: float = 5.0) -> list[taildrop_facade.FileTarget]:
        """Go ``FileTargets``: the peers we may send files to (our own user's, and those the tailnet's
        policy marks as file-sharing targets), with their peerAPI. ``TaildropError`` when not connected
        or the node lacks the ``file-sharing`` capability."""
        info = self._ask_quiet(DATAPLANE, GetDataplaneInfo(), timeout)
        with self._cond:
            peers = list(self._peers)
        return taildrop_facade.file_targets(info.netmap if info is not None else None, peers)

    async def send_file(self, peer: str | PeerInfo | taildrop_facade.FileTarget,
                        source: str | os.PathLike[str] | IO[bytes], *, name: str | None = None,
                        progress: taildrop_facade.Progress | None = None,
                        timeout: float = DIAL_TIMEOUT) -> int:
        """Send a file to ``peer`` (a file target: its name, hostname, IP, stable ID, ``PeerInfo``)
        with Taildrop; ``source`` a path or a binary file object (read from its position). A partial
        file the receiver kept from an earlier cut attempt is resumed: the bytes it already holds are
        not sent again. ``progress(done, total)`` after every chunk. Returns the offset resumed from.
        ``TaildropNameInvalid``/``TaildropRefused``/``TaildropFileExists``/``TaildropTooLarge``."""
        if isinstance(source, (str, os.PathLike)):
            name = taildrop_facade.checked_name(name if name is not None else os.path.basename(source))
            f: IO[bytes] = open(source, "rb")  # noqa: SIM115 (closed below)
        else:
            given = name if name is not None else os.path.basename(str(getattr(source, "name", "")))
            name = taildrop_facade.checked_name(given)
            f = source
        try:
            target = await anyio.to_thread.run_sync(self._file_target, peer)
            host, port = target.address
            stream = await self.tcp_connect(host, port, timeout)
            async with stream:
                return await taildrop_facade.send_file(stream, f"{host}:{port}" if ":" not in host
                                                       else f"[{host}]:{port}", f, name,
                                                       taildrop_facade.size_of(f), progress)
        finally:
            if f is not source:
                f.close()

    def _file_target(self, peer: str | PeerInfo | taildrop_facade.FileTarget) -> taildrop_facade.FileTarget:
        if isinstance(peer, taildrop_facade.FileTarget):
            peer = peer.node
        for t in self.file_targets():
            if (isinstance(peer, PeerInfo) and t.node.node_id == peer.node_id) or \
                    (isinstance(peer, str) and taildrop_facade.target_matches(t, peer)):
                return t
        shown = peer.name if isinstance(peer, PeerInfo) else peer
        raise TaildropRefused(f"{shown!r} is not a file target (not our user's node, and the tailnet's "
                              "policy does not let us send it files) or has no peerAPI")

    def waiting_files(self) -> list[WaitingFile]:
        """Go ``WaitingFiles``: files peers sent us, complete, with ``.name`` and ``.size``."""
        store = self._taildrop()
        return store.waiting_files() if store is not None else []

    def open_waiting_file(self, name: str) -> BinaryIO:
        """A received file, opened for reading (a binary file object; use it in ``with``).
        ``TaildropNameInvalid`` for a name that is no file name; ``FileNotFoundError`` if none."""
        store = self._taildrop()
        if store is None:
            raise TaildropError("Taildrop disabled; no storage directory")
        return store.open(taildrop_facade.checked_name(name))

    def delete_waiting_file(self, name: str) -> None:
        """Go ``DeleteFile``: remove a received file (``FileNotFoundError`` if there is none)."""
        store = self._taildrop()
        if store is None:
            raise TaildropError("Taildrop disabled; no storage directory")
        store.delete(taildrop_facade.checked_name(name))

    def taildrop_history(self) -> list[PutRecord]:
        """The last uploads peers made to us, finished or cut: name, sender, offset, bytes received."""
        store = self._taildrop()
        return store.history() if store is not None else []
