"""The netstack's forwarding decision (sans-IO): which non-local destinations reach a forwarder.

Without an advertised route or exit node a packet to a non-local address is dropped as before
(``not_our_address``); a subnet router forwards only inside its routes; an exit node forwards any
non-tailnet destination; loopback, link-local, multicast, unspecified and the tailnet ranges are
refused whatever is advertised. A forwarded SYN waits for the forwarder's dial (no SYN-ACK), then
is answered (accept) or reset (refuse).
"""

from __future__ import annotations

import ipaddress

import pytest

from pytsnet.netstack import icmp, ipv4, udp
from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.forward import ForwardedDatagram, ForwardedEcho, ForwardedTcp, ForwardPolicy
from pytsnet.netstack.interface import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Stack, ip_packet
from pytsnet.netstack.tcp import segment as tcpseg
from pytsnet.netstack.tcp.segment import TcpSegment

ME = ipaddress.ip_address("100.64.0.2")
PEER = ipaddress.ip_address("100.64.0.1")
SUBNET = ipaddress.ip_network("10.9.8.0/24")


def stack(policy: ForwardPolicy | None) -> Stack:
    return Stack(StackConfig(addresses=(ME,), forward=policy))


def syn(dst: str, port: int = 80, sport: int = 40000) -> bytes:
    d = ipaddress.ip_address(dst)
    seg = TcpSegment(sport, port, 1000, 0, tcpseg.SYN, 65535, mss=1200)
    return ip_packet(PEER, d, PROTO_TCP, tcpseg.emit_segment(seg, PEER, d), 64, 1)


def datagram(dst: str, port: int = 53) -> bytes:
    d = ipaddress.ip_address(dst)
    return ip_packet(PEER, d, PROTO_UDP, udp.emit_udp(udp.UdpDatagram(5353, port, b"q"), PEER, d), 64, 2)


def echo(dst: str) -> bytes:
    d = ipaddress.ip_address(dst)
    msg = icmp.IcmpMessage(icmp.ICMP_ECHO_REQUEST, 0, b"\x12\x34\x00\x01", b"ping")
    return ip_packet(PEER, d, PROTO_ICMP, icmp.emit_icmpv4(msg), 64, 3)


@pytest.mark.parametrize("policy", [None, ForwardPolicy()])
def test_without_routes_non_local_is_dropped(policy: ForwardPolicy | None) -> None:
    s = stack(policy)
    for pkt in (syn("10.9.8.7"), datagram("198.51.100.8"), echo("192.0.2.1")):
        s.receive(pkt, 0.0)
    assert s.drops["not_our_address"] == 3
    assert s.take_forwards() == [] and s.poll(0.0) == []


def test_subnet_router_forwards_only_inside_its_routes() -> None:
    s = stack(ForwardPolicy(routes=(SUBNET,)))
    s.receive(syn("10.9.8.7"), 0.0)
    s.receive(datagram("10.9.8.53"), 0.0)
    s.receive(syn("10.9.9.7"), 0.0)
    s.receive(datagram("198.51.100.8"), 0.0)
    got = s.take_forwards()
    assert [type(g) for g in got] == [ForwardedTcp, ForwardedDatagram]
    assert isinstance(got[0], ForwardedTcp)
    assert got[0].key == (PROTO_TCP, ipaddress.ip_address("10.9.8.7"), 80, PEER, 40000)
    assert isinstance(got[1], ForwardedDatagram) and (got[1].dst, got[1].dport, got[1].data) == (
        ipaddress.ip_address("10.9.8.53"), 53, b"q")
    assert s.drops["not_our_address"] == 2
    assert s.poll(0.0) == []  # no SYN-ACK before the forwarder's dial


def test_exit_node_forwards_any_non_tailnet_destination() -> None:
    s = stack(ForwardPolicy(exit_node=True))
    s.receive(syn("198.51.100.10", 443), 0.0)
    s.receive(echo("203.0.113.5"), 0.0)
    got = s.take_forwards()
    assert isinstance(got[0], ForwardedTcp) and isinstance(got[1], ForwardedEcho)
    assert got[1].rest == b"\x12\x34\x00\x01" and got[1].data == b"ping"


