"""What every magicsock actor of one node shares: names, keys, bind address, DERP regions, timings."""

from __future__ import annotations

from dataclasses import dataclass, field

from pytsnet.messages.magicsock import DerpRegion, SetPeers
from pytsnet.wire.keys import DiscoPrivate, NodePrivate
from pytsnet.wire.magicsock.endpoint import Timings


@dataclass
class MagicsockConfig:
    node_private: NodePrivate
    disco_private: DiscoPrivate  # fixed for the node's life: peers learned it through control
    wg_sink: str  # name of W's actor in the same system
    regions: tuple[DerpRegion, ...] = ()
    home_region: int = 0  # the current home; 0 at spawn: netcheck picks (lowest region id until then)
    home_fixed: bool = False  # set at spawn when the caller chose the home: netcheck never moves it
    derp_idle_close: float = 60.0  # a non-home region's connection closes this long after our last
    # write to it (Go magicsock derpInactiveCleanupTime); the home region stays connected
    bind_host: str = "0.0.0.0"  # IPv4 by default; IPv6 only when configured
    bind_port: int = 0
    advertise_endpoints: bool = True  # False: never tell peers our UDP endpoints (DERP only)
    extra_endpoints: tuple[str, ...] = ()
    control: str | None = None  # ControlRunner name, told LocalEndpoints/NetcheckReport
    prefix: str = "magicsock"
    timings: Timings = field(default_factory=Timings)
    stun_interval: tuple[float, float] = (20.0, 26.0)
    bound_port: int = 0  # set by the UDP actor; a restart rebinds the same port
    last_peers: SetPeers | None = None  # kept by the DiscoPinger so a restart resumes with its peers

    def name(self, what: str) -> str:
        return f"{self.prefix}.{what}"

    def derp_name(self, region: int) -> str:
        return f"{self.prefix}.derp.{region}"
