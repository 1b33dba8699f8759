"""A silent SYN flood against the Stack (sans-IO, simulated time): SYN cookies once a listener's
half-open bound is reached, a per-source half-open bound, a short SYN-RECEIVED lifetime, counters.

Legitimate clients are real ``TcpConnection``s wired to the stack through the codec; attackers
send raw SYNs and never answer the SYN-ACKs.
"""

from __future__ import annotations

import ipaddress
import random

from pytsnet.netstack.config import StackConfig
from pytsnet.netstack.interface import Stack, TcpListener
from pytsnet.netstack.ipv4 import Ipv4Packet, emit_ipv4, parse_ipv4
from pytsnet.netstack.tcp import segment as tcpseg
from pytsnet.netstack.tcp.connection import TcpConfig, TcpConnection
from pytsnet.netstack.tcp.segment import TcpSegment

ME = ipaddress.IPv4Address("100.64.0.2")
CLIENT = ipaddress.IPv4Address("100.64.0.3")
ATTACKERS = (ipaddress.IPv4Address("100.64.0.10"), ipaddress.IPv4Address("100.64.0.11"))
IPv4 = ipaddress.IPv4Address


def make_stack(**kw: object) -> Stack:
    addrs = (ME,)
    return Stack(StackConfig(addresses=addrs, **kw), rng=random.Random(2))  # type: ignore[arg-type]


def packet(src: IPv4, dst: IPv4, seg: TcpSegment) -> bytes:
    return emit_ipv4(Ipv4Packet(src, dst, 6, tcpseg.emit_segment(seg, src, dst)))


def flood(s: Stack, src: IPv4, n: int, now: float, port: int = 80, first_sport: int = 1024) -> None:
    """``n`` SYNs (Linux-like options) from ``src``; their SYN-ACKs are never answered."""
    rng = random.Random(str(src))
    for i in range(n):
        s.receive(packet(src, ME, TcpSegment(first_sport + i, port, rng.getrandbits(32), 0, tcpseg.SYN, 64240,
                                             mss=1240, wscale=7, sack_permitted=True,
                                             timestamp=(rng.getrandbits(32), 0))), now)


class Clients:
    """Real TCP clients at ``CLIENT`` talking to the stack; packets to anyone else are discarded
    (the attackers' SYN-ACKs). ``drop`` decides per client segment whether the link loses it."""

    def __init__(self, stack: Stack, cfg: TcpConfig | None = None) -> None:
        self.stack = stack
        self.cfg = cfg or TcpConfig()
        self.conns: dict[int, TcpConnection] = {}
        self.to_clients: list[TcpSegment] = []
        self.drop = lambda seg: False

    def connect(self, sport: int, now: float, port: int = 80) -> TcpConnection:
        iss = random.Random(sport).getrandbits(32)
        c = TcpConnection.connect((CLIENT, sport), (ME, port), iss, now, self.cfg)
        self.conns[sport] = c
        return c

    def run(self, now: float, rounds: int = 20, accept: TcpListener | None = None,
            servers: list[TcpConnection] | None = None) -> None:
        """Shuttle segments both ways until quiet (at a fixed time: no timers fire)."""
        for _ in range(rounds):
            moved = False
            for c in self.conns.values():
                for seg in c.poll(now):
                    moved = True
                    if not self.drop(seg):
                        self.stack.receive(packet(CLIENT, ME, seg), now)
            for raw in self.stack.poll(now):
                p = parse_ipv4(raw)
                if p.dst != CLIENT:
                    continue
                seg = tcpseg.parse_segment(p.payload, p.src, p.dst)
                self.to_clients.append(seg)
                c = self.conns.get(seg.dst_port)
                if c is not None:
                    moved = True
                    c.on_segment(seg, now)
            if accept is not None and servers is not None:
                while (srv := accept.accept()) is not None:
                    servers.append(srv)
            if not moved:
                return


