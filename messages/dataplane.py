"""Messages of the data-plane bridge: what control tells it, what it tells the device, and status.

The bridge (``actors/dataplane``) turns the control side's netmap and the PeerTracker's admitted set
into the two halves' configuration (``SetPeers`` for magicsock, ``WgConfig`` for the engine) and
magicsock's discovered endpoints into ``LiteUpdate`` for control. ``DeviceStatus`` is what
``ActorDevice.status()`` returns.
"""

from __future__ import annotations

from typing import Literal

from pytsnet.messages.base import Message, Request
from pytsnet.messages.control import NetInfoFacts
from pytsnet.messages.dns import DnsExitNode, DnsSettings
from pytsnet.messages.magicsock import DerpRegion, NetcheckReport
from pytsnet.messages.peers import ExitNodeInfo, PeerInfo, PeersChanged, RoutePrefs
from pytsnet.messages.redact import NodePrivateText
from pytsnet.messages.wgengine import WgFilterRule
from pytsnet.wire.tailcfg.ssh import SSHPolicy


class UserInfo(Message):
    """The parts of ``tailcfg.UserProfile`` that ``whois`` reports."""

    id: int = 0
    login_name: str = ""
    display_name: str = ""


class DataplaneNetmap(Message, tag="dataplane.netmap"):
    """Control → bridge after every netmap: the node key and the netmap parts the data plane needs.

    Peers are deliberately absent: they come from the PeerTracker (``PeersChanged``), the one place
    that admits peers."""

    node_private: NodePrivateText
    """``privkey:…``: the node key can rotate (re-login), and the data plane follows it."""
    self_node: PeerInfo
    derp_regions: tuple[DerpRegion, ...] = ()
    packet_filter: list[WgFilterRule] | None = None
    """None: control has not sent a filter yet (no inbound)."""
    user_profiles: dict[int, UserInfo] = {}
    capabilities: dict[int, list[str]] = {}
    """Node ID → its capabilities (``Capabilities`` plus ``CapMap`` keys), self included."""
    domain: str = ""
    dns: DnsSettings | None = None
    """The netmap's DNS config (None: control sent none); the bridge hands it to the resolver."""
    service_ips: dict[str, list[str]] = {}
    """Services (20d): the VIP services we host → their VIPs (the self node's ``service-host`` cap)."""
    ssh_policy: SSHPolicy | None = None  # 22b
    """The netmap's ``SSHPolicy`` (None: control sent none, or one that does not parse: SSH refuses all)."""


class DataplaneTick(Message, tag="dataplane.tick"):
    """The bridge's own timer: check the DERP home connection and live peers."""


class DataplaneState(Message, tag="dataplane.state"):
    """Bridge → device: whether the data plane can carry traffic (Go's "Running" needs a DERP home
    connection or a live peer)."""

    up: bool = False
    node_key: str = ""
    derp_regions: int = 0
    home_region: int = 0
    derp_connected: bool = False
    live_peers: int = 0
    announced: bool = False
    """Control acknowledged our home DERP region (and endpoints so far): peers can reach us."""


class DataplaneInfo(Message, tag="dataplane.info"):
    """Reply to ``GetDataplaneInfo``: the last netmap, endpoints and netcheck the bridge saw, and the
    running subtree's actors by role (empty while none runs)."""

    netmap: DataplaneNetmap | None = None
    endpoints: tuple[str, ...] = ()
    preferred_derp: int = 0
    region_latency: dict[int, float] = {}
    state: DataplaneState = DataplaneState()
    names: dict[str, str] = {}
    """Role → actor name: ``engine``, ``udp``, ``disco``, ``stun``, ``derp.<region>``, ``netstack``."""
    exit_dns: DnsExitNode = DnsExitNode()
    """Where names beyond the tailnet are resolved while an exit node is selected (the resolver asks
    this at its start)."""


class GetDataplaneInfo(Request[DataplaneInfo], tag="dataplane.get_info"):
    """The facade's one question to the bridge (status, whois, close): asked, never read under a lock."""


class LiteTold(Message, tag="dataplane.lite_told"):
    """What the bridge last told control: our endpoints, home DERP region and (without latencies)
    the netcheck's findings."""

    endpoints: tuple[str, ...]
    home: int
    net: NetInfoFacts | None = None


class BridgeMemory(Message, tag="dataplane.bridge_memory"):
    """What the bridge learned, as one immutable snapshot: it tells each new one to the tree's keeper
    and recalls it on a restart, so it resumes without waiting for the next netmap and never spawns a
    second subtree. No one else reads it."""

    netmap: DataplaneNetmap | None = None
    peers: PeersChanged | None = None
    endpoints: tuple[str, ...] = ()
    have_endpoints: bool = False
    told: LiteTold | None = None
    told_at: float | None = None
    acked: LiteTold | None = None
    """What control last acknowledged (``told`` when the ``LiteUpdateDone`` came)."""
    announced: bool = False
    """Control acknowledged an update of this subtree (our home region): peers can reach us."""
    netcheck: NetcheckReport | None = None
    home: int = 0
    """Our home DERP region, as the StunProber last told it (``HomeRegion``)."""
    built_for: DataplaneNetmap | None = None
    """The netmap the running subtree was built for (None: none runs)."""
    names: dict[str, str] = {}
    state: DataplaneState = DataplaneState()
    route_prefs: RoutePrefs = RoutePrefs()
    """The app's exit node selector and route acceptance (``SetRoutePrefs``)."""


# --- status ------------------------------------------------------------------------------------------


class PeerStatus(Message):
    node_id: int
    name: str
    hostname: str
    node_key: str
    addresses: list[str]
    path: Literal["direct", "derp", "none"]
    addr: str | None = None
    """The direct ``ip:port`` when ``path`` is direct."""
    derp_region: int = 0
    home_derp: int = 0
    rtt: float | None = None
    """Seconds, from disco pings."""
    bytes_in: int = 0
    bytes_out: int = 0
    udp_bytes_in: int = 0
    udp_bytes_out: int = 0
    derp_bytes_in: int = 0
    derp_bytes_out: int = 0
    has_session: bool = False
    last_handshake: float | None = None
    key_expiry: float | None = None
    """When the peer's node key expires (Unix seconds; None: never). It leaves the table then."""


class DeviceStatus(Message, tag="dataplane.device_status"):
    """``ActorDevice.status()``: self, peers with their paths, counters and drops."""

    state: str
    self_node: PeerInfo | None = None
    tailscale_ips: list[str] = []
    home_region: int = 0
    derp_connected: dict[int, bool] = {}
    endpoints: tuple[str, ...] = ()
    peers: list[PeerStatus] = []
    drops: dict[str, int] = {}
    """Magicsock (``unknown_peer``, ``no_path``, ``blackhole``, the reader's early drops), engine and
    filter drop counters."""
    backlog: dict[str, int] = {}
    """Bytes and messages queued on the data plane now (``wgengine_bytes``: the engine's mailbox read
    directly plus its handshake queue; ``magicsock_udp_bytes``, ``netstack_bytes``, ...)."""
    counters: dict[str, int] = {}
    """Work done: ``udp_datagrams_read``/``udp_bytes_read``, ``wg_handshake_dh``, ``wg_cookie_replies``."""
    exit_node: ExitNodeInfo | None = None
    """The engaged exit node (``dev.active_exit_node()``); None: none selected, or it is unavailable."""
    exit_node_unavailable: str | None = None
    """Go's "exit node unavailable" health warning while one is selected but unusable: its reason
    (``not-yet-selected``, ``not-in-tailnet``, ``offline``, ``no-exit-routes``)."""
