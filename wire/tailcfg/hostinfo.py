"""What a node says about itself (``tailcfg.Hostinfo``, ``NetInfo``, ``Service``).

``opt.Bool`` fields are ``bool | None`` (JSON true/false/absent); all Hostinfo fields are omitempty.
"""

from __future__ import annotations

from typing import Any

from pytsnet.wire.tailcfg.base import GoModel

_OPT_BOOLS = frozenset({"MappingVariesByDestIP", "WorkingIPv6", "OSHasIPv6", "WorkingUDP", "WorkingICMPv4",
                        "UPnP", "PMP", "PCP", "Container", "Desktop", "Userspace", "UserspaceRouter",
                        "AppConnector", "StateEncrypted"})


class Service(GoModel):
    go_always = frozenset({"Proto", "Port"})
    Proto: str = ""
    Port: int = 0
    Description: str = ""


class NetInfo(GoModel):
    go_always = _OPT_BOOLS
    MappingVariesByDestIP: bool | None = None
    WorkingIPv6: bool | None = None
    OSHasIPv6: bool | None = None
    WorkingUDP: bool | None = None
    WorkingICMPv4: bool | None = None
    HavePortMap: bool = False
    UPnP: bool | None = None
    PMP: bool | None = None
    PCP: bool | None = None
    PreferredDERP: int = 0
    LinkType: str = ""
    DERPLatency: dict[str, float] = {}
    FirewallMode: str = ""


_NetInfo = NetInfo


class Hostinfo(GoModel):
    go_always = _OPT_BOOLS
    IPNVersion: str = ""
    FrontendLogID: str = ""
    BackendLogID: str = ""
    OS: str = ""
    OSVersion: str = ""
    Container: bool | None = None
    Env: str = ""
    Distro: str = ""
    DistroVersion: str = ""
    DistroCodeName: str = ""
    App: str = ""
    Desktop: bool | None = None
    Package: str = ""
    DeviceModel: str = ""
    PushDeviceToken: str = ""
    Hostname: str = ""
    ShieldsUp: bool = False
    ShareeNode: bool = False
    NoLogsNoSupport: bool = False
    RemoteConfig: bool = False
    WireIngress: bool = False
    IngressEnabled: bool = False
    AllowsUpdate: bool = False
    Machine: str = ""
    GoArch: str = ""
    GoArchVar: str = ""
    GoVersion: str = ""
    RoutableIPs: list[str] = []
    RequestTags: list[str] = []
    WoLMACs: list[str] = []
    Services: list[Service] = []
    NetInfo: _NetInfo | None = None
    Cloud: str = ""
    Userspace: bool | None = None
    UserspaceRouter: bool | None = None
    AppConnector: bool | None = None
    ServicesHash: str = ""
    PeerRelay: bool = False
    ExitNodeID: str = ""
    Location: dict[str, Any] | None = None
    TPM: dict[str, Any] | None = None
    StateEncrypted: bool | None = None
