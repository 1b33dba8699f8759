"""The control client's login/register/map-poll logic as a sans-IO state machine.

Go's ``controlclient`` (``auto.go`` routines over ``direct.go``) without threads: events in
(``handle(event, now)``), actions out. Connect → register (auth key, or AuthURL + ``Followup``
long poll, or a wait for machine approval) → streaming map poll → on any failure close, back off
(``backoff_min·2ⁿ⁻¹`` capped at ``backoff_max``, times a jitter in [0.5, 1)) and connect again. As in
Go, registration and the map poll keep separate backoff counts: a successful login resets the
first, a netmap the second (``mapRoutineState.UpdateFullNetmap``), and a login URL that does not
change is asked again only after a backoff. Register ``NodeKeyExpired`` rotates the node key once
(``OldNodeKey``); a register ``Error`` or a refused rotation is permanent (no more retries). A 401/403
on the map poll means control forgot us: register again. Our own ``KeyExpiry`` arms a wake-up, so
``NeedsLogin``/``key_expired`` comes even if no frame says so. Logout is a register with
``Expiry = time.Unix(123, 0)`` on a fresh connection, then a new node key.

The machine owns all login state (node key, logged-in flag, auth URL, backoff, expiry, the
current map session); it reads no clock (``now`` comes with every event) and draws jitter from
the injected ``random.Random``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from pytsnet.wire.control.actions import (
    Action,
    ClearPeers,
    CloseConnection,
    Connect,
    LiteUpdateFinished,
    LoginStatus,
    LogoutFinished,
    Note,
    OpenMapPoll,
    PersistNetmap,
    PersistNode,
    PublishNetmap,
    PublishStatus,
    SendLiteUpdate,
    SendRegister,
    StatusKind,
    WakeAt,
)
from pytsnet.wire.control.events import (
    Connected,
    Event,
    LiteUpdateAnswered,
    LiteUpdateAsked,
    LogoutAsked,
    MapFrameReceived,
    MapPollAnswered,
    MapPollEnded,
    RegisterAnswered,
    Tick,
    TkaHeadAdopted,
)
from pytsnet.wire.control.expiry import key_expired, node_key_expiry
from pytsnet.wire.control.record import NodeRecord, netmap_blob, stored_self_node
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import DiscoPrivate, DiscoPublic, NLPrivate, NodePrivate, NodePublic
from pytsnet.wire.mapsession import MapSession, NetworkMap
from pytsnet.wire.tailcfg import (
    CURRENT_CAPABILITY_VERSION,
    LOGOUT_EXPIRY,
    Hostinfo,
    MapRequest,
    MapResponse,
    NetInfo,
    Node,
    RegisterRequest,
    RegisterResponse,
    RegisterResponseAuth,
)
from pytsnet.wire.tka import (
    NodeKeySignature,
    TkaError,
    decode_wrapped_authkey,
    resign_nks,
    sign_by_credential,
)

__all__ = ["LoginConfig", "LoginMachine", "Phase"]

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time``: ``Expiry`` is always sent; zero = "no particular expiry"."""


class Phase(enum.Enum):
    IDLE = "idle"  # not started
    BACKOFF = "backoff"  # waiting for ``retry_at`` before connecting again
    CONNECTING = "connecting"
    REGISTERING = "registering"  # a register request is in flight
    LOGIN_WAIT = "login_wait"  # control repeated the same AuthURL: ask again after a backoff
    POLL_OPENING = "poll_opening"  # the streaming map request awaits its headers
    STREAMING = "streaming"
    STOPPED = "stopped"  # a permanent failure: no more attempts
    LOGGING_OUT = "logging_out"
    LOGGED_OUT = "logged_out"


