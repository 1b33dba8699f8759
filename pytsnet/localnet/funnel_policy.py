"""What localnet's control grants for Funnel (``localnet --funnel``): the node attributes and the
ingress capability, as Tailscale's control does.

Tailscale's admin opts nodes into Funnel with a policy ``nodeAttrs`` entry (``funnel``); its ingress
nodes are granted the peer capability ``https://tailscale.com/cap/ingress`` towards them. localnet's
opt-in is the ``--funnel`` flag itself: every node gets ``funnel`` and the funnel-ports attribute
(443, 8443, 10000), or only the hostnames in ``nodes`` when given (``--funnel-nodes``). The ingress
is localnet's own tailnet node, tagged ``tag:funnel-ingress``: the packet filter gets a rule whose
``SrcIPs`` are its addresses and whose ``CapGrant`` gives it the ingress capability towards the
Funnel nodes' addresses, plus a rule letting it reach their peerAPI ports (32768-65535) even under a
restrictive policy. A node without the attribute gets no grant: its peerAPI refuses the ingress.
As on Tailscale, Funnel also needs HTTPS on (``--https``: the ``https`` capability and
``CertDomains``); without it ``listen_funnel`` raises ``FunnelUnavailable`` with Go's text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytsnet.localnet.store import Node

__all__ = ["INGRESS_HOSTNAME", "INGRESS_TAG", "PEER_CAP_INGRESS", "FunnelPolicy"]

INGRESS_TAG = "tag:funnel-ingress"
INGRESS_HOSTNAME = "funnel-ingress"
PEER_CAP_INGRESS = "https://tailscale.com/cap/ingress"
_FUNNEL_PORTS = "https://tailscale.com/cap/funnel-ports?ports=443,8443,10000"
_PEERAPI_PORTS = {"First": 32768, "Last": 65535}


def _ips(n: Node) -> list[str]:
    return [a for a in (n.ipv4, n.ipv6) if a]


def _host(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


@dataclass(frozen=True)
class FunnelPolicy:
    nodes: frozenset[str] | None = None
    """Hostnames that may Funnel (None: every node but the ingress)."""

    def enabled_for(self, n: Node) -> bool:
        if INGRESS_TAG in n.tags:
            return False
        return self.nodes is None or n.hostname in self.nodes

    def capmap(self, n: Node) -> dict[str, Any]:
        """The node attributes ``n`` gets on top of the tailnet's (``funnel`` and its ports)."""
        return {"funnel": [], _FUNNEL_PORTS: []} if self.enabled_for(n) else {}

    def filter_rules(self, visible: Sequence[Node]) -> list[dict[str, Any]]:
        """The ingress's grant and its path to the Funnel nodes' peerAPIs (nothing without both)."""
        srcs = [ip for n in visible if INGRESS_TAG in n.tags for ip in _ips(n)]
        dsts = [ip for n in visible if self.enabled_for(n) for ip in _ips(n)]
        if not srcs or not dsts:
            return []
        return [
            {"SrcIPs": srcs, "DstPorts": [{"IP": ip, "Ports": dict(_PEERAPI_PORTS)} for ip in dsts],
             "IPProto": [6]},
            {"SrcIPs": srcs, "CapGrant": [{"Dsts": [_host(ip) for ip in dsts],
                                           "CapMap": {PEER_CAP_INGRESS: None}}]},
        ]
