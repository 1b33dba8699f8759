"""The DERP relay map control hands out (``tailcfg/derpmap.go``)."""

from __future__ import annotations

from pydantic import Field

from pytsnet.wire.tailcfg.base import GoModel


class DERPNode(GoModel):
    go_always = frozenset({"Name", "RegionID", "HostName"})
    Name: str = ""
    RegionID: int = 0
    HostName: str = ""
    CertName: str = ""
    IPv4: str = ""
    IPv6: str = ""
    STUNPort: int = 0
    """0 means the default 3478; -1 disables STUN."""
    STUNOnly: bool = False
    DERPPort: int = 0
    """0 means 443."""
    InsecureForTests: bool = False
    STUNTestIP: str = ""
    CanPort80: bool = False


class DERPRegion(GoModel):
    go_always = frozenset({"RegionID", "RegionCode", "RegionName", "Nodes"})
    RegionID: int = 0
    RegionCode: str = ""
    RegionName: str = ""
    Latitude: float = 0.0
    Longitude: float = 0.0
    Avoid: bool = False
    NoMeasureNoHome: bool = False
    Nodes: list[DERPNode] | None = None


class DERPHomeParams(GoModel):
    RegionScore: dict[int, float] = {}


class DERPMap(GoModel):
    go_always = frozenset({"Regions"})
    HomeParams: DERPHomeParams | None = None
    Regions: dict[int, DERPRegion] | None = None
    """``None`` in a MapResponse means: keep the previous regions."""
    OmitDefaultRegions: bool = Field(default=False, alias="omitDefaultRegions")

    model_config = GoModel.model_config | {"populate_by_name": True, "serialize_by_alias": True}
