"""The local coordination server: ``/key``, the ``/ts2021`` Noise upgrade, register and map.

One asyncio server. Plain HTTP/1.1 serves ``GET /key`` and the upgrade; after the 101 the
connection carries Noise records with HTTP/2 inside (:mod:`noise_h2`), where ``/machine/register``
and ``/machine/map`` live. State is in the :class:`Store`; every change bumps a generation and
wakes every map stream, which sends the client a delta (:mod:`netmap`). A map request that changes its
node (disco key, endpoints, home DERP) is answered only once every other node's stream has sent that
change (bounded by ``PUSH_WAIT``): a node that is Running is known to its peers. Other components (the DERP
relay, STUN) mount HTTP handlers with :meth:`ControlServer.mount` and replace the DERP map with
:meth:`ControlServer.set_derp_map`.

Node keys expire when control says (:mod:`expiry`): a node gets ``now + key lifetime`` when it
authenticates. An expired node still long-polls, but its map shows itself expired and no peers;
its peers get it with ``Expired`` and no endpoints. Rotating an expired key needs an auth key (a
re-auth); a key refresh while not expired keeps the old expiry. When a key simply runs out nothing
is pushed (as Go's testcontrol): every client drops the peer by its own timer (Go's
``nmExpiryTimer``); listeners (:meth:`ControlServer.add_listener`, the DERP relay) are told at once.

Limits against strangers (anyone can open a Noise session with a fresh machine key): a login
without an auth key makes a pending node with no tailnet IP (addresses come at approval), one per
machine key (a newer login replaces it), at most ``max_pending`` from machines never authorized
(the oldest go), each removed after ``pending_ttl``; none of it wakes a map stream. An auth-key
login or a known machine is never counted against, nor evicted by, that pool. A node's Hostinfo
changes reach its peers at most once per ``hostinfo_interval`` (later ones are held, the latest
wins, and go out when the interval is up). Every map stream woken by a change shares one snapshot
of the tailnet (:meth:`ControlServer.tailnet`), built once per change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import itertools
import json
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from pytsnet.localnet import http1, routes
from pytsnet.localnet.authkeys import AuthKeyRejected, consume_authkey
from pytsnet.localnet.dns01 import Dns01Error, Dns01Sink
from pytsnet.localnet.expiry import expiry_at, key_lifetime, set_key_lifetime
from pytsnet.localnet.funnel_policy import FunnelPolicy
from pytsnet.localnet.limits import ConnectionGate, ConnectionLimits
from pytsnet.localnet.netmap import (
    DEFAULT_DOMAIN,
    SentState,
    Tailnet,
    cert_domains,
    delta,
    dns_label,
    full_map,
)
from pytsnet.localnet.noise_h2 import H2Request, H2Response, NoiseH2Session
from pytsnet.localnet.oidc import JWKS_PATH, OIDC_CONFIG_PATH, OidcIssuer
from pytsnet.localnet.policy import Policy
from pytsnet.localnet.services import ServiceDef, ServiceTable
from pytsnet.localnet.store import DEFAULT_USER, Node, Store
from pytsnet.localnet.tka import ControlTka, TkaRefused  # 21c
from pytsnet.wire.controlbase.errors import ControlParseError
from pytsnet.wire.controlbase.handshake import accept_initiation
from pytsnet.wire.controlbase.messages import encode_error_message
from pytsnet.wire.controlbase.stream import ServerStream
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import DiscoPublic, KeyParseError, MachinePrivate, MachinePublic, NodePublic
from pytsnet.wire.tailcfg.framing import encode_frame
from pytsnet.wire.tailcfg.hostinfo import Hostinfo
from pytsnet.wire.tailcfg.token import BadAudience, check_audience

log = logging.getLogger(__name__)
JSON = dict[str, Any]
UPGRADE_VALUE = "tailscale-control-protocol"
HANDSHAKE_HEADER = "x-tailscale-handshake"
KEEPALIVE_INTERVAL = 50.0
EPHEMERAL_GRACE = 10.0
DB_POLL_INTERVAL = 0.5
PUSH_WAIT = 1.0  # longest a map request waits for the other streams to carry its change
CANCEL_RETRY = 1.0  # close: how long a cancelled task gets to finish before it is cancelled again
LOGOUT_BEFORE = 1_000_000_000.0  # an Expiry before 2001 is a logout (Go sends 1970-01-01T00:02:03Z)
ERR_EXPIRED_REKEY = "node key expired: log in again (an auth key) to rotate it"

MAX_PENDING = 1024
"""Pending (never authorized) nodes kept from machines control never authorized; beyond it the
oldest go. Tailscale's control is closed source and testcontrol has no bound; headscale (Go) keeps
pending registrations in an expirable LRU of 1024 entries (15-minute TTL) and allocates addresses only
at authentication: the same figures."""
PENDING_TTL = 15 * 60.0
"""A pending node not approved within this long is removed (headscale's registration cache expiry)."""
HOSTINFO_INTERVAL = 5.0
"""Shortest time between two Hostinfo changes of one node relayed to its peers (ours: Go's control
does not say; ``tailcfg.PeerChange`` cannot carry Hostinfo, so each relay is the full peer)."""

MAX_HOSTINFO_BYTES = 16 << 10
"""Largest Hostinfo accepted (its compact JSON). Go's open source has no Hostinfo bound (testcontrol
caps a whole request at 1 MiB, ``msgLimit``, as ``noise_h2.MAX_REQUEST_BODY``); 16 KiB is far above
what a client sends (1-2 KiB) and keeps every peer's map from carrying MiBs of one node's Hostinfo."""

RawHandler = Callable[[http1.Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def default_derp_map(host: str, port: int, *, stun_port: int = -1) -> JSON:
    """Region 900 pointing at this server (a DERP relay mounted on ``/derp`` takes it from here)."""
    return {"Regions": {"900": {
        "RegionID": 900, "RegionCode": "local", "RegionName": "pytsnet localnet",
        "Nodes": [{"Name": "900a", "RegionID": 900, "HostName": host, **derp_node_addrs(host),
                   "STUNPort": stun_port, "DERPPort": port, "InsecureForTests": True}]}}}


def derp_node_addrs(host: str) -> dict[str, str]:
    """A DERP node's ``IPv4``/``IPv6`` for a relay listening on ``host``: its own family set, the
    other ``"none"`` (so no DNS lookup happens and clients never try the family it lacks)."""
    return {"IPv4": "none", "IPv6": host} if ":" in host else {"IPv4": host, "IPv6": "none"}


def url_host(host: str) -> str:
    """``host`` as a URL has it: an IPv6 literal in brackets."""
    return f"[{host}]" if ":" in host else host


def map_frame(msg: JSON, compress: bool) -> bytes:
    """One map frame of ``msg`` as compact JSON (framing and zstd are the shared wire helper's)."""
    return encode_frame(json.dumps(msg, separators=(",", ":")).encode(), compress=compress)


_ACME_VALUE = re.compile(r"[A-Za-z0-9_-]{1,255}")
"""A DNS-01 TXT value: base64url of a SHA-256 (43 characters), bounded to one TXT string."""


SSH_ACTION_PREFIX = "/machine/ssh/action/"
_SSH_ACTION_PATH = re.compile(r"/machine/ssh/action/(\d{1,18})/to/(\d{1,18})")
MAX_SSH_CHECKS = 64
"""Pending SSH checks at once (each holds a Noise stream); more are rejected."""
SSH_CHECK_TIMEOUT = 600.0
"""A check nobody decides is rejected after this long (the node would wait up to Go's 30 minutes)."""
_SSH_ACCEPT = json.dumps({"accept": True, "allowAgentForwarding": True, "allowLocalPortForwarding": True,
                          "allowRemotePortForwarding": True}).encode()


def _ssh_reject(message: str) -> bytes:
    return json.dumps({"reject": True, "message": message + "\n"}).encode()


@dataclass
class SshCheck:
    """A login held by check mode: who (source node) wants to log in where, as whom, since when."""

    id: int
    src_node_id: int
    dst_node_id: int
    src_host: str
    dst_host: str
    ssh_user: str
    local_user: str
    created: float
    decided: asyncio.Future[bool] = field(repr=False)


class BadRequestBody(ValueError):
    """A Noise-side request body that is not acceptable input: answered 400, never stored."""


def _refuse_constant(name: str) -> object:
    raise BadRequestBody(f"non-finite number {name} is not JSON")


def strict_json(data: bytes) -> JSON:
    """Parse a request body as one JSON object; NaN/Infinity (Python's extensions) are refused."""
    try:
        body = json.loads(data or b"{}", parse_constant=_refuse_constant)
    except BadRequestBody:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise BadRequestBody(f"invalid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequestBody("body is not a JSON object")
    return body


def clean_hostinfo(raw: object) -> JSON:
    """Hostinfo as it may be stored and relayed: schema-checked, size-bounded, unknown fields dropped."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequestBody("Hostinfo is not a JSON object")
    size = len(json.dumps(raw, separators=(",", ":")))
    if size > MAX_HOSTINFO_BYTES:
        raise BadRequestBody(f"Hostinfo of {size} bytes exceeds {MAX_HOSTINFO_BYTES}")
    try:
        hi = Hostinfo.model_validate(raw)
    except ValidationError as e:
        raise BadRequestBody(f"invalid Hostinfo: {e.error_count()} field error(s), first at "
                             f"{'.'.join(str(x) for x in e.errors()[0]['loc'])}") from None
    out: JSON = json.loads(hi.to_json())
    return out


def _parse_time(s: object) -> float | None:
    """RFC 3339 → epoch seconds; None for absent or Go's zero time."""
    if not isinstance(s, str) or not s or s.startswith("0001-01-01"):
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _nonzero_key(text: object, cls: type[NodePublic] | type[DiscoPublic]) -> str:
    """Canonical key text, or "" for absent/zero; raises KeyParseError for garbage."""
    if not text:
        return ""
    k = cls.from_text(str(text))
    return "" if k.is_zero() else k.to_text()


class ControlServer:
    """The coordination server; runs on one event loop (see ``LocalTailnet``)."""

    def __init__(self, store: Store, *, policy: Policy | None = None, domain: str = DEFAULT_DOMAIN,
                 keepalive_interval: float = KEEPALIVE_INTERVAL,
                 ephemeral_grace: float = EPHEMERAL_GRACE, key_expiry: float | None = None,
                 max_pending: int = MAX_PENDING, pending_ttl: float = PENDING_TTL,
                 hostinfo_interval: float = HOSTINFO_INTERVAL,
                 limits: ConnectionLimits | None = None, https: bool = False,
                 dns01: Dns01Sink | None = None,
                 services: Mapping[str, ServiceDef] | None = None) -> None:
        """``https``/``dns01``: HTTPS certificates (20a: CertDomains in netmaps, ``/machine/set-dns``
        writing to ``dns01``).
        ``key_expiry``: the node-key lifetime in seconds (None: the one stored, else 180 days).
        ``services``: the tailnet's VIP services (:mod:`services`; 20d).
        ``max_pending``, ``pending_ttl``, ``hostinfo_interval``: see the module docstring.
        ``limits``: connection and Noise-session caps and the idle timeout (:mod:`limits`)."""
        self.store = store
        store.serve_ipv6(store.ipv6)
        self.max_pending = max_pending
        self.pending_ttl = pending_ttl
        self.hostinfo_interval = hostinfo_interval
        self._hostinfo_sent: dict[int, float] = {}  # node id → loop time its Hostinfo was last relayed
        self._hostinfo_held: dict[int, JSON] = {}  # node id → newest Hostinfo waiting for its interval
        self._snapshot: Tailnet | None = None
        self._snapshot_key: tuple[int, int, int] = (-1, -1, -1)
        self._snapshot_until = 0.0  # the snapshot's `now` is good until the next node key runs out
        self._primaries = routes.load_primaries(store)  # subnet prefix → primary node id (sticky)
        self.services = ServiceTable(store, services or {})  # 20d: VIP services and their hosts
        if key_expiry is not None:
            set_key_lifetime(store, key_expiry)
        self.key_lifetime = key_lifetime(store)
        self.policy = policy or Policy.allow_all()
        self.funnel: FunnelPolicy | None = None
        """``localnet --funnel``: who gets the Funnel attributes, the ingress's grant (20c)."""
        self.domain = domain
        self.keepalive_interval = keepalive_interval
        self.ephemeral_grace = ephemeral_grace
        # Each in its own 0600 file in the state dir, never in the database (store.KEY_FILES).
        self.private = MachinePrivate.from_text(
            store.private_key("control_private", lambda: MachinePrivate.generate().to_text()))
        self.legacy_private = MachinePrivate.from_text(
            store.private_key("legacy_private", lambda: MachinePrivate.generate().to_text()))
        self.default_user = store.ensure_user(DEFAULT_USER)
        self.oidc = OidcIssuer(store)
        """Signs the nodes' ID tokens (``/machine/id-token``); its keys at ``/.well-known/jwks.json``."""
        self.base_url = ""
        self.derp_map: JSON | None = None
        self._mounts: dict[str, RawHandler] = {}
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        self._gen = 0  # bumped by every notify()
        self.unsigned_peer_api_only: set[int] = set()  # 21h: nodes sent with UnsignedPeerAPIOnly
        self._pushed: dict[asyncio.Event, tuple[int, int]] = {}  # live stream (its stop event) →
        # (node id, generation its last map was built from)
        self._pushed_more = asyncio.Event()
        self._streams: dict[int, list[asyncio.Event]] = {}  # node id → stop events of its live polls
        self._online: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.sent: dict[int, collections.deque[JSON]] = {}
        """Per node id, the last map messages its long polls were sent (for tests and debugging)."""
        self.stats = {"noise_sessions": 0, "bad_handshakes": 0, "registers": 0, "map_polls": 0,
                      "map_frames": 0, "map_keepalives": 0, "bad_requests": 0, "snapshots": 0,
                      "pending_expired": 0, "hostinfo_held": 0, "routes_ignored": 0}
        """``map_frames`` counts MapResponses written to long polls (keep-alives separately),
        ``snapshots`` tailnet snapshots built, ``hostinfo_held`` Hostinfo changes held back by the
        rate limit, ``routes_ignored`` advertised routes refused (malformed, in the tailnet's
        ranges, beyond ``routes.MAX_ADVERTISED``)."""
        self._listeners: list[Callable[[], object]] = []
        self.limits = limits or ConnectionLimits()
        self.gate = ConnectionGate(self.limits)
        """Open connections to the listener, in total and per source address."""
        self.sessions: set[NoiseH2Session] = set()
        """Live Noise sessions (their ``buffered`` bytes are what the session caps bound)."""
        self._refusal_logged_at = -1.0
        self.stats.update({"conns_refused": 0, "noise_idle_closed": 0, "h2_streams_refused": 0,
                           "h2_protocol_errors": 0, "h2_buffered_peak": 0, "id_tokens": 0})
        self.https = https
        self.dns01 = dns01
        self.stats.update({"set_dns": 0, "set_dns_refused": 0})
        """``set_dns`` TXT records published for nodes, ``set_dns_refused`` requests refused."""
        self.tka = ControlTka.load(store, time.time())
        """Tailnet Lock as control keeps it (:mod:`pytsnet.localnet.tka`)."""
        self.stats.update({"tka_calls": 0, "tka_refused": 0})
        self.ssh_checks: dict[int, SshCheck] = {}
        """Pending Tailscale SSH checks (held ``/machine/ssh/action/`` requests), by id."""
        self.ssh_check_timeout = SSH_CHECK_TIMEOUT
        self._ssh_check_ids = itertools.count(1)
        self._ssh_approved: dict[tuple[int, str], float] = {}
        """(source node ID, SSH user) → until when an approval stands (the rule's ``checkPeriod``)."""
        self.stats.update({"ssh_checks": 0, "ssh_check_refused": 0})

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0, *, sock: Any = None) -> None:
        if sock is not None:
            self._server = await asyncio.start_server(self._on_conn, sock=sock)
        else:
            self._server = await asyncio.start_server(self._on_conn, host, port)
        h, p = self._server.sockets[0].getsockname()[:2]
        self.host, self.port = h, p
        self.base_url = f"http://{url_host(h)}:{p}"  # 24d: brackets for an IPv6 listener
        if self.derp_map is None:
            self.derp_map = default_derp_map(h, p)
        self._spawn(self._watch_db())
        self._spawn(self._watch_expiry())
        self._spawn(self._expire_pending())

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._closing = True
        for node_id, hi in self._hostinfo_held.items():  # held, not lost: stored for the next start
            self.store.update_node(node_id, hostinfo=hi)
        self._hostinfo_held.clear()
        while self._tasks:  # cancel until done: Python 3.11's wait_for swallows a cancel that lands
            tasks = list(self._tasks)  # as its inner wait completes, and the task then waits again
            for t in tasks:
                t.cancel()
            done, _ = await asyncio.wait(tasks, timeout=CANCEL_RETRY)
            for t in done:
                if not t.cancelled():
                    t.exception()  # retrieved: a task that failed while closing is not worth a warning
            self._tasks.difference_update(done)
        for evs in self._streams.values():
            for ev in evs:
                ev.set()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _spawn(self, coro: Awaitable[None]) -> None:
        if self._closing:
            coro.close()  # type: ignore[attr-defined]
            return
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def mount(self, path: str, handler: RawHandler) -> None:
        """Route plain-HTTP requests for ``path`` (exact, or a prefix ending in "/") to ``handler``,
        which then owns the connection (e.g. the DERP upgrade)."""
        self._mounts[path] = handler

    def set_derp_map(self, derp_map: JSON) -> None:
        self.derp_map = derp_map
        self.notify()

    def set_policy(self, policy: Policy) -> None:
        """A new policy (filter and DNS settings): every node gets it in its next map."""
        self.policy = policy
        self.notify()

    def notify(self) -> None:
        """Something changed: wake every map stream and every waiting interactive login."""
        self._gen += 1
        self._changed.set()
        self._changed = asyncio.Event()
        self._tell_listeners()

    def add_listener(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` (on the server loop) after every change and whenever a node key runs out."""
        self._listeners.append(fn)

    def _tell_listeners(self) -> None:
        for fn in list(self._listeners):
            try:
                fn()
            except Exception:
                log.exception("control: change listener failed")

    async def _watch_expiry(self) -> None:
        """Tell listeners when the next node key runs out. No map frame: clients keep their own timers."""
        while True:
            changed = self._changed
            now = time.time()
            nxt = min((n.key_expiry for n in self.store.nodes()
                       if n.key_expiry is not None and n.key_expiry > now), default=None)
            timeout = None if nxt is None else nxt - now
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                self._tell_listeners()

    def _note_pushed(self, stop: asyncio.Event, node_id: int, gen: int | None) -> None:
        """A stream sent a map built from generation ``gen`` (None: the stream ended)."""
        if gen is None:
            self._pushed.pop(stop, None)
        else:
            self._pushed[stop] = (node_id, gen)
        self._pushed_more.set()
        self._pushed_more = asyncio.Event()

    async def _others_caught_up(self, node_id: int, gen: int) -> None:
        """Wait (at most ``PUSH_WAIT``) until every other node's live stream has sent generation ``gen``."""
        deadline = asyncio.get_running_loop().time() + PUSH_WAIT
        while any(n != node_id and g < gen for n, g in self._pushed.values()):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pushed_more.wait(), left)

    async def _wait_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def _watch_db(self) -> None:
        """Pick up commits by other processes (the admin CLI) to the same database."""
        last = self.store.data_version()
        while True:
            await asyncio.sleep(DB_POLL_INTERVAL)
            v = self.store.data_version()
            if v != last:
                last = v
                self.notify()

    def new_key_expiry(self, requested: float | None = None) -> float:
        """A fresh node-key expiry; a client may ask for an earlier one (never a later one)."""
        now = time.time()
        assigned = expiry_at(now, self.key_lifetime)
        return min(assigned, requested) if requested is not None and requested > now else assigned

    def tailnet(self) -> Tailnet:
        """The tailnet now: one snapshot shared by every caller until something changes (a
        ``notify``, a commit to the database by us or another process, or a node key running out),
        so N map streams woken by one change build it once, not N times."""
        key = (self._gen, self.store.writes, self.store.data_version())
        now = time.time()
        if self._snapshot is not None and key == self._snapshot_key and now < self._snapshot_until:
            return self._snapshot
        nodes = self.store.nodes()
        users = self.store.users()
        visible = [n for n in nodes if n.authorized and not n.logged_out]
        online = {i for i, c in self._online.items() if c > 0}
        serving = {n.id for n in visible if n.id in online and (n.key_expiry is None or n.key_expiry > now)}
        primaries = routes.elect(visible, serving, self._primaries)
        if primaries != self._primaries:
            old = self._primaries
            moved = {p: (old.get(p), primaries.get(p)) for p in set(primaries) | set(old)
                     if old.get(p) != primaries.get(p)}
            log.info("control: primary routes changed (prefix: old → new node): %s", moved)
            self._primaries = primaries
            routes.save_primaries(self.store, primaries)
            key = (self._gen, self.store.writes, self.store.data_version())
        funnel = self.funnel  # 20c: --funnel's node attributes and the ingress's grant
        snap = Tailnet(nodes=nodes, users=users, online=online,
                       packet_filter=self.policy.filter_rules(  # 20h: svc: destinations → the VIPs
                           visible, users, {n: [v] for n, v in self.services.vips.items()}) +
                       (funnel.filter_rules(visible) if funnel is not None else []),
                       node_capmap={n.id: funnel.capmap(n) for n in nodes} if funnel is not None else {},
                       derp_map=self.derp_map or {}, domain=self.domain,
                       dns=self._dns_with_services(), now=now, primaries=dict(primaries),
                       https=self.https, service_routes=self.services.routes(visible),
                       service_caps={i: c for n in visible if (c := self.services.host_cap(n.id))
                                     for i in (n.id,)},
                       tka_info=self.tka.tka_info(), key_sigs=self.tka.key_signatures(),  # 21c
                       unsigned_peer_api_only=frozenset(self.unsigned_peer_api_only),  # 21h
                       ssh_policies=self.policy.ssh_policies(visible, users))  # 22b
        self.stats["snapshots"] += 1
        self._snapshot, self._snapshot_key = snap, key
        self._snapshot_until = min((n.key_expiry for n in nodes if n.key_expiry is not None
                                    and n.key_expiry > now), default=float("inf"))
        return snap

    async def _expire_pending(self) -> None:
        """Remove pending nodes not approved within ``pending_ttl`` (checked every ttl/4, ≤ 60 s)."""
        while True:
            gone = self.store.expire_pending(time.time() - self.pending_ttl)
            if gone:
                self.notify()  # their Followup registers are waiting: tell them now (≤ once per sweep)
                self.stats["pending_expired"] += gone
                log.info("control: %d pending node(s) not approved within %.0f s removed", gone,
                         self.pending_ttl)
            await asyncio.sleep(min(self.pending_ttl / 4, 60.0))

    def _relay_hostinfo_now(self, node: Node, hi: JSON) -> bool:
        """Whether a new Hostinfo ``hi`` of ``node`` is to be stored and relayed now. Within
        ``hostinfo_interval`` of the last relay it is held instead (the newest replaces any held
        one) and relayed when the interval is up; one equal to what peers have cancels a held one."""
        held = self._hostinfo_held.get(node.id)
        if not hi or hi == (node.hostinfo if held is None else held):
            return False
        if hi == node.hostinfo:  # back to what peers already have: nothing to relay
            self._hostinfo_held.pop(node.id, None)
            return False
        now = asyncio.get_running_loop().time()
        last = self._hostinfo_sent.get(node.id)
        if last is None or now - last >= self.hostinfo_interval:
            self._hostinfo_sent[node.id] = now
            self._hostinfo_held.pop(node.id, None)
            return True
        self.stats["hostinfo_held"] += 1
        self._hostinfo_held[node.id] = hi
        if held is None:
            self._spawn(self._relay_held_hostinfo(node.id, last + self.hostinfo_interval - now))
        return False

    async def _relay_held_hostinfo(self, node_id: int, delay: float) -> None:
        await asyncio.sleep(delay)
        hi = self._hostinfo_held.pop(node_id, None)
        node = self.store.node(node_id)
        if hi is None or node is None or hi == node.hostinfo:
            return
        self._hostinfo_sent[node_id] = asyncio.get_running_loop().time()
        self.store.update_node(node_id, hostinfo=hi)
        self.notify()

    # -- plain HTTP -------------------------------------------------------------------------
    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        full = self.gate.admit(ip)
        if full is not None:  # closed before reading a byte; one log line a second at most
            self.stats["conns_refused"] += 1
            now = time.monotonic()
            if now - self._refusal_logged_at >= 1.0:
                self._refusal_logged_at = now
                log.warning("control: connection from %s refused: %s reached (%d refused so far)",
                            ip, full, self.stats["conns_refused"])
            with contextlib.suppress(Exception):
                writer.transport.abort()
            return
        try:
            await self._serve_conn(reader, writer)
        finally:
            self.gate.release(ip)

    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await http1.accept_request(reader, writer, self._tasks)
            if req is None:
                return
            path = req.path
            for prefix, handler in self._mounts.items():
                if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
                    await handler(req, reader, writer)
                    return
            if path == "/key":
                writer.write(self._serve_key(req))
            elif path == "/ts2021":
                await self._serve_upgrade(req, reader, writer)
            elif path.startswith("/auth/"):
                writer.write(self._serve_auth_page(path))
            elif path == "/generate_204":
                writer.write(http1.response(204))
            elif path == OIDC_CONFIG_PATH:
                writer.write(http1.response(200, json.dumps(self.oidc.discovery(self.base_url)).encode(),
                                            content_type="application/json"))
            elif path == JWKS_PATH:
                writer.write(http1.response(200, json.dumps(self.oidc.jwks()).encode(),
                                            content_type="application/json"))
            else:
                writer.write(http1.response(404, b"not found\n"))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # cancellation is the server closing; 3.11's start_server logs it if re-raised
        except Exception as e:  # one line per failed connection, never a traceback per request
            log.error("control: connection handler failed: %s: %s", type(e).__name__, str(e)[:200])
        finally:
            # close() may cancel us here too (the client left and we are draining): swallow that as
            # well, or 3.11's start_server callback logs the CancelledError with a traceback.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.drain()
            with contextlib.suppress(Exception):
                writer.close()

    def _serve_key(self, req: http1.Request) -> bytes:
        if "v" not in req.query:  # testcontrol: no version ⇒ the bare legacy key in hex
            return http1.response(200, self.legacy_private.public().raw.hex().encode())
        body = json.dumps({"legacyPublicKey": self.legacy_private.public().to_text(),
                           "publicKey": self.private.public().to_text()}).encode()
        return http1.response(200, body, content_type="application/json")

    def _serve_auth_page(self, path: str) -> bytes:
        node = self.store.node_by_auth_path(path)
        if node is None:
            return http1.response(404, b"unknown or finished login\n")
        text = (f"Node {node.id} ({node.hostname}) is waiting for approval.\n"
                f"Approve it with: python -m pytsnet localnet --state DIR nodes approve {node.id}\n")
        return http1.response(200, text.encode())

    async def _serve_upgrade(self, req: http1.Request, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        upgrade = req.headers.get("upgrade", "")
        if not upgrade:
            writer.write(http1.response(400, b"missing next protocol\n"))
            return
        if upgrade.lower() != UPGRADE_VALUE:
            writer.write(http1.response(400, b"unknown next protocol\n"))
            return
        try:
            init = base64.b64decode(req.headers.get(HANDSHAKE_HEADER, ""), validate=True)
        except (binascii.Error, ValueError):
            init = b""
        if not init:
            self.stats["bad_handshakes"] += 1
            writer.write(http1.response(400, b"missing or undecodable handshake header\n"))
            return
        try:
            accepted = accept_initiation(init, self.private)
        except ControlParseError as e:
            self.stats["bad_handshakes"] += 1
            # Go answers a malformed initiation with 101 and a Noise error message.
            writer.write(http1.response(101, headers={"Upgrade": UPGRADE_VALUE, "Connection": "upgrade"})
                         + encode_error_message(str(e)))
            return
        except WireError:
            self.stats["bad_handshakes"] += 1
            writer.write(http1.response(400, b"handshake failed\n"))
            return
        noise = ServerStream(accepted)
        writer.write(http1.response(101, headers={"Upgrade": UPGRADE_VALUE, "Connection": "upgrade"})
                     + noise.initial)
        await writer.drain()
        self.stats["noise_sessions"] += 1
        mp = accepted.machine_public
        machine = (mp if isinstance(mp, MachinePublic) else MachinePublic.from_raw(mp)).to_text()

        async def handle(h2req: H2Request, resp: H2Response) -> None:
            await self._serve_machine(h2req, resp, machine)

        session = NoiseH2Session(noise, reader, writer, handle, limits=self.limits, stats=self.stats)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)

    # -- Noise-side routes ------------------------------------------------------------------
    async def _serve_machine(self, req: H2Request, resp: H2Response, machine: str) -> None:
        """Route one Noise-side request; bad input of any kind is a 400 and one log line."""
        try:
            if req.path.startswith(SSH_ACTION_PREFIX):  # 22d: a GET without a body
                status, answer = await self.ssh_action(req.path, machine)
                await resp.simple(status, answer, "application/json" if status == 200 else "text/plain")
                return
            body = strict_json(bytes(req.body))
            if req.path == "/machine/register":
                await resp.simple(200, json.dumps(await self.tka_register(body, machine)).encode())  # 21c
            elif req.path == "/machine/map":
                await self._serve_map(body, machine, resp)
            elif req.path == "/machine/id-token":
                status, answer = self.id_token(body, machine)
                await resp.simple(status, answer, "application/json" if status == 200 else "text/plain")
            elif req.path == "/machine/set-dns":  # 20a
                status, answer = await self.set_dns(body, machine)
                await resp.simple(status, answer, "application/json" if status == 200 else "text/plain")
            elif req.path.startswith("/machine/tka/"):  # 21c: Go sends these as GET with a JSON body
                status, answer = await self.tka_call(req.path, bytes(req.body), body, machine)
                await resp.simple(status, answer, "application/json" if status == 200 else "text/plain")
            elif req.path.startswith("/machine/"):
                await resp.simple(200, b"{}")  # set-dns, audit-log, …: accepted, not modelled
            else:
                await resp.simple(404, b"not found", "text/plain")
        except (BadRequestBody, KeyParseError) as e:
            self.stats["bad_requests"] += 1
            log.info("control: %s from %s refused: %s", req.path[:64], machine[:20], str(e)[:200])
            if not resp.started:
                await resp.simple(400, f"bad request: {e}".encode(), "text/plain")

    def id_token(self, req: JSON, machine: str) -> tuple[int, bytes]:
        """``/machine/id-token``: a ``tailcfg.TokenResponse`` for the requesting node, which must be this
        machine's, authorized, logged in and unexpired. The token itself is never logged."""
        nk = _nonzero_key(req.get("NodeKey"), NodePublic)
        raw = req.get("Audience")
        try:
            aud = check_audience(raw if isinstance(raw, str) else "")
        except BadAudience as e:
            raise BadRequestBody(str(e)) from None
        node = self.store.node_by_key(nk) if nk else None
        if node is None or node.machine_key != machine or node.logged_out:
            return 403, b"unknown node key\n"
        if not node.authorized:
            return 403, b"node not authorized\n"
        now = time.time()
        if node.key_expiry is not None and node.key_expiry <= now:
            return 403, b"node key expired\n"
        net = self.tailnet()
        name = f"{net.names.get(node.id, dns_label(node.hostname))}.{net.domain}"
        user = next((u for u in self.store.users() if u.id == node.user_id), None)
        claims = self.oidc.claims(node, user, name=name, domain=net.domain, issuer=self.base_url, aud=aud,
                                  now=now)
        self.stats["id_tokens"] += 1
        return 200, json.dumps({"id_token": self.oidc.sign(claims)}).encode()

    # -- set-dns (20a) --
    async def set_dns(self, req: JSON, machine: str) -> tuple[int, bytes]:
        """``/machine/set-dns`` (``tailcfg.SetDNSRequest``): publish an ACME DNS-01 TXT record. Only
        ``_acme-challenge.<the requesting node's own cert domain>``, type TXT, a base64url value, from
        that node (its machine key, authorized, unexpired), on a tailnet with HTTPS enabled. Anything
        else is refused (4xx, counted in ``set_dns_refused``) and nothing is published."""
        status, answer = self._check_set_dns(req, machine)
        if status != 200:
            self.stats["set_dns_refused"] += 1
            log.info("control: set-dns from %s refused: %s", machine[:20], answer.decode()[:120])
            return status, answer
        assert self.dns01 is not None
        name, value = str(req["Name"]).lower().rstrip("."), str(req["Value"])
        try:
            await self.dns01.publish(name, value)
        except Dns01Error as e:
            log.warning("control: set-dns %s: %s", name, e)
            return 502, f"publishing the record failed: {e}\n".encode()
        self.stats["set_dns"] += 1
        return 200, b"{}"

    def _check_set_dns(self, req: JSON, machine: str) -> tuple[int, bytes]:
        if not self.https or self.dns01 is None:
            return 403, b"HTTPS is not enabled on this tailnet\n"
        nk = _nonzero_key(req.get("NodeKey"), NodePublic)
        node = self.store.node_by_key(nk) if nk else None
        if node is None or node.machine_key != machine or node.logged_out:
            return 403, b"unknown node key\n"
        if not node.authorized:
            return 403, b"node not authorized\n"
        if node.key_expiry is not None and node.key_expiry <= time.time():
            return 403, b"node key expired\n"
        if req.get("Type") != "TXT":
            return 400, b"only TXT records can be set\n"
        name, value = req.get("Name"), req.get("Value")
        if not isinstance(name, str) or not isinstance(value, str):
            return 400, b"Name and Value must be strings\n"
        wanted = [f"_acme-challenge.{d}" for d in cert_domains(node.id, self.tailnet())]  # 20f: + services
        if name.lower().rstrip(".") not in wanted:
            return 403, (f"name {name[:100]!r} is not {wanted[0]!r}: a node may only set its own "
                         "ACME challenge\n").encode()
        if not _ACME_VALUE.fullmatch(value):
            return 400, b"Value is not an ACME DNS-01 digest (base64url, at most 255 characters)\n"
        return 200, b""

    async def ssh_action(self, path: str, machine: str) -> tuple[int, bytes]:
        """``GET /machine/ssh/action/<src>/to/<dst>?ssh_user=&local_user=&check_period=``: the node
        ``dst`` holds a login from ``src`` until the admin decides (:meth:`decide_ssh_check`), the
        check times out (reject) or the node resets the stream (the check is forgotten). Only ``dst``'s
        own machine may ask; an approval within ``check_period`` seconds is accepted at once."""
        u = urllib.parse.urlsplit(path)
        m = _SSH_ACTION_PATH.fullmatch(u.path)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True, max_num_fields=8)
        users = q.get("ssh_user", [""]), q.get("local_user", [""]), q.get("check_period", ["0"])
        if m is None or any(len(v) != 1 for v in users) or not users[2][0].isdigit():
            self.stats["ssh_check_refused"] += 1
            return 400, b"bad SSH action request\n"
        src_id, dst_id = int(m.group(1)), int(m.group(2))
        ssh_user, local_user, period = users[0][0][:64], users[1][0][:64], min(int(users[2][0][:12]), 1 << 31)
        dst = next((n for n in self.store.nodes() if n.id == dst_id), None)
        src = next((n for n in self.store.nodes() if n.id == src_id), None)
        if dst is None or dst.machine_key != machine or dst.logged_out or not dst.authorized:
            self.stats["ssh_check_refused"] += 1
            log.info("control: SSH action for node %d asked by another machine %s: refused", dst_id,
                     machine[:20])
            return 403, b"only the destination node may fetch its SSH action\n"
        if src is None:
            return 200, _ssh_reject("tailscale: unknown source node")
        now = time.time()
        if period and self._ssh_approved.get((src_id, ssh_user), 0.0) > now:
            return 200, _SSH_ACCEPT
        if len(self.ssh_checks) >= MAX_SSH_CHECKS:
            self.stats["ssh_check_refused"] += 1
            return 200, _ssh_reject("tailscale: too many SSH checks pending")
        check = SshCheck(next(self._ssh_check_ids), src_id, dst_id, src.hostname, dst.hostname, ssh_user,
                         local_user, now, asyncio.get_running_loop().create_future())
        self.ssh_checks[check.id] = check
        self.stats["ssh_checks"] += 1
        log.info("control: SSH check %d: %s as %r on %s waits for a decision", check.id, src.hostname,
                 ssh_user, dst.hostname)
        try:
            accepted = await asyncio.wait_for(asyncio.shield(check.decided), self.ssh_check_timeout)
        except TimeoutError:
            return 200, _ssh_reject("tailscale: the SSH check timed out")
        finally:
            self.ssh_checks.pop(check.id, None)
        if not accepted:
            return 200, _ssh_reject("tailscale: the SSH check was denied")
        if period:
            self._ssh_approved[(src_id, ssh_user)] = time.time() + period
            if len(self._ssh_approved) > MAX_SSH_CHECKS * 16:  # bounded: drop the expired
                self._ssh_approved = {k: v for k, v in self._ssh_approved.items() if v > time.time()}
        return 200, _SSH_ACCEPT

    def decide_ssh_check(self, check_id: int, accept: bool) -> bool:
        """Approve or deny pending check ``check_id``; False if there is none (decided, gone, timed out)."""
        check = self.ssh_checks.get(check_id)
        if check is None or check.decided.done():
            return False
        check.decided.set_result(accept)
        return True

    def _tka_caller(self, body: JSON, machine: str) -> Node:
        """The node making a ``/machine/tka/*`` call: this machine's, authorized, logged in, unexpired."""
        nk = _nonzero_key(body.get("NodeKey"), NodePublic)
        node = self.store.node_by_key(nk) if nk else None
        if node is None or node.machine_key != machine or node.logged_out:
            raise TkaRefused(403, "unknown node key")
        if not node.authorized:
            raise TkaRefused(403, "node not authorized")
        if node.key_expiry is not None and node.key_expiry <= time.time():
            raise TkaRefused(403, "node key expired")
        return node

    async def tka_call(self, path: str, raw: bytes, body: JSON, machine: str) -> tuple[int, bytes]:
        """One ``/machine/tka/*`` call (:mod:`pytsnet.localnet.tka`): ``(status, body)``; a change of the
        chain, of a signature or of the lock's state reaches every node in its next map."""
        self.stats["tka_calls"] += 1
        tka, now = self.tka, time.time()
        try:
            caller = self._tka_caller(body, machine)
            visible = [n for n in self.store.nodes() if n.authorized and not n.logged_out]
            op = path.removeprefix("/machine/tka/")
            changed = False
            if op == "init/begin":
                answer = tka.init_begin(raw, caller, visible, now)
            elif op == "init/finish":
                answer, changed = tka.init_finish(raw, caller, visible, now), True
            elif op == "bootstrap":
                answer = tka.bootstrap(raw)
            elif op == "sync/offer":
                answer = tka.sync_offer(raw, caller)
            elif op == "sync/send":
                answer, changed = tka.sync_send(raw, caller, now)
            elif op == "disable":
                authority, secret = tka.disable_check(raw)
                valid = await asyncio.get_running_loop().run_in_executor(  # Argon2i: off the loop
                    None, authority.valid_disablement, secret)
                answer, changed = tka.disable(authority, secret, valid), True
            elif op == "sign":
                answer, changed = tka.sign(raw, {n.node_key: n for n in visible}), True
            elif op == "affected-sigs":
                answer = tka.affected_sigs(raw, {n.id for n in visible})
            else:
                raise TkaRefused(404, f"unknown tailnet lock call {op[:40]!r}")
        except TkaRefused as e:
            self.stats["tka_refused"] += 1
            log.info("control: %s from %s refused (%d): %s", path[:40], machine[:20], e.status,
                     e.reason[:200])
            return e.status, (e.reason + "\n").encode()
        tka.calls[op] = tka.calls.get(op, 0) + 1
        if changed:
            self.notify()
        return 200, answer

    async def tka_register(self, req: JSON, machine: str) -> JSON:
        """``/machine/register`` with Tailnet Lock: a signature it brings must verify (else ``Error``); a
        signed node rotating its key without one is sent its old signature to re-sign; after a
        successful register its NL key and verified signature are stored."""
        nk = _nonzero_key(req.get("NodeKey"), NodePublic)
        old = _nonzero_key(req.get("OldNodeKey"), NodePublic)
        existing = self.store.node_by_key(nk) if nk else None
        prev = self.store.node_by_key(old) if old else None
        if prev is not None and (prev.machine_key != machine or prev.logged_out):
            prev = None
        short, sig = (None, b"") if not nk else self.tka.register_check(req, machine, nk, old, existing, prev)
        if short is not None:
            user = prev.user_id if prev is not None else self.default_user.id
            return {**self._login(user), **short}
        answer = await self.register(req, machine)
        if answer.get("Error") or answer.get("AuthURL") or not answer.get("MachineAuthorized"):
            return answer
        node = self.store.node_by_key(nk)
        if node is not None and node.machine_key == machine and self.tka.register_done(node, req, sig):
            self.notify()
        return answer

    def _login(self, user_id: int) -> JSON:
        u = next((u for u in self.store.users() if u.id == user_id), self.default_user)
        return {"User": {"ID": u.id, "DisplayName": u.display_name},
                "Login": {"ID": u.id, "Provider": "localnet", "LoginName": u.login_name,
                          "DisplayName": u.display_name}}

    def _ok(self, node: Node) -> JSON:
        return {**self._login(node.user_id), "MachineAuthorized": node.authorized}

    async def register(self, req: JSON, machine: str) -> JSON:
        """``/machine/register``: pre-auth key, interactive login, logout, node-key rotation."""
        self.stats["registers"] += 1
        nk = _nonzero_key(req.get("NodeKey"), NodePublic)
        if not nk:
            return {"Error": "zero node key"}
        old = _nonzero_key(req.get("OldNodeKey"), NodePublic)
        expiry = _parse_time(req.get("Expiry"))
        hostinfo = clean_hostinfo(req.get("Hostinfo"))
        hostname = str(hostinfo.get("Hostname") or "node")
        node = self.store.node_by_key(nk)
        if node is not None and node.machine_key != machine:
            return {"Error": "node key is registered to another machine"}

        if expiry is not None and expiry < LOGOUT_BEFORE:  # logout
            if node is not None:
                if node.ephemeral:
                    self.store.delete_node(node.id)
                else:
                    self.store.update_node(node.id, logged_out=True)
                self.notify()
                return {**self._login(node.user_id), "MachineAuthorized": False}
            return {**self._login(self.default_user.id), "MachineAuthorized": False}

        auth = req.get("Auth")
        auth = auth if isinstance(auth, dict) else {}
        authkey = str(auth.get("AuthKey") or "")
        rekey: Node | None = None
        if node is None and old:  # node-key rotation
            prev = self.store.node_by_key(old)
            if prev is not None and prev.machine_key == machine and not prev.logged_out:
                if not authkey and (prev.key_expiry is None or prev.key_expiry > time.time()):  # a refresh
                    keep = prev.key_expiry if expiry is None or prev.key_expiry is None \
                        else min(prev.key_expiry, expiry)
                    node = self.store.update_node(prev.id, node_key=nk, key_expiry=keep)
                    self.notify()
                    assert node is not None
                    return self._ok(node)
                rekey = prev  # expired, or a re-auth (TSNET_FORCE_LOGIN): only the auth key may rotate it

        # A pending login that now brings an auth key is authorized by it (below), not sent back to
        # its AuthURL: an auth key always gets a node in, whatever strangers did to the pending pool.
        if node is not None and not node.logged_out and (node.authorized or not authkey):
            if node.key_expiry is not None and node.key_expiry <= time.time():
                return {**self._login(node.user_id), "NodeKeyExpired": True,
                        "MachineAuthorized": node.authorized}
            if node.authorized:
                changed = self._record_routes(node, hostinfo)
                if self._relay_hostinfo_now(node, hostinfo):
                    self.store.update_node(node.id, hostinfo=hostinfo)
                    changed = True
                if changed:
                    self.notify()
                return self._ok(node)
            if req.get("Followup"):
                return await self._await_approval(nk)
            return {**self._login(node.user_id), "AuthURL": self.base_url + node.auth_path}

        if rekey is not None and not authkey:
            return {**self._login(rekey.user_id), "Error": ERR_EXPIRED_REKEY}
        reuse = node if node is not None else rekey or self.store.logged_out_node_for_machine(machine)
        # One transaction: a crash between using a single-use key and inserting its node rolls
        # both back, so the key is never burnt without a node to show for it.
        with self.store.transaction():
            if authkey:
                try:
                    rec = consume_authkey(self.store, authkey)
                except AuthKeyRejected as e:
                    return {"Error": str(e)}
                ephemeral = rec.ephemeral or bool(req.get("Ephemeral"))
                fields: JSON = {"user_id": rec.user_id, "hostname": hostname, "hostinfo": hostinfo,
                                "authorized": True, "ephemeral": ephemeral, "tags": rec.tags,
                                "key_expiry": self.new_key_expiry(expiry), "auth_path": ""}
            else:
                ephemeral = bool(req.get("Ephemeral"))
                fields = {"user_id": self.default_user.id, "hostname": hostname, "hostinfo": hostinfo,
                          "authorized": False, "ephemeral": ephemeral, "tags": [], "key_expiry": None,
                          "auth_path": "/auth/" + secrets.token_hex(10)}  # the clock starts at approval
            if reuse is not None and (not ephemeral or reuse is rekey or reuse is node):
                new = self.store.update_node(reuse.id, node_key=nk, logged_out=False, **fields)
            elif fields.pop("authorized"):
                new = self.store.add_node(machine_key=machine, node_key=nk, authorized=True, **fields)
            else:  # a stranger's login: no IP, one per machine, a bounded pool; nobody's map changes
                new = self.store.add_pending_node(max_pending=self.max_pending, machine_key=machine,
                                                  node_key=nk, **fields)
        assert new is not None
        if new.authorized:
            self._record_routes(new, hostinfo)
        if new.authorized or new.ipv4:
            self.notify()
        if not new.authorized:
            return {**self._login(new.user_id), "AuthURL": self.base_url + new.auth_path}
        return self._ok(new)

    async def _await_approval(self, nk: str) -> JSON:
        """Hold a Followup register until an admin approves (or deletes) the pending node."""
        while True:
            node = self.store.node_by_key(nk)
            if node is None:
                return {"Error": "login was denied, replaced by a newer one, or not approved in time"}
            if node.authorized:
                return self._ok(node)
            await self._wait_change(30)

    def _record_routes(self, node: Node, hi: JSON, *, count: bool = True) -> bool:
        """Store the routes ``hi`` (a non-empty, cleaned Hostinfo) advertises, at once (never held
        with the Hostinfo: peers' routing depends on it); routes advertised anew that the policy's
        ``autoApprovers`` cover are approved. True if the node's routes changed. ``count``: False
        when re-reading a Hostinfo already counted."""
        if not hi:
            return False
        advertised, bad = routes.parse_advertised(hi.get("RoutableIPs"))
        if bad and count:
            self.stats["routes_ignored"] += bad
            log.info("control: node %d: %d advertised route(s) ignored", node.id, bad)
        if advertised == node.advertised_routes:
            return False
        new = [r for r in advertised if r not in node.advertised_routes]
        auto = self.policy.auto_approved(node, new, self.store.users())
        changes: JSON = {"advertised_routes": advertised}
        if auto:
            approved = set(node.approved_routes) | set(auto)
            changes["approved_routes"] = [r for r in advertised if r in approved] + sorted(
                r for r in approved if r not in advertised)
            log.info("control: node %d: routes %s auto-approved by policy", node.id, auto)
        updated = self.store.update_node(node.id, **changes)
        if updated is not None:  # callers holding ``node`` see what was stored
            node.advertised_routes, node.approved_routes = updated.advertised_routes, updated.approved_routes
        return True

    def approve_routes(self, node_id: int, prefixes: list[str]) -> routes.RouteStatus:
        """Replace a node's approved routes (``RouteError`` if one is not advertised); peers are told."""
        node = self.store.node(node_id)
        if node is None:
            raise KeyError(node_id)
        routes.approve_routes(self.store, node, prefixes)
        self.notify()
        self.tailnet()  # elect now, so the status below shows the primaries the maps carry
        return self.route_status(node_id)

    def route_status(self, node_id: int) -> routes.RouteStatus:
        node = self.store.node(node_id)
        if node is None:
            raise KeyError(node_id)
        self.tailnet()
        return routes.RouteStatus(advertised=list(node.advertised_routes),
                                  approved=list(routes.route_status(self.store, node).approved),
                                  primary=routes.primary_of(node, self._primaries))

    def _dns_with_services(self) -> JSON:
        """The policy's DNS config plus each hosted service's name → VIP (20d)."""
        dns = self.policy.dns.dns_config(self.domain)
        records = self.services.dns_records(self.domain)
        if records:
            dns["ExtraRecords"] = [*dns.get("ExtraRecords", []), *records]
        return dns

    def approve(self, node_id: int) -> bool:
        node = self.store.update_node(node_id, authorized=True, auth_path="",
                                      key_expiry=self.new_key_expiry())
        self.notify()
        return node is not None

    def set_key_expiry(self, node_id: int, when: float) -> bool:
        """End (``when`` ≤ now) or renew a node's key; map streams and listeners hear of it at once."""
        node = self.store.update_node(node_id, key_expiry=when)
        self.notify()
        return node is not None

    def set_unsigned_peer_api_only(self, node_id: int, on: bool) -> bool:
        """21h: send the node with ``UnsignedPeerAPIOnly`` (or stop); every map hears of it at once."""
        if self.store.node(node_id) is None:
            return False
        (self.unsigned_peer_api_only.add if on else self.unsigned_peer_api_only.discard)(node_id)
        self.notify()
        return True

    def delete(self, node_id: int) -> bool:
        self.services.forget(node_id)  # 20d
        self.tka.forget(node_id)  # 21c
        self._hostinfo_held.pop(node_id, None)
        self._hostinfo_sent.pop(node_id, None)
        ok = self.store.delete_node(node_id)
        self.notify()
        return ok

    # -- map --------------------------------------------------------------------------------
    def _apply_map_update(self, node: Node, req: JSON, *, only_if_unset: bool) -> bool:
        """Record DiscoKey/Endpoints/Hostinfo/home DERP/routes from a MapRequest; True if anything changed."""
        changes: JSON = {}
        routes_changed = False
        disco = _nonzero_key(req.get("DiscoKey"), DiscoPublic)
        if disco and disco != node.disco_key and not (only_if_unset and node.disco_key):
            changes["disco_key"] = disco
        eps = req.get("Endpoints")
        if isinstance(eps, list) and eps and [str(e) for e in eps] != node.endpoints \
                and not (only_if_unset and node.endpoints):
            changes["endpoints"] = [str(e) for e in eps]
        hi = clean_hostinfo(req.get("Hostinfo"))
        if only_if_unset and node.hostinfo:  # routes from the Hostinfo we have (newest held one first):
            # a node authorized by an admin, or by the CLI, registered before its routes were recorded
            routes_changed = self._record_routes(node, self._hostinfo_held.get(node.id, node.hostinfo),
                                                 count=False)
        if hi and not (only_if_unset and node.hostinfo):
            routes_changed = self._record_routes(node, hi)
            net_info = hi.get("NetInfo")
            derp = net_info.get("PreferredDERP") if isinstance(net_info, dict) else None
            if isinstance(derp, int) and derp != node.home_derp:  # never held: peers need it to reach it
                changes["home_derp"] = derp
            if self._relay_hostinfo_now(node, hi):
                changes["hostinfo"] = hi
        # Services (20d): from the Hostinfo just sent (never held, as routes), else the newest known
        # one (the hosting table is in memory: a restarted localnet learns it again from either).
        svc_hi = hi or self._hostinfo_held.get(node.id, node.hostinfo)
        if svc_hi:
            routes_changed = self.services.record(node, svc_hi.get("ServicesHash")) or routes_changed
        if changes:
            self.store.update_node(node.id, **changes)
        return bool(changes) or routes_changed

    async def _serve_map(self, req: JSON, machine: str, resp: H2Response) -> None:
        self.stats["map_polls"] += 1
        nk = _nonzero_key(req.get("NodeKey"), NodePublic)
        node = self.store.node_by_key(nk) if nk else None
        if node is None or node.machine_key != machine:
            await resp.simple(403, b"unknown node key for this machine", "text/plain")
            return
        if not node.authorized:  # a pending login has no map (and wakes no stream: strangers make them)
            await resp.simple(403, b"node not authorized: finish the login first", "text/plain")
            return
        stream, omit_peers = bool(req.get("Stream")), bool(req.get("OmitPeers"))
        compress = req.get("Compress") == "zstd"
        cap = req.get("Version") or 0
        if not isinstance(cap, int):
            raise BadRequestBody("Version is not an integer")
        if self._apply_map_update(node, req, only_if_unset=stream and cap >= 68):
            self.notify()
            await self._others_caught_up(node.id, self._gen)
        if not stream:
            if omit_peers:  # lite update: the client only looks at the status
                await resp.simple(200, b"", "application/octet-stream")
                return
            full = full_map(node.id, self.tailnet(), SentState(), cap=cap)
            await resp.simple(200, map_frame(full, compress), "application/octet-stream")
            return
        # A new long poll for the same node supersedes older ones (breakSameNodeMapResponseStreams).
        for ev in self._streams.get(node.id, []):
            ev.set()
        stop = asyncio.Event()
        self._streams.setdefault(node.id, []).append(stop)
        self._online[node.id] = self._online.get(node.id, 0) + 1
        self.notify()
        try:
            await resp.start(200, {"content-type": "application/octet-stream"})
            state = SentState()
            changed, gen = self._changed, self._gen  # captured before building: no change is missed
            first = full_map(node.id, self.tailnet(), state, cap=cap)
            self.sent.setdefault(node.id, collections.deque(maxlen=64)).append(first)
            self.stats["map_frames"] += 1
            await resp.write(map_frame(first, compress))
            self._note_pushed(stop, node.id, gen)
            keepalive = map_frame({"KeepAlive": True}, compress)
            while not stop.is_set():
                waiter = asyncio.ensure_future(changed.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    done, _ = await asyncio.wait({waiter, stopper}, timeout=self.keepalive_interval,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                if stop.is_set():
                    break
                if not done:
                    self.stats["map_keepalives"] += 1
                    await resp.write(keepalive)
                    continue
                changed, gen = self._changed, self._gen
                try:
                    msg = delta(node.id, self.tailnet(), state, cap=cap)
                except KeyError:
                    break  # this node was deleted
                if msg is not None:
                    self.sent.setdefault(node.id, collections.deque(maxlen=64)).append(msg)
                    self.stats["map_frames"] += 1
                    await resp.write(map_frame(msg, compress))
                self._note_pushed(stop, node.id, gen)
            await resp.end()
        finally:
            self._note_pushed(stop, node.id, None)
            self._streams[node.id].remove(stop)
            self._online[node.id] -= 1
            if self._online[node.id] <= 0:
                del self._online[node.id]
                self.store.update_node(node.id, last_seen=time.time())
                self._spawn(self._maybe_remove_ephemeral(node.id))
            self.notify()

    async def _maybe_remove_ephemeral(self, node_id: int) -> None:
        await asyncio.sleep(self.ephemeral_grace)
        node = self.store.node(node_id)
        if node is not None and node.ephemeral and self._online.get(node_id, 0) == 0:
            log.info("removing ephemeral node %d (%s) after disconnect", node_id, node.hostname)
            self.delete(node_id)
