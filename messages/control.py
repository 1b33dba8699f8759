"""Messages of the control side (ControlRunner) and the device lifecycle state it publishes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pytsnet.messages.base import Message, Request
from pytsnet.messages.redact import Payload

TokenBody = Annotated[Payload, Field(repr=False)]
"""Control's answer to an ID-token request: it holds a bearer token, so never in a repr or a trace."""

StateName = Literal["NoState", "Starting", "NeedsLogin", "NeedsMachineAuth", "Running", "Stopped"]
"""Go's ``ipn.State`` subset. ``Running`` here = registered, authorized and a first netmap received
(the data plane adds its own DERP-connected condition later)."""

ErrorKind = Literal["", "auth_rejected", "key_expired", "network_unreachable"]


class DeviceState(Message, tag="control.device_state"):
    """The node's lifecycle as the facade shows it; published on every change."""

    state: StateName = "NoState"
    auth_url: str = ""
    """Set while ``NeedsLogin``: the URL a human must visit."""
    error_kind: ErrorKind = ""
    """``auth_rejected``/``key_expired`` are permanent; ``network_unreachable`` is being retried."""
    error: str = ""
    addresses: list[str] = []
    name: str = ""
    node_id: int = 0


# -- from the ControlRunner's I/O threads to itself (results of the login machine's requests) -----
class IoConnected(Message, tag="control.io_connected"):
    """``Connect(conn)`` finished: the ts2021 connection is up (``error`` empty) or failed."""

    conn: int
    error: str = ""


class IoRegisterAnswer(Message, tag="control.io_register_answer"):
    """A register (or logout) request on connection ``conn`` got ``status``/``body``, or ``error``."""

    conn: int
    status: int = 0
    body: bytes = b""
    error: str = ""


class IoMapPollStatus(Message, tag="control.io_map_poll_status"):
    """Long poll number ``stream`` got its response headers."""

    stream: int
    status: int


class MapFrame(Message, tag="control.map_frame"):
    """One decompressed MapResponse JSON of long poll number ``stream``."""

    stream: int
    payload: bytes


class IoMapPollEnded(Message, tag="control.io_map_poll_ended"):
    """Long poll number ``stream`` ended (closed by control, connection lost, watchdog, bad framing)."""

    stream: int
    error: str


class IoLiteUpdateAnswer(Message, tag="control.io_lite_update_answer"):
    """The lite update ``token`` got HTTP ``status``, or ``error``."""

    token: int
    status: int = 0
    error: str = ""


class ControlWakeup(Message, tag="control.wakeup"):
    """The runner's own timer for a ``WakeAt(at)`` of its login machine: a backoff ended, or our node
    key reached its ``KeyExpiry`` with no map frame saying so (Go's ``nmExpiryTimer`` covers the self
    node too)."""

    at: float = 0.0


# -- requests to the ControlRunner -----------------------------------------------------------------
class GetState(Message, tag="control.get_state"):
    pass


class LogoutDone(Message, tag="control.logout_done"):
    ok: bool
    error: str = ""


class Logout(Request[LogoutDone], tag="control.logout"):
    """Deregister (RegisterRequest with a past Expiry) and forget the node key. The reply comes when
    control has answered (or could not be reached)."""


class IoIdTokenAnswer(Message, tag="control.io_id_token_answer"):
    """The ID-token request ``token`` got HTTP ``status`` and ``body``, or ``error``."""

    token: int
    status: int = 0
    body: TokenBody = b""
    error: str = ""


class IdTokenAnswer(Message, tag="control.id_token_answer"):
    """Control's answer as it came (Go's ``serveIDToken`` copies status and body), or ``error`` when no
    request could be made (``status`` 503: no netmap / not logged in; 0: the connection failed)."""

    status: int = 0
    body: TokenBody = b""
    error: str = ""


class IdToken(Request[IdTokenAnswer], tag="control.id_token"):
    """``POST /machine/id-token`` (``tailcfg.TokenRequest``) on the current Noise connection."""

    audience: str


class NetInfoFacts(Message, tag="control.net_info_facts"):
    """What the last netcheck found, for ``Hostinfo.NetInfo`` (Go magicsock ``updateNetInfo``);
    ``None`` is Go's unset ``opt.Bool`` (not known)."""

    working_udp: bool | None = None
    working_ipv6: bool | None = None
    os_has_ipv6: bool | None = None
    mapping_varies_by_dest_ip: bool | None = None
    have_port_map: bool = False
    upnp: bool | None = None
    pmp: bool | None = None
    pcp: bool | None = None
    derp_latency: dict[str, float] = {}

    def basic(self) -> NetInfoFacts:
        """Without the latencies: what Go's ``NetInfo.BasicallyEqual`` compares (a latency that moves
        alone does not make a new update; it goes with the next one)."""
        return self.model_copy(update={"derp_latency": {}})


class LiteUpdateDone(Message, tag="control.lite_update_done"):
    ok: bool
    status: int = 0


class LiteUpdate(Request[LiteUpdateDone], tag="control.lite_update"):
    """Tell control our endpoints and disco key (MapRequest ``Stream:false, OmitPeers:true``)."""

    endpoints: list[str] = []
    endpoint_types: list[int] = []
    disco_key: str = ""
    """``discokey:…``; empty keeps the current one."""
    preferred_derp: int = 0
    """Our home DERP region (``Hostinfo.NetInfo.PreferredDERP``: peers reach us there); 0 keeps it."""
    reply_to: str = ""
    """An actor told the ``LiteUpdateDone`` too (the bridge: "Running" waits until control has it)."""
    services_hash: str | None = None
    """Services (20d): a new ``Hostinfo.ServicesHash`` ("" for none); when set, this update is about
    that alone and the endpoints fields are ignored (the current ones stay)."""
    ingress_enabled: bool | None = None
    """20g: Go's ``Hostinfo.IngressEnabled`` (the serve config turns Funnel on); when set (with
    ``wire_ingress``), this update is about those alone, as ``services_hash``."""
    wire_ingress: bool | None = None
    """20g: Go's ``Hostinfo.WireIngress`` (``AllowFunnel`` entries, none on)."""
    net_info: NetInfoFacts | None = None
    """The netcheck's findings for ``Hostinfo.NetInfo``; None keeps the current ones."""
