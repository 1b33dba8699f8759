"""``pytsnet localnet --https``: with no ``--dns01-api`` localnet serves the DNS-01 records itself and
names the server in its banner (what pebble's ``-dnsserver`` takes); with ``--dns01-api`` it does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import dns.rcode


def _banner(state: Path, *flags: str) -> list[str]:
    p = subprocess.Popen([sys.executable, "-m", "pytsnet", "localnet", "--state", str(state), "--no-relay",
                          *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [p.stdout.readline().strip() for _ in range(2)]  # type: ignore[union-attr]
        if lines[1].startswith("localnet DNS-01 server: udp "):
            addr = lines[1].split()[4]
            host, port = addr.rsplit(":", 1)
            q = dns.message.make_query("_acme-challenge.nobody.localnet.ts.net", "TXT")
            r = dns.query.udp(q, host, port=int(port), timeout=5)
            lines.append(dns.rcode.to_text(r.rcode()))
    finally:
        p.send_signal(2)
        p.wait(timeout=15)
    return lines


def test_localnet_https_serves_its_own_dns01_server(tmp_path: Path) -> None:
    own = _banner(tmp_path / "a", "--https", "--dns01-listen", "127.0.0.1:0")
    assert own[0].startswith("localnet control server: http://127.0.0.1:")
    assert own[1].startswith("localnet DNS-01 server: udp 127.0.0.1:"), own
    assert own[2] == "NXDOMAIN"  # it answers, and publishes nothing control did not set
    api = _banner(tmp_path / "b", "--https", "--dns01-api", "http://127.0.0.1:9")
    assert api[1] == "localnet DERP relay: off", api
