"""Serve's actors: the ``ServeManager`` (owner of the config) and one ``ServePort`` per served port.

    serve.sup       Supervisor     rest-for-one, 5 restarts / 10 s
    ├── serve.conns Supervisor     budget 0: one ServeConnection per accepted connection, never restarted
    ├── serve.ports Supervisor     one-for-one, 5 / 10 s: serve.port.<N>, serve.svc.<label>.<N>: transient
    └── serve       ServeManager   permanent: the config, the store's copy, the listeners' set

The manager owns the config: ``SetServeConfig`` is checked (Go's JSON rules, Go's If-Match ETag,
``validate_update``), the new ports' listeners are opened (an app's listener on the port refuses the
whole config: nothing half-applied), the config is written to the state store (Go's ``_serve/<profile>``
key) and only then applied: removed ports lose their ``ServePort`` and listener, new ones get them, and
every port server is told its slice (``ServePortConfig``). A connection keeps the slice it was accepted
under, so a change never touches open connections. A restarted manager reads the store again and
reconciles (port servers that kept running are told their slice; listeners are the facade's
``ListenerTable`` and outlive it). A port server is a ``ConnectionServer`` over the port's listener:
it serves no connection until the manager told it its slice (it says ``ServePortHello`` at each start),
so a restarted one never serves a stale config. ``serve.sup`` is rest-for-one: a restarted
``serve.ports`` (its port servers past their restart budget) comes back empty, and the manager after
it is restarted too, so it spawns the port servers again.

A port is a key ``(service, port)``: ``""`` for the node's own port, ``"svc:web"`` for a port of that
service's VIPs (``ServeConfig.Services``, 20f). A service port's server accepts from the listener
table's ``open_service`` (the device's ``ServiceAcceptor``, fed VIP SYNs) and its connections look the
Web server up under the service's FQDN; otherwise both kinds are served alike.

Funnel through Serve (20g, ``funnel.py``): after each applied config the manager tells the device's
``IngressRoutes`` which ``AllowFunnel`` targets are on (with a TCP handler on their port) and tells
control ``Hostinfo.IngressEnabled``/``WireIngress`` when they change; a public connection for such a
target reaches the node port's server through the tree's ``FunnelInbox`` and is served like a
tailnet one, as a Funnel flow (its public source, Go's ``Tailscale-Funnel-Request``).
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING, Protocol

from pytsnet.actors.cert.tls import CertProvider
from pytsnet.actors.connserver import ConnectionServer
from pytsnet.actors.control.store import StateStore
from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.peerapi.ingress import IngressHandoff, IngressRoutes
from pytsnet.actors.runtime import (
    Actor,
    ActorError,
    ActorRef,
    ChildSpec,
    MailboxConfig,
    MailboxPolicy,
    Restart,
    Strategy,
    Supervisor,
    SupervisorConfig,
    handles,
)
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.actors.serve.certs import ServeCerts
from pytsnet.actors.serve.conn import ServeConnection
from pytsnet.actors.serve.funnel import FunnelInbox
from pytsnet.messages.control import LiteUpdate
from pytsnet.messages.serve import (
    GetServeConfig,
    GetServePortConfig,
    ServeAccepted,
    ServeConfigState,
    ServeConnEvent,
    ServeFunnelOffered,
    ServePortConfig,
    ServePortHello,
    ServePortSpawn,
    ServeSpawn,
    ServeStatus,
    ServeStatusRequest,
    SetServeConfig,
    SetServeConfigResult,
)
from pytsnet.wire.serve import (
    ServeConfig,
    ServeConfigError,
    etag,
    funnel_targets,
    ingress_flags,
    parse_serve_config,
    port_slice,
    service_slice,
    to_go_json,
    validate,
    validate_update,
)

if TYPE_CHECKING:
    from pytsnet.actors.runtime import ActorSystem

__all__ = ["ACCEPT_POLL", "Acceptor", "ListenerTable", "ServeManager", "ServePort", "port_slice",
           "serve_spec"]

log = subsystem_logger("serve")

ACCEPT_POLL = 0.25
"""The accept loop's wait: a stopped port server's loop ends within it."""


class Acceptor(Protocol):
    def accept_blocking(self, timeout: float | None = None) -> FlowChannel: ...


class ListenerTable(Protocol):
    """The facade's tailnet listeners for served ports (``pytsnet.serve.listeners``): they follow the
    netstack across rebuilds like every device listener, and outlive the actors."""

    def open(self, port: int) -> Acceptor:
        """The port's listener, opened if needed; ``OSError`` (``AddressInUse``) if an app holds the port."""
        ...

    def close(self, port: int) -> None: ...

    def ports(self) -> list[int]: ...

    def open_service(self, name: str, port: int) -> Acceptor:
        """The acceptor of ``port`` on the service ``name``'s VIPs (its SYNs, from the netstack)."""
        ...

    def close_service(self, name: str, port: int) -> None: ...

    def service_ports(self) -> list[tuple[str, int]]: ...


