"""The netmap → resolver config step of the ``dns`` actor: answer sets, ExtraRecords, routes, suffix."""

from __future__ import annotations

import ipaddress

import pytest

from pytsnet.actors.dns import resolver_config
from pytsnet.config import Config
from pytsnet.errors import ConfigError
from pytsnet.messages.dns import DnsRecord, DnsSettings
from pytsnet.messages.peers import PeerInfo

ME4 = PeerInfo(node_id=1, name="me.tail.ts.net.", addresses=["100.64.0.1/32"])
ME46 = PeerInfo(node_id=1, name="me.tail.ts.net.", addresses=["100.64.0.1/32", "fd7a:115c:a1e0::1/128"])
PEER = PeerInfo(node_id=2, name="web.tail.ts.net.", addresses=["100.64.0.2/32", "fd7a:115c:a1e0::2/128"])
RECORDS = (DnsRecord(name="app.lab.internal", value="100.64.0.3"),
           DnsRecord(name="v6.lab.internal", type="AAAA", value="fd7a:115c:a1e0::3"),
           DnsRecord(name="bad.lab.internal", type="A", value="fd7a:115c:a1e0::4"),
           DnsRecord(name="junk.lab.internal", value="nope"))
SETTINGS = DnsSettings(proxied=True, domains=("tail.ts.net",),
                       routes={"corp.example": ("100.64.0.9:5353",), "lab.internal": ()},
                       extra_records=RECORDS)


def test_ipv4_only_node_answers_no_aaaa() -> None:
    c = resolver_config(ME4, [PEER], SETTINGS)
    assert c.hosts["web.tail.ts.net"] == (ipaddress.ip_address("100.64.0.2"),)
    assert "v6.lab.internal" not in c.hosts and "bad.lab.internal" not in c.hosts
    assert "junk.lab.internal" not in c.hosts
    assert c.hosts["app.lab.internal"] == (ipaddress.ip_address("100.64.0.3"),)
    assert "tail.ts.net" in c.authoritative and "lab.internal" in c.authoritative
    assert c.route_for("db.corp.example") is not None and c.fallback == ()
    assert c.search == ("tail.ts.net",) and not c.ipv6


def test_ipv6_node_answers_both_and_fallback_parsed() -> None:
    c = resolver_config(ME46, [PEER], SETTINGS, fallback=("100.64.0.8", "https://doh.example/x"))
    assert len(c.hosts["web.tail.ts.net"]) == 2 and c.ipv6
    assert c.hosts["v6.lab.internal"] == (ipaddress.ip_address("fd7a:115c:a1e0::3"),)
    assert [str(u) for u in c.fallback] == ["100.64.0.8:53"]  # DoH skipped with a warning


def test_magicdns_off_keeps_names_but_not_the_suffix() -> None:
    c = resolver_config(ME4, [PEER], DnsSettings(proxied=False))
    assert "web.tail.ts.net" in c.hosts and "tail.ts.net" not in c.authoritative and c.search == ()


def test_config_rejects_bad_fallback_resolvers() -> None:
    with pytest.raises(ConfigError):
        Config(ephemeral=True, fallback_resolvers=("https://dns.google/dns-query",)).resolved()
    ok = Config(ephemeral=True, fallback_resolvers=["100.64.0.8:5353"]).resolved()  # type: ignore[arg-type]
    assert ok.fallback_resolvers == ("100.64.0.8:5353",)
