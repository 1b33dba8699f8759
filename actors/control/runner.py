"""ControlRunner: the node's conversation with its coordination server, as one supervised actor.

The blocking protocol (``/key``, Noise, register, the streaming map poll, reconnect with jittered
exponential backoff) runs as a generator on the actor's I/O thread and yields messages to the actor:
``SessionStatus`` at lifecycle points, ``MapStreamStarted`` then ``MapFrame`` per MapResponse. The
actor applies frames to a sans-IO ``MapSession``, publishes ``DeviceState`` and hands the peer list
to PeerTracker. Lite updates and logout run in handlers on the same Noise connection.

Lifecycle (Go's ``ipn.State`` subset): Starting → (NeedsLogin with an AuthURL | NeedsMachineAuth) →
**Running = registered + authorized + first netmap received** (the data plane will add its own
DERP-connected condition). ``auth_rejected`` (register ``Error``) and ``key_expired`` (control still
says NodeKeyExpired after a rotation, or the self node is expired) are permanent: the session stops
retrying. ``network_unreachable`` is transient: retried with backoff. A restart of this actor
(crash, fault injection) reloads keys from the store, re-registers and starts a fresh map session,
whose first full map makes PeerTracker converge to control's state.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pytsnet.actors.control.store import MACHINE_KEY, NETMAP, NODE, StateStore
from pytsnet.actors.control.transport import ControlTransportError, Noise2Client, fetch_server_key
from pytsnet.actors.dataplane.netmap import netmap_for_dataplane
from pytsnet.actors.runtime import Actor, TimerHandle, handles
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.base import Message
from pytsnet.messages.control import (
    DeviceState,
    ErrorKind,
    GetState,
    LiteUpdate,
    LiteUpdateDone,
    Logout,
    LogoutDone,
    MapFrame,
    MapStreamStarted,
    SelfExpiryTick,
    SessionStatus,
)
from pytsnet.messages.peers import ClearPeers, NetmapUpdate, PeerInfo
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import DiscoPrivate, DiscoPublic, MachinePrivate, NodePrivate, NodePublic
from pytsnet.wire.mapsession import MapSession, NetworkMap
from pytsnet.wire.tailcfg import (
    CURRENT_CAPABILITY_VERSION,
    LOGOUT_EXPIRY,
    FrameDecoder,
    Hostinfo,
    MapRequest,
    MapResponse,
    NetInfo,
    Node,
    RegisterRequest,
    RegisterResponse,
    RegisterResponseAuth,
)

log = subsystem_logger("control")

__all__ = ["ControlRunner", "RunnerConfig"]

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time``: ``Expiry`` is always sent; zero = "no particular expiry"."""
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
    hostinfo_extra: dict[str, str] = field(default_factory=dict)


class _PermanentFailure(Exception):
    def __init__(self, kind: ErrorKind, text: str) -> None:
        super().__init__(text)
        self.kind = kind


class _Unauthorized(Exception):
    """The map poll was refused (401/403): register again."""


