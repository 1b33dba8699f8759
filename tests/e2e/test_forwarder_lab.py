"""Forwarders against real kernel servers (issue 17, acting as exit node / subnet router).

The router side alone: ``exitlab.tun_router`` puts a forwarding netstack in the lab's exit
namespace with the client namespace's kernel as its peer (a TUN), so a kernel socket in ``client``
stands for a tailnet peer's app dialing through us. The client has no route to the "internet" or
the subnet except through that TUN; the forwarders' host sockets live in ``exit``.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from pytsnet.actors.forwarder import ForwardLimits
from pytsnet.netstack.forward import ForwardPolicy
from pytsnet.testing.exitlab import (
    ECHO_PORT,
    INTERNET_ADDR,
    RESET_ME,
    SUBNET,
    SUBNET_SERVER,
    WEB_BODY,
    WEB_NAME,
    WEB_PORT,
    ExitLab,
    exit_lab,
    tun_router,
)
from pytsnet.testing.netns import netns_available

pytestmark = [pytest.mark.interop, pytest.mark.root]

EXIT = ForwardPolicy(exit_node=True)
SUBNET_ONLY = ForwardPolicy(routes=(ipaddress.ip_network(SUBNET),))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[ExitLab]:
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    with exit_lab(tmp_path) as lab:
        yield lab


def echo_through(lab: ExitLab, host: str, blob: bytes) -> bytes:
    """Send ``blob``, half-close, read the echo to EOF (a kernel client in the client namespace)."""
    def run() -> bytes:
        with socket.create_connection((host, ECHO_PORT), timeout=30) as c:
            c.sendall(blob)
            c.shutdown(socket.SHUT_WR)  # the echo server FINs only after ours: half-close both ways
            got = bytearray()
            while chunk := c.recv(65536):
                got += chunk
            return bytes(got)
    return lab.client.call(run)


def connect_errno(lab: ExitLab, host: str, port: int, timeout: float = 3.0) -> int | str:
    def run() -> int | str:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except TimeoutError:
            return "timeout"
        except OSError as e:
            return e.errno or -1
        return 0
    return lab.client.call(run)


def test_exit_node_tcp_bytes_both_ways_with_half_close(lab: ExitLab) -> None:
    blob = hashlib.shake_256(b"exit").digest(2 * 1024 * 1024)
    with tun_router(lab, EXIT) as r:
        got = echo_through(lab, INTERNET_ADDR, blob)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()

        def http() -> bytes:
            with socket.create_connection((INTERNET_ADDR, WEB_PORT), timeout=30) as c:
                c.sendall(f"GET / HTTP/1.0\r\nHost: {INTERNET_ADDR}\r\n\r\n".encode())
                out = bytearray()
                while chunk := c.recv(65536):
                    out += chunk
                return bytes(out)
        assert lab.client.call(http).endswith(WEB_BODY)
        st = r.forwarder_status()
        assert st.counters["tcp_forwarded"] >= 2
        assert st.counters["tcp_bytes_out"] >= len(blob) and st.counters["tcp_bytes_in"] >= len(blob)


def test_connect_failure_resets_the_peer(lab: ExitLab) -> None:
    with tun_router(lab, EXIT) as r:
        assert connect_errno(lab, INTERNET_ADDR, 9) == errno.ECONNREFUSED  # closed port: RST back
        assert r.forwarder_status().counters["tcp_connect_econnrefused"] == 1


def test_subnet_router_forwards_only_its_routes(lab: ExitLab) -> None:
    blob = b"subnet" * 5000
    with tun_router(lab, SUBNET_ONLY) as r:
        assert echo_through(lab, SUBNET_SERVER, blob) == blob
        assert connect_errno(lab, INTERNET_ADDR, ECHO_PORT, timeout=2.0) == "timeout"  # not advertised
        assert r.drops().get("not_our_address", 0) >= 1
        assert r.forwarder_status().counters["tcp_forwarded"] == 1


def test_udp_dns_query_through_the_exit_node(lab: ExitLab) -> None:
    with tun_router(lab, EXIT) as r:
        q = dns.message.make_query(WEB_NAME, "A")
        answer = lab.client.call(lambda: dns.query.udp(q, INTERNET_ADDR, timeout=5))
        assert [rr.to_text() for rrset in answer.answer for rr in rrset] == [INTERNET_ADDR]
        st = r.forwarder_status()
        assert st.counters["udp_forwarded"] == 1 and st.udp_flows == 1 and st.counters["udp_bytes_in"] > 0


def test_icmp_echo_through_ping_sockets_where_allowed(lab: ExitLab) -> None:
    with tun_router(lab, EXIT) as r:
        lab.exit.sh("sysctl -qw net.ipv4.ping_group_range='1 0'")  # nobody may: dropped and counted
        denied = lab.client.run(["ping", "-c", "1", "-W", "2", INTERNET_ADDR], check=False)
        assert denied.returncode != 0
        assert r.forwarder_status().counters["echo_socket_denied"] >= 1
        time.sleep(0.2)
        lab.exit.sh("sysctl -qw net.ipv4.ping_group_range='0 2147483647'")
        ok = lab.client.run(["ping", "-c", "2", "-W", "3", INTERNET_ADDR], check=False)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert r.forwarder_status().counters["echo_forwarded"] >= 1


def test_destination_reset_reaches_the_peer(lab: ExitLab) -> None:
    def run() -> int | str:
        with socket.create_connection((INTERNET_ADDR, ECHO_PORT), timeout=10) as c:
            c.sendall(RESET_ME)
            try:
                data = c.recv(100)
            except OSError as e:
                return e.errno or -1
            return f"read {data!r}"
    with tun_router(lab, EXIT) as r:
        assert lab.client.call(run) == errno.ECONNRESET
        assert r.forwarder_status().counters["tcp_reset_by_destination"] == 1


def test_udp_flows_are_bounded_and_end_after_their_idle_timeout(lab: ExitLab) -> None:
    limits = ForwardLimits(max_udp_flows=1, dns_idle=2.0)
    with tun_router(lab, EXIT, limits) as r:
        q = dns.message.make_query(WEB_NAME, "A")

        def two_sockets() -> tuple[object, object]:
            first = dns.query.udp(q, INTERNET_ADDR, timeout=5)
            try:
                second: object = dns.query.udp(q, INTERNET_ADDR, timeout=0.5)  # another source port
            except Exception as e:
                second = type(e).__name__
            return first, second
        first, second = lab.client.call(two_sockets)
        assert isinstance(first, dns.message.Message) and first.answer and second == "Timeout"
        st = r.forwarder_status()
        assert st.counters["udp_flows_full"] >= 1 and st.udp_flows == 1
        deadline = time.monotonic() + 8
        while r.forwarder_status().udp_flows and time.monotonic() < deadline:
            time.sleep(0.1)
        st = r.forwarder_status()
        assert st.udp_flows == 0 and st.counters["udp_idle_timeout"] == 1
        # the slot is free again: a new 4-tuple is forwarded
        again = lab.client.call(lambda: dns.query.udp(q, INTERNET_ADDR, timeout=5))
        assert [rr.to_text() for rrset in again.answer for rr in rrset] == [INTERNET_ADDR]


def test_exit_node_keeps_its_own_lan_unless_advertised(lab: ExitLab) -> None:
    """The subnet is on the exit namespace's own LAN: an exit node alone does not reach it (Go's
    "guest wifi"), the same node advertising it as a route does."""
    with tun_router(lab, EXIT) as r:
        assert connect_errno(lab, SUBNET_SERVER, ECHO_PORT, timeout=2.0) == "timeout"
        assert r.drops().get("forward_exit_lan", 0) >= 1
    both = ForwardPolicy(exit_node=True, routes=(ipaddress.ip_network(SUBNET),))
    with tun_router(lab, both):
        assert echo_through(lab, SUBNET_SERVER, b"lan") == b"lan"
        assert echo_through(lab, INTERNET_ADDR, b"net") == b"net"


def test_host_lan_reads_the_namespace_interfaces(lab: ExitLab) -> None:
    from pytsnet.actors.forwarder.lan import host_lan
    nets, hosts = lab.exit.call(host_lan)
    assert ipaddress.ip_network(SUBNET) in nets and ipaddress.ip_address("10.33.44.1") in hosts
    assert ipaddress.ip_network("198.18.6.0/24") in nets
    assert not any(n.network_address.is_loopback for n in nets)
