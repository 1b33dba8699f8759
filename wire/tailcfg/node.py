"""A node in the netmap (``tailcfg.Node``) and a delta to one (``tailcfg.PeerChange``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from pytsnet.wire.tailcfg.base import DiscoKey as _DiscoKey
from pytsnet.wire.tailcfg.base import GoModel
from pytsnet.wire.tailcfg.base import MachineKey as _MachineKey
from pytsnet.wire.tailcfg.base import NodeKey as _NodeKey
from pytsnet.wire.tailcfg.hostinfo import Hostinfo as _Hostinfo


class Node(GoModel):
    go_always = frozenset({"ID", "StableID", "Name", "User", "Key", "Addresses", "Online"})  # Online: *bool
    ID: int = 0
    StableID: str = ""
    Name: str = ""
    """MagicDNS FQDN with a trailing dot."""
    User: int = 0
    Sharer: int = 0
    Key: _NodeKey = None
    KeyExpiry: datetime | None = None
    KeySignature: str = ""
    Machine: _MachineKey = None
    DiscoKey: _DiscoKey = None
    Addresses: list[str] = []
    AllowedIPs: list[str] | None = None
    """``None`` (capver ≥ 112) means the same as ``Addresses``."""
    Endpoints: list[str] = []
    LegacyDERPString: str = Field(default="", alias="DERP")
    HomeDERP: int = 0
    Hostinfo: _Hostinfo | None = None
    Created: datetime | None = None
    Cap: int = 0
    Tags: list[str] = []
    PrimaryRoutes: list[str] = []
    LastSeen: datetime | None = None
    Online: bool | None = None
    MachineAuthorized: bool = False
    Capabilities: list[str] = []
    CapMap: dict[str, list[Any] | None] = {}
    UnsignedPeerAPIOnly: bool = False
    ComputedName: str = ""
    ComputedNameWithHost: str = ""
    DataPlaneAuditLogID: str = ""
    Expired: bool = False
    SelfNodeV4MasqAddrForThisPeer: str | None = None
    SelfNodeV6MasqAddrForThisPeer: str | None = None
    IsWireGuardOnly: bool = False
    IsJailed: bool = False
    ExitNodeDNSResolvers: list[dict[str, Any]] = []

    model_config = GoModel.model_config | {"populate_by_name": True, "serialize_by_alias": True}


class PeerChange(GoModel):
    """One entry of ``MapResponse.PeersChangedPatch``: only the fields that changed are set."""

    go_always = frozenset({"NodeID", "Online"})
    NodeID: int = 0
    DERPRegion: int = 0
    Cap: int = 0
    CapMap: dict[str, list[Any] | None] = {}
    Endpoints: list[str] = []
    Key: _NodeKey = None
    KeySignature: str = ""
    DiscoKey: _DiscoKey = None
    Online: bool | None = None
    LastSeen: datetime | None = None
    KeyExpiry: datetime | None = None
