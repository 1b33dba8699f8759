"""``NetworkMap`` → ``DataplaneNetmap``: the parts of a netmap the data plane and ``whois`` need."""

from __future__ import annotations

import os

from pytsnet.messages.dataplane import DataplaneNetmap, UserInfo
from pytsnet.messages.magicsock import DerpRegion
from pytsnet.messages.peers import PeerInfo
from pytsnet.messages.wgengine import WgFilterRule
from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.mapsession import NetworkMap
from pytsnet.wire.tailcfg import DERPMap, Node

__all__ = ["DEFAULT_STUN_PORT", "derp_regions", "netmap_for_dataplane"]

DEFAULT_STUN_PORT = 3478
DEFAULT_DERP_PORT = 443


def _plain_http() -> bool:
    """Go's ``TS_DEBUG_USE_DERP_HTTP``: dial DERP nodes with plain HTTP (local relays)."""
    return os.environ.get("TS_DEBUG_USE_DERP_HTTP", "") in ("1", "true")


def derp_regions(dm: DERPMap | None) -> tuple[DerpRegion, ...]:
    """One dialable node per region: the first that is not STUN-only (Go dials nodes in order).

    A node marked ``InsecureForTests`` is a test relay: we speak plain HTTP to it (the local
    tailnet's relay is mounted on its plain-HTTP control listener); otherwise TLS, unless
    ``TS_DEBUG_USE_DERP_HTTP=1`` as in Go."""
    out: list[DerpRegion] = []
    for rid, region in sorted((dm.Regions or {}).items() if dm is not None else ()):
        for n in region.Nodes or []:
            if n.STUNOnly:
                continue
            host = n.IPv4 if n.IPv4 and n.IPv4 != "none" else n.HostName
            plain = n.InsecureForTests or _plain_http()
            port = n.DERPPort or (80 if plain and not n.InsecureForTests else DEFAULT_DERP_PORT)
            stun = 0 if n.STUNPort < 0 else (n.STUNPort or DEFAULT_STUN_PORT)
            out.append(DerpRegion(region_id=rid, host=host, port=port, stun_port=stun, tls=not plain,
                                  insecure_for_tests=n.InsecureForTests))
            break
    return tuple(out)


def _caps(n: Node) -> list[str]:
    return sorted({*n.Capabilities, *n.CapMap})


def netmap_for_dataplane(nm: NetworkMap, private: NodePrivate) -> DataplaneNetmap:
    nodes = (nm.self_node, *nm.peers)
    return DataplaneNetmap(
        node_private=private.to_text(), self_node=PeerInfo.from_node(nm.self_node),
        derp_regions=derp_regions(nm.derp_map),
        packet_filter=([WgFilterRule.from_tailcfg(r) for r in nm.packet_filter]
                       if nm.packet_filter_set else None),
        user_profiles={uid: UserInfo(id=p.ID or uid, login_name=p.LoginName, display_name=p.DisplayName)
                       for uid, p in nm.user_profiles.items()},
        capabilities={n.ID: _caps(n) for n in nodes}, domain=nm.domain,
    )
