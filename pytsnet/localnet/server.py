"""``LocalTailnet``: the embedded coordination server as a Python object on its own thread.

Tests, demos and the CLI use it the same way::

    with LocalTailnet(state_dir, listen="127.0.0.1:0") as net:
        key = net.create_authkey(reusable=True)
        ... point nodes at net.control_url ...

The server runs on a background thread with its own event loop; the admin methods are thread-safe.
Sockets are created on that thread, which inherits the network namespace of the thread that
called :meth:`start` (so ``with ns.entered(): net.start()`` serves inside ``ns``). By default
``start`` also attaches the DERP relay (on the control listener) and a UDP STUN server, and the DERP
map names them (``relay=False`` to serve control alone, ``derp_tls=True`` for a TLS relay; see
:mod:`pytsnet.localnet.relay`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytsnet.localnet.control_server import (
    EPHEMERAL_GRACE,
    HOSTINFO_INTERVAL,
    KEEPALIVE_INTERVAL,
    MAX_PENDING,
    PENDING_TTL,
    ControlServer,
    RawHandler,
)
from pytsnet.localnet.dns01 import ChallTestSrv, LocalDnsServer
from pytsnet.localnet.expiry import NodeNotFound, find_node, parse_duration, renewed, set_key_lifetime
from pytsnet.localnet.limits import ConnectionLimits
from pytsnet.localnet.loop_thread import LoopThreadServer
from pytsnet.localnet.netmap import DEFAULT_DOMAIN
from pytsnet.localnet.policy import Policy
from pytsnet.localnet.routes import RouteStatus, approve_routes, route_status
from pytsnet.localnet.services import ServiceDef
from pytsnet.localnet.store import AuthKey, Node, Store
from pytsnet.localnet.tka import TkaStatus  # 21c

if TYPE_CHECKING:
    from pytsnet.localnet.api import ApiServer
    from pytsnet.localnet.derp_admit import AdmitEndpoint as DerpAdmit  # 24b
    from pytsnet.localnet.funnel import FunnelIngress
    from pytsnet.localnet.relay import Relay


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


class LocalTailnet(LoopThreadServer):
    """A local tailnet's control plane, persisted in ``state_dir``."""

    def __init__(self, state_dir: str | Path, listen: str = "127.0.0.1:0", *, ipv6: bool = False,
                 domain: str = DEFAULT_DOMAIN, keepalive_interval: float = KEEPALIVE_INTERVAL,
                 ephemeral_grace: float = EPHEMERAL_GRACE, sock: Any = None, relay: bool = True,
                 stun_port: int = 0, derp_tls: bool = False, derp_tls_port: int = 0,
                 key_expiry: float | str | None = None, max_pending: int = MAX_PENDING,
                 pending_ttl: float = PENDING_TTL, hostinfo_interval: float = HOSTINFO_INTERVAL,
                 limits: ConnectionLimits | None = None, https: bool = False, dns01_api: str | None = None,
                 dns01_listen: str = "127.0.0.1:0", funnel: str | None = None,
                 funnel_nodes: Sequence[str] | None = None, funnel_target_port: int | None = None,
                 services: Mapping[str, ServiceDef] | None = None,
                 derp_map: Mapping[str, Any] | None = None) -> None:
        """``services`` (20d): the tailnet's VIP services, ``{"svc:web": ServiceDef(ports=("tcp:80",),
        tags=("tag:web",))}`` (:mod:`pytsnet.localnet.services`).
        ``relay`` (default on) attaches the DERP relay and a STUN server at :meth:`start`, so the
        DERP map sent to nodes points at a working relay; pass False to serve control alone.
        ``derp_tls`` serves DERP on its own TLS listener (``derp_tls_port``; self-signed certificate in
        ``state_dir``, ``InsecureForTests`` in the map) so Go nodes need no ``TS_DEBUG_USE_DERP_HTTP``;
        the default is plain HTTP on the control listener. Python nodes use either: TLS as Go does,
        and plain HTTP for a relay on the plain control listener they registered with.
        ``key_expiry`` is the node-key lifetime (seconds or ``"90s"``, ``"12h"``, ``"180d"``; None: the
        one this state directory was last served with, else 180 days). ``max_pending``, ``pending_ttl``
        and ``hostinfo_interval`` bound what strangers and chatty nodes cost (:mod:`control_server`).
        ``limits``: the control listener's connection and Noise-session caps and idle timeout
        (:mod:`pytsnet.localnet.limits`; raise ``idle_timeout`` for tests that hold idle sessions on
        purpose).
        ``https`` (20a) enables HTTPS certificates: netmaps carry the ``https`` capability and each node's
        ``CertDomains``, and ``/machine/set-dns`` publishes ACME DNS-01 records, through
        pebble-challtestsrv's management API at ``dns01_api`` when given, else on localnet's own DNS
        server (UDP on ``dns01_listen``; its address in :attr:`dns01_address` once started).
        ``funnel`` (``HOST:PORT``, 20c) makes localnet a Funnel ingress there
        (:mod:`pytsnet.localnet.funnel`): ``funnel_nodes`` (hostnames; None: all) get the Funnel
        attributes, ``funnel_target_port`` is the nodes' port it carries to.
        ``derp_map`` (24b): a ``tailcfg.DERPMap`` (JSON as a dict, e.g. a standalone ``pytsnet derper``'s)
        handed to nodes instead of localnet's own relay, which is then not started. Either way
        ``/derp/admit`` answers a derper's ``--verify-client-url`` from the node list."""
        self.state_dir = Path(state_dir)
        self.listen = parse_listen(listen)
        self._sock = sock
        self.store = Store(self.state_dir, ipv6=ipv6)
        if key_expiry is not None:
            set_key_lifetime(self.store, parse_duration(key_expiry))
        self._opts = {"domain": domain, "keepalive_interval": keepalive_interval,
                      "ephemeral_grace": ephemeral_grace, "max_pending": max_pending,
                      "pending_ttl": pending_ttl, "hostinfo_interval": hostinfo_interval, "limits": limits,
                      "services": services}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.control: ControlServer | None = None
        self._want_relay = relay
        self._stun_port = stun_port
        self._derp_tls = (derp_tls, derp_tls_port)
        self.relay: Relay | None = None
        self._derp_map: dict[str, Any] | None = None
        if derp_map is not None:
            from pytsnet.derper.derpmap import validate_derp_map

            self._derp_map = validate_derp_map(dict(derp_map))
            self._want_relay = False  # the given map replaces localnet's own relay
        self.admit: DerpAdmit | None = None
        """``/derp/admit``, the DERP admission controller on the control listener (24b)."""
        """The attached DERP relay + STUN server (None when disabled or not started)."""
        self.api: ApiServer | None = None
        """The OAuth/key-minting API on the control listener (:mod:`pytsnet.localnet.api`; 19c)."""
        self._https = (https, dns01_api, parse_listen(dns01_listen))
        self.dns01_server: LocalDnsServer | None = None
        self.dns01_address = ""
        """``HOST:PORT`` of localnet's own DNS-01 server (``--https`` without ``--dns01-api``), else ""."""
        self._funnel = (funnel, None if funnel_nodes is None else frozenset(funnel_nodes), funnel_target_port)
        self.funnel: FunnelIngress | None = None
        """The Funnel ingress (20c; None without ``funnel``)."""

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> LocalTailnet:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="localnet", daemon=True)
        self._thread.start()
        ready.result(timeout=30)
        if self._want_relay:
            from pytsnet.localnet.relay import attach_relay  # relay.py imports this module

            try:
                self.relay = attach_relay(self, stun_port=self._stun_port, tls=self._derp_tls[0],
                                          tls_port=self._derp_tls[1])
            except BaseException:
                self.close()
                raise
        if self._funnel[0] is not None:
            try:
                self._start_funnel(self._funnel[0])
            except BaseException:
                self.close()
                raise
        return self

    def _dns01_opts(self, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        """20a: the ControlServer's ``https``/``dns01`` (starting localnet's DNS server if it is the sink)."""
        https, api, (host, port) = self._https
        if not https:
            return {}
        if api:
            return {"https": True, "dns01": ChallTestSrv(api)}
        self.dns01_server = LocalDnsServer()
        bound = loop.run_until_complete(self.dns01_server.start(host, port))
        self.dns01_address = f"{bound[0]}:{bound[1]}"
        return {"https": True, "dns01": self.dns01_server}

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            policy = Policy.load(self.state_dir)
            self.control = ControlServer(self.store, policy=policy, **self._opts,  # type: ignore[arg-type]
                                         **self._dns01_opts(loop))
            host, port = self.listen
            loop.run_until_complete(self.control.start(host, port, sock=self._sock))
            from pytsnet.localnet.api import PREFIX, ApiServer  # api.py imports this module (19c)

            self.api = ApiServer(self.store)
            self.control.mount(PREFIX, self.api.handle)
            from pytsnet.localnet.derp_admit import ADMIT_PATH, AdmitEndpoint

            self.admit = AdmitEndpoint(self.store)
            self.control.mount(ADMIT_PATH, self.admit.handle)
            if self._derp_map is not None:
                self.control.derp_map = self._derp_map
        except BaseException as e:
            ready.set_exception(e)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.control.close())
            if self.dns01_server is not None:
                self.dns01_server.close()
            loop.close()

    def close(self) -> None:
        if self.funnel is not None:  # 20c: its node logs nothing out; it just stops
            with contextlib.suppress(Exception):
                self.funnel.close()
            self.funnel = None
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            if self.relay is not None:
                with contextlib.suppress(Exception):
                    self.relay.close()
                self.relay = None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self.store.close()

    # -- facts ------------------------------------------------------------------------------
    @property
    def control_url(self) -> str:
        assert self.control is not None, "not started"
        return self.control.base_url

    @property
    def port(self) -> int:
        assert self.control is not None, "not started"
        return int(self.control.port)

    # -- admin ------------------------------------------------------------------------------
    def create_authkey(self, *, reusable: bool = False, ephemeral: bool = False,
                       tags: list[str] | None = None, expiry: float | str | None = None,
                       user: str | None = None) -> str:
        """A new pre-auth key; ``expiry`` is seconds or a duration (``"12h"``) from now (None: never)."""
        return create_authkey(self.store, reusable=reusable, ephemeral=ephemeral, tags=tags,
                              expiry=expiry, user=user).key

    def nodes(self) -> list[Node]:
        return self.store.nodes()

    def node(self, ref: int | str) -> Node:
        """The node with this ID or hostname (``NodeNotFound`` if none, or several share the name)."""
        return find_node(self.store, ref)

    def approve(self, node: int | str) -> bool:
        """Authorize a pending node (ID or hostname); its key lifetime starts now. False if unknown."""
        try:
            node_id = find_node(self.store, node).id
        except NodeNotFound:
            return False
        if self.control is None:
            return self.store.update_node(node_id, authorized=True, auth_path="",
                                          key_expiry=renewed(self.store, time.time())) is not None
        return bool(self._call(lambda: self.control.approve(node_id)))  # type: ignore[union-attr]

    def ssh_checks(self) -> list[dict[str, Any]]:
        """Pending Tailscale SSH checks (``check`` rules): id, source/destination node and host, SSH and
        local user, since when. Decide one with :meth:`decide_ssh_check`."""
        if self.control is None:
            return []

        def snap() -> list[dict[str, Any]]:
            assert self.control is not None
            return [{"id": c.id, "src_node_id": c.src_node_id, "dst_node_id": c.dst_node_id,
                     "src_host": c.src_host, "dst_host": c.dst_host, "ssh_user": c.ssh_user,
                     "local_user": c.local_user, "created": c.created}
                    for c in self.control.ssh_checks.values()]
        return self._call(snap)

    def decide_ssh_check(self, check_id: int, accept: bool) -> bool:
        """Approve (``accept``) or deny a pending SSH check: the held login proceeds or is refused with
        the denial's message. False if no such check is pending."""
        if self.control is None:
            return False
        return bool(self._call(lambda: self.control.decide_ssh_check(check_id, accept)))  # type: ignore[union-attr]

    def routes(self, node: int | str) -> RouteStatus:
        """The node's (ID or hostname) advertised, approved and primary routes (``NodeNotFound``)."""
        node_id = find_node(self.store, node).id
        if self.control is None:
            return route_status(self.store, find_node(self.store, node_id))
        return self._call(lambda: self.control.route_status(node_id))  # type: ignore[union-attr]

    def approve_routes(self, node: int | str, prefixes: list[str]) -> RouteStatus:
        """Make ``prefixes`` the node's approved routes (an empty list unapproves all); each must be
        one the node advertises (``RouteError`` otherwise, nothing changed). Peers' maps follow."""
        found = find_node(self.store, node)
        if self.control is None:
            approve_routes(self.store, found, prefixes)
            return route_status(self.store, find_node(self.store, found.id))
        return self._call(lambda: self.control.approve_routes(found.id, list(prefixes)))  # type: ignore[union-attr]

    def delete(self, node: int | str) -> bool:
        """Remove a node (ID or hostname); False if unknown."""
        try:
            node_id = find_node(self.store, node).id
        except NodeNotFound:
            return False
        if self.control is None:
            return self.store.delete_node(node_id)
        return bool(self._call(lambda: self.control.delete(node_id)))  # type: ignore[union-attr]

    def expire_node(self, node: int | str) -> Node:
        """End the node's key now: it is told it expired, its peers drop it, the relay closes it."""
        return self._set_key_expiry(node, time.time())

    def extend_node(self, node: int | str, duration: float | str | None = None) -> Node:
        """Renew the node's key for ``duration`` (default: the tailnet's key lifetime) from now."""
        seconds = None if duration is None else parse_duration(duration)
        return self._set_key_expiry(node, renewed(self.store, time.time(), seconds))

    def _set_key_expiry(self, ref: int | str, when: float) -> Node:
        node_id = find_node(self.store, ref).id
        if self.control is None:
            self.store.update_node(node_id, key_expiry=when)
        else:
            self._call(lambda: self.control.set_key_expiry(node_id, when))  # type: ignore[union-attr]
        return find_node(self.store, node_id)

    def add_control_listener(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the server loop after every change and when a node key runs out."""
        self._call(lambda: self.control.add_listener(fn))  # type: ignore[union-attr]

    # -- hooks for the DERP relay and STUN server ----------------------------------------------
    def mount(self, path: str, handler: RawHandler) -> None:
        """Serve ``path`` (e.g. ``/derp``, ``/derp/latency-check``, ``/generate_204``) with ``handler``."""
        self._call(lambda: self.control.mount(path, handler))  # type: ignore[union-attr]

    def set_derp_map(self, derp_map: dict[str, Any]) -> None:
        self._call(lambda: self.control.set_derp_map(derp_map))  # type: ignore[union-attr]

    def set_policy(self, policy: Policy | dict[str, Any]) -> None:
        """Replace the policy (a ``Policy`` or policy.json's document) while running: the packet
        filter and DNS settings reach every node in its next map. ``PolicyError`` if malformed."""
        p = policy if isinstance(policy, Policy) else Policy.parse(policy)
        self._call(lambda: self.control.set_policy(p))  # type: ignore[union-attr]

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def tka_state(self) -> TkaStatus:
        """Tailnet Lock as control holds it: on/off/disabled, head, each node's signature and NL key."""
        return self._call(lambda: self.control.tka.state())  # type: ignore[union-attr]

    # -- unsigned peerAPI-only (21h) --
    def set_unsigned_peer_api_only(self, node: int | str, on: bool = True) -> Node:
        """Send ``node`` to every peer with ``UnsignedPeerAPIOnly`` (or stop): under Tailnet Lock it is
        then admitted unsigned and confined to peers' peerAPI (Go ``tailcfg.Node.UnsignedPeerAPIOnly``).
        Running tailnets only (the mark is control's, in memory)."""
        node_id = find_node(self.store, node).id
        if self.control is None:
            raise RuntimeError("set_unsigned_peer_api_only needs a running LocalTailnet")
        self._call(lambda: self.control.set_unsigned_peer_api_only(node_id, on))  # type: ignore[union-attr]
        return find_node(self.store, node_id)


    # -- Funnel ----------------------------------------------------------------------------------
    def _start_funnel(self, listen: str) -> None:
        from pytsnet.localnet.funnel import FunnelIngress
        from pytsnet.localnet.funnel_policy import FunnelPolicy

        policy = FunnelPolicy(nodes=self._funnel[1])

        def install() -> None:
            assert self.control is not None
            self.control.funnel = policy
            self.control.notify()

        self._call(install)
        self.funnel = FunnelIngress(self, listen, self.state_dir / "funnel-ingress",
                                    target_port=self._funnel[2]).start()


def create_authkey(store: Store, *, reusable: bool = False, ephemeral: bool = False,
                   tags: list[str] | None = None, expiry: float | str | None = None,
                   user: str | None = None) -> AuthKey:
    """Shared by the API and the CLI (which may run while another process serves)."""
    bad = [t for t in tags or [] if not t.startswith("tag:") or len(t) <= 4]
    if bad:
        raise ValueError(f"tags must look like tag:NAME, got {bad}")
    u = store.ensure_user(user) if user else store.ensure_user()
    if expiry is None:
        expires = None
    else:  # a number is taken as is (negative: already expired, for tests); text is a duration
        expires = time.time() + (float(expiry) if isinstance(expiry, int | float) else parse_duration(expiry))
    return store.create_authkey(user_id=u.id, reusable=reusable, ephemeral=ephemeral, tags=tags,
                                expires=expires)
