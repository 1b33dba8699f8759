"""miniupnpd (``miniupnpd-nftables``) in a lab router namespace: its config, start, stop and rules.

Shared by the port-mapping lab (``portmap_lab``) and NAT-lab routers with ``LanSpec(upnp=True)``.
The daemon adds its DNAT/accept rules to chains of a table the lab made (``table inet <table>`` with
the chains ``miniupnpd``, ``prerouting_miniupnpd`` and ``postrouting_miniupnpd``, each jumped to from
a hooked chain: :func:`miniupnpd_chains` writes such a table). miniupnpd 2.3.1 refuses to map when
its WAN address is private or reserved (its ``addr_is_reserved`` list includes RFC 1918, 100.64/10,
198.18/15 and the RFC 5737 documentation ranges) and has no ``ext_allow_private_ipv4``: labs give
such routers a WAN address in 198.20.0.0/24 (the first block past the benchmarking range), which no
namespace routes out of the lab.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pytsnet.testing.netns import Netns

__all__ = ["UPNP_WAN_NET", "Miniupnpd", "miniupnpd_available", "miniupnpd_chains"]

UPNP_WAN_NET = "198.20.0.0/24"
"""A WAN prefix miniupnpd maps for (not in its reserved list), kept inside the labs."""


def miniupnpd_available() -> str | None:
    """None when miniupnpd labs can run here, else why not (tests skip with it)."""
    for tool in ("nft", "miniupnpd", "ip"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


def miniupnpd_chains(table: str, forward_policy: str = "accept") -> str:
    """A ``table inet`` holding only the hooks and the chains miniupnpd fills (no NAT of its own)."""
    return (
        f"table inet {table} {{\n"
        f"  chain forward {{\n    type filter hook forward priority 0; policy {forward_policy};\n"
        "    jump miniupnpd\n  }\n"
        "  chain miniupnpd {\n  }\n"
        "  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n"
        "    jump prerouting_miniupnpd\n  }\n"
        "  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n"
        "    jump postrouting_miniupnpd\n  }\n"
        "  chain prerouting_miniupnpd {\n  }\n"
        "  chain postrouting_miniupnpd {\n  }\n"
        "}\n")


@dataclass
class Miniupnpd:
    """One router's miniupnpd: ``ext_if`` its WAN, ``listen_if`` its LAN, rules in ``table``, mapping
    allowed for inside addresses in ``allow`` (a CIDR); files (config, log, leases) in ``workdir``."""

    router: Netns
    workdir: Path
    ext_if: str
    listen_if: str
    table: str
    allow: str
    daemon: subprocess.Popen[bytes] | None = None

    def conf(self, natpmp: bool, upnp: bool, min_lifetime: int) -> str:
        yes = {True: "yes", False: "no"}
        return "\n".join([
            f"ext_ifname={self.ext_if}", f"listening_ip={self.listen_if}", "http_port=0",
            f"enable_natpmp={yes[natpmp]}", f"enable_upnp={yes[upnp]}", "secure_mode=yes",
            "system_uptime=yes", f"min_lifetime={min_lifetime}", f"lease_file={self.workdir / 'leases'}",
            f"upnp_table_name={self.table}", f"upnp_nat_table_name={self.table}",
            "upnp_forward_chain=miniupnpd", "upnp_nat_chain=prerouting_miniupnpd",
            "upnp_nat_postrouting_chain=postrouting_miniupnpd",
            "uuid=3d5bf2a4-24c0-4c00-8a00-000000000024", "notify_interval=60",
            f"allow 1024-65535 {self.allow} 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535", ""])

    def start(self, *, natpmp: bool = True, upnp: bool = True, min_lifetime: int = 1) -> None:
        """(Re)start with these protocols (``enable_natpmp`` covers NAT-PMP and PCP in 2.3.1);
        returns once it listens on what is enabled."""
        self.stop()
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf, log = self.workdir / "miniupnpd.conf", self.workdir / "miniupnpd.log"
        conf.write_text(self.conf(natpmp, upnp, min_lifetime))
        with log.open("ab") as out:
            self.daemon = self.router.popen(
                ["miniupnpd", "-d", "-f", str(conf), "-P", str(self.workdir / "pid")],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if ("Listening for NAT-PMP" in text or not natpmp) and ("HTTP listening" in text or not upnp):
                return
            if self.daemon.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"miniupnpd did not start (natpmp={natpmp}, upnp={upnp}): {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()  # SIGTERM: it removes its rules and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.daemon.wait(timeout=5)
            if self.daemon.poll() is None:
                self.daemon.kill()
                self.daemon.wait(timeout=5)
        self.daemon = None

    def log(self) -> str:
        path = self.workdir / "miniupnpd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def redirects(self) -> list[tuple[int, str, int]]:
        """Its UDP DNAT rules now: (external port, internal address, internal port)."""
        out = self.router.run(["nft", "list", "chain", "inet", self.table, "prerouting_miniupnpd"]).stdout
        found = []
        for line in out.splitlines():
            m = re.search(r"(?:udp|th) dport (\d+) dnat (?:ip )?to ([\d.]+):(\d+)", line)
            if m and ("udp" in line or "@nh,72,8 0x11" in line):  # 0x11: the IPv4 protocol byte, UDP
                found.append((int(m.group(1)), m.group(2), int(m.group(3))))
        return found