def exchange(cl: Clients, client: TcpConnection, srv: TcpConnection, n: int, now: float) -> None:
    """``n`` bytes each way through the stack, byte-exact."""
    up, down = random.Random(1).randbytes(n), random.Random(2).randbytes(n)
    got_up, got_down = bytearray(), bytearray()
    sent_up = sent_down = 0
    for _ in range(10_000):
        sent_up += client.send(up[sent_up:])
        sent_down += srv.send(down[sent_down:])
        cl.run(now)
        got_up += srv.recv(1 << 20)
        got_down += client.recv(1 << 20)
        now += 0.05  # delayed ACKs fire
        if len(got_up) == n and len(got_down) == n:
            break
    assert bytes(got_up) == up and bytes(got_down) == down


def test_full_backlog_answers_with_cookies_and_a_cookie_connection_carries_data_both_ways() -> None:
    s = make_stack()
    lst = s.tcp_listen(80, backlog=4)
    flood(s, ATTACKERS[0], 200, 0.0)
    assert len(lst._pending) == 4 and s.stats["tcp_syncookies_sent"] == 196
    assert s.tcp_flows == 4  # the flood holds 4 entries, whatever it sends
    cl = Clients(s)
    client = cl.connect(40000, 0.1)
    cl.run(0.1)
    synack = cl.to_clients[0]
    assert synack.flags == tcpseg.SYN | tcpseg.ACK and s.stats["tcp_syncookies_sent"] == 197
    assert client.state.value == "ESTABLISHED" and s.stats["tcp_syncookies_validated"] == 1
    srv = lst.accept()
    assert srv is not None and srv.remote == (CLIENT, 40000) and len(lst._pending) == 4
    # Window scale and SACK survived in the timestamp: the server scales the client's window.
    assert (srv._snd_wscale, srv._rcv_wscale) == (client._rcv_wscale, client._snd_wscale) != (0, 0)
    assert srv._sack_ok and client._sack_ok and srv._ts_ok
    exchange(cl, client, srv, 300_000, 0.2)


def test_cookie_connection_without_timestamps_works_without_scale_and_sack() -> None:
    s = make_stack()
    lst = s.tcp_listen(80, backlog=1)
    flood(s, ATTACKERS[0], 5, 0.0)
    cl = Clients(s, TcpConfig(timestamps=False))
    client = cl.connect(40000, 0.0)
    cl.run(0.0)
    srv = lst.accept()
    assert srv is not None and s.stats["tcp_syncookies_validated"] == 1
    assert (srv._snd_wscale, srv._rcv_wscale, srv._sack_ok, client._rcv_wscale) == (0, 0, False, 0)
    exchange(cl, client, srv, 100_000, 0.1)


def test_lost_final_ack_the_first_data_segment_completes_the_cookie_handshake() -> None:
    s = make_stack()
    lst = s.tcp_listen(80, backlog=1)
    flood(s, ATTACKERS[0], 3, 0.0)
    cl = Clients(s)
    cl.drop = lambda seg: seg.flags == tcpseg.ACK and not seg.payload  # the handshake's last ACK
    client = cl.connect(40000, 0.0)
    cl.run(0.0)
    assert client.state.value == "ESTABLISHED" and lst.accept() is None
    cl.drop = lambda seg: False
    client.send(b"GET / HTTP/1.0\r\n\r\n")
    cl.run(0.0)
    srv = lst.accept()
    assert srv is not None and srv.recv(100) == b"GET / HTTP/1.0\r\n\r\n"


