"""The Stack's side of the fallback TCP handlers (sans-IO): with ``fallback_tcp`` a SYN for an
unlistened port of our own address is held (no RST) and offered once; accept completes the
handshake, refuse resets it; without it the port is closed at once, as before."""

from __future__ import annotations

import ipaddress
import random

from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.forward import ForwardedTcp
from pytsnet.netstack.interface import Stack
from pytsnet.netstack.ipv4 import Ipv4Packet, emit_ipv4, parse_ipv4
from pytsnet.netstack.tcp import segment as tcpseg
from pytsnet.netstack.tcp.segment import TcpSegment

PEER = ipaddress.IPv4Address("100.64.0.9")
ME = ipaddress.IPv4Address("100.64.0.2")
KEY = (6, ME, 7000, PEER, 40000)


def _stack(*, fallback: bool, **kw: object) -> Stack:
    s = Stack(StackConfig(addresses=(ME,), **kw), rng=random.Random(3))  # type: ignore[arg-type]
    s.fallback_tcp = fallback
    return s


def _syn() -> bytes:
    seg = TcpSegment(40000, 7000, 1000, 0, tcpseg.SYN, 65535, mss=1200)
    return emit_ipv4(Ipv4Packet(PEER, ME, 6, tcpseg.emit_segment(seg, PEER, ME)))


def _flags(out: list[bytes]) -> list[int]:
    return [tcpseg.parse_segment(p.payload, p.src, p.dst).flags for p in map(parse_ipv4, out)]


def test_without_fallback_an_unlistened_port_resets() -> None:
    s = _stack(fallback=False)
    s.receive(_syn(), 0.0)
    assert _flags(s.poll(0.0)) == [tcpseg.RST | tcpseg.ACK]
    assert s.take_forwards() == []


def test_held_syn_is_offered_once_then_accepted() -> None:
    s = _stack(fallback=True)
    s.receive(_syn(), 0.0)
    s.receive(_syn(), 0.5)  # the peer's retransmission while the app decides
    assert s.poll(0.5) == []
    assert s.take_forwards() == [ForwardedTcp(KEY)]
    assert s.stats["forward_syn_retransmitted"] == 1
    conn = s.accept_forward(KEY, 1.0)
    assert conn is not None
    assert _flags(s.poll(1.0)) == [tcpseg.SYN | tcpseg.ACK]


def test_refused_syn_is_reset() -> None:
    s = _stack(fallback=True)
    s.receive(_syn(), 0.0)
    assert s.pending_forward_syns() == [KEY]
    s.refuse_forward(KEY)
    assert _flags(s.poll(0.0)) == [tcpseg.RST | tcpseg.ACK]
    assert s.pending_forward_syns() == []


def test_pending_fallback_syns_are_bounded() -> None:
    s = _stack(fallback=True, max_forward_pending=1)
    s.receive(_syn(), 0.0)
    other = TcpSegment(40001, 7000, 1, 0, tcpseg.SYN, 65535)
    s.receive(emit_ipv4(Ipv4Packet(PEER, ME, 6, tcpseg.emit_segment(other, PEER, ME))), 0.0)
    assert s.drops["forward_pending_full"] == 1
    assert len(s.take_forwards()) == 1


VIP = ipaddress.IPv4Address("100.100.0.1")


def _to_vip(seg: TcpSegment) -> bytes:
    return emit_ipv4(Ipv4Packet(PEER, VIP, 6, tcpseg.emit_segment(seg, PEER, VIP)))


def test_a_vip_takes_syns_only_through_the_service_path() -> None:
    s = _stack(fallback=False)
    s.tcp_listen(80)  # a wildcard listener on our own address: never for the VIP
    s.receive(_to_vip(TcpSegment(40000, 80, 1, 0, tcpseg.SYN, 65535)), 0.0)
    assert s.drops["not_our_address"] == 1 and s.poll(0.0) == []  # not ours yet
    s.service_addresses = frozenset({VIP})
    s.receive(_to_vip(TcpSegment(40000, 80, 1, 0, tcpseg.SYN, 65535)), 0.0)
    assert s.poll(0.0) == []  # held, not answered by the listener
    assert s.take_forwards() == [ForwardedTcp((6, VIP, 80, PEER, 40000))]
    s.receive(_to_vip(TcpSegment(40000, 80, 2, 1, tcpseg.ACK, 65535)), 0.0)  # a stray ACK: RST
    assert _flags(s.poll(0.0)) == [tcpseg.RST]


def test_a_vip_drops_udp_and_answers_echo() -> None:
    from pytsnet.netstack import icmp, udp

    s = _stack(fallback=False)
    s.service_addresses = frozenset({VIP})
    dgram = udp.emit_udp(udp.UdpDatagram(5000, 53, b"q"), PEER, VIP)
    s.receive(emit_ipv4(Ipv4Packet(PEER, VIP, 17, dgram)), 0.0)
    assert s.drops["service_protocol_unsupported"] == 1 and s.poll(0.0) == []  # no port unreachable
    req = icmp.emit_icmpv4(icmp.IcmpMessage(icmp.ICMP_ECHO_REQUEST, 0, b"\x00\x01\x00\x01", b"ping"))
    s.receive(emit_ipv4(Ipv4Packet(PEER, VIP, 1, req)), 0.0)
    (reply,) = [parse_ipv4(p) for p in s.poll(0.0)]
    assert (reply.src, reply.dst) == (VIP, PEER)
    assert icmp.parse_icmpv4(reply.payload).type == icmp.ICMP_ECHO_REPLY
