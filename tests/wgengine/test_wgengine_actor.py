"""WgEngine actors over a fake magicsock: delivery, filter, supervised restart, idle DERP tunnel."""

from __future__ import annotations

import time

import pytest
from wgengine_helpers import TCP, packet, udp
from wgengine_rig import make_pair

from pytsnet.actors.runtime import FaultInjector, ManualClock
from pytsnet.messages.wgengine import GetWgStatus, IpPacketOut, WgConfig, WgPeer, WgStatus
from pytsnet.testing.polling import wait_until
from pytsnet.wire.wireguard.constants import REJECT_AFTER_TIME


@pytest.fixture
def pair():  # type: ignore[no-untyped-def]
    a, b, wire = make_pair()
    yield a, b, wire
    a.system.shutdown()
    b.system.shutdown()


def test_packets_both_ways(pair) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = pair
    for i in range(20):
        a.engine.tell(IpPacketOut(data=udp(a.addr, b.addr, payload=f"a{i}".encode())))
    wait_until(lambda: len(b.got) == 20)
    assert [p[28:] for p in b.got] == [f"a{i}".encode() for i in range(20)]
    b.engine.tell(IpPacketOut(data=udp(b.addr, a.addr, 2000, 1000, b"back")))
    wait_until(lambda: len(a.got) == 1)
    st = a.engine.ask(GetWgStatus())
    assert isinstance(st, WgStatus) and st.peers[0].has_session


def test_filter_applies_inbound_and_no_route_counted(pair) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = pair
    cfg = b.engine.ask(GetWgStatus())  # config has landed once the ask returns
    assert cfg.peers
    peer_a = WgPeer(node_key=a.text, allowed_ips=[f"{a.addr}/32"])
    b.engine.tell(WgConfig(addresses=[f"{b.addr}/32"], peers=[peer_a], packet_filter=None))
    a.engine.tell(IpPacketOut(data=packet(TCP, a.addr, b.addr, 5000, 22, flags=0x02)))  # SYN: no filter
    a.engine.tell(IpPacketOut(data=udp(a.addr, "100.64.0.77")))  # no route
    a.engine.tell(IpPacketOut(data=packet(TCP, a.addr, b.addr, 22, 5000, flags=0x10)))  # ACK passes
    wait_until(lambda: len(b.got) == 1)
    st = b.engine.ask(GetWgStatus())
    assert st.filter_drops.get("no_rule") == 1
    assert a.engine.ask(GetWgStatus()).device_drops.get("no_route") == 1


def test_kill_engine_mid_flow_restarts_and_traffic_resumes(pair) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = pair
    seq = 0

    def send(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            a.engine.tell(IpPacketOut(data=udp(a.addr, b.addr, payload=seq.to_bytes(4, "big"))))
            seq += 1

    send(50)
    wait_until(lambda: len(b.got) >= 10)
    before = a.engine.incarnation
    FaultInjector.kill_now(a.engine, "chaos")
    wait_until(lambda: a.engine.is_alive and a.engine.incarnation > before)
    mark = seq
    send(20)
    wait_until(lambda: any(int.from_bytes(p[28:32], "big") >= mark for p in b.got), timeout=10)
    got = [int.from_bytes(p[28:32], "big") for p in b.got]
    assert got == sorted(got)  # in order, no duplicates
    assert a.engine.ask(GetWgStatus()).peers[0].has_session  # re-handshaked after the restart


def test_idle_derp_tunnel_carries_traffic_after_five_minutes() -> None:
    clock = ManualClock()
    a, b, wire = make_pair(clock)
    try:
        a.engine.tell(IpPacketOut(data=udp(a.addr, b.addr, payload=b"hello")))
        wait_until(lambda: len(b.got) == 1)
        for _ in range(300):
            clock.advance(1.0)
            time.sleep(0.003)
        now = clock.monotonic()
        for n in (a, b):
            st = n.engine.ask(GetWgStatus())
            p = st.peers[0]
            assert p.has_session and p.last_handshake is not None
            assert now - p.last_handshake < REJECT_AFTER_TIME, "session lapsed while idle"
        carried = wire.carried
        assert carried > 10  # 25 s keepalives flowed over the relay path while idle
        b.engine.tell(IpPacketOut(data=udp(b.addr, a.addr, payload=b"after five idle minutes")))
        wait_until(lambda: len(a.got) == 1)
        assert a.got[0].endswith(b"after five idle minutes")
    finally:
        a.system.shutdown()
        b.system.shutdown()
