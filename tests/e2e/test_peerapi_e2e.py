"""The peerAPI between two Python nodes over a local tailnet (WireGuard, the nodes' own netstacks).

beta's peerAPI port reaches alpha the way Go finds it: in beta's Hostinfo ``Services``, relayed by
the control server into alpha's netmap. alpha asks ``/dns-query`` (RFC 8484 GET and POST) and gets
the answer of beta's MagicDNS resolver (the ``dns`` actor; the name is an ExtraRecord of the local
tailnet's DNS policy, a name outside the tailnet is its fail-closed NXDOMAIN); unknown paths are
404, a browser-looking request 403, a node of
another user gets 403 for DNS (Go's rule: only our own user's nodes, absent an exit node), and a bad
request ends only its own connection.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import dns.message
import dns.rcode
import pytest
from e2e_rig import make_device, tailnet_pair, wait_resolves

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.policy import POLICY_FILE
from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.store import DEFAULT_USER
from pytsnet.messages.peerapi import PeerApiStatusRequest
from pytsnet.testing.peerapi import http_request
from pytsnet.testing.polling import wait_until

PRINTER = "printer.corp.example"
DNS_POLICY = {"extraRecords": [{"name": PRINTER, "type": "A", "value": "100.64.9.9"}]}


def _serves_printer(dev: ActorDevice) -> None:
    """Wait until ``dev``'s resolver has the tailnet's DNS policy (an ExtraRecord) from its netmap."""
    wait_resolves(dev, PRINTER, ["100.64.9.9"], "the DNS policy in the node's netmap")


def _query(name: str, qid: int) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = qid
    return q.to_wire()


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def test_peer_reaches_dns_query_and_unknown_paths_404(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path) as p:
        assert p.b.system is not None
        p.net.set_policy({"dns": DNS_POLICY})
        _serves_printer(p.b)
        doh0 = p.b.status().counters.get("dns_doh_queries", 0)
        port = p.b.peerapi_port
        assert 32768 <= port <= 65535
        b_ip = p.ip(p.b)
        # Hostinfo Services as control stored it, and as it relayed it into alpha's netmap
        assert p.net.node("beta").hostinfo["Services"] == [{"Proto": "peerapi4", "Port": port},
                                                           {"Proto": "peerapi6", "Port": port}]
        assert p.a.whois(b_ip).node.peerapi_ports == {"peerapi4": port, "peerapi6": port}
        sock = p.a.tcp_connect_blocking(b_ip, port, timeout=20)
        sock.settimeout(20)
        host = f"{b_ip}:{port}"

        ans = http_request(sock, "GET", f"/dns-query?dns={_b64url(_query('printer.corp.example.', 0))}",
                           host=host, headers=[("Accept", "application/dns-message")])
        assert ans is not None and ans.status == 200, ans
        assert ans.headers["content-type"] == "application/dns-message"
        msg = dns.message.from_wire(ans.body)
        assert msg.id == 0 and msg.rcode() == dns.rcode.NOERROR
        assert [r.to_text() for r in msg.answer[0]] == ["100.64.9.9"]

        # POST on the same (kept-alive) connection; a name the resolver does not know is its NXDOMAIN
        ans = http_request(sock, "POST", "/dns-query", host=host, body=_query("nope.example.", 4242),
                           headers=[("Content-Type", "application/dns-message")])
        assert ans is not None and ans.status == 200
        msg = dns.message.from_wire(ans.body)
        assert msg.id == 4242 and msg.rcode() == dns.rcode.NXDOMAIN

        assert p.b.status().counters["dns_doh_queries"] == doh0 + 2  # both reached the resolver as DoH

        assert http_request(sock, "GET", "/v0/nothing-here", host=host).status == 404  # type: ignore[union-attr]
        assert http_request(sock, "GET", "/", host=host).status == 404  # type: ignore[union-attr]
        bad = http_request(sock, "POST", "/dns-query", host=host, body=b"x",
                           headers=[("Content-Type", "text/plain")])
        assert bad is not None and bad.status == 400
        # Go's browser guards: an Origin, or a Host that is not one of beta's addresses
        assert http_request(sock, "GET", "/dns-query?dns=AAAA", host=host,  # type: ignore[union-attr]
                            headers=[("Origin", "http://evil.example")]).status == 403
        assert http_request(sock, "GET", "/dns-query?dns=AAAA",  # type: ignore[union-attr]
                            host="evil.example:80").status == 403
        sock.close()

        # a malformed request gets a 400 and ends its own connection only
        junk = p.a.tcp_connect_blocking(b_ip, port, timeout=20)
        junk.settimeout(20)
        junk.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = b""
        while chunk := junk.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 400 ")
        junk.close()
        again = p.a.tcp_connect_blocking(b_ip, port, timeout=20)
        again.settimeout(20)
        ok = http_request(again, "GET", f"/dns-query?dns={_b64url(_query('printer.corp.example.', 7))}",
                          host=host)
        assert ok is not None and ok.status == 200
        again.close()

        ref = p.b.system.lookup("peerapi")
        assert ref is not None
        st = ref.ask(PeerApiStatusRequest(), timeout=5)
        assert st.port == port and st.counters["dns"] == 3 and st.counters["not_found"] == 2
        assert st.counters["forbidden"] == 2 and st.counters["bad_request"] == 2
        counters = p.b.status().counters  # the same counts in the device's status()
        assert counters["peerapi_dns"] == 3 and counters["peerapi_not_found"] == 2


def _mallory(net: LocalTailnet, tmp_path: Path) -> ActorDevice:
    """A node of another user (mallory@example.com) on the same tailnet."""
    return ActorDevice(Config(dir=tmp_path / "mallory", hostname="mallory",
                              auth_key=net.create_authkey(user="mallory@example.com"),
                              control_url=net.control_url, backoff_max=1.0, bind_host="127.0.0.1")).start()


def _both_see_each_other(b: ActorDevice, other: ActorDevice) -> None:
    b.wait_until_running_blocking(20)
    other.wait_until_running_blocking(20)
    wait_until(lambda: len(b.status().peers) == 1 and len(other.status().peers) == 1, 20, "peers")


def test_node_of_another_user_is_denied_dns(tmp_path: Path) -> None:
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        b = make_device(net, tmp_path, "beta")
        other = _mallory(net, tmp_path)
        try:
            _both_see_each_other(b, other)
            assert b.system is not None
            b_ip, port = b.tailscale_ips()[0], b.peerapi_port
            sock = other.tcp_connect_blocking(b_ip, port, timeout=20)
            sock.settimeout(20)
            ans = http_request(sock, "GET", f"/dns-query?dns={_b64url(_query('printer.corp.example.', 1))}",
                               host=f"{b_ip}:{port}")
            assert ans is not None and ans.status == 403 and b"DNS access denied" in ans.body
            sock.close()
        finally:
            b.close()
            other.close()


def test_peerapi_is_behind_the_packet_filter(tmp_path: Path) -> None:
    """Stricter than Go (whose tstun lets any peer's SYN to the peerAPI port past the filter and checks
    at L7): a node the policy does not let reach us cannot open a peerAPI connection at all."""
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / POLICY_FILE).write_text(json.dumps({"acls": [
        {"action": "accept", "src": [DEFAULT_USER], "dst": ["*:*"]},
        {"action": "accept", "src": ["mallory@example.com"], "dst": ["mallory@example.com:*"]}]}))
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0") as net:
        b = make_device(net, tmp_path, "beta")
        other = _mallory(net, tmp_path)
        try:
            _both_see_each_other(b, other)
            assert b.system is not None
            with pytest.raises(TimeoutError):
                other.tcp_connect_blocking(b.tailscale_ips()[0], b.peerapi_port, timeout=3)
            assert b.status().drops.get("filter_no_rule", 0) > 0  # its SYNs, dropped by beta's filter
            # while beta (allowed everywhere) reaches mallory's peerAPI: 404 for an unknown path
            s = b.tcp_connect_blocking(other.tailscale_ips()[0], other.peerapi_port, timeout=20)
            s.settimeout(20)
            ans = http_request(s, "GET", "/nope", host=f"{other.tailscale_ips()[0]}:{other.peerapi_port}")
            assert ans is not None and ans.status == 404
            s.close()
        finally:
            b.close()
            other.close()


def test_peerapi6_over_ipv6(tmp_path: Path) -> None:
    """With IPv6 on, the same listener serves beta's IPv6 address at the ``peerapi6`` port."""
    with LocalTailnet(tmp_path / "control", listen="127.0.0.1:0", ipv6=True) as net:
        a, b = make_device(net, tmp_path, "alpha", ipv6=True), make_device(net, tmp_path, "beta", ipv6=True)
        try:
            a.wait_until_running_blocking(20)
            b.wait_until_running_blocking(20)
            wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, 20, "peers")
            assert b.system is not None
            net.set_policy({"dns": DNS_POLICY})
            _serves_printer(b)
            b6 = next(ip for ip in b.tailscale_ips() if ":" in ip)
            port = a.whois(b6).node.peerapi_ports["peerapi6"]
            assert port == b.peerapi_port
            sock = a.tcp_connect_blocking(b6, port, timeout=20)
            sock.settimeout(20)
            ans = http_request(sock, "POST", "/dns-query", host=f"[{b6}]:{port}",
                               body=_query("printer.corp.example.", 3),
                               headers=[("Content-Type", "application/dns-message")])
            assert ans is not None and ans.status == 200
            assert [r.to_text() for r in dns.message.from_wire(ans.body).answer[0]] == ["100.64.9.9"]
            assert b.status().counters["dns_doh_queries"] >= 1
            sock.close()
        finally:
            a.close()
            b.close()
