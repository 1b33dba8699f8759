"""``Config``: what an app sets to embed a node, with tsnet's defaults and environment fallbacks.

Defaults follow Go's ``tsnet.Server`` (features.md §7): hostname = the program name; auth key from
``TS_AUTHKEY`` then ``TS_AUTH_KEY``; control URL from ``TS_CONTROL_URL`` then Tailscale's; bootstrap
credentials from ``TS_CLIENT_SECRET``, ``TS_CLIENT_ID``, ``TS_ID_TOKEN``, ``TS_AUDIENCE``,
``TS_BASE_URL``; state in ``dir`` (default ``<user config dir>/tsnet-<program>``), or in memory for
an ephemeral node without a dir.

``Config`` is the one place a node is configured: besides Go's ``tsnet.Server`` fields it holds the
few knobs Go keeps elsewhere (the UDP bind host, whether to advertise endpoints, disco timings and
the STUN interval for tests, the control backoff ceiling, an injected clock, the MagicDNS fallback
resolvers).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pytsnet.errors import ConfigError
from pytsnet.messages.portmap import PORTMAP_PROTOCOLS
from pytsnet.netstack.forward import EXIT_ROUTES, TAILNET_RANGES, ForwardPolicy
from pytsnet.wire.dns.config import Upstream
from pytsnet.wire.wireguard.constants import TAILSCALE_PERSISTENT_KEEPALIVE

if TYPE_CHECKING:
    from pytsnet.actors.control import StateStore
    from pytsnet.actors.runtime import Clock
    from pytsnet.wire.magicsock.endpoint import Timings

__all__ = ["DEFAULT_CONTROL_URL", "LETSENCRYPT_DIRECTORY_URL", "Config", "program_name"]

DEFAULT_CONTROL_URL = "https://controlplane.tailscale.com"
LETSENCRYPT_DIRECTORY_URL = "https://acme-v02.api.letsencrypt.org/directory"
"""Go's ``acme.LetsEncryptURL``: where certs come from unless ``acme_directory_url`` says otherwise."""


def program_name() -> str:
    """Lower-case base name of the running program without ``.exe`` / ``.py`` (tsnet's ``progName``)."""
    name = Path(sys.argv[0] if sys.argv and sys.argv[0] else "tsnet").name.lower()
    for suffix in (".exe", ".py"):
        name = name.removesuffix(suffix)
    return name if name and name not in ("-c", "__main__") else "tsnet"


def _user_config_dir() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg else Path.home() / ".config"