class ControlRunner(Actor):
    def __init__(self, config: RunnerConfig, store: StateStore,
                 publish: Callable[[Message], None] | None = None) -> None:
        self.cfg = config
        self.store = store
        self.publish = publish or (lambda m: None)
        self.state = DeviceState(state="NoState")
        self.session = MapSession()
        self._stream = 0
        self._stop = threading.Event()
        self._logged_out = threading.Event()
        self._client: Noise2Client | None = None
        self._machine: MachinePrivate | None = None
        self._node: NodePrivate | None = None
        self._old_node: NodePublic | None = None
        self._logged_in = False
        self._endpoints: list[str] = []
        self._endpoint_types: list[int] = []
        self._preferred_derp = 0
        self._disco = (DiscoPublic.from_text(config.disco_public) if config.disco_public
                       else _fresh_disco())
        self._last_netmap = b""
        self._rng = random.Random()
        self._gen: Iterator[Message] | None = None
        self._self_expiry: float | None = None
        self._self_expiry_timer: TimerHandle | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def on_start(self) -> None:
        self._load_keys()
        fields = self._self_fields_from_store()
        # A restart of this actor is not a restart of the node: the data plane keeps its sessions
        # while the new incarnation reconnects, as Go's state stays Running across a map-stream
        # reconnect. Only a node that was authorized and unexpired in its last netmap resumes.
        resumed = self.incarnation > 1 and self._stored_self_usable()
        self._set_state(DeviceState(state="Running" if resumed else "Starting", **fields))
        self._gen = self._session()
        self.start_io_loop(self._io_step, self._io_close)

    def on_stop(self) -> None:
        self._stop.set()
        self._io_close()

    def _io_step(self) -> Message | None:
        assert self._gen is not None
        try:
            return next(self._gen)
        except StopIteration:
            self._stop.wait()
            return None

    def _io_close(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            client.close()

    # -- keys and persisted state ----------------------------------------------------------------
    def _load_keys(self) -> None:
        raw = self.store.read_state(MACHINE_KEY)
        if raw:
            self._machine = MachinePrivate.from_text(raw.decode())
        else:
            self._machine = MachinePrivate.generate()
            self.store.write_state(MACHINE_KEY, self._machine.to_text().encode())
        node = _json_obj(self.store.read_state(NODE))
        if node.get("NodePrivate"):
            self._node = NodePrivate.from_text(str(node["NodePrivate"]))
            old = node.get("OldNodeKey")
            self._old_node = NodePublic.from_text(str(old)) if old else None
            self._logged_in = bool(node.get("LoggedIn"))
        else:
            self._new_node_key(keep_old=False)

    def _new_node_key(self, *, keep_old: bool) -> None:
        self._old_node = self._node.public() if keep_old and self._node is not None else None
        self._node = NodePrivate.generate()
        self._logged_in = False
        self._save_node()

    def _save_node(self) -> None:
        assert self._node is not None
        doc = {"NodePrivate": self._node.to_text(), "LoggedIn": self._logged_in,
               "OldNodeKey": self._old_node.to_text() if self._old_node is not None else "",
               "ControlURL": self.cfg.control_url}
        self.store.write_state(NODE, _dumps(doc))

    def _self_fields_from_store(self) -> dict[str, object]:
        nm = _json_obj(self.store.read_state(NETMAP))
        me = nm.get("Node")
        if not isinstance(me, dict) or not self._logged_in:
            return {}
        return {"addresses": [str(a) for a in me.get("Addresses") or []], "name": str(me.get("Name") or ""),
                "node_id": int(me.get("ID") or 0)}

    def _stored_self_usable(self) -> bool:
        """Our last persisted netmap shows us logged in, machine-authorized and unexpired."""
        me = _json_obj(self.store.read_state(NETMAP)).get("Node")
        if not isinstance(me, dict) or not self._logged_in:
            return False
        try:
            info = PeerInfo.from_node(Node.model_validate(me))
        except ValueError:
            return False
        expired = info.key_expired(self.clock.time())
        return bool(me.get("MachineAuthorized")) and not expired

    # -- the blocking session (I/O thread) --------------------------------------------------------
    def _hostinfo(self) -> Hostinfo:
        net_info = NetInfo(PreferredDERP=self._preferred_derp) if self._preferred_derp else None
        return Hostinfo(Hostname=self.cfg.hostname, OS="linux", Package="tsnet", IPNVersion="pytsnet",
                        RequestTags=list(self.cfg.tags), NetInfo=net_info,
                        **self.cfg.hostinfo_extra)

    def _session(self) -> Iterator[Message]:
        failures = 0
        need_register = True
        url = self.cfg.control_url
        while not self._stop.is_set() and not self._logged_out.is_set():
            try:
                log.debug("connecting to control server %s", url)
                key = fetch_server_key(url, self.cfg.request_timeout)
                assert self._machine is not None
                self._client = client = Noise2Client(self.cfg.control_url, self._machine, key,
                                                     timeout=self.cfg.request_timeout)
                if self._stop.is_set():
                    client.close()
                    return
                log.debug("ts2021 session with %s established", url)
                if need_register:
                    yield from self._register(client)
                    need_register = False
                yield from self._map_poll(client)
                failures = 0  # a poll that ended after frames flowed: reconnect at once
            except _PermanentFailure as e:
                text = self._scrub(str(e))
                log.warning("%s (%s); not retrying", text, e.kind)
                yield SessionStatus(state="NeedsLogin", error_kind=e.kind, error=text)
                return
            except _Unauthorized as e:
                need_register = True
                failures += 1
                log.info("%s; registering again", e)
            except (ControlTransportError, WireError) as e:
                if self._stop.is_set() or self._logged_out.is_set():
                    return
                failures += 1
                # Named, so a wrong or defaulted URL shows in the error itself.
                text = self._scrub(f"control server {url} unreachable: {e}")
                if failures == 1:
                    log.warning("%s; retrying with backoff", text)
                yield SessionStatus(state="Starting", error_kind="network_unreachable", error=text)
            finally:
                if self._client is not None:
                    self._client.close()
            if failures:
                base = min(self.cfg.backoff_max, self.cfg.backoff_min * 2 ** (failures - 1))
                delay = base * self._rng.uniform(0.5, 1.0)
                log.debug("attempt %d failed; next in %.2fs", failures, delay)
                if self._stop.wait(delay):
                    return

    def _scrub(self, text: str) -> str:
        """Server-supplied text goes to the state and the log: never with our auth key in it."""
        key = self.cfg.auth_key
        return text.replace(key, "tskey-…(redacted)") if key else text

    def _register(self, client: Noise2Client) -> Iterator[Message]:
        """``doLogin``: auth key or AuthURL+Followup; NodeKeyExpired → new key with ``OldNodeKey``."""
        auth_key = "" if self._logged_in else self.cfg.auth_key
        followup = ""
        rotated = False
        while True:
            assert self._node is not None
            req = RegisterRequest(
                Version=CURRENT_CAPABILITY_VERSION, NodeKey=self._node.public(), OldNodeKey=self._old_node,
                Auth=RegisterResponseAuth(AuthKey=auth_key) if auth_key else None, Expiry=ZERO_TIME,
                Followup=followup, Hostinfo=self._hostinfo(), Ephemeral=self.cfg.ephemeral)
            timeout = self.cfg.followup_timeout if followup else self.cfg.request_timeout
            status, body = client.post_json("/machine/register", req.to_json(), timeout)
            if status != 200:
                raise ControlTransportError(f"register: HTTP {status}: {body[:200]!r}")
            resp = RegisterResponse.from_json(body)
            if resp.Error:
                kind: ErrorKind = "key_expired" if rotated else "auth_rejected"
                raise _PermanentFailure(kind, f"control refused registration: {resp.Error}")
            if resp.NodeKeyExpired:
                if rotated:
                    raise _PermanentFailure("key_expired", "node key expired and rotation was refused")
                log.info("control: node key expired; rotating")
                self._new_node_key(keep_old=True)
                rotated, followup = True, ""
                auth_key = self.cfg.auth_key
                continue
            if resp.AuthURL:
                if self.cfg.auth_key and not auth_key and not followup:
                    auth_key = self.cfg.auth_key  # persisted key unknown to control: use the auth key
                    continue
                log.info("to authenticate, visit: %s", resp.AuthURL)
                yield SessionStatus(state="NeedsLogin", auth_url=resp.AuthURL)
                followup, auth_key = resp.AuthURL, ""
                continue
            self._logged_in = True
            self._old_node = None
            self._save_node()
            log.info("logged in to %s as %s (node key %s)", self.cfg.control_url,
                     resp.Login.LoginName or "?", self._node.public().short_string())
            if not resp.MachineAuthorized:
                yield SessionStatus(state="NeedsMachineAuth")
            return

    def _map_request(self, *, stream: bool) -> MapRequest:
        assert self._node is not None
        return MapRequest(
            Version=CURRENT_CAPABILITY_VERSION, Compress="zstd", KeepAlive=True, NodeKey=self._node.public(),
            DiscoKey=self._disco, Endpoints=list(self._endpoints),
            EndpointTypes=list(self._endpoint_types), Stream=stream, OmitPeers=not stream,
            Hostinfo=self._hostinfo())

    def _map_poll(self, client: Noise2Client) -> Iterator[Message]:
        resp = client.request("/machine/map", self._map_request(stream=True).to_json())
        status = resp.wait_status(self.cfg.request_timeout)
        if status in (401, 403):
            raise _Unauthorized(f"map poll: HTTP {status}")
        if status != 200:
            raise ControlTransportError(f"map poll: HTTP {status}")
        self._stream += 1
        log.debug("map poll %d started", self._stream)
        yield MapStreamStarted(stream=self._stream)
        decoder = FrameDecoder()
        while (chunk := resp.read_chunk(WATCHDOG_TIMEOUT)) is not None:
            for payload in decoder.feed(chunk):
                yield MapFrame(stream=self._stream, payload=payload)
        raise ControlTransportError("map poll ended")

    # -- handlers (actor thread) -----------------------------------------------------------------
    @handles(SessionStatus)
    def on_session_status(self, msg: SessionStatus) -> None:
        if self._logged_out.is_set():
            return
        if msg.error_kind == "network_unreachable" and self.state.state == "Running":
            self._set_state(self.state.model_copy(update={"error_kind": msg.error_kind, "error": msg.error}))
            return
        self._set_state(self.state.model_copy(update={
            "state": msg.state, "auth_url": msg.auth_url, "error_kind": msg.error_kind, "error": msg.error}))

    @handles(MapStreamStarted)
    def on_stream_started(self, msg: MapStreamStarted) -> None:
        self._current_stream = msg.stream
        self.session = MapSession()

    @handles(MapFrame)
    def on_map_frame(self, msg: MapFrame) -> None:
        if self._logged_out.is_set() or msg.stream != getattr(self, "_current_stream", None):
            return
        try:
            nm = self.session.apply(MapResponse.from_json(msg.payload), time.time())
        except WireError as e:
            log.warning("bad map response (%s); reconnecting", e)
            self._io_reconnect()
            return
        if nm is not None:
            self._on_netmap(nm)

    def _on_netmap(self, nm: NetworkMap) -> None:
        me = nm.self_node
        info = PeerInfo.from_node(me)
        peers = self.lookup(self.cfg.peers_name)
        if peers is not None:
            peers.tell(NetmapUpdate(self_node=info, peers=[PeerInfo.from_node(p) for p in nm.peers],
                                    domain=nm.domain))
        bridge = self.lookup(self.cfg.dataplane_name) if self.cfg.dataplane_name else None
        if bridge is not None and self._node is not None:
            bridge.tell(netmap_for_dataplane(nm, self._node, self.cfg.control_url))
        self._persist_netmap(nm)
        now = self.clock.time()
        expired = info.key_expired(now)  # info.expired is me.Expired
        log.debug("netmap: %d peers, self %s", len(nm.peers), info.name)
        self._log_key_expiry(info.key_expiry, expired)
        self._arm_self_expiry(None if expired else info.key_expiry, now)
        fields = {"addresses": info.addresses, "name": info.name, "node_id": info.node_id, "auth_url": "",
                  "error": "", "error_kind": ""}
        if expired:
            fields.update(state="NeedsLogin", error_kind="key_expired", error="node key expired")
        elif me.MachineAuthorized:
            fields["state"] = "Running"
        else:
            fields["state"] = "NeedsMachineAuth"
        self._set_state(self.state.model_copy(update=fields))

    def _log_key_expiry(self, expiry: float | None, expired: bool) -> None:
        """INFO when the node key's expiry becomes known or changes; WARNING once it has passed."""
        seen = (expiry, expired)
        if seen == getattr(self, "_expiry_logged", (None, False)):
            return
        self._expiry_logged = seen
        if expired:
            log.warning("node key expired: a new login is needed")
        elif expiry is not None:
            when = datetime.fromtimestamp(expiry, UTC).isoformat(timespec="seconds")
            log.info("node key expires at %s", when)

    def _arm_self_expiry(self, when: float | None, now: float) -> None:
        """A timer for our own key's expiry, so NeedsLogin/key_expired comes even with no map frame."""
        if when == self._self_expiry and self._self_expiry_timer is not None:
            return
        if self._self_expiry_timer is not None:
            self._self_expiry_timer.cancel()
        self._self_expiry, self._self_expiry_timer = when, None
        if when is not None and when > now:
            self._self_expiry_timer = self.send_after(when - now, SelfExpiryTick(at=when))

    @handles(SelfExpiryTick)
    def on_self_expiry(self, msg: SelfExpiryTick) -> None:
        self._self_expiry_timer = None
        if self._logged_out.is_set() or msg.at != self._self_expiry or self.state.state != "Running":
            return
        now = self.clock.time()
        if msg.at > now:  # the monotonic timer ran ahead of the wall clock: look again then
            self._arm_self_expiry(msg.at, now)
            return
        self._log_key_expiry(msg.at, True)
        self._set_state(self.state.model_copy(update={
            "state": "NeedsLogin", "error_kind": "key_expired", "error": "node key expired"}))

    def _persist_netmap(self, nm: NetworkMap) -> None:
        doc = {"Node": nm.self_node.model_dump(mode="json", by_alias=True), "Domain": nm.domain,
               "DERPMap": nm.derp_map.model_dump(mode="json", by_alias=True) if nm.derp_map else None}
        blob = _dumps(doc)
        if blob != self._last_netmap:
            self._last_netmap = blob
            self.store.write_state(NETMAP, blob)

    def _io_reconnect(self) -> None:
        client = self._client
        if client is not None:
            client.close()

    @handles(GetState)
    def on_get_state(self, msg: GetState) -> DeviceState:
        return self.state

    @handles(LiteUpdate)
    def on_lite_update(self, msg: LiteUpdate) -> LiteUpdateDone:
        """Endpoints/disco/Hostinfo to control on the current connection (also used by future polls);
        the outcome also goes to ``reply_to``, if named."""
        done = self._lite_update(msg)
        if msg.reply_to:
            self.tell_named(msg.reply_to, done)
        return done

    def _lite_update(self, msg: LiteUpdate) -> LiteUpdateDone:
        self._endpoints, self._endpoint_types = list(msg.endpoints), list(msg.endpoint_types)
        if msg.preferred_derp:
            self._preferred_derp = msg.preferred_derp
        if msg.disco_key:
            self._disco = DiscoPublic.from_text(msg.disco_key)
        client = self._client
        if client is None or client.closed or not self._logged_in:
            return LiteUpdateDone(ok=False)
        try:
            status, _ = client.post_json("/machine/map", self._map_request(stream=False).to_json(),
                                         self.cfg.request_timeout)
        except ControlTransportError:
            return LiteUpdateDone(ok=False)
        return LiteUpdateDone(ok=status == 200, status=status)

    @handles(Logout)
    def on_logout(self, msg: Logout) -> LogoutDone:
        """RegisterRequest with ``Expiry = time.Unix(123, 0)``, then forget the node (``TryLogout``)."""
        self._logged_out.set()
        self._io_reconnect()
        error = ""
        try:
            assert self._machine is not None and self._node is not None
            key = fetch_server_key(self.cfg.control_url, self.cfg.request_timeout)
            client = Noise2Client(self.cfg.control_url, self._machine, key, timeout=self.cfg.request_timeout)
            try:
                req = RegisterRequest(Version=CURRENT_CAPABILITY_VERSION, NodeKey=self._node.public(),
                                      Expiry=LOGOUT_EXPIRY, Hostinfo=self._hostinfo())
                status, body = client.post_json("/machine/register", req.to_json(), self.cfg.request_timeout)
                if status != 200:
                    error = f"logout: HTTP {status}"
                elif (resp := RegisterResponse.from_json(body)).Error:
                    error = f"logout refused: {resp.Error}"
            finally:
                client.close()
        except (ControlTransportError, WireError) as e:
            error = f"logout: {e}"
        self.store.write_state(NODE, b"")
        self.store.write_state(NETMAP, b"")
        self._new_node_key(keep_old=False)
        peers = self.lookup(self.cfg.peers_name)
        if peers is not None:
            peers.tell(ClearPeers())
        self._set_state(DeviceState(state="NeedsLogin", error=error))
        return LogoutDone(ok=not error, error=error)

    def _set_state(self, new: DeviceState) -> None:
        if new != self.state:
            if new.state != self.state.state:
                log.debug("control state %s -> %s", self.state.state, new.state)
            self.state = new
            self.publish(new)


def _fresh_disco() -> DiscoPublic:
    return DiscoPrivate.generate().public()


def _dumps(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


def _json_obj(raw: bytes | None) -> dict[str, object]:
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
