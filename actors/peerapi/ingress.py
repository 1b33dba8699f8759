"""Funnel's node side in the peerAPI (Go ``handleServeIngress``, ``HandleIngressTCPConn``): who may
hand us a public connection, and where a handed-over connection goes.

An ingress node (Tailscale's, or localnet's) carries one public TCP connection to us as an HTTP
``POST /v0/ingress`` on our peerAPI, then the raw bytes on the same connection after our
``101 Switching Protocols``. Go lets only a caller that the packet filter grants the peer capability
``https://tailscale.com/cap/ingress`` (a ``CapGrant`` whose ``Dsts`` cover one of our addresses and
whose ``SrcIPs`` cover the caller) do that; ``peer_caps`` computes those grants as Go's
``filter.CapsWithValues``. ``IngressRoutes`` is the table the device's Funnel listeners register in
(port → handler) and the peerAPI connections read: a target with no listener is refused (403) before
anything is handed over, as Go's ``sendRST``. Serve (20g) adds the ``host:port`` targets its config's
``AllowFunnel`` turns on (``set_serve``); a Funnel listener on the port is asked first, as Go asks
tsnet's ``getTCPHandlerForFunnelFlow`` before the serve handler.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pytsnet.actors.netstack.channel import FlowChannel
from pytsnet.actors.wgengine.filter_rules import FilterRuleError, parse_ip_set
from pytsnet.messages.peers import PeerInfo
from pytsnet.messages.wgengine import WgFilterRule
from pytsnet.wire.peerapi import IngressRequest

__all__ = ["PEER_CAP_INGRESS", "IngressHandler", "IngressHandoff", "IngressRoutes", "ServeIngress",
           "ingress_sources", "peer_caps"]

PEER_CAP_INGRESS = "https://tailscale.com/cap/ingress"
"""``tailcfg.PeerCapabilityIngress``: the peer may send us ingress (Funnel) traffic."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class IngressHandoff:
    """A public connection handed to a Funnel listener (Go ``ipn.FunnelConn``): the tailnet flow from
    the ingress node, the bytes that came with the request (``prefix``: the start of the client's
    TLS ClientHello, if the ingress sent it before our 101), the public source and target."""

    channel: FlowChannel
    prefix: bytes
    request: IngressRequest
    ingress_peer: PeerInfo


IngressHandler = Callable[[IngressHandoff], bool]
"""Takes the connection (True), or refuses it (False: its backlog is full or it closed); the caller
then closes the flow."""

ServeIngress = Callable[[int, IngressHandoff], bool]
"""20g: Serve's taker, ``(port, handoff)`` → taken, as ``IngressHandler``."""


class IngressRoutes:
    """Port → the Funnel listener's handler; thread-safe (listeners come and go on the app's threads,
    the peerAPI connections read it on theirs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_port: dict[int, IngressHandler] = {}
        self._serve_targets: dict[str, int] = {}  # 20g: "host:port" (host lower-cased) → served port
        self._serve: ServeIngress | None = None

    def register(self, port: int, handler: IngressHandler) -> None:
        """``KeyError`` when the port already has a Funnel listener (as Go's "listener already open")."""
        with self._lock:
            if port in self._by_port:
                raise KeyError(port)
            self._by_port[port] = handler

    def unregister(self, port: int, handler: IngressHandler) -> None:
        with self._lock:
            if self._by_port.get(port) is handler:
                del self._by_port[port]

    def handler(self, port: int) -> IngressHandler | None:
        with self._lock:
            return self._by_port.get(port)

    def ports(self) -> list[int]:
        with self._lock:
            return sorted(self._by_port)

    # -- Funnel through Serve ----------------------------------------------------------------------
    def set_serve(self, targets: dict[str, int], taker: ServeIngress | None) -> None:
        """The serve config's Funnel targets (``wire.serve.funnel_targets``) and who takes them."""
        with self._lock:
            self._serve_targets = dict(targets) if taker is not None else {}
            self._serve = taker

    def route(self, host: str, port: int) -> IngressHandler | None:
        """Who takes a public connection for ``host:port``: the port's Funnel listener, else Serve when
        its ``AllowFunnel`` has the target, else nobody (refused)."""
        with self._lock:
            listener = self._by_port.get(port)
            if listener is not None:
                return listener
            taker = self._serve
            if taker is None or self._serve_targets.get(f"{host.lower()}:{port}") != port:
                return None
        return lambda h: taker(port, h)


def _covers(sets: Iterable[str], ip: IPAddress) -> bool:
    for text in sets:
        try:
            if any(ip in net for net in parse_ip_set(text)):
                return True
        except FilterRuleError:
            continue  # a malformed entry grants nothing
    return False


def peer_caps(packet_filter: list[WgFilterRule] | None, src: IPAddress,
              dsts: Iterable[IPAddress]) -> set[str]:
    """The peer capabilities the filter grants ``src`` towards any of ``dsts`` (Go ``PeerCaps``). No
    filter yet: none."""
    if packet_filter is None:
        return set()
    ours = list(dsts)
    out: set[str] = set()
    for rule in packet_filter:
        if not rule.CapGrant or not _covers(rule.SrcIPs, src):
            continue
        for grant in rule.CapGrant:
            if any(_covers(grant.Dsts, d) for d in ours):
                out.update(grant.Caps)
    return out


def ingress_sources(packet_filter: list[WgFilterRule] | None, dsts: Iterable[IPAddress]) -> list[str]:
    """The ``SrcIPs`` entries the filter grants the ingress capability towards us: empty means no node
    of this tailnet can bring us Funnel traffic."""
    if packet_filter is None:
        return []
    ours = list(dsts)
    out: list[str] = []
    for rule in packet_filter:
        for grant in rule.CapGrant:
            if PEER_CAP_INGRESS in grant.Caps and any(_covers(grant.Dsts, d) for d in ours):
                out.extend(s for s in rule.SrcIPs if s not in out)
    return out
