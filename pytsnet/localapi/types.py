"""Go's LocalAPI JSON shapes at tailscale.com v1.90.9, as strict pydantic models.

Mirrors ``ipnstate.Status``/``PeerStatus``/``TailnetStatus``/``ExitNodeStatus``/``PingResult``
(ipn/ipnstate/ipnstate.go), ``apitype.WhoIsResponse`` (client/tailscale/apitype/apitype.go) and the
``tailcfg.Node``/``Hostinfo``/``UserProfile`` it carries (tailcfg/tailcfg.go). Field names are Go's
JSON names; a Go field without ``omitempty`` is required here (Go always writes it, ``null`` for a
nil slice, map or pointer), one with ``omitempty`` has a default. Models are closed
(``extra="forbid"``) and strict (no ``"1"`` for ``1``): a client decoding tailscaled's JSON with them
sees every drift, and our server's JSON is checked against them in tests.

Go's encodings: ``time.Time`` is RFC 3339 (``0001-01-01T00:00:00Z`` for the zero time), keys are
their text forms (``nodekey:<hex>``), ``netip.Addr``/``Prefix`` strings, IDs JSON numbers.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["GO_ZERO_TIME", "ExitNodeStatus", "GoModel", "Hostinfo", "Node", "PeerStatus", "PingResult",
           "Service", "Status", "TailnetStatus", "TokenResponse", "UserProfile", "WhoIsResponse"]

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
"""How Go's ``encoding/json`` writes ``time.Time{}``."""

