"""A Python node serving as exit node and subnet router, reached by a Python peer over WireGuard.

The lab (``pytsnet.testing.exitlab``): the local tailnet's servers in ``hub``, node B
(``advertise_exit_node=True``, ``advertise_routes=[SUBNET]``) in ``exit``, node A in ``client``
(no route to the internet or the subnet). B's Hostinfo carries RoutableIPs and the
peerapi-dns-proxy service; A's DoH query to B's peerAPI for a non-tailnet name is answered by B's
host resolver (the lab's DNS server, from B's namespace's resolv.conf).

Using B as exit node is not on this branch (A's exit-node selection and control's route approval
are other pieces of issue 17), so a test-only seam gives A's engine and dial table a route to the
lab's internet address via B (a ``PeersChanged`` with B's AllowedIPs widened, told to A's data-plane
bridge and device inbox as the PeerTracker would); what it proves is B's side: the SYN crosses
WireGuard, B's filter and netstack forward it, B's forwarder dials the kernel server in the
internet namespace, and the bytes come back from that address.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import dns.message
import dns.rcode
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.localnet.server import LocalTailnet
from pytsnet.messages.peers import GetPeers, PeersChanged
from pytsnet.testing.dnsclient import udp_query
from pytsnet.testing.exitlab import (
    ECHO_PORT,
    HUB_ADDR,
    INTERNET_ADDR,
    SUBNET,
    SUBNET_SERVER,
    WEB_NAME,
    ExitLab,
    exit_lab,
)
from pytsnet.testing.netns import netns_available
from pytsnet.testing.peerapi import http_request
from pytsnet.testing.polling import wait_until
from pytsnet.tree import DATAPLANE, EVENTS, PEERS

pytestmark = [pytest.mark.interop, pytest.mark.root]


@dataclass
class World:
    lab: ExitLab
    net: LocalTailnet
    a: ActorDevice
    b: ActorDevice


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    with exit_lab(tmp_path, prefix="xe") as lab:
        net = LocalTailnet(tmp_path / "ctl", listen=f"{HUB_ADDR}:0", keepalive_interval=5)
        devs: list[ActorDevice] = []
        try:
            with lab.hub.entered():
                net.start()
            key = net.create_authkey(reusable=True)
            common = {"auth_key": key, "control_url": net.control_url, "backoff_max": 1.0,
                      "advertise_endpoints": False}
            with lab.exit.entered():
                b = ActorDevice(Config(dir=tmp_path / "b", hostname="exit", advertise_exit_node=True,
                                       advertise_routes=[SUBNET], **common)).start()  # type: ignore[arg-type]
                devs.append(b)
            with lab.client.entered():
                a = ActorDevice(Config(dir=tmp_path / "a", hostname="client", **common)).start()  # type: ignore[arg-type]
                devs.append(a)
            for d in devs:
                d.wait_until_running_blocking(30)
            wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, 30, "peers")
            yield World(lab, net, a, b)
        finally:
            for d in devs:
                d.close()
            net.close()


def route_via_b(w: World, prefixes: list[str]) -> None:
    """The seam: A's tables as if B's AllowedIPs held ``prefixes`` (what 17a + 17c will produce)."""
    assert w.a.system is not None
    peers_ref = w.a.system.lookup(PEERS)
    assert peers_ref is not None
    table = peers_ref.ask(GetPeers())
    peers = [p.model_copy(update={"allowed_ips": [*p.addresses, *prefixes]}) if p.hostname == "exit" else p
             for p in table.peers]
    msg = PeersChanged(changed=[p for p in peers if p.hostname == "exit"], peers=peers)
    for name in (DATAPLANE, EVENTS):
        ref = w.a.system.lookup(name)
        assert ref is not None
        ref.tell(msg)
    wait_until(lambda: any(INTERNET_ADDR in str(p.allowed_ips) for p in w.a._peers), 10, "seam applied")


def echo(w: World, host: str, blob: bytes) -> bytes:
    sock = w.a.tcp_connect_blocking(host, ECHO_PORT, timeout=30)
    sock.settimeout(30)
    try:
        sock.sendall(blob)
        sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
        return bytes(got)
    finally:
        sock.close()


def test_hostinfo_advertises_routes_and_the_dns_proxy(world: World) -> None:
    hi = world.net.node("exit").hostinfo
    assert hi["RoutableIPs"] == ["0.0.0.0/0", SUBNET, "::/0"]
    assert {"Proto": "peerapi-dns-proxy", "Port": 1} in hi["Services"]
    assert "RoutableIPs" not in world.net.node("client").hostinfo or not world.net.node("client").hostinfo[
        "RoutableIPs"]
    assert all(s["Proto"] != "peerapi-dns-proxy" for s in world.net.node("client").hostinfo["Services"])


def test_exit_node_forwards_a_peers_tcp_to_the_internet_and_subnet(world: World) -> None:
    route_via_b(world, [f"{INTERNET_ADDR}/32", SUBNET])
    blob = hashlib.shake_256(b"through the exit node").digest(512 * 1024)
    got = echo(world, INTERNET_ADDR, blob)
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    assert echo(world, SUBNET_SERVER, b"subnet hello") == b"subnet hello"
    c = world.b.status().counters
    assert c["forward_tcp_forwarded"] >= 2 and c["forward_tcp_bytes_in"] >= len(blob)


def test_exit_node_forwards_a_peers_udp_dns_query(world: World) -> None:
    route_via_b(world, [f"{INTERNET_ADDR}/32"])
    answer = anyio.run(lambda: udp_query(world.a, WEB_NAME, where=INTERNET_ADDR))
    assert [rr.to_text() for rrset in answer.answer for rr in rrset] == [INTERNET_ADDR]
    assert world.b.status().counters["forward_udp_forwarded"] == 1


def test_exit_node_doh_answers_internet_names_with_its_host_resolver(world: World) -> None:
    b_ip = world.b.tailscale_ips()[0]
    port = world.b.peerapi_port
    sock = world.a.tcp_connect_blocking(b_ip, port, timeout=20)
    sock.settimeout(20)
    q = dns.message.make_query(WEB_NAME, "A")
    q.id = 777
    b64 = base64.urlsafe_b64encode(q.to_wire()).decode().rstrip("=")
    ans = http_request(sock, "GET", f"/dns-query?dns={b64}", host=f"{b_ip}:{port}")
    assert ans is not None and ans.status == 200, ans
    msg = dns.message.from_wire(ans.body)
    assert msg.id == 777 and msg.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in msg.answer[0]] == [INTERNET_ADDR]
    q2 = dns.message.make_query("nothing.example.test", "A")
    ans = http_request(sock, "POST", "/dns-query", host=f"{b_ip}:{port}", body=q2.to_wire(),
                       headers=[("Content-Type", "application/dns-message")])
    assert ans is not None and ans.status == 200
    assert dns.message.from_wire(ans.body).rcode() == dns.rcode.NXDOMAIN  # the lab server's answer
    sock.close()
    assert world.b.status().counters.get("peerapi_dns_exit", 0) >= 2
