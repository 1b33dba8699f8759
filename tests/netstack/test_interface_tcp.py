"""The Stack's TCP demultiplexing: listeners, the accept backlog, SYN-flood bounds (sans-IO)."""

from __future__ import annotations

import ipaddress
import random

from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.interface import Stack
from pytsnet.netstack.ipv4 import Ipv4Packet, emit_ipv4, parse_ipv4
from pytsnet.netstack.tcp import segment as tcpseg
from pytsnet.netstack.tcp.segment import TcpSegment

PEER = ipaddress.IPv4Address("10.77.0.1")
ME = ipaddress.IPv4Address("10.77.0.2")


def make_stack(**kw: object) -> Stack:
    return Stack(StackConfig(addresses=(ME,), **kw), rng=random.Random(2))  # type: ignore[arg-type]


def tcp4(seg: TcpSegment) -> bytes:
    return emit_ipv4(Ipv4Packet(PEER, ME, 6, tcpseg.emit_segment(seg, PEER, ME)))


def segments(out: list[bytes]) -> list[TcpSegment]:
    res = []
    for raw in out:
        p = parse_ipv4(raw)
        assert (p.src, p.dst, p.protocol) == (ME, PEER, 6)
        res.append(tcpseg.parse_segment(p.payload, p.src, p.dst))
    return res


def syn(sport: int, dport: int = 80, iss: int = 1000) -> bytes:
    return tcp4(TcpSegment(sport, dport, iss, 0, tcpseg.SYN, 65535, mss=1460, wscale=7,
                           sack_permitted=True, timestamp=(1, 0)))


def handshake(s: Stack, sport: int, now: float = 0.0) -> TcpSegment:
    s.receive(syn(sport), now)
    [synack] = [g for g in segments(s.poll(now)) if g.dst_port == sport]
    assert synack.flags == tcpseg.SYN | tcpseg.ACK and synack.ack == 1001
    s.receive(tcp4(TcpSegment(sport, 80, 1001, (synack.seq + 1) & 0xFFFFFFFF, tcpseg.ACK, 65535,
                               timestamp=(2, synack.timestamp[1] if synack.timestamp else 0))), now)
    return synack


def test_listener_accepts_after_three_way_handshake() -> None:
    s = make_stack()
    lst = s.tcp_listen(80)
    assert lst.accept() is None
    handshake(s, 40000)
    conn = lst.accept()
    assert conn is not None and conn.writable
    assert s.tcp_flows == 1


def test_full_backlog_drops_syns_silently() -> None:
    s = make_stack()
    lst = s.tcp_listen(80, backlog=2)
    handshake(s, 40000)
    handshake(s, 40001)
    s.receive(syn(40002), 0.0)
    assert s.poll(0.0) == [] and s.drops["tcp_backlog_full"] == 1
    assert lst.accept() is not None
    handshake(s, 40002)  # the retransmitted SYN gets in once there is room
    assert lst.accept() is not None and lst.accept() is not None


def test_syn_flood_consumes_bounded_memory_without_cookies() -> None:
    s = make_stack(max_half_open=50, accept_backlog=1000, max_half_open_per_source=10_000, syncookies=False)
    s.tcp_listen(80)
    for port in range(1024, 3024):
        s.receive(syn(port), 0.0)
    assert s.tcp_flows == 50
    assert s.drops["tcp_table_full"] == 1950


def test_stray_ack_to_listener_port_gets_rst() -> None:
    s = make_stack()
    s.tcp_listen(80)
    s.receive(tcp4(TcpSegment(40000, 80, 5, 777, tcpseg.ACK, 100)), 0.0)
    [rst] = segments(s.poll(0.0))
    assert (rst.flags, rst.seq) == (tcpseg.RST, 777)


def test_connect_emits_syn_with_mss_from_mtu_and_ephemeral_port() -> None:
    s = make_stack()
    conn = s.tcp_connect((PEER, 443), 0.0)
    [seg] = segments(s.poll(0.0))
    assert seg.flags == tcpseg.SYN and seg.dst_port == 443 and 49152 <= seg.src_port <= 65535
    assert seg.mss == 1280 - 40
    assert conn is not None and s.next_deadline() is not None


def test_closing_listener_resets_unaccepted_connections() -> None:
    s = make_stack()
    lst = s.tcp_listen(80)
    handshake(s, 40000)
    lst.close()
    out = segments(s.poll(0.0))
    assert any(g.flags & tcpseg.RST for g in out)
    s.receive(syn(40001), 0.0)
    assert [g.flags for g in segments(s.poll(0.0))] == [tcpseg.RST | tcpseg.ACK]