GoTime = Annotated[str, StringConstraints(
    pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")]
"""RFC 3339 with up to nanoseconds, as ``time.Time.MarshalJSON``."""
NodePublic = Annotated[str, StringConstraints(pattern=r"^nodekey:[0-9a-f]{64}$")]
MachinePublic = Annotated[str, StringConstraints(pattern=r"^mkey:[0-9a-f]{64}$")]
DiscoPublic = Annotated[str, StringConstraints(pattern=r"^discokey:[0-9a-f]{64}$")]
RawJSON = Any
"""A ``json.RawMessage`` (CapMap values): any JSON value."""


class GoModel(BaseModel):
    """Closed, strict, Go field names; serialised with ``model_dump(by_alias=True)``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class UserProfile(GoModel):
    """tailcfg.go:277 ``UserProfile``."""

    ID: int
    LoginName: str
    DisplayName: str
    ProfilePicURL: str = ""


class TailnetStatus(GoModel):
    """ipnstate.go:162 ``TailnetStatus``."""

    Name: str
    MagicDNSSuffix: str
    MagicDNSEnabled: bool


class ExitNodeStatus(GoModel):
    """ipnstate.go:180 ``ExitNodeStatus``."""

    ID: str
    Online: bool
    TailscaleIPs: list[str] | None


_ExitNodeStatus = ExitNodeStatus
"""Go names some fields as their types: these aliases keep the annotations unambiguous."""
_UserProfile = UserProfile


class PeerStatus(GoModel):
    """ipnstate.go:224 ``PeerStatus``."""

    ID: str
    PublicKey: NodePublic
    HostName: str
    DNSName: str
    OS: str
    UserID: int
    AltSharerUserID: int = 0
    TailscaleIPs: list[str] | None
    AllowedIPs: list[str] | None = None
    Tags: list[str] | None = None
    PrimaryRoutes: list[str] | None = None
    Addrs: list[str] | None
    CurAddr: str
    Relay: str
    PeerRelay: str
    RxBytes: int
    TxBytes: int
    Created: GoTime
    LastWrite: GoTime
    LastSeen: GoTime
    LastHandshake: GoTime
    Online: bool
    ExitNode: bool
    ExitNodeOption: bool
    Active: bool
    PeerAPIURL: list[str] | None
    TaildropTarget: int
    NoFileSharingReason: str
    Capabilities: list[str] | None = None
    CapMap: dict[str, list[RawJSON] | None] | None = None
    sshHostKeys: list[str] | None = None
    ShareeNode: bool = False
    InNetworkMap: bool
    InMagicSock: bool
    InEngine: bool
    Expired: bool = False
    KeyExpiry: GoTime | None = None
    Location: dict[str, Any] | None = None


class Status(GoModel):
    """ipnstate.go:32 ``Status``."""

    Version: str
    TUN: bool
    BackendState: str
    HaveNodeKey: bool = False
    AuthURL: str
    TailscaleIPs: list[str] | None
    Self: PeerStatus | None
    ExitNodeStatus: _ExitNodeStatus | None = None
    Health: list[str] | None
    MagicDNSSuffix: str
    CurrentTailnet: TailnetStatus | None
    CertDomains: list[str] | None
    Peer: dict[NodePublic, PeerStatus] | None
    User: dict[str, UserProfile] | None
    """Keyed by the decimal ``UserID`` (a JSON object key is a string)."""
    ClientVersion: dict[str, Any] | None


class Service(GoModel):
    """tailcfg.go ``Service`` (Hostinfo.Services)."""

    Proto: str
    Port: int
    Description: str = ""


class Hostinfo(GoModel):
    """tailcfg.go:829 ``Hostinfo``: every field is ``omitempty`` (``ExitNodeID`` ``omitzero``)."""

    IPNVersion: str = ""
    FrontendLogID: str = ""
    BackendLogID: str = ""
    OS: str = ""
    OSVersion: str = ""
    Container: bool | str | None = None
    Env: str = ""
    Distro: str = ""
    DistroVersion: str = ""
    DistroCodeName: str = ""
    App: str = ""
    Desktop: bool | str | None = None
    Package: str = ""
    DeviceModel: str = ""
    PushDeviceToken: str = ""
    Hostname: str = ""
    ShieldsUp: bool = False
    ShareeNode: bool = False
    NoLogsNoSupport: bool = False
    WireIngress: bool = False
    IngressEnabled: bool = False
    AllowsUpdate: bool = False
    Machine: str = ""
    GoArch: str = ""
    GoArchVar: str = ""
    GoVersion: str = ""
    RoutableIPs: list[str] | None = None
    RequestTags: list[str] | None = None
    WoLMACs: list[str] | None = None
    Services: list[Service] | None = None
    NetInfo: dict[str, Any] | None = None
    sshHostKeys: list[str] | None = None
    Cloud: str = ""
    Userspace: bool | str | None = None
    UserspaceRouter: bool | str | None = None
    AppConnector: bool | str | None = None
    ServicesHash: str = ""
    ExitNodeID: str = ""
    Location: dict[str, Any] | None = None
    TPM: dict[str, Any] | None = None
    StateEncrypted: bool | str | None = None


_Hostinfo = Hostinfo


class Node(GoModel):
    """tailcfg.go:332 ``Node`` as ``WhoIsResponse.Node`` carries it."""

    ID: int
    StableID: str
    Name: str
    User: int
    Sharer: int = 0
    Key: NodePublic
    KeyExpiry: GoTime
    KeySignature: str = ""
    Machine: MachinePublic
    DiscoKey: DiscoPublic
    Addresses: list[str] | None
    AllowedIPs: list[str] | None
    Endpoints: list[str] | None = None
    DERP: str = ""
    HomeDERP: int = 0
    Hostinfo: _Hostinfo | None
    Created: GoTime
    Cap: int = 0
    Tags: list[str] | None = None
    PrimaryRoutes: list[str] | None = None
    LastSeen: GoTime | None = None
    Online: bool | None = None
    MachineAuthorized: bool = False
    Capabilities: list[str] | None = None
    CapMap: dict[str, list[RawJSON] | None] | None = None
    UnsignedPeerAPIOnly: bool = False
    ComputedName: str = ""
    ComputedNameWithHost: str = ""
    DataPlaneAuditLogID: str = ""
    Expired: bool = False
    SelfNodeV4MasqAddrForThisPeer: str | None = None
    SelfNodeV6MasqAddrForThisPeer: str | None = None
    IsWireGuardOnly: bool = False
    IsJailed: bool = False
    ExitNodeDNSResolvers: list[dict[str, Any]] | None = None


_Node = Node


class WhoIsResponse(GoModel):
    """apitype.go:35 ``WhoIsResponse``: Node and UserProfile always non-nil (localapi.go's contract)."""

    Node: _Node
    UserProfile: _UserProfile
    CapMap: dict[str, list[RawJSON] | None] | None


class PingResult(GoModel):
    """ipnstate.go:696 ``PingResult``."""

    IP: str
    NodeIP: str
    NodeName: str
    Err: str
    LatencySeconds: float
    Endpoint: str
    PeerRelay: str
    DERPRegionID: int
    DERPRegionCode: str
    PeerAPIPort: int = 0
    PeerAPIURL: str = ""
    IsLocalIP: bool = False



class TokenResponse(GoModel):
    """tailcfg.go ``TokenResponse`` (the LocalAPI's ``id-token`` answer): a JWT signed by control.
    ``repr`` leaves the token out: it is a bearer credential."""

    id_token: str = Field(repr=False)


# -- Tailnet Lock -------------------------------------------------------------------------------
GoBytes = Annotated[str, StringConstraints(
    pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")]
"""A Go ``[]byte`` in JSON: standard base64 with padding (``null`` for nil: the field is optional)."""
NLPublicText = Annotated[str, StringConstraints(pattern=r"^nlpub:[0-9a-f]{64}$")]
"""``key.NLPublic.MarshalText`` (the zero key is ``nlpub:`` + 64 zeros)."""
Hash32 = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=32, max_length=32)]
"""A Go ``[32]byte`` in JSON: an array of 32 numbers (not base64: Go encodes arrays element-wise)."""


class TkaKeyJSON(GoModel):
    """tka/key.go ``Key`` as ``encoding/json`` writes it (no JSON tags: Go field names; ``Kind`` a number,
    ``Public`` base64): the body of ``tka/init`` and ``tka/modify``."""

    Kind: int
    Votes: int = Field(ge=0)
    Public: GoBytes | None
    Meta: dict[str, str] | None = None


class NodeKeySignatureJSON(GoModel):
    """tka/sig.go ``NodeKeySignature`` in JSON (every field written; nil ``[]byte`` and pointers ``null``)."""

    SigKind: int
    Pubkey: GoBytes | None
    KeyID: GoBytes | None
    Signature: GoBytes | None
    Nested: NodeKeySignatureJSON | None
    WrappingPubkey: GoBytes | None


class TKAKey(GoModel):
    """ipnstate.go:91 ``TKAKey``: a key trusted by the lock."""

    Key: NLPublicText
    Metadata: dict[str, str] | None
    Votes: int = Field(ge=0)


class TKAPeer(GoModel):
    """ipnstate.go:98 ``TKAPeer``: a peer and its lock signature."""

    Name: str
    ID: int
    StableID: str
    TailscaleIPs: list[str] | None
    NodeKey: NodePublic
    NodeKeySignature: NodeKeySignatureJSON
    Reason: str = ""
    """Beyond Go (a Go client ignores it): why the lock refused a ``FilteredPeers`` entry (the
    PeerTracker's reason, "missing signature", …); left out of ``VisiblePeers``."""


class NetworkLockStatus(GoModel):
    """ipnstate.go:110 ``NetworkLockStatus`` (``tka/status``, and ``tka/init``'s answer)."""

    Enabled: bool
    Head: Hash32 | None
    PublicKey: NLPublicText
    NodeKey: NodePublic | None
    NodeKeySigned: bool
    NodeKeySignature: NodeKeySignatureJSON | None
    TrustedKeys: list[TKAKey] | None
    VisiblePeers: list[TKAPeer] | None
    FilteredPeers: list[TKAPeer] | None
    StateID: int = Field(ge=0)


class NetworkLockUpdate(GoModel):
    """ipnstate.go:148 ``NetworkLockUpdate`` (one ``tka/log`` entry): ``Change`` is ``AUMKind.String()``,
    ``Raw`` the serialized AUM."""

    Hash: Hash32
    Change: str
    Raw: GoBytes | None


__all__ += ["NetworkLockStatus", "NetworkLockUpdate", "NodeKeySignatureJSON", "TKAKey", "TKAPeer",
            "TkaKeyJSON"]  # 21f's own line


class FileTarget(GoModel):
    """apitype.go:46 ``FileTarget`` (``file-targets``): a node files can be sent to, and its PeerAPI
    base URL (``http://ip:port``, no path)."""

    Node: _Node | None
    PeerAPIURL: str


class WaitingFile(GoModel):
    """apitype.go:54 ``WaitingFile`` (``files/``): a received file in the inbox."""

    Name: str
    Size: int = Field(ge=0)


__all__ += ["FileTarget", "WaitingFile"]  # 22c's own line
