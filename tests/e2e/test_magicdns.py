"""MagicDNS on a Python node (issue 16): an app's dnspython queries to 100.100.100.100 over UDP and
TCP, answered from the netmap (peers' FQDNs and short names, ExtraRecords from our localnet's policy),
NXDOMAIN for anything else by default, forwarded to a resolver on a tailnet peer only when the app
sets ``Config.fallback_resolvers`` or the tailnet's split DNS routes the suffix there; ``lookup``
and dials by a name only the resolver knows. Two or three Python nodes on a LocalTailnet (loopback).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice, UnknownTailnetHost
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.dnsclient import TailnetDnsServer, tcp_query, udp_query
from pytsnet.testing.polling import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_rig import FAST, Pair, make_device, tailnet_pair, wait_resolves

EXTRA = "app.lab.internal"
CORP = "db.corp.example"
OUTSIDE = "www.example.com"
UPSTREAM_PORT = 5353


def _a(m: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in m.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset)


def _fqdn(dev: ActorDevice) -> str:
    st = dev.status()
    assert st.self_node is not None
    return st.self_node.name


def _dns_policy(p: Pair) -> None:
    """ExtraRecord app.lab.internal → beta; split DNS corp.example → beta's resolver on the tailnet."""
    b_ip = p.ip(p.b)
    p.net.set_policy({"dns": {"extraRecords": [{"name": EXTRA, "type": "A", "value": b_ip}],
                              "routes": {"corp.example": [f"{b_ip}:{UPSTREAM_PORT}"]}}})
    wait_resolves(p.a, EXTRA, [b_ip], "the new DNS config in alpha's netmap")


def test_quad100_udp_and_tcp_answers_tailnet_names(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path) as p:
        _dns_policy(p)
        b_ip, b_fqdn = p.ip(p.b), _fqdn(p.b)
        assert b_fqdn.endswith(".localnet.ts.net.")

        async def main() -> None:
            for query in (udp_query, tcp_query):
                assert _a(await query(p.a, b_fqdn)) == [b_ip], query
                assert _a(await query(p.a, "beta")) == [b_ip], query  # short name: search domain
                assert _a(await query(p.a, EXTRA)) == [b_ip], query
                ptr = await query(p.a, dns.reversename.from_address(b_ip).to_text(), "PTR")
                assert [rd.to_text() for rr in ptr.answer for rd in rr] == [b_fqdn]
                nx = await query(p.a, OUTSIDE)
                assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer, query  # fail closed
                unknown = await query(p.a, "nobody.localnet.ts.net")
                assert unknown.rcode() == dns.rcode.NXDOMAIN
        anyio.run(main)
        c = p.a.status().counters
        assert c["dns_udp_queries"] >= 6 and c["dns_tcp_queries"] >= 6, c
        assert c["dns_rcode_NXDOMAIN"] >= 4 and c["dns_answers"] >= 12, c
        assert c.get("dns_forwarded", 0) == 0, c  # nothing left the node
        # The resolver is the node's own: quad-100 packets never reach the tunnel.
        assert p.b.status().counters.get("dns_queries", 0) == 0


def test_split_dns_and_lookup_and_dial_by_resolver_name(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path) as p:
        _dns_policy(p)
        b_ip = p.ip(p.b)
        upstream = TailnetDnsServer(p.b, {CORP: b_ip, OUTSIDE: "192.0.2.80"}, port=UPSTREAM_PORT)

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                await tg.start(upstream.serve)
                m = await udp_query(p.a, CORP)  # corp.example is routed to beta's resolver
                assert _a(m) == [b_ip], m
                assert upstream.seen == [CORP]
                nx = await udp_query(p.a, OUTSIDE)  # no route, no fallback: never leaves the node
                assert nx.rcode() == dns.rcode.NXDOMAIN
                assert upstream.seen == [CORP]
                assert await p.a.lookup(EXTRA) == [b_ip]
                assert await p.a.lookup(CORP) == [b_ip]
                with pytest.raises(UnknownTailnetHost):
                    await p.a.lookup(OUTSIDE)
                # A dial and a datagram by names only the resolver knows reach beta.
                lst = await p.b.listen(7100)
                conn = await p.a.tcp_connect(EXTRA, 7100)
                srv = await lst.accept()
                await conn.send(b"via extra record")
                assert await srv.receive() == b"via extra record"
                await conn.aclose()
                await srv.aclose()
                rx = await p.b.listen_packet(7101)
                tx = await p.a.listen_packet()
                await tx.sendto(b"dgram", (CORP, 7101))
                with anyio.fail_after(10):
                    data, src = await rx.recvfrom()
                assert data == b"dgram" and src[0] == p.ip(p.a)
                tg.cancel_scope.cancel()
        anyio.run(main)
        assert p.a.status().counters["dns_forwarded"] >= 2


