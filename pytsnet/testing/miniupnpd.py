"""miniupnpd (``miniupnpd-nftables``) in a lab router namespace: its config, start, stop and rules.

Shared by the port-mapping lab (``portmap_lab``) and NAT-lab routers with ``LanSpec(upnp=True)``.
The daemon adds its DNAT/accept rules to chains of a table the lab made (``table inet <table>`` with
the chains ``miniupnpd``, ``prerouting_miniupnpd`` and ``postrouting_miniupnpd``, each jumped to from
a hooked chain: :func:`miniupnpd_chains` writes such a table).

The WAN address: miniupnpd 2.3.1 maps for no reserved WAN address (its ``addr_is_reserved`` list
holds RFC 1918, 100.64/10, 198.18/15 and the RFC 5737 ranges) unless ``ext_perform_stun=yes``: it
then asks a STUN server (``ext_stun_host``/``ext_stun_port``) for its external address and runs
RFC 5780's filtering test (four Binding requests: no change, change port, change IP, both). When all
four answers arrive and show its own port unchanged, it logs "STUN: ext interface … is now behind
unrestricted full-cone NAT 1:1 with public IP address …", enables port forwarding whatever the
address, and reports the STUN-learned address over NAT-PMP, PCP and UPnP (``update_ext_ip_addr_from_stun``
in its ``miniupnpd.c``, ``perform_stun`` in ``upnpstun.c``). The labs therefore keep their routers'
WAN addresses in 203.0.113.0/24 (RFC 5737, like every other lab address: no test names a real
network) and point miniupnpd at the lab's RFC 5780 reflectors (``pytsnet.testing.reflectors``).
What the router must let in for the test is configured by the lab, not by miniupnpd: its own
``add_filter_rule2("stun test")`` opens the forward chain only, while the answers from the other
IP/port reach the router itself and are new flows to conntrack.
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

__all__ = ["STUN_ENABLED", "Miniupnpd", "miniupnpd_available", "miniupnpd_chains"]

STUN_ENABLED = "Port forwarding is now enabled"
"""miniupnpd's log line after a STUN test that found no restrictive NAT or filtering."""
_STUN_FAILED = ("Port forwarding is now disabled", "Performing STUN failed")


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
    allowed for inside addresses in ``allow`` (a CIDR), its external address learned from the RFC 5780
    STUN server at ``stun`` (host, port); files (config, log, leases) in ``workdir``."""

    router: Netns
    workdir: Path
    ext_if: str
    listen_if: str
    table: str
    allow: str
    stun: tuple[str, int]
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
            "ext_perform_stun=yes", f"ext_stun_host={self.stun[0]}", f"ext_stun_port={self.stun[1]}",
            f"allow 1024-65535 {self.allow} 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535", ""])

    def start(self, *, natpmp: bool = True, upnp: bool = True, min_lifetime: int = 1) -> None:
        """(Re)start with these protocols (``enable_natpmp`` covers NAT-PMP and PCP in 2.3.1);
        returns once its STUN test enabled port forwarding and it listens on what is enabled. A
        restrictive verdict (it would refuse every mapping) is an error: the lab is misbuilt."""
        self.stop()
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf, log = self.workdir / "miniupnpd.conf", self.workdir / "miniupnpd.log"
        conf.write_text(self.conf(natpmp, upnp, min_lifetime))
        start = log.stat().st_size if log.exists() else 0  # earlier runs' lines are not this one's
        with log.open("ab") as out:
            self.daemon = self.router.popen(
                ["miniupnpd", "-d", "-f", str(conf), "-P", str(self.workdir / "pid")],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15  # a STUN test without every answer waits 3 rounds of 3 s
        while time.monotonic() < deadline:
            with log.open("rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
            if any(bad in text for bad in _STUN_FAILED):
                break
            if (STUN_ENABLED in text and ("Listening for NAT-PMP" in text or not natpmp)
                    and ("HTTP listening" in text or not upnp)):
                return
            if self.daemon.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()  # a daemon that will not map is no use to the lab: none is left running
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

    def stun_verdict(self) -> str:
        """The last "STUN: ext interface …" line of its log (its NAT verdict), or ""."""
        lines = [ln for ln in self.log().splitlines() if "STUN: ext interface" in ln]
        return lines[-1] if lines else ""

    def redirects(self) -> list[tuple[int, str, int]]:
        """Its UDP DNAT rules now: (external port, internal address, internal port)."""
        out = self.router.run(["nft", "list", "chain", "inet", self.table, "prerouting_miniupnpd"]).stdout
        found = []
        for line in out.splitlines():
            m = re.search(r"(?:udp|th) dport (\d+) dnat (?:ip )?to ([\d.]+):(\d+)", line)
            if m and ("udp" in line or "@nh,72,8 0x11" in line):  # 0x11: the IPv4 protocol byte, UDP
                found.append((int(m.group(1)), m.group(2), int(m.group(3))))
        return found
