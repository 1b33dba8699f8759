"""``POST /machine/map`` bodies (``tailcfg.MapRequest`` / ``MapResponse``) and endpoint types."""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Any

from pydantic import Field

from pytsnet.wire.tailcfg.base import DiscoKey as _DiscoKey
from pytsnet.wire.tailcfg.base import GoModel
from pytsnet.wire.tailcfg.base import NodeKey as _NodeKey
from pytsnet.wire.tailcfg.derp import DERPMap as _DERPMap
from pytsnet.wire.tailcfg.dns import DNSConfig as _DNSConfig
from pytsnet.wire.tailcfg.filter import FilterRule
from pytsnet.wire.tailcfg.hostinfo import Hostinfo as _Hostinfo
from pytsnet.wire.tailcfg.node import Node as _Node
from pytsnet.wire.tailcfg.node import PeerChange
from pytsnet.wire.tailcfg.user import UserProfile


class EndpointType(IntEnum):
    """How a node learned one of its UDP endpoints; JSON is the bare integer."""

    UNKNOWN = 0
    LOCAL = 1
    STUN = 2
    PORTMAPPED = 3
    STUN4LOCALPORT = 4
    EXPLICIT_CONF = 5


class MapRequest(GoModel):
    go_always = frozenset({"Version", "NodeKey", "DiscoKey", "Hostinfo"})
    Version: int = 0
    Compress: str = ""
    KeepAlive: bool = False
    NodeKey: _NodeKey = None
    DiscoKey: _DiscoKey = None
    Stream: bool = False
    Hostinfo: _Hostinfo | None = None
    MapSessionHandle: str = ""
    MapSessionSeq: int = 0
    Endpoints: list[str] = []
    EndpointTypes: list[EndpointType] = []
    TKAHead: str = ""
    ReadOnly: bool = False
    OmitPeers: bool = False
    DebugFlags: list[str] = []

    @property
    def is_lite_update(self) -> bool:
        """``Stream: false, OmitPeers: true``: pushes Hostinfo/Endpoints/DiscoKey, expects a bare 200."""
        return not self.Stream and self.OmitPeers


class MapResponse(GoModel):
    # opt.Bool fields: absent unless set; PacketFilter: None is omitted, [] (block all) is written
    go_always = frozenset({"CollectServices", "DefaultAutoUpdate", "PacketFilter"})
    MapSessionHandle: str = ""
    Seq: int = 0
    KeepAlive: bool = False
    PingRequest: dict[str, Any] | None = None
    PopBrowserURL: str = ""
    Node: _Node | None = None
    DERPMap: _DERPMap | None = None
    Peers: list[_Node] = []
    PeersChanged: list[_Node] = []
    PeersRemoved: list[int] = []
    PeersChangedPatch: list[PeerChange] = []
    PeerSeenChange: dict[int, bool] = {}
    OnlineChange: dict[int, bool] = {}
    DNSConfig: _DNSConfig | None = None
    Domain: str = ""
    CollectServices: bool | None = None
    PacketFilter: list[FilterRule] | None = None
    """``None`` = unchanged; ``[]`` = block everything (written as ``[]``, unlike Go, which cannot)."""
    PacketFilters: dict[str, list[FilterRule] | None] = {}
    UserProfiles: list[UserProfile] = []
    Health: list[str] = []
    DisplayMessages: dict[str, Any] = {}
    SSHPolicy: dict[str, Any] | None = None
    ControlTime: datetime | None = None
    TKAInfo: dict[str, Any] | None = None
    DomainDataPlaneAuditLogID: str = ""
    Debug: dict[str, Any] | None = None
    ControlDialPlan: dict[str, Any] | None = None
    ClientVersion: dict[str, Any] | None = None
    DeprecatedDefaultAutoUpdate: bool | None = Field(default=None, alias="DefaultAutoUpdate")

    model_config = GoModel.model_config | {"populate_by_name": True, "serialize_by_alias": True}
