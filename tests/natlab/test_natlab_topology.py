"""The NAT lab's self-tests: each NAT type behaves as declared, seen with plain UDP sockets.

A node's socket asks the internet's reflectors what address they see (its mapping), and asks one
reflector to have *another* send to that mapping (a packet from a destination the inside never
sent to): that is how mapping (endpoint-independent or not) and filtering are told apart.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pytsnet.testing.natlab import (
    INTERNET_ADDR,
    PREFIX,
    REFLECTOR_ADDRS,
    REFLECTOR_PORTS,
    SECOND_ADDR,
    LanSpec,
    NatLab,
    nat_lab,
    nft_rules,
    sweep_stale,
)
from pytsnet.testing.netns import Netns, netns_available
from pytsnet.wire.portmap import natpmp

pytestmark = [pytest.mark.root]

S1 = (INTERNET_ADDR, REFLECTOR_PORTS[0])
S1_OTHER_PORT = (INTERNET_ADDR, REFLECTOR_PORTS[1])
S2 = (SECOND_ADDR, REFLECTOR_PORTS[0])
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2  # <linux/in.h>; Python's socket module lacks them
WAIT = 1.0  # seconds a probe waits for an answer (the lab is local: answers take < 10 ms)


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    if reason := netns_available():
        pytest.skip(reason)
    specs = [LanSpec("none", "none"), LanSpec("easy", "easy"), LanSpec("filtering", "filtering"),
             LanSpec("hard", "hard"), LanSpec("double", "double"), LanSpec("udp_blocked", "udp_blocked"),
             LanSpec("same_lan", "easy", nodes=2), LanSpec("small", "easy", mtu=1280)]
    with nat_lab(*specs) as lab:
        yield lab


class Probe:
    """A UDP socket made in a node namespace (it stays there) with a short receive timeout."""

    def __init__(self, ns: Netns, port: int = 0) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", port))
            s.settimeout(WAIT)
            return s

        self.sock = ns.call(make)
        self.port = self.sock.getsockname()[1]

    def recv(self) -> tuple[bytes, tuple[str, int]] | None:
        try:
            data, src = self.sock.recvfrom(4096)
        except TimeoutError:
            return None
        return data, src

    def mapped(self, server: tuple[str, int]) -> str | None:
        """The address ``server`` sees this socket's packets come from (``ip:port``), or None."""
        self.sock.sendto(b"who", server)
        got = self.recv()
        return None if got is None else got[0].decode()

    def via(self, asked: tuple[str, int], sender: tuple[str, int]) -> tuple[str, int] | None:
        """Ask ``asked`` to have ``sender`` send to our mapping; where a packet came from, or None."""
        self.sock.sendto(f"via {sender[0]} {sender[1]}".encode(), asked)
        got = self.recv()
        return None if got is None else got[1]

    def close(self) -> None:
        self.sock.close()


def unsolicited_reaches(lab: NatLab, lan: str, port: int) -> bool:
    """A packet from the internet to the LAN's public address at ``port``, which the node listens on
    but never sent from: does it arrive?"""
    probe = Probe(lab[lan].node, port)
    try:
        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"knock", (lab[lan].wan_addr, port))
        lab.internet.call(send)
        return probe.recv() is not None
    finally:
        probe.close()


def test_none_is_a_public_host_reached_unsolicited(lab: NatLab) -> None:
    p = Probe(lab["none"].node)
    try:
        assert p.mapped(S1) == p.mapped(S2) == f"{lab['none'].node_addrs[0]}:{p.port}"
    finally:
        p.close()
    assert unsolicited_reaches(lab, "none", 40001)


def test_easy_maps_independently_of_endpoint_and_filters_independently_too(lab: NatLab) -> None:
    p = Probe(lab["easy"].node)
    try:
        m1, m2 = p.mapped(S1), p.mapped(S2)
        assert m1 == m2 == f"{lab['easy'].wan_addr}:{p.port}"  # the source port kept, one mapping
        assert p.via(S1, S2) == S2  # another address, never sent to from here, gets in
        assert p.via(S1, S1_OTHER_PORT) == S1_OTHER_PORT
    finally:
        p.close()
    assert not unsolicited_reaches(lab, "easy", 40002)  # a port the inside never sent from: dropped