def test_forged_expired_and_misdirected_cookie_acks_are_rejected_with_rst() -> None:
    s = make_stack(syncookie_period=10.0)
    lst = s.tcp_listen(80, backlog=1)
    flood(s, ATTACKERS[0], 2, 0.0)

    def cookie_for(sport: int, isn: int) -> int:
        s.receive(packet(CLIENT, ME, TcpSegment(sport, 80, isn, 0, tcpseg.SYN, 64240, mss=1240)), 0.0)
        [raw] = [r for r in s.poll(0.0) if parse_ipv4(r).dst == CLIENT]
        return tcpseg.parse_segment(parse_ipv4(raw).payload, ME, CLIENT).seq

    cookie, other = cookie_for(40000, 5000), cookie_for(40003, 7000)

    def ack(sport: int, seq: int, ack_no: int, now: float) -> list[TcpSegment]:
        s.receive(packet(CLIENT, ME, TcpSegment(sport, 80, seq, ack_no & 0xFFFFFFFF, tcpseg.ACK, 1000)), now)
        return [tcpseg.parse_segment(parse_ipv4(r).payload, ME, CLIENT) for r in s.poll(now)
                if parse_ipv4(r).dst == CLIENT]

    cases = [(40000, 5001, cookie + 1 + (1 << 20), 1.0),  # forged
             (40001, 5001, cookie + 1, 1.0),  # another source port
             (40000, 5002, cookie + 1, 1.0),  # another client ISN
             (40000, 5001, cookie + 1, 20.0)]  # expired: two 10 s periods later
    for i, (sport, seq, ack_no, now) in enumerate(cases):
        if i == 3:
            assert ack(40003, 7001, other + 1, 9.0) == []  # a genuine ACK, in time: a connection
            assert s.stats["tcp_syncookies_validated"] == 1 and lst.accept() is not None
        [rst] = ack(sport, seq, ack_no, now)
        assert rst.flags == tcpseg.RST and rst.seq == ack_no & 0xFFFFFFFF
        assert s.drops["tcp_syncookie_rejected"] == i + 1
    assert lst.accept() is None and s.stats["tcp_syncookies_validated"] == 1
    # Long after the last cookie, a listener checks no ACK at all: a stray ACK is a stray ACK.
    closed0 = s.drops["tcp_closed_port"]
    [rst] = ack(40002, 1, 12345, 100.0)
    assert rst.flags == tcpseg.RST and s.drops["tcp_closed_port"] == closed0 + 1
    assert s.drops["tcp_syncookie_rejected"] == 4


def test_half_open_connections_are_bounded_per_source() -> None:
    s = make_stack(max_half_open_per_source=8)
    lst = s.tcp_listen(80)  # backlog 128: only the per-source bound applies
    s2 = s.tcp_listen(81)
    flood(s, ATTACKERS[0], 30, 0.0)
    flood(s, ATTACKERS[0], 10, 0.0, port=81, first_sport=5000)  # the bound is per source, stack-wide
    assert len(lst._pending) == 8 and len(s2._pending) == 0
    assert s.drops["tcp_half_open_source_limit"] == 32 and s.stats["tcp_syncookies_sent"] == 32
    flood(s, ATTACKERS[1], 30, 0.0)  # another source has its own quota
    assert len(lst._pending) == 16
    cl = Clients(s)
    client = cl.connect(40000, 0.0)
    cl.run(0.0)
    assert client.state.value == "ESTABLISHED" and s.stats["tcp_syncookies_validated"] == 0  # stateful
    assert lst.accept() is not None
    # Without cookies the excess SYNs are dropped outright, and still counted.
    s = make_stack(max_half_open_per_source=8, syncookies=False)
    s.tcp_listen(80)
    flood(s, ATTACKERS[0], 30, 0.0)
    assert len(s.poll(0.0)) == 8  # eight SYN-ACKs, nothing for the rest
    assert s.drops["tcp_half_open_source_limit"] == 22 and s.stats["tcp_syncookies_sent"] == 0