Key = tuple[str, int]
"""A served port: ("", port) for the node's own, ("svc:web", port) for a service's VIP port."""


def port_name(spawn: ServeSpawn, port: int, service: str = "") -> str:
    if service:
        return f"{spawn.manager}.svc.{service.removeprefix('svc:')}.{port}"
    return f"{spawn.manager}.port.{port}"


def wanted_keys(cfg: ServeConfig | None) -> set[Key]:
    """Every port ``cfg`` serves: the node's and each service's."""
    if cfg is None:
        return set()
    return {("", p) for p in cfg.TCP} | {(n, p) for n, svc in cfg.Services.items() for p in svc.TCP}


def key_slice(cfg: ServeConfig, key: Key) -> str:
    name, port = key
    return service_slice(cfg, name, port) if name else port_slice(cfg, port)


_CONN_SEQ = itertools.count(1)

Conn = FlowChannel | IngressHandoff
"""A tailnet connection, or (20g) a public one handed over by the ingress."""


class ServePort(ConnectionServer[Conn]):
    def __init__(self, spawn: ServeSpawn, port: ServePortSpawn, listeners: ListenerTable, system: ActorSystem,
                 certs: ServeCerts | None, funnel: FunnelInbox | None = None) -> None:
        super().__init__(conns=spawn.conns, server=port.server, max_connections=spawn.max_connections,
                         log=log, poll=ACCEPT_POLL)
        self.spawn = spawn
        self.port = port.port
        self.service = port.service
        self.listeners = listeners
        self.system = system
        self.certs = certs
        self.funnel = funnel if not port.service else None  # 20g: Funnel reaches node ports only

    def on_start(self) -> None:
        self.config: str | None = None
        self.acceptor = (self.listeners.open_service(self.service, self.port) if self.service
                         else self.listeners.open(self.port))
        super().on_start()
        # 20g: connection names unique across port servers of one name (a port removed and added
        # again gets a new incarnation-1 server while the old one's connections may still run)
        self._seq = _CONN_SEQ
        self.tell_named(self.spawn.manager, ServePortHello(port=self.port, server=self.name,
                                                           service=self.service))
        self._take_funnel()  # 20g: what was offered while no incarnation ran

    def accept_blocking(self, timeout: float) -> Conn:
        return self.acceptor.accept_blocking(timeout)

    def close_conn(self, conn: Conn) -> None:
        (conn.channel if isinstance(conn, IngressHandoff) else conn).close()

    def _take_funnel(self) -> None:
        if self.funnel is None:
            return
        for h in self.funnel.take(self.port):
            self._accepted.put(h)
        if self.config is not None:  # else they wait for the manager's slice
            self.serve_queued()

    @handles(ServeFunnelOffered)
    def on_funnel(self, msg: ServeFunnelOffered) -> None:
        self._take_funnel()

    def accepted_message(self) -> ServeAccepted:
        return ServeAccepted()

    def spawn_conn(self, conn: Conn, name: str, parent: ActorRef) -> None:
        assert self.config is not None
        handoff = conn if isinstance(conn, IngressHandoff) else None
        channel = conn.channel if isinstance(conn, IngressHandoff) else conn
        self.system.spawn(ServeConnection, self.spawn, self.name, self.port, self.config, channel, self.certs,
                          self.service, handoff, name=name, parent=parent, restart=Restart.NEVER,
                          dispatcher="thread",
                          mailbox=MailboxConfig(8, MailboxPolicy.BLOCK, block_timeout=5.0))

    @handles(ServePortConfig)
    def on_config(self, msg: ServePortConfig) -> None:
        self.config = msg.config
        self.serve_queued()

    @handles(GetServePortConfig)
    def on_get_config(self, msg: GetServePortConfig) -> ServePortConfig:
        return ServePortConfig(port=self.port, config=self.config or "null", service=self.service)

    @handles(ServeAccepted)
    def on_accepted(self, msg: ServeAccepted) -> None:
        if self.config is not None:  # else they wait for the manager's slice
            self.serve_queued()

    @handles(ServeConnEvent)
    def on_event(self, msg: ServeConnEvent) -> None:
        self.connection_event(msg.kind, msg.conn, msg.n)

    @handles(ServeStatusRequest)
    def on_status(self, msg: ServeStatusRequest) -> ServeStatus:
        return ServeStatus(ports=[self.port], open=self.open_connections, counters=self.counters())


