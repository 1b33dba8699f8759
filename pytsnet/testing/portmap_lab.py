"""A port-mapping lab: a node behind a hard-NAT router that runs miniupnpd, and an "internet" host.

    node (LAN_NODE) ──veth── router (LAN_GATEWAY | WAN_ROUTER) ──veth── internet (WAN_INTERNET)

* ``router`` forwards and NATs with nftables: ``masquerade random`` out of the WAN (endpoint-dependent
  mapping: a hard NAT, so only a port mapping gives a stable, reachable port) and a forward policy of
  drop for whatever the WAN sends unsolicited. miniupnpd (``miniupnpd-nftables``) listens on the LAN
  and adds its DNAT/accept rules to chains of the lab's own table (``TABLE``).
* The WAN is ``198.20.0.0/24``: miniupnpd 2.3.1 refuses to map when its WAN address is private or
  reserved (its ``addr_is_reserved`` list includes RFC 1918, 100.64/10, 198.18/15 and the RFC 5737
  documentation ranges) and this version has no ``ext_allow_private_ipv4``; so the lab uses the
  first block past the benchmarking range. It never leaves the lab: no namespace has a route out.
* ``miniupnpd(natpmp=…, upnp=…)`` (re)starts the daemon with those protocols (``enable_natpmp``
  covers both NAT-PMP and PCP in this version); ``redirects()`` lists its current DNAT rules.

Start a node's actors with ``with lab.node.entered(): ...`` so its sockets live on the LAN.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pytsnet.testing.netns import Netns, unique_tag

__all__ = ["LAN_GATEWAY", "LAN_NODE", "TABLE", "WAN_INTERNET", "WAN_ROUTER", "PortmapLab",
           "miniupnpd_available", "portmap_lab"]

LAN_GATEWAY, LAN_NODE = "10.77.0.1", "10.77.0.2"
WAN_ROUTER, WAN_INTERNET = "198.20.0.1", "198.20.0.2"
TABLE = "pmlab"
LAN_IF, WAN_IF = "lan0", "wan0"


def miniupnpd_available() -> str | None:
    """None when the lab can run here, else why not (tests skip with it)."""
    for tool in ("nft", "miniupnpd", "ip"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


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
        oifname "{WAN_IF}" masquerade random
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting_miniupnpd {{
    }}
}}
"""


def _conf(natpmp: bool, upnp: bool, min_lifetime: int, lease_file: Path) -> str:
    yes = {True: "yes", False: "no"}
    return "\n".join([
        f"ext_ifname={WAN_IF}", f"listening_ip={LAN_IF}", "http_port=0",
        f"enable_natpmp={yes[natpmp]}", f"enable_upnp={yes[upnp]}", "secure_mode=yes",
        "system_uptime=yes", f"min_lifetime={min_lifetime}", f"lease_file={lease_file}",
        f"upnp_table_name={TABLE}", f"upnp_nat_table_name={TABLE}", "upnp_forward_chain=miniupnpd",
        "upnp_nat_chain=prerouting_miniupnpd", "upnp_nat_postrouting_chain=postrouting_miniupnpd",
        "uuid=3d5bf2a4-24c0-4c00-8a00-000000000024", "notify_interval=60",
        "allow 1024-65535 10.77.0.0/24 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535", ""])


@dataclass
class PortmapLab:
    node: Netns
    router: Netns
    internet: Netns
    workdir: Path
    daemon: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)

    def miniupnpd(self, *, natpmp: bool = True, upnp: bool = True, min_lifetime: int = 1) -> None:
        """(Re)start miniupnpd with these protocols; returns once it listens on what is enabled."""
        self.stop_miniupnpd()
        conf = self.workdir / "miniupnpd.conf"
        log = self.workdir / "miniupnpd.log"
        conf.write_text(_conf(natpmp, upnp, min_lifetime, self.workdir / "leases"))
        with log.open("ab") as out:
            self.daemon = self.router.popen(
                ["miniupnpd", "-d", "-f", str(conf), "-P", str(self.workdir / "pid")],
                stdout=out, stderr=subprocess.STDOUT)
        want = [p for p, on in (("5351", natpmp), (":", upnp)) if on]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if ("Listening for NAT-PMP" in text or not natpmp) and ("HTTP listening" in text or not upnp):
                return
            if self.daemon.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"miniupnpd did not start ({want}): {log.read_text(errors='replace')[-2000:]}")

    def stop_miniupnpd(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()  # SIGTERM: it removes its rules and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.daemon.wait(timeout=5)
            if self.daemon.poll() is None:
                self.daemon.kill()
                self.daemon.wait(timeout=5)
        self.daemon = None

    def daemon_log(self) -> str:
        path = self.workdir / "miniupnpd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def redirects(self) -> list[tuple[int, str, int]]:
        """miniupnpd's UDP DNAT rules now: (external port, internal address, internal port)."""
        out = self.router.run(["nft", "list", "chain", "inet", TABLE, "prerouting_miniupnpd"]).stdout
        found = []
        for line in out.splitlines():
            m = re.search(r"(?:udp|th) dport (\d+) dnat (?:ip )?to ([\d.]+):(\d+)", line)
            if m and ("udp" in line or "@nh,72,8 0x11" in line):  # 0x11: the IPv4 protocol byte, UDP
                found.append((int(m.group(1)), m.group(2), int(m.group(3))))
        return found


@contextlib.contextmanager
def portmap_lab() -> Iterator[PortmapLab]:
    """The three namespaces, addressed and with the router's ruleset; miniupnpd is not started."""
    tag = unique_tag()
    made: list[Netns] = []
    workdir = Path(tempfile.mkdtemp(prefix="pmlab"))
    lab: PortmapLab | None = None
    try:
        node, router, internet = (Netns(f"pm{role}{tag}") for role in ("n", "r", "i"))
        made += [node, router, internet]
        _link(router, LAN_IF, LAN_GATEWAY, node, LAN_NODE)
        _link(router, WAN_IF, WAN_ROUTER, internet, WAN_INTERNET)
        node.sh(f"ip route add default via {LAN_GATEWAY}")
        router.sh("sysctl -qw net.ipv4.ip_forward=1")
        (workdir / "ruleset.nft").write_text(RULESET)
        router.run(["nft", "-f", str(workdir / "ruleset.nft")])
        for ns in (router, internet):
            ns.assert_no_route_out()
        lab = PortmapLab(node, router, internet, workdir)
        yield lab
    finally:
        if lab is not None:
            lab.stop_miniupnpd()
        for ns in reversed(made):
            ns.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _link(a: Netns, a_if: str, a_addr: str, b: Netns, b_addr: str) -> None:
    """A veth between ``a`` (named ``a_if``) and ``b`` (``eth0``), each with a /24."""
    subprocess.run(["ip", "link", "add", a_if, "netns", a.name, "type", "veth", "peer", "name", "eth0",
                    "netns", b.name], check=True, capture_output=True)
    a.sh(f"ip addr add {a_addr}/24 dev {a_if} && ip link set {a_if} up")
    b.sh(f"ip addr add {b_addr}/24 dev eth0 && ip link set eth0 up")
