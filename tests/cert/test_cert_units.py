"""The pieces of 20a without a network: the cert cache's checks and Go's 2/3 renewal time, the
server TLS context (a real handshake against a trustme CA), localnet's DNS-01 server, and the
per-node CertDomains and ``https`` capability in netmaps."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading

import dns.message
import dns.query
import dns.rcode
import trustme
from cryptography import x509

from pytsnet.actors.cert.cache import (
    ACME_ACCOUNT_KEY,
    cert_key,
    key_key,
    load_valid,
    parse_valid,
    renew_at,
    valid_looking_domain,
)
from pytsnet.cert.tls import ContextCache, renewing_context, server_ssl_context
from pytsnet.localnet.dns01 import MAX_VALUES, LocalDnsServer
from pytsnet.localnet.netmap import SentState, Tailnet, delta, full_map
from pytsnet.localnet.store import Node
from pytsnet.state import MemoryStore

DOMAIN = "web.example.ts.net"
NOW = datetime.datetime.now(datetime.UTC)


def _pair(ca: trustme.CA, *names: str, start: datetime.datetime = NOW - datetime.timedelta(hours=1),
          end: datetime.datetime = NOW + datetime.timedelta(hours=2)) -> tuple[bytes, bytes]:
    leaf = ca.issue_cert(*names, not_before=start, not_after=end)
    return b"".join(b.bytes() for b in leaf.cert_chain_pems), leaf.private_key_pem.bytes()


def test_cache_accepts_only_a_usable_pair() -> None:
    ca = trustme.CA()
    cert, key = _pair(ca, DOMAIN)
    now = NOW.timestamp()
    assert parse_valid(cert, key, DOMAIN, now) is not None
    assert parse_valid(cert, key, "other.example.ts.net", now) is None  # not its name
    _, other_key = _pair(ca, DOMAIN)
    assert parse_valid(cert, other_key, DOMAIN, now) is None  # key does not match
    assert parse_valid(cert, key, DOMAIN, now + 3 * 3600) is None  # expired
    assert parse_valid(cert, key, DOMAIN, now - 2 * 3600) is None  # not yet valid
    assert parse_valid(b"junk", key, DOMAIN, now) is None
    store = MemoryStore()
    assert load_valid(store, DOMAIN, now) is None
    store.write_state(cert_key(DOMAIN), cert)
    store.write_state(key_key(DOMAIN), key)
    assert (cert_key(DOMAIN), key_key(DOMAIN), ACME_ACCOUNT_KEY) == (
        f"{DOMAIN}.crt", f"{DOMAIN}.key", "acme-account.key.pem")  # Go's certStateStore names
    assert load_valid(store, DOMAIN, now) is not None


def test_renewal_at_two_thirds_of_the_lifetime() -> None:
    start = NOW.replace(microsecond=0) - datetime.timedelta(hours=1)
    cert, key = _pair(trustme.CA(), DOMAIN, start=start, end=start + datetime.timedelta(hours=3))
    pair = parse_valid(cert, key, DOMAIN, NOW.timestamp())
    assert pair is not None
    assert renew_at(pair) == start.timestamp() + 2 * 3600


def test_domain_shape_guards_the_store_keys() -> None:
    assert valid_looking_domain(DOMAIN)
    for bad in ("", "web", "../x.ts.net", "a..b.ts.net", "a/b.ts.net", "a:b.ts.net", "A.ts.net",
                "a.ts.net\0"):
        assert not valid_looking_domain(bad), bad


def test_server_context_real_handshake_and_cache() -> None:
    ca = trustme.CA()
    cert, key = _pair(ca, DOMAIN)
    cache = ContextCache()
    ctx = cache.context(cert, key)
    assert cache.context(cert, key) is ctx  # same pair: same context
    cert2, key2 = _pair(ca, DOMAIN)
    assert cache.context(cert2, key2) is not ctx  # a renewed pair: a new one
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.set_alpn_protocols(["h2"])
    a, b = socket.socketpair()
    server = server_ssl_context(cert, key)
    done: dict[str, object] = {}

    def serve() -> None:
        with server.wrap_socket(b, server_side=True) as s:
            done["alpn"] = s.selected_alpn_protocol()
            s.sendall(b"ok")

    t = threading.Thread(target=serve)
    t.start()
    with client.wrap_socket(a, server_hostname=DOMAIN) as c:
        assert c.recv(2) == b"ok"
    t.join(5)
    assert done["alpn"] == "h2"
    try:
        server_ssl_context(cert, key2)
        raise AssertionError("a key not matching the cert must not load")
    except ssl.SSLError:
        pass


def test_localnet_dns01_server() -> None:
    async def main() -> None:
        srv = LocalDnsServer()
        host, port = await srv.start()
        name = f"_acme-challenge.{DOMAIN}"
        for i in range(MAX_VALUES + 2):
            await srv.publish(name, f"value{i}")
        loop = asyncio.get_running_loop()

        def ask(qname: str, rdtype: str = "TXT") -> dns.message.Message:
            return dns.query.udp(dns.message.make_query(qname, rdtype), host, port=port, timeout=3)

        r = await loop.run_in_executor(None, ask, name.upper())
        assert r.rcode() == dns.rcode.NOERROR
        values = sorted(b"".join(rd.strings).decode() for rd in r.answer[0])
        assert values == sorted(f"value{i}" for i in range(2, MAX_VALUES + 2))  # bounded: oldest dropped
        assert (await loop.run_in_executor(None, ask, f"_acme-challenge.other.{DOMAIN}")).rcode() == \
            dns.rcode.NXDOMAIN
        assert not (await loop.run_in_executor(None, ask, name, "A")).answer
        srv.close()

    asyncio.run(main())


def _node(i: int, name: str) -> Node:
    return Node(id=i, stable_id=f"n{i}", machine_key="", node_key="", disco_key="", user_id=1, hostname=name,
                ipv4=f"100.64.0.{i}", ipv6="", authorized=True, ephemeral=False)


def test_netmap_cert_domains_per_node_only_with_https() -> None:
    nodes = [_node(1, "web"), _node(2, "db")]
    on = Tailnet(nodes=nodes, users=[], online=set(), packet_filter=[], derp_map={}, https=True)
    m1, m2 = full_map(1, on, SentState()), full_map(2, on, SentState())
    assert m1["DNSConfig"]["CertDomains"] == ["web.localnet.ts.net"]
    assert m2["DNSConfig"]["CertDomains"] == ["db.localnet.ts.net"]
    assert "https" in m1["Node"]["CapMap"] and "https" in m1["Node"]["Capabilities"]
    off = Tailnet(nodes=nodes, users=[], online=set(), packet_filter=[], derp_map={})
    st = SentState()
    m = full_map(1, off, st)
    assert "CertDomains" not in m["DNSConfig"] and "https" not in m["Node"]["CapMap"]
    d = delta(1, on, st)  # turning HTTPS on reaches a live stream
    assert d is not None and d["DNSConfig"]["CertDomains"] == ["web.localnet.ts.net"]


def _serve_once(ctx: ssl.SSLContext, client: ssl.SSLContext) -> x509.Certificate:
    a, b = socket.socketpair()
    t = threading.Thread(target=lambda: _accept(ctx, b))
    t.start()
    with client.wrap_socket(a, server_hostname=DOMAIN) as c:
        der = c.getpeercert(binary_form=True)
        c.recv(1)
    t.join(5)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _accept(ctx: ssl.SSLContext, sock: socket.socket) -> None:
    try:
        with ctx.wrap_socket(sock, server_side=True) as s:
            s.sendall(b"!")
    except ssl.SSLError:
        sock.close()


def test_renewing_context_follows_the_provider() -> None:
    ca = trustme.CA()
    pairs = [_pair(ca, DOMAIN), _pair(ca, DOMAIN)]
    current = [pairs[0]]
    ctx = renewing_context(lambda d: current[0], DOMAIN)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    first = _serve_once(ctx, client)
    current[0] = pairs[1]  # renewed
    second = _serve_once(ctx, client)
    assert first.serial_number != second.serial_number
    assert second.serial_number == x509.load_pem_x509_certificates(pairs[1][0])[0].serial_number
    calls: list[str] = []

    def first_only(d: str) -> tuple[bytes, bytes]:  # builds the context, then fails every handshake
        calls.append(d)
        if len(calls) > 1:
            raise OSError("no cert")
        return pairs[0]

    failing = renewing_context(first_only, DOMAIN)
    try:
        _serve_once(failing, client)
        raise AssertionError("a provider failure must fail the handshake")
    except (ssl.SSLError, ConnectionError):
        pass
    assert len(calls) == 2