class ServeManager(Actor):
    def __init__(self, spawn: ServeSpawn, store: StateStore, listeners: ListenerTable, system: ActorSystem,
                 certs: ServeCerts | None, funnel: FunnelInbox | None = None,
                 ingress: IngressRoutes | None = None) -> None:
        self.spawn = spawn
        self.store = store
        self.listeners = listeners
        self.system = system
        self.certs = certs
        self.funnel = funnel
        self.ingress = ingress

    def on_start(self) -> None:
        self.config: ServeConfig | None = None
        self._ingress_told: tuple[bool, bool] | None = None  # 20g
        self._funnel_ports: set[int] = set()
        raw = self.store.read_state(self.spawn.state_key)
        if raw:
            try:
                cfg = parse_serve_config(raw)
                validate(cfg)
                self._open_ports(cfg)
            except (ServeConfigError, OSError) as e:  # fail closed: one we cannot serve serves nothing
                log.warning("serve: the stored config (%s) is not served: %s", self.spawn.state_key, e)
                cfg = None
            self.config = cfg
        self._apply()

    # -- asks ------------------------------------------------------------------------------------------------
    @handles(GetServeConfig)
    def on_get(self, msg: GetServeConfig) -> ServeConfigState:
        return ServeConfigState(config=to_go_json(self.config).decode(), etag=etag(self.config))

    @handles(SetServeConfig)
    def on_set(self, msg: SetServeConfig) -> SetServeConfigResult:
        if msg.if_match and msg.if_match != etag(self.config):
            return SetServeConfigResult(etag=etag(self.config), error="etag mismatch", etag_mismatch=True)
        try:
            cfg = parse_serve_config(msg.config)
            validate_update(self.config, cfg)
        except ServeConfigError as e:
            return SetServeConfigResult(etag=etag(self.config), error=str(e))
        opened: list[Key] = []
        try:
            opened = self._open_ports(cfg)
        except OSError as e:
            return SetServeConfigResult(etag=etag(self.config), error=f"cannot listen: {e}")
        try:
            self.store.write_state(self.spawn.state_key, b"" if cfg is None else to_go_json(cfg))
        except OSError as e:
            for key in opened:
                self._close(key)
            return SetServeConfigResult(etag=etag(self.config), error=f"writing the serve config: {e}")
        self.config = cfg
        self._apply()
        return SetServeConfigResult(etag=etag(cfg))

    @handles(ServePortHello)
    def on_hello(self, msg: ServePortHello) -> None:
        ref = self.lookup(msg.server)
        if ref is None:
            return
        key = (msg.service, msg.port)
        if key not in wanted_keys(self.config):
            with contextlib.suppress(ActorError):
                ref.stop()
            return
        assert self.config is not None
        ref.tell(ServePortConfig(port=msg.port, config=key_slice(self.config, key), service=msg.service))

    @handles(ServeStatusRequest)
    def on_status(self, msg: ServeStatusRequest) -> ServeStatus:
        ports = sorted(self.config.TCP) if self.config is not None else []
        total, counters = 0, dict[str, int]()
        for port in ports:
            ref = self.lookup(port_name(self.spawn, port))
            if ref is None:
                continue
            try:
                st = ref.ask(ServeStatusRequest(), timeout=2.0)
            except ActorError:
                continue
            total += st.open
            for k, v in st.counters.items():
                counters[k] = counters.get(k, 0) + v
        return ServeStatus(ports=ports, open=total, counters=counters)

    # -- applying --------------------------------------------------------------------------------------------
    def _have(self) -> set[Key]:
        return {("", p) for p in self.listeners.ports()} | set(self.listeners.service_ports())

    def _open(self, key: Key) -> None:
        name, port = key
        if name:
            self.listeners.open_service(name, port)
        else:
            self.listeners.open(port)

    def _close(self, key: Key) -> None:
        name, port = key
        if name:
            self.listeners.close_service(name, port)
        else:
            self.listeners.close(port)

    def _open_ports(self, cfg: ServeConfig | None) -> list[Key]:
        """Open the listeners ``cfg`` needs that are not open; on a failure close those and raise."""
        have = self._have()
        opened: list[Key] = []
        for key in sorted(wanted_keys(cfg) - have):
            try:
                self._open(key)
            except OSError:
                for k in opened:
                    self._close(k)
                raise
            opened.append(key)
        return opened

    def _apply(self) -> None:
        """Make the port servers and listeners match ``self.config``; each server gets its slice."""
        cfg = self.config
        wanted = wanted_keys(cfg)
        for key in sorted(self._have() - wanted):
            ref = self.lookup(port_name(self.spawn, key[1], key[0]))
            if ref is not None:
                with contextlib.suppress(ActorError):
                    ref.stop()
            self._close(key)
        self._publish_funnel(cfg)  # 20g
        if cfg is None:
            return
        parent = self.lookup(self.spawn.ports)
        for key in sorted(wanted):
            service, port = key
            name = port_name(self.spawn, port, service)
            ref = self.lookup(name)
            if ref is None and parent is not None:
                ps = ServePortSpawn(port=port, server=name, service=service)
                self.system.spawn(ServePort, self.spawn, ps, self.listeners, self.system, self.certs,
                                  self.funnel, name=name, parent=parent, restart=Restart.TRANSIENT,
                                  dispatcher="thread")
                continue  # it says hello when it runs, and is told its slice then
            if ref is not None:
                ref.tell(ServePortConfig(port=port, config=key_slice(cfg, key), service=service))


    # -- Funnel through Serve ----------------------------------------------------------------------
    def _publish_funnel(self, cfg: ServeConfig | None) -> None:
        """The ingress learns the targets now on (ports no longer served lose what waits for them);
        control hears the Hostinfo flags when they change (Go ``updateIngressAndServiceHashLocked``)."""
        targets = funnel_targets(cfg)
        if self.ingress is not None and self.funnel is not None:
            self.ingress.set_serve(targets, self.funnel.offer)
        now = set(targets.values())
        if self.funnel is not None:
            for port in sorted(self._funnel_ports - now):
                self.funnel.drop(port)
        self._funnel_ports = now
        flags = ingress_flags(cfg)
        if flags != self._ingress_told and (self._ingress_told is not None or any(flags)):
            enabled, wire = flags
            if self.tell_named(self.spawn.control, LiteUpdate(ingress_enabled=enabled, wire_ingress=wire)):
                self._ingress_told = flags


