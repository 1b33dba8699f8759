"""A port-mapping lab: a node behind a hard-NAT router that runs miniupnpd, and an "internet" host.

    node (LAN_NODE) ──veth── router (LAN_GATEWAY | WAN_ROUTER) ──veth── internet (WAN_INTERNET, WAN_SECOND)

* ``router`` forwards and NATs with nftables: ``masquerade random`` out of the WAN (endpoint-dependent
  mapping: a hard NAT, so only a port mapping gives a stable, reachable port) and a forward policy of
  drop for whatever the WAN sends unsolicited. miniupnpd (``miniupnpd-nftables``) listens on the LAN
  and adds its DNAT/accept rules to chains of the lab's own table (``TABLE``).
* The WAN is ``203.0.113.0/24`` (RFC 5737); no namespace has a route out of the lab. miniupnpd maps
  for such a reserved WAN address only after its STUN test (``pytsnet.testing.miniupnpd``), so the
  internet host runs the lab's RFC 5780 reflectors (``pytsnet.testing.reflectors``: WAN_INTERNET and
  WAN_SECOND x 3478/3479) and miniupnpd asks WAN_INTERNET:3478. The router has no input filter (its
  STUN answers from the other IP/port get in), and its own requests leave un-NATed (a rule before
  ``masquerade random``, which would change their port: a "symmetric NAT" to miniupnpd).
* ``miniupnpd(natpmp=…, upnp=…)`` (re)starts the daemon with those protocols (``enable_natpmp``
  covers both NAT-PMP and PCP in this version); ``redirects()`` lists its current DNAT rules.

Start a node's actors with ``with lab.node.entered(): ...`` so its sockets live on the LAN.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pytsnet.testing.miniupnpd import Miniupnpd, miniupnpd_available
from pytsnet.testing.netns import Netns, unique_tag
from pytsnet.testing.reflectors import Reflectors

__all__ = ["LAN_GATEWAY", "LAN_NODE", "STUN_GRID", "STUN_PORTS", "TABLE", "WAN_IF", "WAN_INTERNET",
           "WAN_ROUTER", "WAN_SECOND", "PortmapLab", "miniupnpd_available", "portmap_lab"]

LAN_GATEWAY, LAN_NODE = "10.77.0.1", "10.77.0.2"
WAN_ROUTER, WAN_INTERNET, WAN_SECOND = "203.0.113.10", "203.0.113.1", "203.0.113.2"
STUN_PORTS = (3478, 3479)
STUN_GRID = tuple((a, p) for a in (WAN_INTERNET, WAN_SECOND) for p in STUN_PORTS)
"""The reflectors' sockets (an RFC 5780 STUN server); miniupnpd asks the first."""
_GRID_SET = ", ".join(f"{a} . {p}" for a, p in STUN_GRID)
TABLE = "pmlab"
LAN_IF, WAN_IF = "lan0", "wan0"


RULESET = f"""
table inet {TABLE} {{
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "{LAN_IF}" oifname "{WAN_IF}" accept
        jump miniupnpd
    }}
    chain miniupnpd {{
    }}
    chain prerouting {{
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
        # the router's own STUN test (miniupnpd) leaves un-NATed: random would change its port
        oifname "{WAN_IF}" fib saddr type local ip daddr . udp dport {{ {_GRID_SET} }} accept
        oifname "{WAN_IF}" masquerade random
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting_miniupnpd {{
    }}
}}
"""


@dataclass
class PortmapLab:
    node: Netns
    router: Netns
    internet: Netns
    workdir: Path
    reflectors: Reflectors
    daemon: Miniupnpd = field(init=False)

    def __post_init__(self) -> None:
        self.daemon = Miniupnpd(self.router, self.workdir, WAN_IF, LAN_IF, TABLE, "10.77.0.0/24",
                                stun=STUN_GRID[0])

    def miniupnpd(self, *, natpmp: bool = True, upnp: bool = True, min_lifetime: int = 1) -> None:
        """(Re)start miniupnpd with these protocols; returns once it listens on what is enabled."""
        self.daemon.start(natpmp=natpmp, upnp=upnp, min_lifetime=min_lifetime)

    def stop_miniupnpd(self) -> None:
        self.daemon.stop()

    def daemon_log(self) -> str:
        return self.daemon.log()

    def redirects(self) -> list[tuple[int, str, int]]:
        """miniupnpd's UDP DNAT rules now: (external port, internal address, internal port)."""
        return self.daemon.redirects()


@contextlib.contextmanager
def portmap_lab() -> Iterator[PortmapLab]:
    """The three namespaces, addressed and with the router's ruleset, and the reflectors running;
    miniupnpd is not started."""
    tag = unique_tag()
    made: list[Netns] = []
    reflectors: Reflectors | None = None
    workdir = Path(tempfile.mkdtemp(prefix="pmlab"))
    lab: PortmapLab | None = None
    try:
        node, router, internet = (Netns(f"pm{role}{tag}") for role in ("n", "r", "i"))
        made += [node, router, internet]
        _link(router, LAN_IF, LAN_GATEWAY, node, LAN_NODE)
        _link(router, WAN_IF, WAN_ROUTER, internet, WAN_INTERNET)
        internet.sh(f"ip addr add {WAN_SECOND}/24 dev eth0")
        node.sh(f"ip route add default via {LAN_GATEWAY}")
        router.sh("sysctl -qw net.ipv4.ip_forward=1")
        (workdir / "ruleset.nft").write_text(RULESET)
        router.run(["nft", "-f", str(workdir / "ruleset.nft")])
        for ns in (router, internet):
            ns.assert_no_route_out()
        reflectors = Reflectors(internet, STUN_GRID)
        lab = PortmapLab(node, router, internet, workdir, reflectors)
        yield lab
    finally:
        if lab is not None:
            lab.stop_miniupnpd()
        if reflectors is not None:
            reflectors.close()
        for ns in reversed(made):
            ns.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _link(a: Netns, a_if: str, a_addr: str, b: Netns, b_addr: str) -> None:
    """A veth between ``a`` (named ``a_if``) and ``b`` (``eth0``), each with a /24."""
    subprocess.run(["ip", "link", "add", a_if, "netns", a.name, "type", "veth", "peer", "name", "eth0",
                    "netns", b.name], check=True, capture_output=True)
    a.sh(f"ip addr add {a_addr}/24 dev {a_if} && ip link set {a_if} up")
    b.sh(f"ip addr add {b_addr}/24 dev eth0 && ip link set eth0 up")