def test_filtering_maps_independently_but_lets_back_only_where_the_inside_sent(lab: NatLab) -> None:
    p = Probe(lab["filtering"].node)
    try:
        m1 = p.mapped(S1)
        assert m1 is not None
        assert p.via(S1, S2) is None  # another address: dropped
        assert p.via(S1, S1_OTHER_PORT) is None  # the same address, another port: dropped
        assert p.mapped(S1_OTHER_PORT) == m1  # once the inside sent there (same mapping) ...
        assert p.via(S1, S1_OTHER_PORT) == S1_OTHER_PORT  # ... it gets back
        assert p.mapped(S2) == m1
    finally:
        p.close()
    assert not unsolicited_reaches(lab, "filtering", 40003)


def test_hard_maps_each_destination_to_its_own_port(lab: NatLab) -> None:
    p = Probe(lab["hard"].node)
    try:
        m1, m2, m3 = p.mapped(S1), p.mapped(S2), p.mapped(S1_OTHER_PORT)
        assert m1 is not None and m2 is not None and m3 is not None
        assert len({m1, m2, m3}) == 3, (m1, m2, m3)
        assert {m.split(":")[0] for m in (m1, m2, m3)} == {lab["hard"].wan_addr}
        assert p.mapped(S1) == m1  # stable per destination
        assert p.via(S1, S2) is None
    finally:
        p.close()
    assert not unsolicited_reaches(lab, "hard", 40004)


def test_double_nat_shows_the_outer_address_and_filters(lab: NatLab) -> None:
    lan = lab["double"]
    assert len(lan.routers) == 2
    p = Probe(lan.node)
    try:
        m1 = p.mapped(S1)
        assert m1 is not None and m1.split(":")[0] == lan.wan_addr
        assert p.via(S1, S2) is None
        assert p.mapped(S2) == m1
    finally:
        p.close()
    assert not unsolicited_reaches(lab, "double", 40005)
    out = lan.node.sh("ip -o addr show dev eth0")
    assert " 10.200." not in out and lan.wan_addr not in out  # the node sees neither outer address


def test_udp_blocked_drops_udp_but_carries_tcp(lab: NatLab) -> None:
    p = Probe(lab["udp_blocked"].node)
    try:
        assert p.mapped(S1) is None and p.mapped(S2) is None
    finally:
        p.close()

    def listen() -> socket.socket:
        s = socket.create_server((INTERNET_ADDR, 0))
        s.settimeout(5)
        return s

    srv = lab.internet.call(listen)
    try:
        port = srv.getsockname()[1]
        c = lab["udp_blocked"].node.call(lambda: socket.create_connection((INTERNET_ADDR, port), timeout=5))
        conn, (src, _) = srv.accept()
        assert src == lab["udp_blocked"].wan_addr
        conn.close()
        c.close()
    finally:
        srv.close()


def test_same_lan_peers_reach_each_other_on_the_lan(lab: NatLab) -> None:
    lan = lab["same_lan"]
    a, b = Probe(lan.nodes[0]), Probe(lan.nodes[1])
    try:
        a.sock.sendto(b"hi", (lan.node_addrs[1], b.port))
        got = b.recv()
        assert got is not None and got == (b"hi", (lan.node_addrs[0], a.port))
        assert a.mapped(S1) == f"{lan.wan_addr}:{a.port}" and b.mapped(S1) == f"{lan.wan_addr}:{b.port}"
    finally:
        a.close()
        b.close()


def test_1280_mtu_link_refuses_a_1400_byte_df_datagram(lab: NatLab) -> None:
    def send(size: int) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            try:
                s.sendto(b"x" * size, S1)
            except OSError as e:
                return e.errno or -1
            return 0

    assert lab["small"].node.call(lambda: send(1400 - 28)) == errno.EMSGSIZE
    assert lab["small"].node.call(lambda: send(1280 - 28)) == 0
    assert lab["easy"].node.call(lambda: send(1400 - 28)) == 0  # a 1500 link carries it
    for ns in (lab["small"].node, lab["small"].router):
        assert "mtu 1280" in ns.sh("ip -o link show")


def test_nothing_routes_out_of_the_lab(lab: NatLab) -> None:
    lab.assert_sealed()
    for lan in lab.lans.values():
        for r in lan.routers:  # routers forward only the lab's prefixes
            assert r.run(["ip", "route", "get", "192.0.2.1"], check=False).returncode != 0