@dataclass(frozen=True)
class LoginConfig:
    control_url: str
    hostinfo: Hostinfo
    """Ours without ``NetInfo`` (the machine adds the home region lite updates tell it)."""
    auth_key: str = field(default="", repr=False)  # a credential: never in a repr
    ephemeral: bool = False
    disco: DiscoPublic | None = None
    """The data plane's disco key; a fresh one if None (Go's is per process too)."""
    backoff_min: float = 0.25
    backoff_max: float = 30.0
    request_timeout: float = 10.0
    followup_timeout: float = 3600.0
    force_login: bool = False
    """Log in again at start even with a stored login (tsnet's ``TSNET_FORCE_LOGIN``): a new node key
    replacing the stored one, registered with ``auth_key`` (Go: ``LoginInteractive`` ⇒ ``regen``)."""
    ipv6: bool = False
    """``Config.ipv6``: False drops the IPv6 addresses control gives our own node from every netmap
    and status published (the data plane, DNS and routes then see an IPv4-only node)."""


def ipv4_only(node: Node) -> Node:
    """``node`` without its IPv6 ``Addresses``/``AllowedIPs`` (what an IPv6-off node keeps of itself)."""
    def v4(prefixes: list[str]) -> list[str]:
        return [p for p in prefixes if ":" not in p]
    allowed = None if node.AllowedIPs is None else v4(node.AllowedIPs)
    return node.model_copy(update={"Addresses": v4(node.Addresses), "AllowedIPs": allowed})


def _self_expired(node: Node, now: float) -> bool:
    return key_expired(node.Expired, node_key_expiry(node), now)


class _Permanent(Exception):
    def __init__(self, kind: StatusKind, text: str) -> None:
        super().__init__(text)
        self.kind = kind


class _Retry(Exception):
    """This attempt failed; close, back off and try again."""

    def __init__(self, kind: StatusKind, text: str, status: int = 0, *, reregister: bool = False) -> None:
        super().__init__(text)
        self.kind, self.status, self.reregister = kind, status, reregister


@dataclass
class _Backoff:
    failures: int = 0


