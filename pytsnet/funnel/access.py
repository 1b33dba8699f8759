"""Who may Funnel (Go ``ipn.CheckFunnelAccess``, ``NodeCanFunnel``, ``CheckFunnelPort``), and whether
any ingress can reach us.

Go's checks read the node's own capabilities: ``https`` (HTTPS certificates on), the ``funnel`` node
attribute, and the ports in ``https://tailscale.com/cap/funnel-ports?ports=443,8443,10000`` (a port
list or ``first-last`` ranges; no such attribute, or a malformed one, allows no port). pytsnet adds
one check Go leaves to Tailscale's service: some node of this tailnet must hold the ingress peer
capability towards us (``actors.peerapi.ingress.ingress_sources``), else nothing could ever bring a
public connection and a Funnel listener would silently be a tailnet-only one: ``FunnelUnavailable``.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from pytsnet.errors import FunnelPortNotAllowed, FunnelUnavailable

__all__ = ["CAPABILITY_FUNNEL_PORTS", "CAPABILITY_HTTPS", "DEFAULT_FUNNEL_PORTS", "NODE_ATTR_FUNNEL",
           "check_funnel_access", "check_funnel_port", "funnel_ports_attr", "node_can_funnel"]

CAPABILITY_HTTPS = "https"
NODE_ATTR_FUNNEL = "funnel"
CAPABILITY_FUNNEL_PORTS = "https://tailscale.com/cap/funnel-ports"
DEFAULT_FUNNEL_PORTS = (443, 8443, 10000)
"""The ports Tailscale's Funnel offers (and localnet grants)."""


def funnel_ports_attr(ports: Iterable[int] = DEFAULT_FUNNEL_PORTS) -> str:
    """The node attribute granting ``ports`` (what control puts in the node's ``CapMap``)."""
    return f"{CAPABILITY_FUNNEL_PORTS}?ports={','.join(str(p) for p in ports)}"


def node_can_funnel(caps: Iterable[str]) -> None:
    """Go ``NodeCanFunnel``: HTTPS and the ``funnel`` attribute, with Go's texts."""
    have = set(caps)
    if CAPABILITY_HTTPS not in have:
        raise FunnelUnavailable("Funnel not available; HTTPS must be enabled. See https://tailscale.com/s/https.")
    if NODE_ATTR_FUNNEL not in have:
        raise FunnelUnavailable('Funnel not available; "funnel" node attribute not set. '
                                "See https://tailscale.com/s/no-funnel.")


def _deny(port: int, allowed: str = "") -> FunnelPortNotAllowed:
    if not allowed:
        return FunnelPortNotAllowed(port, f"port {port} is not allowed for funnel")
    return FunnelPortNotAllowed(port, f"port {port} is not allowed for funnel; allowed ports are: {allowed}")


def check_funnel_port(port: int, caps: Iterable[str]) -> None:
    """Go ``CheckFunnelPort``: ``port`` must be in the funnel-ports attribute's list or ranges."""
    attr = next((c for c in sorted(caps) if c.startswith(CAPABILITY_FUNNEL_PORTS)), None)
    if attr is None:
        raise _deny(port)
    parts = urlsplit(attr)
    ports_text = parse_qs(parts.query).get("ports", [""])[0]
    if not ports_text or parts._replace(query="").geturl() != CAPABILITY_FUNNEL_PORTS:
        raise _deny(port)
    for item in ports_text.split(","):
        if not item:
            continue
        first, sep, last = item.partition("-")
        if not sep:
            if first == str(port):
                return
            continue
        if first.isdigit() and last.isdigit() and int(first) <= 65535 and int(last) <= 65535 and \
                int(first) <= port <= int(last):
            return
    raise _deny(port, ports_text)


def check_funnel_access(port: int, caps: Iterable[str]) -> None:
    """Go ``CheckFunnelAccess``: the node may Funnel, on this port."""
    have = list(caps)
    node_can_funnel(have)
    check_funnel_port(port, have)