def test_rules_name_the_nat_types() -> None:
    assert nft_rules("none") == ""
    assert "masquerade random" in nft_rules("hard")
    assert "masquerade random" not in nft_rules("filtering") and "@eim" not in nft_rules("filtering")
    assert "dnat ip to udp dport map @eim" in nft_rules("easy")
    assert "meta l4proto udp drop" in nft_rules("udp_blocked")
    with pytest.raises(ValueError):
        LanSpec("x", "cone")  # type: ignore[arg-type]
    assert 'iifname "lan" accept' in nft_rules("hard", lan_services=True)  # miniupnpd reachable
    assert 'iifname "lan" accept' not in nft_rules("hard")
    for nat in ("none", "double"):
        with pytest.raises(ValueError):
            LanSpec("x", nat, upnp=True)
    # a upnp router: its miniupnpd's STUN answers get in, its own STUN requests are not NATed
    upnp = nft_rules("hard", lan_services=True, router_stun=REFLECTOR_ADDRS)
    grid = "203.0.113.1 . 3478, 203.0.113.1 . 3479, 203.0.113.2 . 3478, 203.0.113.2 . 3479"
    assert f'iifname "wan" ip saddr . udp sport {{ {grid} }} accept' in upnp
    assert f'oifname "wan" fib saddr type local ip daddr . udp dport {{ {grid} }} accept' in upnp
    assert upnp.index("fib saddr type local") < upnp.index("masquerade random")
    assert "udp sport" not in nft_rules("hard") and "fib saddr" not in nft_rules("hard", lan_services=True)


def test_upnp_router_learns_its_wan_address_by_stun_and_maps() -> None:
    """A ``upnp`` LAN's router keeps a 203.0.113.x WAN address like every router; its miniupnpd finds
    it unrestricted by STUN against the reflectors (the lab's explicit input/postrouting rules),
    reports it over NAT-PMP and maps a node's port; its rules go with the lab."""
    from pytsnet.testing.miniupnpd import miniupnpd_available
    if reason := netns_available() or miniupnpd_available():
        pytest.skip(reason)
    with nat_lab(LanSpec("a", "hard", upnp=True), LanSpec("b", "hard")) as lab:
        a = lab["a"]
        assert a.wan_addr == "203.0.113.10" and a.upnp is not None and lab["b"].upnp is None
        assert (f"with IP address {a.wan_addr} is now behind unrestricted full-cone NAT 1:1 with public IP "
                f"address {a.wan_addr}") in a.upnp.stun_verdict(), a.upnp.log()[-3000:]
        assert lab.reflectors.stun_answers >= 4

        def natpmp_exchange(req: bytes) -> natpmp.PmpResponse:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("0.0.0.0", 40000))
                s.settimeout(2)
                s.sendto(req, (a.gateway, 5351))
                return natpmp.parse_response(s.recv(64))

        ext = a.node.call(lambda: natpmp_exchange(natpmp.external_address_request()))
        assert ext.result == 0 and str(ext.public_ip) == a.wan_addr
        mapped = a.node.call(lambda: natpmp_exchange(natpmp.map_udp_request(40000, 0, 60)))
        assert mapped.result == 0 and (mapped.external_port, a.node_addrs[0], 40000) in a.upnp.redirects()
        # through the mapping, B (behind its own hard NAT) reaches A's socket unsolicited
        def listen() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # made in A's namespace
            s.bind(("0.0.0.0", 40000))
            s.settimeout(WAIT)
            return s

        with a.node.call(listen) as listener:
            def send() -> None:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(b"mapped", (a.wan_addr, mapped.external_port))
            lab["b"].node.call(send)
            assert listener.recvfrom(64)[0] == b"mapped"
        with pytest.raises(ValueError):
            lab.rebind("a", "203.0.113.80")
        daemon = a.upnp.daemon
    assert daemon is not None and daemon.poll() is not None  # stopped with the lab


def test_lab_is_gone_after_the_block_and_the_sweeper_removes_a_crashed_one() -> None:
    if reason := netns_available():
        pytest.skip(reason)
    with nat_lab(LanSpec("a", "easy")) as lab:
        names = [n.name for n in lab.all_ns]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = f"{PREFIX}-{dead}-0-inet"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in sweep_stale()
        assert stale not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
