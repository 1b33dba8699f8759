"""Messages of the port mapper (``actors/portmap``): its spawn, the mapped endpoint it tells the
StunProber (to advertise), its status, and its internal job results."""

from __future__ import annotations

from pytsnet.messages.base import Message, Request

__all__ = ["PORTMAP_PROTOCOLS", "PortmapDone", "PortmapEndpoint", "PortmapSpawn", "PortmapStatus",
           "PortmapStatusRequest", "PortmapTick"]

PORTMAP_PROTOCOLS = ("pmp", "pcp", "upnp")


class PortmapSpawn(Message, tag="portmap.spawn"):
    """What the port mapper of one node is spawned with."""

    udp: str = ""  # the magicsock UDP router: asked for the bound port (``magicsock_spec`` fills it)
    stun: str = ""  # the StunProber: told ``PortmapEndpoint`` (it advertises the endpoint)
    protocols: tuple[str, ...] = PORTMAP_PROTOCOLS
    """Tried in this order (Go prefers NAT-PMP, then PCP, then UPnP); tests pin one protocol."""
    lifetime: int = 7200  # seconds asked for (Go pmpMapLifetimeSec); renewed at half what is granted
    gateway: str | None = None  # None: the default route's gateway (as Go's gateway discovery)
    retry: float = 60.0  # seconds before trying again after every protocol failed
    timeout: float = 0.5  # per exchange (Go: 250 ms per probe, 1 s for UPnP's HTTP)


class PortmapEndpoint(Message, tag="portmap.endpoint"):
    """The port mapper → the StunProber: the gateway's external address for our UDP port (None: no
    mapping now). Advertised first among our endpoints, as Go's ``EndpointPortmapped``."""

    endpoint: str | None
    protocol: str = ""
    available: dict[str, bool] = {}
    """What the attempts so far learned of the gateway (Go ``NetInfo.PMP``/``PCP``/``UPnP``): a protocol
    that mapped True, one that could not False (the latest word on each); untried ones absent."""


class PortmapTick(Message, tag="portmap.tick"):
    """The port mapper → itself: time to map (first try, renewal, or retry)."""


class PortmapDone(Message, tag="portmap.done"):
    """The port mapper's I/O thread → the actor: a map attempt's outcome."""

    local_port: int
    protocol: str = ""  # "" : every protocol failed
    gateway: str = ""
    internal_ip: str = ""
    external_ip: str = ""
    external_port: int = 0
    lifetime: int = 0
    nonce: bytes = b""  # PCP: renewals and the delete carry it
    service_type: str = ""  # UPnP: the service and control URL the mapping was made on
    control_url: str = ""
    error: str = ""
    failed: tuple[str, ...] = ()  # the protocols tried that could not map


class PortmapStatus(Message, tag="portmap.status"):
    protocol: str
    external: str | None
    local_port: int
    lifetime: int
    mappings: int  # successful map or renew exchanges
    failures: int
    last_error: str


class PortmapStatusRequest(Request[PortmapStatus], tag="portmap.status_request"):
    pass
