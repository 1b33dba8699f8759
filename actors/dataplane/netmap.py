"""``NetworkMap`` → ``DataplaneNetmap``: the parts of a netmap the data plane and ``whois`` need."""

from __future__ import annotations

import ipaddress
import logging
import os
from urllib.parse import urlsplit

from pytsnet.messages.dataplane import DataplaneNetmap, UserInfo
from pytsnet.messages.dns import DnsRecord, DnsSettings
from pytsnet.messages.magicsock import DerpRegion
from pytsnet.messages.peers import PeerInfo
from pytsnet.messages.wgengine import WgFilterRule
from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.mapsession import NetworkMap
from pytsnet.wire.tailcfg import DERPMap, DNSConfig, Node
from pytsnet.wire.tailcfg.ssh import SSHPolicy

log = logging.getLogger("pytsnet.dataplane")

__all__ = ["DEFAULT_STUN_PORT", "derp_regions", "netmap_for_dataplane"]

DEFAULT_STUN_PORT = 3478
DEFAULT_DERP_PORT = 443


def _plain_http() -> bool:
    """Go's ``TS_DEBUG_USE_DERP_HTTP``: dial DERP nodes with plain HTTP (local relays)."""
    return os.environ.get("TS_DEBUG_USE_DERP_HTTP", "") in ("1", "true")


def plain_http_origin(control_url: str) -> tuple[str, int] | None:
    """``(host, port)`` of a plain-HTTP control URL, else None."""
    u = urlsplit(control_url)
    if u.scheme != "http" or not u.hostname:
        return None
    try:
        return u.hostname, u.port or 80
    except ValueError:
        return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_origin(node: tuple[str, int], control: tuple[str, int] | None) -> bool:
    """The DERP node is the control listener (``localhost`` and 127.0.0.1 count as one host)."""
    if control is None or node[1] != control[1]:
        return False
    return node[0] == control[0] or (_loopback(node[0]) and _loopback(control[0]))


def derp_regions(dm: DERPMap | None, plain_origin: tuple[str, int] | None = None) -> tuple[DerpRegion, ...]:
    """One dialable node per region: the first that is not STUN-only (Go dials nodes in order).

    TLS as in Go (``InsecureForTests``: without certificate checks), plain HTTP with Go's
    ``TS_DEBUG_USE_DERP_HTTP=1``. One addition: an ``InsecureForTests`` node at the very host and
    port of a plain-HTTP control URL (``plain_origin``) is a relay mounted on that control listener,
    as the local tailnet's default one is, and is spoken to in plain HTTP like the control server
    itself (a Go node needs the environment variable there)."""
    out: list[DerpRegion] = []
    for rid, region in sorted((dm.Regions or {}).items() if dm is not None else ()):
        for n in region.Nodes or []:
            if n.STUNOnly:
                continue
            host = n.IPv4 if n.IPv4 and n.IPv4 != "none" else n.HostName
            # the node's IPv6 (used only with Config.ipv6); an IPv6 literal HostName is one
            host6 = n.IPv6 if n.IPv6 and n.IPv6 != "none" else ""
            if ":" in host:
                host, host6 = "", host6 or host
            port = n.DERPPort or (80 if _plain_http() else DEFAULT_DERP_PORT)
            origin = (host or host6, port)  # 24d
            plain = _plain_http() or (n.InsecureForTests and _same_origin(origin, plain_origin))
            stun = 0 if n.STUNPort < 0 else (n.STUNPort or DEFAULT_STUN_PORT)
            out.append(DerpRegion(region_id=rid, host=host, port=port, stun_port=stun, tls=not plain,
                                  insecure_for_tests=n.InsecureForTests, code=region.RegionCode,
                                  host6=host6))  # 24d
            break
    return tuple(out)


def _caps(n: Node) -> list[str]:
    return sorted({*n.Capabilities, *n.CapMap})


def netmap_for_dataplane(nm: NetworkMap, private: NodePrivate, control_url: str = "") -> DataplaneNetmap:
    nodes = (nm.self_node, *nm.peers)
    return DataplaneNetmap(
        node_private=private.to_text(), self_node=PeerInfo.from_node(nm.self_node),
        derp_regions=derp_regions(nm.derp_map, plain_http_origin(control_url)),
        packet_filter=([WgFilterRule.from_tailcfg(r) for r in nm.packet_filter]
                       if nm.packet_filter_set else None),
        user_profiles={uid: UserInfo(id=p.ID or uid, login_name=p.LoginName, display_name=p.DisplayName)
                       for uid, p in nm.user_profiles.items()},
        capabilities={n.ID: _caps(n) for n in nodes}, domain=nm.domain,
        dns=dns_settings(nm.dns_config), service_ips=service_host_ips(nm.self_node),
        ssh_policy=ssh_policy(nm.ssh_policy),  # 22b
    )


def ssh_policy(raw: dict[str, object] | None) -> SSHPolicy | None:
    """The netmap's ``SSHPolicy`` parsed; one that does not parse is None (fail closed: no SSH)."""
    if raw is None:
        return None
    try:
        return SSHPolicy.model_validate(raw)
    except ValueError as e:  # pydantic's ValidationError
        log.warning("netmap: unusable SSHPolicy ignored (Tailscale SSH refuses everyone): %s",
                    str(e).splitlines()[0][:120])
        return None


def service_host_ips(n: Node) -> dict[str, list[str]]:
    """Services (20d): Go's ``NetworkMap.GetVIPServiceIPMap``: the ``service-host`` capability's one
    value (``tailcfg.ServiceIPMappings``); none if it is absent, repeated or malformed. Only
    ``svc:`` names and IP literals are kept."""
    vals = n.CapMap.get("service-host")
    if not vals or len(vals) != 1 or not isinstance(vals[0], dict):
        return {}
    out: dict[str, list[str]] = {}
    for name, ips in vals[0].items():
        if not isinstance(name, str) or not name.startswith("svc:") or not isinstance(ips, list):
            continue
        good = []
        for ip in ips:
            try:
                good.append(str(ipaddress.ip_address(ip)))
            except (TypeError, ValueError):
                continue
        if good:
            out[name] = good
    return out


def dns_settings(cfg: DNSConfig | None) -> DnsSettings | None:
    """The parts of ``tailcfg.DNSConfig`` the MagicDNS resolver uses; malformed ExtraRecords are skipped."""
    if cfg is None:
        return None
    records = []
    for r in cfg.ExtraRecords:
        name, value = r.get("Name"), r.get("Value")
        if isinstance(name, str) and isinstance(value, str) and name and value:
            records.append(DnsRecord(name=name, type=str(r.get("Type") or ""), value=value))
    return DnsSettings(
        proxied=cfg.Proxied, domains=tuple(cfg.Domains), cert_domains=tuple(cfg.CertDomains),
        routes={suffix: tuple(x.Addr for x in (rs or ()) if x.Addr) for suffix, rs in cfg.Routes.items()},
        extra_records=tuple(records))