def serve_spec(system: ActorSystem, spawn: ServeSpawn, store: StateStore, listeners: ListenerTable,
               certs: CertProvider | None, restart: Restart = Restart.PERMANENT,
               ingress: IngressRoutes | None = None) -> ChildSpec:
    """The subtree above as one child spec (spawned under the system root by the device); with
    ``ingress`` (20g), Funnel targets of the config are served (``FunnelInbox``)."""
    funnel = FunnelInbox(system, spawn) if ingress is not None else None
    tls = ServeCerts(certs) if certs is not None else None  # one per tree: outlives manager restarts
    children = (
        ChildSpec(Supervisor, spawn.conns, args=(SupervisorConfig(Strategy.ONE_FOR_ONE, 0, 1.0),),
                  dispatcher="thread"),
        ChildSpec(Supervisor, spawn.ports, args=(SupervisorConfig(Strategy.ONE_FOR_ONE, 5, 10.0),),
                  dispatcher="thread"),
        ChildSpec(ServeManager, spawn.manager, args=(spawn, store, listeners, system, tls, funnel, ingress),
                  dispatcher="thread"),
    )
    return ChildSpec(Supervisor, f"{spawn.manager}.sup",
                     args=(SupervisorConfig(Strategy.REST_FOR_ONE, 5, 10.0), children), restart=restart)