class LoginMachine:
    """One node's conversation with control, minus the I/O. Not thread-safe: one owner."""

    def __init__(self, cfg: LoginConfig, *, rng: random.Random | None = None,
                 new_node_key: Callable[[], NodePrivate] = NodePrivate.generate,
                 new_nl_key: Callable[[], NLPrivate] = NLPrivate.generate,
                 first_number: int = 0) -> None:
        """``first_number``: connections and polls are numbered after it, so a driver that outlives a
        machine (a restarted actor whose old I/O thread still reports) can tell their results apart."""
        self.cfg = cfg
        self._rng = rng or random.Random()
        self._new_key = new_node_key
        self._new_nl = new_nl_key
        self.phase = Phase.IDLE
        self.status = LoginStatus()
        self._record = NodeRecord(new_node_key())
        self._disco = cfg.disco or DiscoPrivate.generate().public()
        self._endpoints: tuple[str, ...] = ()
        self._services_hash = ""  # 20d: Hostinfo.ServicesHash of the services we host
        self._ingress = (False, False)  # 20g: Hostinfo.IngressEnabled, WireIngress (serve's Funnel)
        self._endpoint_types: tuple[int, ...] = ()
        self._preferred_derp = 0
        self._net_info: NetInfo | None = None  # the netcheck's findings (PreferredDERP: the field above)
        self.conn = first_number
        self.stream = first_number
        self._need_register = True
        self._auth_bo, self._map_bo = _Backoff(), _Backoff()
        self.retry_at: float | None = None
        # the register exchange in progress
        self._auth_key = ""
        # 21d: a wrapped (pre-signed) auth key, Go's ``<authkey>--TL<sig>-<priv>``: control gets the
        # plain key; the credential signs each node key we register (Go ``tka.SignByCredential``).
        self._plain_auth, _, self._credential, self._credential_priv = (
            decode_wrapped_authkey(cfg.auth_key) if cfg.auth_key else ("", False, None, None))
        self._followup = ""
        self._rotated = False
        self._nks: bytes | None = None
        self._resigned = False
        """21d: the re-signed node-key signature the next register carries (Go ``NodeKeySignature``)."""
        self._tka_head = ""
        """21d: the head the TKA actor last adopted (``MapRequest.TKAHead``)."""
        self.session = MapSession()
        self._last_netmap = b""
        self.self_expiry: float | None = None
        self._expiry_logged: tuple[float | None, bool] = (None, False)
        self._lite: set[int] = set()
        self._logout_tokens: list[int] = []

    # -- read-only views (for the driver and tests) ---------------------------------------------
    @property
    def node(self) -> NodePrivate:
        return self._record.node

    @property
    def nl_key(self) -> NLPrivate:
        """This node's Tailnet Lock key (Go ``persist.NetworkLockKey``), made once and persisted."""
        if self._record.nl is None:
            self._record = replace(self._record, nl=self._new_nl())
        return self._record.nl  # type: ignore[return-value]  # set just above

    @property
    def tka_head(self) -> str:
        return self._tka_head

    @property
    def logged_in(self) -> bool:
        return self._record.logged_in

    @property
    def session_up(self) -> bool:
        """Logged in, Running, with the map stream open on ``conn``: a request made for the node
        (an ID token) can go to control now (Go's LocalAPI asks for a netmap first)."""
        return self.logged_in and self.phase is Phase.STREAMING and self.status.state == "Running"

    @property
    def failures(self) -> int:
        return self._auth_bo.failures + self._map_bo.failures

    # -- start ----------------------------------------------------------------------------------
    def start(self, now: float, *, stored_node: bytes | None, stored_netmap: bytes | None,
              restarted: bool) -> list[Action]:
        """Begin from the stored records. A restart of the actor is not a restart of the node: a node
        logged in, machine-authorized and unexpired in its last netmap stays Running while it
        reconnects (Go's state stays Running across a map-stream reconnect)."""
        out: list[Action] = []
        record = NodeRecord.from_blob(stored_node)
        if record is None:
            out.append(self._set_record(NodeRecord(self._new_key(), nl=self._new_nl())))
        else:
            self._record = record
            if record.nl is None:  # 21d: a record from before Tailnet Lock gets its key now (Go doLogin)
                out.append(self._set_record(replace(record, nl=self._new_nl())))
            if self.cfg.force_login and not restarted and record.logged_in:
                out.append(Note("info", "forced login (TSNET_FORCE_LOGIN): registering a new node key"))
                out.append(self._set_record(self._keyed(self._new_key(), record.node.public())))
        me = stored_self_node(stored_netmap) if self._record.logged_in else None
        if me is not None and not self.cfg.ipv6:  # 24d
            me = ipv4_only(me)
        fields: dict[str, object] = {}
        if me is not None:
            fields = {"addresses": tuple(me.Addresses), "name": me.Name, "node_id": me.ID}
        resumed = restarted and me is not None and me.MachineAuthorized and not _self_expired(me, now)
        self._publish(out, LoginStatus(state="Running" if resumed else "Starting", **fields))  # type: ignore[arg-type]
        self._connect(out)
        return out

    # -- events -----------------------------------------------------------------------------------
    def handle(self, event: Event, now: float) -> list[Action]:
        out: list[Action] = []
        try:
            match event:
                case Connected():
                    self._on_connected(event, now, out)
                case RegisterAnswered():
                    self._on_register(event, now, out)
                case MapPollAnswered():
                    self._on_poll_answer(event, out)
                case MapFrameReceived():
                    self._on_frame(event, now, out)
                case MapPollEnded():
                    if event.stream == self.stream and self.phase in (Phase.POLL_OPENING, Phase.STREAMING):
                        raise self._unreachable(event.error)
                case LiteUpdateAsked():
                    self._on_lite_update(event, out)
                case LiteUpdateAnswered():
                    if event.token in self._lite:
                        self._lite.discard(event.token)
                        out.append(LiteUpdateFinished(event.token, not event.error and event.status == 200,
                                                      event.status))
                case LogoutAsked():
                    self._on_logout(event, out)
                case Tick():
                    self._on_tick(event.at, now, out)
                case TkaHeadAdopted():
                    self._on_tka_head(event, out)
        except _Retry as e:
            self._retry(e, now, out)
        except _Permanent as e:
            text = self._scrub(str(e))
            out.append(CloseConnection())
            out.append(Note("warning", f"{text} ({e.kind}); not retrying"))
            self.phase = Phase.STOPPED
            self._publish(out, replace(self.status, state="NeedsLogin", auth_url="", error_kind=e.kind,
                                       error=text, http_status=0))
        return out

    def _on_connected(self, ev: Connected, now: float, out: list[Action]) -> None:
        if ev.conn != self.conn:
            return
        if self.phase is Phase.LOGGING_OUT:
            if ev.error:
                self._finish_logout(f"logout: {ev.error}", out)
                return
            req = RegisterRequest(Version=CURRENT_CAPABILITY_VERSION, NodeKey=self.node.public(),
                                  NLKey=self.nl_key.public(), Expiry=LOGOUT_EXPIRY, Hostinfo=self._hostinfo())
            out.append(SendRegister(self.conn, req, self.cfg.request_timeout))
            return
        if self.phase is not Phase.CONNECTING:
            return
        if ev.error:
            raise self._unreachable(ev.error)
        out.append(Note("debug", f"ts2021 session with {self.cfg.control_url} established"))
        if self._need_register:
            self._auth_key = "" if self.logged_in else self.cfg.auth_key
            self._followup, self._rotated, self._resigned, self._nks = "", False, False, None
            self._send_register(out)
        else:
            self._open_poll(out)

    # -- register (Go's doLogin) -------------------------------------------------------------------
    def _send_register(self, out: list[Action]) -> None:
        self.phase = Phase.REGISTERING
        req = RegisterRequest(
            Version=CURRENT_CAPABILITY_VERSION, NodeKey=self.node.public(), OldNodeKey=self._record.old_node,
            NLKey=self.nl_key.public(),
            Auth=RegisterResponseAuth(AuthKey=self._plain_auth) if self._auth_key else None, Expiry=ZERO_TIME,
            Followup=self._followup, Hostinfo=self._hostinfo(), Ephemeral=self.cfg.ephemeral,
            NodeKeySignature=self._signature_b64())
        timeout = self.cfg.followup_timeout if self._followup else self.cfg.request_timeout
        out.append(SendRegister(self.conn, req, timeout))

    def _on_register(self, ev: RegisterAnswered, now: float, out: list[Action]) -> None:
        if ev.conn != self.conn:
            return
        if self.phase is Phase.LOGGING_OUT:
            self._finish_logout(self._logout_error(ev), out)
            return
        if self.phase is not Phase.REGISTERING:
            return
        if ev.error:
            raise self._unreachable(ev.error)
        if ev.status != 200:
            raise _Retry("server_error", f"register: HTTP {ev.status}: {ev.body[:200]!r}", ev.status)
        try:
            resp = RegisterResponse.from_json(ev.body)
        except WireError as e:
            raise _Retry("server_error", f"register: bad response: {e}", ev.status) from None
        if resp.Error:
            kind: StatusKind = "key_expired" if self._rotated else "auth_rejected"
            raise _Permanent(kind, f"control refused registration: {resp.Error}")
        if resp.NodeKeySignature:
            self._resign(resp.NodeKeySignature, out)
            return
        if resp.NodeKeyExpired:
            if self._rotated:
                raise _Permanent("key_expired", "node key expired and rotation was refused")
            out.append(Note("info", "control: node key expired; rotating"))
            out.append(self._set_record(self._keyed(self._new_key(), self.node.public())))
            self._rotated, self._followup, self._auth_key = True, "", self.cfg.auth_key
            self._send_register(out)
            return
        if resp.AuthURL:
            if self.cfg.auth_key and not self._auth_key and not self._followup:
                self._auth_key = self.cfg.auth_key  # persisted key unknown to control: use the auth key
                self._send_register(out)
                return
            same = resp.AuthURL == self._followup
            self._followup, self._auth_key = resp.AuthURL, ""
            if not same:
                out.append(Note("info", f"to authenticate, visit: {resp.AuthURL}"))
                self._publish(out, replace(self.status, state="NeedsLogin", auth_url=resp.AuthURL,
                                           error_kind="", error="", http_status=0))
                self._auth_bo.failures = 0
                self._send_register(out)
                return
            # Go: "the server sent us the same URL we already tried": back off to avoid a busy loop.
            self.phase = Phase.LOGIN_WAIT
            self._schedule(self._auth_bo, now, out)
            return
        self._auth_bo.failures = 0
        self._need_register = False
        self._nks = None
        out.append(self._set_record(self._keyed(self.node, None, logged_in=True)))
        out.append(Note("info", f"logged in to {self.cfg.control_url} as {resp.Login.LoginName or '?'} "
                                f"(node key {self.node.public().short_string()})"))
        if not resp.MachineAuthorized:
            self._publish(out, replace(self.status, state="NeedsMachineAuth", auth_url="", error_kind="",
                                       error="", http_status=0))
        self._open_poll(out)

    def _signature_b64(self) -> str | None:
        """The register's ``NodeKeySignature``: the re-signed one on a rotation control asked for, else
        one made from a wrapped auth key's credential (Go ``doLogin``), else none."""
        nks = self._nks
        if nks is None and self._credential is not None and self._credential_priv is not None:
            try:
                nks = sign_by_credential(self._credential_priv, self._credential, self.node.public())
            except TkaError as e:  # Go fails the login; a bad credential does not heal: not retried
                raise _Permanent("auth_rejected", f"wrapped auth key: {e}") from None
        return base64.b64encode(nks).decode() if nks else None

    def _resign(self, old_sig_b64: str, out: list[Action]) -> None:
        """Control sent our old node-key signature: rotate the node key and register again with the
        signature re-signed by our lock key (Go ``doLogin`` → ``mustRegen`` → ``tka.ResignNKS``). If it
        cannot be re-signed the register goes without one, as Go ("Failed re-signing node-key signature")."""
        if self._resigned:
            raise _Retry("server_error", "control asked for a re-signed node key twice in one login")
        new = self._new_key()
        # The key control knows: while a rotation is pending (force login, NodeKeyExpired) that is the
        # record's old key, not the one just tried (Go: the persist is not updated by a failed try).
        old = self._record.old_node or self.node.public()
        try:
            old_sig = base64.b64decode(old_sig_b64, validate=True)
            wrapping = NodeKeySignature.unserialize(old_sig).wrapping_public()
            if wrapping != self.nl_key.public().raw:
                # Go re-signs anyway and control refuses it; a signature only our key could carry on
                # is worth sending, so without our rotation key in it the register goes unsigned.
                raise TkaError("it was not made with this node's lock key as rotation key")
            self._nks = resign_nks(self.nl_key, new.public(), old_sig)
        except (binascii.Error, ValueError, TkaError) as e:
            self._nks = None
            out.append(Note("warning", f"failed re-signing node-key signature: {e}"))
        out.append(Note("info", "control: rotating the node key with a re-signed node-key signature"))
        out.append(self._set_record(self._keyed(new, old)))
        self._rotated, self._resigned, self._followup, self._auth_key = True, True, "", self.cfg.auth_key
        self._send_register(out)

    # -- the map poll -------------------------------------------------------------------------------
    def _map_request(self, *, stream: bool) -> MapRequest:
        return MapRequest(
            Version=CURRENT_CAPABILITY_VERSION, Compress="zstd", KeepAlive=True, NodeKey=self.node.public(),
            DiscoKey=self._disco, Endpoints=list(self._endpoints), EndpointTypes=list(self._endpoint_types),
            Stream=stream, OmitPeers=not stream, Hostinfo=self._hostinfo(), TKAHead=self._tka_head)

    def _open_poll(self, out: list[Action]) -> None:
        self.stream += 1
        self.phase = Phase.POLL_OPENING
        out.append(OpenMapPoll(self.conn, self.stream, self._map_request(stream=True)))

    def _on_poll_answer(self, ev: MapPollAnswered, out: list[Action]) -> None:
        if ev.stream != self.stream or self.phase is not Phase.POLL_OPENING:
            return
        if ev.status in (401, 403):
            raise _Retry("server_error", f"map poll: HTTP {ev.status}; registering again", ev.status,
                         reregister=True)
        if ev.status != 200:
            raise _Retry("server_error", f"map poll: HTTP {ev.status}", ev.status)
        self.phase = Phase.STREAMING
        self.session = MapSession()  # Go makes a new mapSession per poll
        out.append(Note("debug", f"map poll {self.stream} started"))

    def _on_frame(self, ev: MapFrameReceived, now: float, out: list[Action]) -> None:
        if ev.stream != self.stream or self.phase is not Phase.STREAMING:
            return
        try:
            nm = self.session.apply(MapResponse.from_json(ev.payload), now)
        except WireError as e:
            out.append(Note("warning", f"bad map response ({e}); reconnecting"))
            raise _Retry("server_error", f"bad map response from control: {e}") from None
        if nm is not None:
            self._on_netmap(nm, now, out)

    def _on_netmap(self, nm: NetworkMap, now: float, out: list[Action]) -> None:
        self._map_bo.failures = 0  # Go: "Reset the backoff timer if we got a netmap."
        blob = netmap_blob(nm)  # control's netmap as it came (IPv6 included), for the store
        if not self.cfg.ipv6:  # 24d: Config.ipv6 off: our node has no IPv6 address
            nm = replace(nm, self_node=ipv4_only(nm.self_node))
        out.append(PublishNetmap(nm, self.node))
        if blob != self._last_netmap:
            self._last_netmap = blob
            out.append(PersistNetmap(blob))
        me = nm.self_node
        expiry = node_key_expiry(me)
        expired = _self_expired(me, now)
        out.append(Note("debug", f"netmap: {len(nm.peers)} peers, self {me.Name}"))
        self._note_expiry(expiry, expired, out)
        self._arm_expiry(None if expired else expiry, now, out)
        new = replace(self.status, addresses=tuple(me.Addresses), name=me.Name, node_id=me.ID, auth_url="",
                      error="", error_kind="", http_status=0)
        if expired:
            new = replace(new, state="NeedsLogin", error_kind="key_expired", error="node key expired")
        else:
            new = replace(new, state="Running" if me.MachineAuthorized else "NeedsMachineAuth")
        self._publish(out, new)

    # -- our own key's expiry ------------------------------------------------------------------------
    def _note_expiry(self, expiry: float | None, expired: bool, out: list[Action]) -> None:
        """INFO when the node key's expiry becomes known or changes; WARNING once it has passed."""
        if (expiry, expired) == self._expiry_logged:
            return
        self._expiry_logged = (expiry, expired)
        if expired:
            out.append(Note("warning", "node key expired: a new login is needed"))
        elif expiry is not None:
            when = datetime.fromtimestamp(expiry, UTC).isoformat(timespec="seconds")
            out.append(Note("info", f"node key expires at {when}"))

    def _arm_expiry(self, when: float | None, now: float, out: list[Action]) -> None:
        if when == self.self_expiry:
            return
        self.self_expiry = when
        if when is not None and when > now:
            out.append(WakeAt(when))

    def _on_tick(self, at: float, now: float, out: list[Action]) -> None:
        if at > now:  # the timer ran ahead of the wall clock: look again then, if still waiting
            if at in (self.retry_at, self.self_expiry):
                out.append(WakeAt(at))
            return
        if self.phase is Phase.BACKOFF and self.retry_at is not None and self.retry_at <= now:
            self.retry_at = None
            self._connect(out)
        elif self.phase is Phase.LOGIN_WAIT and self.retry_at is not None and self.retry_at <= now:
            self.retry_at = None
            self._send_register(out)
        expiry = self.self_expiry
        if (expiry is not None and expiry <= now and self.status.state == "Running"
                and self.phase not in (Phase.LOGGING_OUT, Phase.LOGGED_OUT)):
            self._note_expiry(expiry, True, out)
            self._publish(out, replace(self.status, state="NeedsLogin", error_kind="key_expired",
                                       error="node key expired"))

    # -- failures -----------------------------------------------------------------------------------
    def _retry(self, e: _Retry, now: float, out: list[Action]) -> None:
        if e.reregister:
            self._need_register = True
        bo = self._auth_bo if self._need_register else self._map_bo
        text = self._scrub(str(e))
        out.append(CloseConnection())
        out.append(Note("warning" if self.failures == 0 else "debug",
                        f"{text}; {'registering again' if e.reregister else 'retrying with backoff'}"))
        self._schedule(bo, now, out)
        self.phase = Phase.BACKOFF
        fields = {"error_kind": e.kind, "error": text, "http_status": e.status}
        if self.status.state == "Running":  # the data plane keeps working meanwhile
            self._publish(out, replace(self.status, **fields))  # type: ignore[arg-type]
        else:
            self._publish(out, replace(self.status, state="Starting", auth_url="", **fields))  # type: ignore[arg-type]

    def _unreachable(self, error: str) -> _Retry:
        # Named, so a wrong or defaulted URL shows in the error itself.
        return _Retry("network_unreachable", f"control server {self.cfg.control_url} unreachable: {error}")

    def _schedule(self, bo: _Backoff, now: float, out: list[Action]) -> None:
        bo.failures += 1
        base = min(self.cfg.backoff_max, self.cfg.backoff_min * 2 ** (bo.failures - 1))
        delay = base * self._rng.uniform(0.5, 1.0)
        out.append(Note("debug", f"attempt {bo.failures} failed; next in {delay:.2f}s"))
        self.retry_at = now + delay
        out.append(WakeAt(self.retry_at))

    def _connect(self, out: list[Action]) -> None:
        self.conn += 1
        self.phase = Phase.CONNECTING
        out.append(Note("debug", f"connecting to control server {self.cfg.control_url}"))
        out.append(Connect(self.conn))

    # -- lite updates and logout ------------------------------------------------------------------
    def _on_lite_update(self, ev: LiteUpdateAsked, out: list[Action]) -> None:
        """Endpoints/disco/home region for control now (if a connection is up) and for later polls."""
        if ev.services_hash is not None:  # services (20d): the hash alone, endpoints unchanged
            self._services_hash = ev.services_hash
        elif ev.ingress is not None:  # 20g: the Funnel flags alone, endpoints unchanged
            self._ingress = ev.ingress
        else:
            self._endpoints, self._endpoint_types = ev.endpoints, ev.endpoint_types
        if ev.preferred_derp:
            self._preferred_derp = ev.preferred_derp
        if ev.net_info is not None:
            self._net_info = ev.net_info
        if ev.disco_key:
            self._disco = DiscoPublic.from_text(ev.disco_key)
        if (self.phase not in (Phase.POLL_OPENING, Phase.STREAMING) or not self.logged_in
                or self.status.error_kind == "key_expired"):
            # an expired node key says nothing to control until a new login (as Go's client, whose
            # endpoints stay put): what changed goes out with the next poll
            out.append(LiteUpdateFinished(ev.token, False))
            return
        self._lite.add(ev.token)
        req = self._map_request(stream=False)
        out.append(SendLiteUpdate(self.conn, ev.token, req, self.cfg.request_timeout))

    def _on_tka_head(self, ev: TkaHeadAdopted, out: list[Action]) -> None:
        """Carry the adopted head in map requests; tell control now if it changed and a poll is open."""
        changed = ev.head != self._tka_head
        self._tka_head = ev.head
        if not changed or self.phase not in (Phase.POLL_OPENING, Phase.STREAMING) or not self.logged_in:
            out.append(LiteUpdateFinished(ev.token, False))
            return
        out.append(Note("info", f"tkaHead: {ev.head or '(none)'}"))
        self._lite.add(ev.token)
        out.append(SendLiteUpdate(self.conn, ev.token, self._map_request(stream=False),
                                  self.cfg.request_timeout))

    def _on_logout(self, ev: LogoutAsked, out: list[Action]) -> None:
        self._logout_tokens.append(ev.token)
        if self.phase is Phase.LOGGING_OUT:
            return
        out.append(CloseConnection())
        for token in sorted(self._lite):  # their connection is gone
            out.append(LiteUpdateFinished(token, False))
        self._lite.clear()
        self.retry_at = None
        self.conn += 1
        self.phase = Phase.LOGGING_OUT
        out.append(Connect(self.conn))

    def _logout_error(self, ev: RegisterAnswered) -> str:
        if ev.error:
            return f"logout: {ev.error}"
        if ev.status != 200:
            return f"logout: HTTP {ev.status}"
        try:
            resp = RegisterResponse.from_json(ev.body)
        except WireError as e:
            return f"logout: {e}"
        return f"logout refused: {resp.Error}" if resp.Error else ""

    def _finish_logout(self, error: str, out: list[Action]) -> None:
        """Forget the node whatever control said (Go's ``TryLogout`` then a fresh key)."""
        error = self._scrub(error)
        out.append(CloseConnection())
        self.phase = Phase.LOGGED_OUT
        self._last_netmap = b""
        self.self_expiry = None
        self._need_register = True
        out.append(PersistNetmap(b""))
        out.append(self._set_record(self._keyed(self._new_key())))
        out.append(ClearPeers())
        self._publish(out, LoginStatus(state="NeedsLogin", error=error))
        tokens, self._logout_tokens = tuple(self._logout_tokens), []
        out.append(LogoutFinished(tokens, not error, error))

    # -- helpers ----------------------------------------------------------------------------------
    def _hostinfo(self) -> Hostinfo:
        hi = self.cfg.hostinfo
        if self._services_hash:  # services (20d): Go's Hostinfo.ServicesHash
            hi = hi.model_copy(update={"ServicesHash": self._services_hash})
        if any(self._ingress):  # 20g: Go's hasIngressEnabledLocked / shouldWireInactiveIngressLocked
            hi = hi.model_copy(update={"IngressEnabled": self._ingress[0], "WireIngress": self._ingress[1]})
        if not self._preferred_derp and self._net_info is None:
            return hi
        ni = (self._net_info or NetInfo()).model_copy(update={"PreferredDERP": self._preferred_derp})
        return hi.model_copy(update={"NetInfo": ni})

    def _keyed(self, node: NodePrivate, old: NodePublic | None = None, *,
               logged_in: bool = False) -> NodeRecord:
        """A record for ``node`` keeping this node's lock key (it survives rotations and logouts)."""
        return NodeRecord(node, old, logged_in, self.nl_key)

    def _set_record(self, record: NodeRecord) -> PersistNode:
        self._record = record
        return PersistNode(record.to_blob(self.cfg.control_url))

    def _publish(self, out: list[Action], new: LoginStatus) -> None:
        if new != self.status:
            self.status = new
            out.append(PublishStatus(new))

    def _scrub(self, text: str) -> str:
        """Server-supplied text goes to the state and the log: never with our auth key in it."""
        for key in (self.cfg.auth_key, self._plain_auth):
            text = text.replace(key, "tskey-…(redacted)") if key else text
        return text