def test_syn_received_lives_five_synacks_and_frees_its_per_source_slot() -> None:
    s = make_stack(max_half_open_per_source=1)
    lst = s.tcp_listen(80)
    flood(s, ATTACKERS[0], 1, 0.0)
    sent, now = [], 0.0
    while now < 200:
        sent += [now for r in s.poll(now) if parse_ipv4(r).dst == ATTACKERS[0]]
        if not s._pending_of:
            break
        deadline = s.next_deadline()
        assert deadline is not None
        now = max(deadline, now)
    assert sent == [0.0, 1.0, 3.0, 7.0, 15.0] and now == 31.0  # synack_retries 4 (Linux's 5: 63 s)
    assert not lst._pending and not s._half_open_by_src and s.tcp_flows == 0
    flood(s, ATTACKERS[0], 1, now, first_sport=2000)  # the source's quota is back
    assert len(lst._pending) == 1 and s.stats["tcp_syncookies_sent"] == 0


def test_full_accept_queue_drops_syns_and_cookie_acks_until_the_app_accepts() -> None:
    s = make_stack()
    lst = s.tcp_listen(80, backlog=2)
    cl = Clients(s)
    for sport in (40000, 40001):
        cl.connect(sport, 0.0)
    cl.run(0.0)
    assert len(lst._ready) == 2
    third = cl.connect(40002, 0.0)
    cl.run(0.0)
    assert third.state.value == "SYN-SENT" and s.drops["tcp_backlog_full"] == 1  # SYN dropped
    assert lst.accept() is not None and lst.accept() is not None
    servers: list[TcpConnection] = []
    cl.run(1.0, accept=lst, servers=servers)  # its SYN retransmit (due at 1.0) gets in
    assert third.state.value == "ESTABLISHED" and len(servers) == 1


def test_cookie_keys_come_from_the_key_source_and_isn_secret_from_secrets() -> None:
    issued: list[int] = []

    def keys(n: int) -> bytes:
        issued.append(n)
        return bytes(n)

    s = Stack(StackConfig(addresses=(ME,)), cookie_keys=keys)
    s.tcp_listen(80, backlog=1)
    flood(s, ATTACKERS[0], 3, 0.0)
    assert issued == [32] and s.stats["tcp_syncookies_sent"] == 2


def test_ipv6_listener_answers_with_cookies_too() -> None:
    from pytsnet.netstack.ipv6 import Ipv6Packet, emit_ipv6, parse_ipv6

    me6, peer6 = ipaddress.IPv6Address("fd7a:115c:a1e0::2"), ipaddress.IPv6Address("fd7a:115c:a1e0::3")
    s = Stack(StackConfig(addresses=(ME, me6), enable_ipv6=True), rng=random.Random(2))
    lst = s.tcp_listen(80, backlog=1)

    def send(seg: TcpSegment) -> list[TcpSegment]:
        s.receive(emit_ipv6(Ipv6Packet(peer6, me6, 6, tcpseg.emit_segment(seg, peer6, me6))), 1.0)
        return [tcpseg.parse_segment(parse_ipv6(r).payload, me6, peer6) for r in s.poll(1.0)]

    send(TcpSegment(1000, 80, 1, 0, tcpseg.SYN, 65535, mss=1220))  # the one half-open slot
    [synack] = send(TcpSegment(1001, 80, 77, 0, tcpseg.SYN, 65535, mss=1220, timestamp=(9, 0)))
    assert synack.flags == tcpseg.SYN | tcpseg.ACK and s.stats["tcp_syncookies_sent"] == 1
    assert synack.mss == 1280 - 60 and synack.timestamp is not None
    send(TcpSegment(1001, 80, 78, synack.seq + 1, tcpseg.ACK, 4000, timestamp=(10, synack.timestamp[0]),
                    payload=b"v6"))
    conn = lst.accept()
    assert conn is not None and conn.recv(10) == b"v6" and conn._snd_mss == 1220
    assert s.stats["tcp_syncookies_validated"] == 1