def test_fallback_resolvers_forward_over_the_tailnet(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path) as p:
        b_ip = p.ip(p.b)
        upstream = TailnetDnsServer(p.b, {OUTSIDE: "192.0.2.80"}, port=UPSTREAM_PORT)
        gamma = ActorDevice(Config(dir=tmp_path / "gamma", hostname="gamma", auth_key=p.net.create_authkey(),
                                   control_url=p.net.control_url, backoff_max=1.0, bind_host="127.0.0.1",
                                   timings=FAST, stun_interval=(2.0, 3.0),
                                   fallback_resolvers=(f"{b_ip}:{UPSTREAM_PORT}",))).start()
        try:
            gamma.wait_until_running_blocking(20)
            wait_until(lambda: any(r.hostname == "beta" for r in gamma.status().peers), 20, "gamma sees beta")

            async def main() -> None:
                async with anyio.create_task_group() as tg:
                    await tg.start(upstream.serve)
                    nx = await udp_query(p.a, OUTSIDE)  # alpha: no fallback set
                    assert nx.rcode() == dns.rcode.NXDOMAIN and upstream.seen == []
                    for query in (udp_query, tcp_query):
                        m = await query(gamma, OUTSIDE)
                        assert m.rcode() == dns.rcode.NOERROR and _a(m) == ["192.0.2.80"], m
                    nx2 = await udp_query(gamma, "missing.example.net")  # the upstream's NXDOMAIN
                    assert nx2.rcode() == dns.rcode.NXDOMAIN
                    # tailnet names stay local even with a fallback
                    assert _a(await udp_query(gamma, "beta")) == [b_ip]
                    tg.cancel_scope.cancel()
            anyio.run(main)
            assert upstream.seen == [OUTSIDE, OUTSIDE, "missing.example.net"]
            c = gamma.status().counters
            assert c["dns_forwarded"] == 3 and c.get("dns_forward_failed", 0) == 0, c
        finally:
            gamma.close()


def test_ipv6_tailnet_quad100_v6_and_aaaa(tmp_path: Path) -> None:
    """With IPv6 on, fd7a:115c:a1e0::53 answers too, and names get their AAAA."""
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0", ipv6=True) as net:
        a, b = (make_device(net, tmp_path, n, ipv6=True) for n in ("alpha", "beta"))  # 24d: opt-in
        try:
            for d in (a, b):
                d.wait_until_running_blocking(20)
            wait_until(lambda: len(a.status().peers) == 1, 20, "alpha sees beta")
            b_ips = b.tailscale_ips()
            v4 = [ip for ip in b_ips if ":" not in ip]
            v6 = [ip for ip in b_ips if ":" in ip]
            assert v4 and v6, b_ips

            async def main() -> None:
                for where in ("100.100.100.100", "fd7a:115c:a1e0::53"):
                    m = await udp_query(a, "beta", "AAAA", where=where)
                    assert [rd.to_text() for rr in m.answer for rd in rr] == v6, (where, m)
                    assert _a(await udp_query(a, "beta", where=where)) == v4, where
                assert sorted(await a.lookup("beta")) == sorted(v4 + v6)
            anyio.run(main)
        finally:
            a.close()
            b.close()