@pytest.mark.parametrize(("dst", "reason"), [
    ("127.0.0.1", "forward_loopback"), ("169.254.1.1", "forward_link_local"),
    ("224.0.0.251", "forward_multicast"), ("255.255.255.255", "forward_multicast"),
    ("0.0.0.0", "forward_unspecified"), ("100.64.0.9", "forward_tailnet"),
    ("100.100.100.100", "forward_tailnet"),
])
def test_never_forwarded_destinations_are_refused_and_counted(dst: str, reason: str) -> None:
    s = stack(ForwardPolicy(routes=(ipaddress.ip_network("0.0.0.0/1"), ipaddress.ip_network("128.0.0.0/1"),
                                    ipaddress.ip_network("127.0.0.0/8")), exit_node=True))
    s.receive(syn(dst), 0.0)
    assert s.take_forwards() == []
    assert s.drops[reason] == 1


def test_forwarded_syn_waits_for_the_dial_then_accept_answers_it() -> None:
    s = stack(ForwardPolicy(routes=(SUBNET,)))
    s.receive(syn("10.9.8.7"), 0.0)
    s.receive(syn("10.9.8.7"), 0.5)  # the peer retransmits while we dial: one request only
    (req,) = s.take_forwards()
    assert isinstance(req, ForwardedTcp) and s.stats["forward_syn_retransmitted"] == 1
    conn = s.accept_forward(req.key, 1.0)
    assert conn is not None
    (out,) = s.poll(1.0)
    pkt = ipv4.parse_ipv4(out)
    seg = tcpseg.parse_segment(pkt.payload, pkt.src, pkt.dst)
    assert str(pkt.src) == "10.9.8.7" and pkt.dst == PEER  # the reply comes from the destination
    assert seg.flags & tcpseg.SYN and seg.flags & tcpseg.ACK and seg.ack == 1001
    assert s.accept_forward(req.key, 1.0) is None  # once only


def test_refused_forward_resets_the_peer() -> None:
    s = stack(ForwardPolicy(exit_node=True))
    s.receive(syn("198.51.100.10"), 0.0)
    (req,) = s.take_forwards()
    assert isinstance(req, ForwardedTcp)
    s.refuse_forward(req.key)
    (out,) = s.poll(0.0)
    pkt = ipv4.parse_ipv4(out)
    seg = tcpseg.parse_segment(pkt.payload, pkt.src, pkt.dst)
    assert seg.flags & tcpseg.RST and seg.ack == 1001 and str(pkt.src) == "198.51.100.10"
    assert s.stats["forward_tcp_refused"] == 1


def test_pending_forwards_are_bounded() -> None:
    s = Stack(StackConfig(addresses=(ME,), forward=ForwardPolicy(exit_node=True), max_forward_pending=2))
    for port in (1, 2, 3):
        s.receive(syn("198.51.100.10", sport=port), 0.0)
    for _ in range(3):
        s.receive(datagram("198.51.100.10"), 0.0)
    assert s.drops["forward_pending_full"] == 1
    assert s.drops["forward_queue_full"] >= 1
    assert len(s.take_forwards()) == 2


def test_udp_reply_goes_out_from_the_destination() -> None:
    s = stack(ForwardPolicy(exit_node=True))
    dst = ipaddress.ip_address("198.51.100.53")
    s.send_forwarded_udp(dst, 53, PEER, 5353, b"answer")
    (out,) = s.poll(0.0)
    pkt = ipv4.parse_ipv4(out)
    d = udp.parse_udp(pkt.payload, pkt.src, pkt.dst)
    assert (pkt.src, pkt.dst, d.src_port, d.dst_port, d.payload) == (dst, PEER, 53, 5353, b"answer")


def test_exit_node_keeps_its_lan_unless_advertised() -> None:
    lan = ipaddress.ip_network("192.168.5.0/24")
    me_on_lan = ipaddress.ip_address("192.168.5.2")
    s = stack(ForwardPolicy(exit_node=True, lan=(lan,), lan_hosts=(me_on_lan,)))
    s.receive(syn("192.168.5.9"), 0.0)  # a LAN neighbour: Go's "guest wifi" rule
    s.receive(syn("192.168.5.2"), 0.0)  # the exit node's own address stays reachable (as Go)
    s.receive(syn("198.51.100.1"), 0.0)
    assert s.drops["forward_exit_lan"] == 1
    assert [f.key[1] for f in s.take_forwards() if isinstance(f, ForwardedTcp)] == [
        ipaddress.ip_address("192.168.5.2"), ipaddress.ip_address("198.51.100.1")]
    s2 = stack(ForwardPolicy(exit_node=True, routes=(lan,), lan=(lan,)))  # advertised too: reachable
    s2.receive(syn("192.168.5.9"), 0.0)
    assert len(s2.take_forwards()) == 1
