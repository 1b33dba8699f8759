"""A Python node serving as exit node and subnet router, used by a Python peer over WireGuard.

The lab (``pytsnet.testing.exitlab``): the local tailnet's servers in ``hub``, node B
(``advertise_exit_node=True``, ``advertise_routes=[SUBNET]``) in ``exit``, node A
(``accept_routes=True``) in ``client``, which has no route to the internet or the subnet. Control
approves B's routes; A selects B as its exit node. A's TCP and UDP to the lab's internet and subnet
go through B's forwarders; A's name lookups beyond the tailnet go to B's peerAPI DoH, which B's host
resolver (the lab's DNS server, from B's namespace's resolv.conf) answers.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import dns.message
import dns.rcode
import pytest

from pytsnet.config import Config
from pytsnet.device import ActorDevice
from pytsnet.errors import ExitNodeUnavailable
from pytsnet.localnet.server import LocalTailnet
from pytsnet.testing.dnsclient import udp_query
from pytsnet.testing.exitlab import (
    ECHO_PORT,
    HUB_ADDR,
    INTERNET_ADDR,
    SUBNET,
    SUBNET_SERVER,
    WEB_BODY,
    WEB_NAME,
    WEB_PORT,
    ExitLab,
    echo_roundtrip,
    exit_lab,
)
from pytsnet.testing.netns import netns_available
from pytsnet.testing.peerapi import http_request
from pytsnet.testing.polling import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.root]


@dataclass
class World:
    lab: ExitLab
    net: LocalTailnet
    a: ActorDevice
    b: ActorDevice


@contextlib.contextmanager
def make_world(tmp_path: Path, *, client_route: bool = False) -> Iterator[World]:
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    with exit_lab(tmp_path, prefix="xe", client_route=client_route) as lab:
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
                a = ActorDevice(Config(dir=tmp_path / "a", hostname="client", accept_routes=True,
                                       **common)).start()  # type: ignore[arg-type]
                devs.append(a)
            for d in devs:
                d.wait_until_running_blocking(30)
            wait_until(lambda: len(a.status().peers) == 1 and len(b.status().peers) == 1, 30, "peers")
            yield World(lab, net, a, b)
        finally:
            for d in devs:
                d.close()
            net.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        yield w


def use_b(w: World) -> None:
    """Control approves B's routes; A accepts them and engages B as its exit node."""
    w.net.approve_routes("exit", ["0.0.0.0/0", "::/0", SUBNET])
    wait_until(lambda: w.a.set_exit_node_blocking("exit") is not None, 20, "B engaged as A's exit node")


def echo(w: World, host: str, blob: bytes) -> bytes:
    sock = w.a.tcp_connect_blocking(host, ECHO_PORT, timeout=30)
    sock.settimeout(30)
    try:
        return echo_roundtrip(sock, blob)
    finally:
        sock.close()


def test_hostinfo_advertises_routes_and_the_dns_proxy(world: World) -> None:
    hi: dict[str, Any] = dict(world.net.node("exit").hostinfo)
    assert hi["RoutableIPs"] == ["0.0.0.0/0", SUBNET, "::/0"]
    assert {"Proto": "peerapi-dns-proxy", "Port": 1} in hi["Services"]
    client: dict[str, Any] = dict(world.net.node("client").hostinfo)
    assert not client.get("RoutableIPs")
    assert all(s["Proto"] != "peerapi-dns-proxy" for s in client["Services"])


def test_exit_node_forwards_a_peers_tcp_to_the_internet_and_subnet(world: World) -> None:
    use_b(world)
    blob = hashlib.shake_256(b"through the exit node").digest(512 * 1024)
    got = echo(world, INTERNET_ADDR, blob)
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    assert echo(world, SUBNET_SERVER, b"subnet hello") == b"subnet hello"
    c = world.b.status().counters
    assert c["forward_tcp_forwarded"] >= 2 and c["forward_tcp_bytes_in"] >= len(blob)


def test_exit_node_forwards_a_peers_udp_dns_query(world: World) -> None:
    use_b(world)
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


def test_peer_fetches_from_the_internet_by_name_through_the_exit_node(world: World) -> None:
    """The whole chain: A's lookup goes to B's DoH (B's host resolver answers), A's dial to the
    answer goes through B's forwarder to the kernel HTTP server."""
    use_b(world)
    assert world.a.lookup_blocking(WEB_NAME) == [INTERNET_ADDR]
    sock = world.a.tcp_connect_blocking(WEB_NAME, WEB_PORT, timeout=30)
    sock.settimeout(30)
    try:
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {WEB_NAME}\r\n\r\n".encode())
        body = bytearray()
        while chunk := sock.recv(65536):
            body += chunk
    finally:
        sock.close()
    assert bytes(body).endswith(WEB_BODY)
    c = world.b.status().counters
    assert c["peerapi_dns_exit"] >= 1 and c["forward_tcp_forwarded"] >= 1


def test_unapproved_routes_are_not_used(world: World) -> None:
    """Advertised but not approved: A has no route through B, and nothing reaches B's forwarders."""
    with pytest.raises(OSError):
        world.a.tcp_connect_blocking(SUBNET_SERVER, ECHO_PORT, timeout=5)
    assert world.b.status().counters.get("forward_tcp_forwarded", 0) == 0


def refused_within(dev: ActorDevice, seconds: float) -> bool:
    """True once a dial beyond the tailnet raises ``ExitNodeUnavailable`` (within ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            dev.tcp_connect_blocking(INTERNET_ADDR, ECHO_PORT, timeout=2).close()
        except ExitNodeUnavailable:
            return True
        except OSError:
            pass  # B still looks online: the dial times out through the tunnel
        time.sleep(0.2)
    return False


def test_nothing_leaks_where_the_client_could_reach_the_internet_itself(tmp_path: Path) -> None:
    """A's namespace has its own route to the internet server (a host-socket fallback would work):
    through the exit node, and with the exit node gone, not one packet leaves on that interface."""
    with make_world(tmp_path, client_route=True) as w:
        lab, ifname = w.lab, w.lab.client_direct_if
        assert ifname is not None
        probe = f"import socket; socket.create_connection(({INTERNET_ADDR!r}, {ECHO_PORT}), 5).close()"
        idle = lab.tx_packets(lab.client, ifname)
        direct = lab.client.run(["python3", "-c", probe], check=False)
        assert direct.returncode == 0  # the route is real ...
        time.sleep(1.0)  # (the probe's last ACK is out before we count)
        before = lab.tx_packets(lab.client, ifname)
        assert before > idle  # ... and the counter sees a host socket using it
        use_b(w)
        assert echo(w, INTERNET_ADDR, b"via the exit node") == b"via the exit node"
        assert w.a.lookup_blocking(WEB_NAME) == [INTERNET_ADDR]
        w.b.close()  # the exit node goes away: dials fail closed, still nothing on the direct route
        assert refused_within(w.a, 15.0), "dials beyond the tailnet not refused once the exit node is gone"
        assert lab.tx_packets(lab.client, ifname) == before
