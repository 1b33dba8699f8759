"""Hostile packets from an authenticated peer, inside its real WireGuard session.

The attacker is device B itself: raw IP packets are told to B's ``WgEngine`` (as if B's netstack had
emitted them), so they arrive at A encrypted under B's real session, exactly as a malicious peer's
would. (a) Sources B does not own (an unassigned tailnet address, A's own address) must be dropped by
A's anti-spoofing check and counted, never reaching a listener or UDP socket. (b) A SYN flood at a
listener must stay within the per-source half-open bound (the rest answered by SYN cookies), and a
legitimate connection must still be accepted afterwards. (B's netstack answers the SYN-ACKs with
RSTs; the silent flood, two attackers that never answer, is ``test_hostile_syn_flood.py``.)
"""

from __future__ import annotations

import ipaddress
import random
import struct
import time
from pathlib import Path

import anyio
import pytest
from hostile_rig import Liveness, Pair, actor, healthy_exchange, rss_mb, tailnet_pair

from pytsnet.device import ActorDevice
from pytsnet.messages.wgengine import IpPacketOut
from pytsnet.netstack.ipv4 import Ipv4Packet, emit_ipv4
from pytsnet.netstack.tcp import segment as tcpseg

pytestmark = [pytest.mark.serial]  # load-sensitive: run alone (Makefile, `make test`)

PROTO_TCP, PROTO_UDP = 6, 17


def syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    s, d = ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst)
    seg = tcpseg.TcpSegment(src_port=sport, dst_port=dport, seq=random.getrandbits(32), ack=0,
                            flags=tcpseg.SYN, window=65535, mss=1200)
    return emit_ipv4(Ipv4Packet(src=s, dst=d, protocol=PROTO_TCP, payload=tcpseg.emit_segment(seg, s, d)))


def udp(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    hdr = struct.pack(">HHHH", sport, dport, 8 + len(data), 0)  # checksum 0: "none" in IPv4
    return emit_ipv4(Ipv4Packet(src=ipaddress.IPv4Address(src), dst=ipaddress.IPv4Address(dst),
                                protocol=PROTO_UDP, payload=hdr + data))


def inject(attacker: ActorDevice, packets: list[bytes]) -> None:
    """Hand ``packets`` to the attacker's WireGuard engine: encrypted and sent to the victim."""
    assert attacker.system is not None
    eng = attacker.system.lookup("wgengine")
    assert eng is not None
    for pkt in packets:
        eng.tell(IpPacketOut(data=pkt))


def _established(p: Pair) -> None:
    healthy_exchange(p, 32 << 10, port=7201)  # a live session both ways
    assert p.a.status().peers[0].has_session and p.b.status().peers[0].has_session


def test_spoofed_tailnet_sources_are_dropped_and_counted(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path, direct=True) as p:
        _established(p)
        a_ip, b_ip = p.ip(p.a), p.ip(p.b)
        forged = [str(ipaddress.IPv4Address(a_ip) + 77), a_ip]  # unassigned tailnet address; the victim's own
        live = Liveness(p.a)
        before = p.a.status().drops.get("wg_source_not_allowed", 0)
        half_open0 = len(actor(p.a, "netstack").stack._pending_of)

        async def attack() -> tuple[list[object], list[bytes]]:
            lst = await p.a.listen(7300)
            sock = await p.a.listen_packet(5300)
            accepted: list[object] = []
            got: list[bytes] = []
            pkts = []
            for i in range(200):
                for src in forged:
                    pkts.append(syn(src, a_ip, 20000 + i, 7300))
                    pkts.append(udp(src, a_ip, 20000 + i, 5300, b"spoofed"))
            await anyio.to_thread.run_sync(inject, p.b, pkts)

            async def accept() -> None:
                accepted.append(await lst.accept())  # type: ignore[attr-defined]

            async def recv() -> None:
                got.append(await sock.recvfrom())  # type: ignore[attr-defined]

            with anyio.move_on_after(2.0):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(accept)
                    tg.start_soon(recv)
            # The same packets from B's real address do arrive: the drop above is the source check.
            await anyio.to_thread.run_sync(inject, p.b, [udp(b_ip, a_ip, 40000, 5300, b"genuine")])
            with anyio.fail_after(5):
                real = await sock.recvfrom()  # type: ignore[attr-defined]
            await lst.aclose()  # type: ignore[attr-defined]
            await sock.aclose()  # type: ignore[attr-defined]
            return accepted, [*got, real]

        accepted, got = anyio.run(attack)
        assert not accepted, "a spoofed SYN reached the listener"
        assert got[:-1] == [], f"spoofed datagrams delivered: {got[:-1]}"
        assert got[-1][0] == b"genuine"  # type: ignore[index]
        dropped = p.a.status().drops.get("wg_source_not_allowed", 0) - before
        assert dropped >= 800, f"only {dropped} of 800 spoofed packets counted as source_not_allowed"
        assert len(actor(p.a, "netstack").stack._pending_of) == half_open0, "spoofed SYN made a half-open"
        live.assert_unharmed()
        healthy_exchange(p, port=7202)


def test_syn_flood_through_the_tunnel_is_bounded(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path, direct=True) as p:
        _established(p)
        a_ip, b_ip = p.ip(p.a), p.ip(p.b)
        stack = actor(p.a, "netstack").stack
        cap = stack.config.max_half_open
        live = Liveness(p.a)
        drops0 = dict(p.a.status().drops)
        rss0 = rss_mb()
        peak = 0

        async def run() -> None:
            nonlocal peak
            lst = await p.a.listen(7400)
            flood = [syn(b_ip, a_ip, 1024 + (i % 60000), 7400) for i in range(6000)]
            await anyio.to_thread.run_sync(inject, p.b, flood)
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                peak = max(peak, len(stack._pending_of))
                await anyio.sleep(0.01)
            # A legitimate client is still served, on the flooded listener.
            async def serve() -> None:
                with anyio.fail_after(10):
                    s = await lst.accept()  # type: ignore[attr-defined]
                    while True:  # skip anything the flood managed to complete
                        data = await s.receive()
                        if data == b"hello":
                            await s.send(b"welcome")
                            break
                    await s.aclose()

            async def client() -> None:
                with anyio.fail_after(10):
                    c = await p.b.tcp_connect(a_ip, 7400)
                    await c.send(b"hello")
                    assert await c.receive() == b"welcome"
                    await c.aclose()

            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                tg.start_soon(client)
            await lst.aclose()  # type: ignore[attr-defined]

        anyio.run(run)
        drops = p.a.status().drops
        grew = {k: v - drops0.get(k, 0) for k, v in drops.items() if v != drops0.get(k, 0)}
        refused = sum(grew.get(f"netstack_tcp_{k}", 0) for k in ("backlog_full", "table_full",
                                                                  "half_open_source_limit"))
        assert refused > 1000, f"flood not counted: {grew}"
        assert grew.get("netstack_tcp_syncookies_sent", 0) > 1000, f"flood not answered by cookies: {grew}"
        per_source = stack.config.max_half_open_per_source  # one attacker: its own quota is the bound
        assert peak <= min(cap, per_source), f"{peak} half-open connections, cap {cap}/{per_source}"
        assert len(stack._pending_of) <= cap
        live.assert_unharmed()
        assert rss_mb() - rss0 < 150
        healthy_exchange(p, port=7402)