@dataclass(frozen=True)
class Config:
    dir: str | Path | None = None
    hostname: str | None = None
    auth_key: str | None = field(default=None, repr=False)
    """Left out of ``repr`` (a credential): logs and tracebacks that show a Config never hold it."""
    control_url: str | None = None
    ephemeral: bool = False
    tags: tuple[str, ...] = ()
    port: int = 0
    """UDP port for the data plane (WireGuard, disco, STUN); 0 = OS-chosen (Go's ``Port``)."""
    store: StateStore | None = field(default=None, compare=False)
    """Where node state lives (Go's ``Store``); None: a ``FileStore`` in ``dir``, or memory."""
    bind_host: str = "0.0.0.0"
    """Host address the UDP socket binds (``127.0.0.1`` keeps a test node on loopback)."""
    advertise_endpoints: bool = True
    """False: never tell peers our UDP endpoints (every path goes through DERP)."""
    timings: Timings | None = field(default=None, compare=False)
    """Disco timings (None: Go's); tests shorten them."""
    stun_interval: tuple[float, float] = (20.0, 26.0)
    """Seconds between STUN probes (a random value in this range, as Go's netcheck)."""
    wg_persistent_keepalive: float = TAILSCALE_PERSISTENT_KEEPALIVE
    """Seconds between WireGuard keepalives to every peer with a session (0: none). Go v1.90.9 sends
    none: an idle session goes quiet (disco heartbeats stop 45 s after the last data) and its NAT
    mappings lapse until the next packet re-finds the path. Ours keeps 25 s (warm idle DERP tunnels),
    which also keeps the disco session active, so the heartbeats hold NAT mappings open for good."""
    backoff_max: float = 30.0
    """Ceiling of the control client's retry backoff, in seconds."""
    clock: Clock | None = field(default=None, compare=False)
    """The actors' clock (None: real time); tests inject one to skip time."""
    fallback_resolvers: tuple[str, ...] = ()
    """Where the MagicDNS resolver forwards names the tailnet does not answer (``IP`` or ``IP:port``,
    reached through the tailnet, never a host socket). Empty (the default): such names are NXDOMAIN."""
    exit_node: str | None = None
    """The exit node to send non-tailnet traffic through: a stable node ID, tailnet IP or MagicDNS
    name (Go prefs ``ExitNodeID``/``ExitNodeIP``); None: none. Fail closed while it is unavailable
    (``ExitNodeUnavailable``). Changed at runtime with ``dev.set_exit_node``."""
    accept_routes: bool = False
    """Use the subnet routes peers are primary routers for (Go prefs ``RouteAll``, ``--accept-routes``);
    False as tsnet on Linux (``DefaultRouteAll``)."""
    advertise_exit_node: bool = False
    """Offer this node as an exit node: Hostinfo.RoutableIPs gains 0.0.0.0/0 and ::/0 (Go's
    tsaddr.ExitRoutes) and, once control approves, peers' traffic to the internet is forwarded
    through this host's network (``actors/forwarder``); the peerAPI answers their DNS."""
    advertise_routes: Sequence[str] = ()
    """Subnet routes to offer (``"10.1.2.0/24"``; a host route is ``/32``). A prefix with host bits
    set is a ``ConfigError``, as Go's "has non-address bits set"; sent sorted and deduplicated."""
    # -- bootstrap (19c): auth keys minted from an OAuth client or workload identity ------------------
    client_secret: str | None = field(default=None, repr=False)
    """OAuth client secret (``tskey-client-…[?ephemeral=…&preauthorized=…&baseURL=…]``; env
    ``TS_CLIENT_SECRET``; ``auth_key`` takes one too, as Go): mints a single-use auth key with ``tags``
    when the node has no state (``pytsnet.bootstrap``). Never in a repr."""
    client_id: str | None = None
    """Workload identity federation client ID (``TS_CLIENT_ID``; ``?ephemeral=…&preauthorized=…``)."""
    id_token: str | None = field(default=None, repr=False)
    """The ID token (a JWT) exchanged for an API token with ``client_id`` (``TS_ID_TOKEN``)."""
    audience: str | None = None
    """Audience of an ID token to fetch from the CI provider instead of ``id_token`` (``TS_AUDIENCE``)."""
    base_url: str | None = None
    """The API the keys are minted at (``TS_BASE_URL``); default: ``https://api.tailscale.com`` for
    Tailscale's control URL, else the control URL itself (localnet serves the API there)."""

    local_api_socket: str | Path | None = None
    """Serve the LocalAPI on a unix socket at this path (mode 0600), as tailscaled's socket: the
    ``pytsnet`` CLI's ``--socket``. None: in-process (``dev.local_client()``) and ``dev.loopback()`` only."""

    acme_directory_url: str | None = None
    """The ACME directory the node gets its TLS certs from (Go's ``TS_DEBUG_ACME_DIRECTORY_URL``, the
    env fallback; default Let's Encrypt's). Tests point it at pebble."""
    acme_ca_file: str | Path | None = None
    """CA bundle the ACME server's own TLS is checked against. None: ``SSL_CERT_FILE`` as Go, else the
    default bundle (certifi's, through requests)."""

    taildrop_dir: str | Path | None = None
    """Where files peers send us land (and wait for ``dev.waiting_files``). None: ``<dir>/files``
    (Go's ``<varRoot>/files``); a node without a state dir then has no Taildrop (peers get Go's 403
    ``Taildrop disabled; no storage directory``)."""
    taildrop_max_file_size: int = 16 << 30
    """The largest file accepted from a peer (past it: 413, ``TaildropTooLarge`` at the sender)."""
    taildrop_min_free: int = 256 << 20
    """Free bytes the filesystem must keep after a file is received (else 507)."""
    port_mapping: bool = False
    """Map the data plane's UDP port on the LAN gateway (NAT-PMP, PCP, UPnP IGD: Go's
    ``net/portmapper``) and advertise the mapped endpoint, so a node behind a hard NAT can still get a
    direct path. Off by default, unlike Go: it sends to the default gateway and multicasts SSDP on the
    LAN, which an embedded library should not do unasked (and tests must not do to the host's LAN)."""
    port_mapping_protocols: tuple[str, ...] = ("pmp", "pcp", "upnp")
    """Which protocols the port mapper tries, in order (Go's: NAT-PMP, PCP, UPnP IGD); a subset
    leaves the others unused (e.g. ``("upnp",)`` on a gateway whose NAT-PMP is broken)."""

    ipv6: bool = False
    """The one IPv6 switch (off: the node is IPv4-only, as the seed). It governs both the tailnet and
    the underlay. False: any ``fd7a:115c:a1e0::`` address control assigns is ignored (none on the
    netstack, no ``::/0`` route, no AAAA answers for us or peers), no IPv6 UDP socket is bound, no
    IPv6 endpoint advertised or STUNed, and DERP is dialled over IPv4 only. True: the tailnet IPv6
    address is used, and with a wildcard ``bind_host`` (``0.0.0.0`` or ``::``) one dual-stack UDP
    socket is bound (``::``, IPV6_V6ONLY off; IPv4 peers as v4-mapped addresses) that STUNs over
    IPv6 too, advertises IPv6 endpoints and pings them; DERP is dialled over a node's ``IPv6`` when
    its IPv4 is missing or fails. ``bind_host`` names exactly what is bound otherwise: a specific
    IPv4 address binds only it (the tailnet still gets IPv6), a specific IPv6 address binds only it.
    An IPv6 ``bind_host`` with ``ipv6=False`` is a ``ConfigError``."""

    def resolved(self) -> Config:
        """A copy with every default and environment fallback applied."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"Config.port={self.port} is not a UDP port: use 0 (OS-chosen) to 65535")
        if self.stun_interval[0] > self.stun_interval[1] or self.stun_interval[0] <= 0:
            raise ConfigError(f"Config.stun_interval={self.stun_interval}: want (low, high), 0 < low <= high")
        if not 0 <= self.wg_persistent_keepalive <= 3600:
            raise ConfigError(f"Config.wg_persistent_keepalive={self.wg_persistent_keepalive}: "
                              "want 0..3600 s")
        for r in self.fallback_resolvers:
            try:
                Upstream.parse(r)
            except ValueError as e:
                raise ConfigError(f"Config.fallback_resolvers: {e}") from None
        if self.exit_node is not None and (not isinstance(self.exit_node, str) or not self.exit_node.strip()):
            raise ConfigError(f"Config.exit_node={self.exit_node!r}: want a stable node ID, tailnet IP or "
                              "MagicDNS name, or None for no exit node")
        _check_bind_host(self.bind_host, self.ipv6)  # 24d
        if not self.port_mapping_protocols or not set(self.port_mapping_protocols) <= set(PORTMAP_PROTOCOLS):
            raise ConfigError(f"Config.port_mapping_protocols={self.port_mapping_protocols!r}: want a "
                              f"non-empty subset of {PORTMAP_PROTOCOLS}")
        routes = _advertised_routes(self.advertise_routes)
        env = os.environ
        prog = program_name()
        directory = self.dir
        if directory is None and not self.ephemeral:
            directory = _user_config_dir() / f"tsnet-{prog}"
        return replace(
            self,
            dir=Path(directory) if directory is not None else None,
            hostname=self.hostname or prog,
            auth_key=self.auth_key or env.get("TS_AUTHKEY") or env.get("TS_AUTH_KEY") or "",
            control_url=(self.control_url or env.get("TS_CONTROL_URL") or DEFAULT_CONTROL_URL).rstrip("/"),
            tags=tuple(self.tags),
            fallback_resolvers=tuple(self.fallback_resolvers),
            advertise_routes=routes,
            client_secret=self.client_secret or env.get("TS_CLIENT_SECRET") or "",
            client_id=self.client_id or env.get("TS_CLIENT_ID") or "",
            id_token=self.id_token or env.get("TS_ID_TOKEN") or "",
            audience=self.audience or env.get("TS_AUDIENCE") or "",
            base_url=(self.base_url or env.get("TS_BASE_URL") or "").rstrip("/"),
            acme_directory_url=self.acme_directory_url or env.get("TS_DEBUG_ACME_DIRECTORY_URL")
            or LETSENCRYPT_DIRECTORY_URL,
            acme_ca_file=self.acme_ca_file or env.get("SSL_CERT_FILE") or None,
        )

    def routable_ips(self) -> tuple[str, ...]:
        """Hostinfo.RoutableIPs: the advertised routes plus, for an exit node, 0.0.0.0/0 and ::/0,
        sorted as Go sorts them (netipx.ComparePrefix: family, then address, then length)."""
        nets = {ipaddress.ip_network(r) for r in _advertised_routes(self.advertise_routes)}
        if self.advertise_exit_node:
            nets.update(EXIT_ROUTES)
        ordered = sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
        return tuple(str(n) for n in ordered)

    def forward_policy(self) -> ForwardPolicy | None:
        """What the netstack forwards, or None when this node advertises nothing."""
        routes = tuple(ipaddress.ip_network(r) for r in _advertised_routes(self.advertise_routes))
        if not routes and not self.advertise_exit_node:
            return None
        return ForwardPolicy(routes=routes, exit_node=self.advertise_exit_node)


def _check_bind_host(host: str, ipv6: bool) -> None:
    """An IPv6 ``bind_host`` only with ``ipv6=True``: the knob alone decides whether the underlay uses
    IPv6 (``"::"`` with IPv6 off would silently bind both families)."""
    if ":" in host and not ipv6:
        raise ConfigError(f"Config.bind_host={host!r} is IPv6 but Config.ipv6 is False: set ipv6=True "
                          "(IPv6 is opt-in), or bind an IPv4 address")


def _advertised_routes(routes: Sequence[str]) -> tuple[str, ...]:
    """Validated, canonical, deduplicated ``advertise_routes``; ``ConfigError`` naming the bad one."""
    if isinstance(routes, str):
        raise ConfigError("Config.advertise_routes is a list of prefixes, not one string")
    out: list[str] = []
    where = "Config.advertise_routes"
    for r in routes:
        text = str(r).strip()
        try:
            net = ipaddress.ip_network(text, strict=False)
            host = ipaddress.ip_interface(text).ip
        except ValueError:
            raise ConfigError(f"{where}: {r!r} is not an IP prefix (e.g. 10.1.2.0/24)") from None
        if "/" not in text:
            raise ConfigError(f"{where}: {r!r} has no prefix length (a host route is {net})")
        if host != net.network_address:
            raise ConfigError(f"{where}: route {text} has non-address bits set; expected {net}")
        if net.prefixlen == 0:
            raise ConfigError(f"{where}: {net} is a default route: use advertise_exit_node=True")
        if any(net.version == t.version and net.overlaps(t) for t in TAILNET_RANGES):
            raise ConfigError(f"{where}: {net} overlaps the tailnet's own addresses")
        if str(net) not in out:
            out.append(str(net))
    return tuple(out)