def test_random_segments_at_a_listener_sending_cookies_never_raise_or_leak() -> None:
    s = make_stack(max_half_open_per_source=4)
    lst = s.tcp_listen(80, backlog=8)
    rng = random.Random(11)
    for i in range(20_000):
        src = IPv4(f"100.64.1.{rng.randrange(1, 6)}")
        flags = rng.choice([tcpseg.SYN, tcpseg.ACK, tcpseg.ACK | tcpseg.FIN, tcpseg.ACK | tcpseg.PSH,
                            tcpseg.SYN | tcpseg.ACK, tcpseg.RST, rng.randrange(256)])
        ts = (rng.getrandbits(32), rng.getrandbits(32)) if rng.random() < 0.5 else None
        seg = TcpSegment(rng.randrange(1024, 1100), 80, rng.getrandbits(32), rng.getrandbits(32), flags,
                         rng.randrange(65536), mss=rng.choice([None, 100, 1460]),
                         wscale=rng.choice([None, 0, 14]), sack_permitted=rng.random() < 0.5, timestamp=ts,
                         payload=rng.randbytes(rng.randrange(0, 50)))
        s.receive(packet(src, ME, seg), i * 0.01)
        s.poll(i * 0.01)
    assert s.stats["tcp_syncookies_sent"] > 0 and s.drops["tcp_syncookie_rejected"] > 0
    assert len(lst._pending) <= 8 and s.tcp_flows <= 8 + 8  # half-open + accept queue
    assert max(s._half_open_by_src.values(), default=0) <= 4


def test_retransmitted_syn_after_a_cookie_the_peer_completes_with_the_cookie() -> None:
    """Seen against the kernel under load: a SYN beyond the per-source bound got a cookie; its
    retransmission, once a slot was free, got a stateful entry with another ISN; the peer acked the
    cookie (the first SYN-ACK it saw) and the entry answered with a RST, killing the connection."""
    s = make_stack(max_half_open_per_source=1)
    lst = s.tcp_listen(80)

    def send(seg: TcpSegment, now: float) -> list[TcpSegment]:
        s.receive(packet(CLIENT, ME, seg), now)
        return [tcpseg.parse_segment(parse_ipv4(r).payload, ME, CLIENT) for r in s.poll(now)
                if parse_ipv4(r).dst == CLIENT]

    [first] = send(TcpSegment(40000, 80, 1000, 0, tcpseg.SYN, 64240, mss=1240), 0.0)  # stateful
    [cookie] = send(TcpSegment(40001, 80, 5000, 0, tcpseg.SYN, 64240, mss=1240), 0.0)  # the bound: a cookie
    assert s.stats["tcp_syncookies_sent"] == 1 and len(lst._pending) == 1
    assert send(TcpSegment(40000, 80, 1001, first.seq + 1, tcpseg.ACK, 64240), 0.1) == []
    assert lst.accept() is not None  # the slot is free again
    [stateful] = send(TcpSegment(40001, 80, 5000, 0, tcpseg.SYN, 64240, mss=1240), 1.0)  # the retransmission
    assert stateful.flags == tcpseg.SYN | tcpseg.ACK and stateful.seq != cookie.seq and len(lst._pending) == 1
    replies = send(TcpSegment(40001, 80, 5001, cookie.seq + 1, tcpseg.ACK | tcpseg.PSH, 64240, payload=b"hi"),
                   1.0)
    assert not [r for r in replies if r.flags & tcpseg.RST]
    srv = lst.accept()
    assert srv is not None and srv.recv(10) == b"hi" and srv.remote[1] == 40001
    assert s.stats["tcp_syncookies_validated"] == 1 and not lst._pending and not s._half_open_by_src
    # An ACK that is neither the entry's ISN nor a valid cookie still gets the entry's answer.
    [again] = [r for r in send(TcpSegment(40002, 80, 9000, 0, tcpseg.SYN, 64240, mss=1240), 2.0)
               if r.dst_port == 40002]
    [rst] = [r for r in send(TcpSegment(40002, 80, 9001, again.seq + 7, tcpseg.ACK, 64240), 2.0)
             if r.dst_port == 40002]
    assert rst.flags == tcpseg.RST and len(lst._pending) == 1
