"""Sans-IO path selection with simulated time (Go ``endpoint.go`` rules, ``docs/protocol/disco.md`` §5)."""

from __future__ import annotations

import ipaddress
import itertools

from pytsnet.wire.magicsock import endpoint as ep
from pytsnet.wire.magicsock.endpoint import (
    AddrQuality,
    Endpoint,
    SendCallMeMaybe,
    SendPing,
    SendPong,
    better_addr,
)

A = (ipaddress.ip_address("192.168.1.2"), 41641)
B = (ipaddress.ip_address("203.0.113.7"), 41641)
C = (ipaddress.ip_address("198.51.100.9"), 5000)
DERP_SRC = (ipaddress.ip_address("127.3.3.40"), 900)


def make(eps: tuple = (A,)) -> Endpoint:
    counter = itertools.count()
    e = Endpoint(derp_region=900, tx_id=lambda: next(counter).to_bytes(12, "big"))
    e.set_netmap_endpoints(list(eps))
    return e


def pings(actions: list) -> list[SendPing]:
    return [a for a in actions if isinstance(a, SendPing)]


def test_no_path_sends_via_derp_and_first_send_starts_discovery() -> None:
    e = make((A, B))
    assert e.addrs_for_send(0.0) == (None, True)
    acts = e.note_send(0.0)
    assert {p.dst for p in pings(acts)} == {A, B}
    assert any(isinstance(a, SendCallMeMaybe) for a in acts)
    # rate limit: another send within discoPingInterval does not re-ping
    assert pings(e.note_send(1.0)) == []


def test_ping_pong_makes_best_addr_trusted_for_6_5_s() -> None:
    e = make()
    p = pings(e.note_send(10.0))[0]
    assert e.on_pong(10.02, p.tx_id, A)
    assert e.best.addr == A and abs(e.best.latency - 0.02) < 1e-9
    assert e.addrs_for_send(10.02) == (A, False)
    assert e.addrs_for_send(10.02 + 6.5) == (A, False)
    assert e.addrs_for_send(10.03 + 6.5) == (A, True)  # trust expired: UDP and DERP both


def test_unknown_pong_tx_is_ignored() -> None:
    e = make()
    e.note_send(0.0)
    assert not e.on_pong(0.1, b"\xff" * 12, A)
    assert e.best.addr is None


def test_heartbeat_renews_trust_while_active() -> None:
    e = make()
    p = pings(e.note_send(0.0))[0]
    e.on_pong(0.01, p.tx_id, A)
    t = 0.01
    for _ in range(10):  # 30 s of activity: heartbeat every 3 s pings the best address
        t += ep.HEARTBEAT_INTERVAL
        e.note_send(t - 0.5)
        assert e.next_deadline() is not None and e.next_deadline() <= t + 1e-9
        hb = pings(e.handle_timeout(t))
        assert hb and hb[0].dst == A
        e.on_pong(t + 0.01, hb[0].tx_id, A)
        assert e.addrs_for_send(t + 0.01) == (A, False)


def test_heartbeats_stop_after_session_idle() -> None:
    e = make()
    p = pings(e.note_send(0.0))[0]
    e.on_pong(0.01, p.tx_id, A)
    t = 0.0
    sent = 0
    while t < 60:
        t += ep.HEARTBEAT_INTERVAL
        for a in pings(e.handle_timeout(t)):
            sent += 1
            e.on_pong(t, a.tx_id, A)
    assert e.next_heartbeat is None  # idle > 45 s: no more heartbeats
    assert 10 <= sent <= 20


def test_path_stops_answering_falls_back_to_derp() -> None:
    e = make()
    p = pings(e.note_send(0.0))[0]
    e.on_pong(0.01, p.tx_id, A)
    t = 0.01
    # the direct path goes dark; traffic continues
    while t < 20:
        t += 0.5
        for _ in pings(e.note_send(t)):
            pass
        if e.next_deadline() is not None and t >= e.next_deadline():
            e.handle_timeout(t)
    udp, derp = e.addrs_for_send(t)
    assert derp  # DERP carries the traffic again
    assert udp is None  # best address cleared after a ping to it timed out while untrusted
    assert not e.is_direct_trusted(t)


def test_call_me_maybe_pings_advertised_endpoints_and_drops_stale_ones() -> None:
    e = make(())
    acts = e.on_call_me_maybe(1.0, (B, C))
    assert {p.dst for p in pings(acts)} == {B, C}
    assert not any(isinstance(a, SendCallMeMaybe) for a in acts)  # no CallMeMaybe in reply
    # a second CallMeMaybe resets the rate limit (pings again at once) and forgets C
    acts = e.on_call_me_maybe(1.5, (B,))
    assert {p.dst for p in pings(acts)} == {B}
    assert C not in e.candidates()


def test_call_me_maybe_skips_ipv6_link_local() -> None:
    e = make(())
    ll = (ipaddress.ip_address("fe80::1"), 1)
    assert pings(e.on_call_me_maybe(0.0, (ll,))) == []


def test_udp_ping_answered_adds_candidate_and_duplicate_tx_is_not() -> None:
    e = make(())
    acts = e.on_ping(0.0, b"t" * 12, C, DERP_SRC)
    assert acts == [SendPong(C, b"t" * 12, C)]
    assert C in e.candidates()
    assert e.on_ping(0.1, b"t" * 12, C, DERP_SRC) == []
    assert e.on_ping(0.1, b"u" * 12, None, DERP_SRC) == [SendPong(None, b"u" * 12, DERP_SRC)]


def test_better_addr_go_rules() -> None:
    pub1 = (ipaddress.ip_address("192.0.2.11"), 1)
    pub2 = (ipaddress.ip_address("203.0.113.2"), 1)
    priv = (ipaddress.ip_address("10.0.0.1"), 1)
    lo = (ipaddress.ip_address("127.0.0.1"), 1)
    v6 = (ipaddress.ip_address("2001:db8::1"), 1)
    assert better_addr(AddrQuality(pub1, 0.01), AddrQuality(None))
    assert not better_addr(AddrQuality(None), AddrQuality(pub1, 0.01))
    assert better_addr(AddrQuality(pub1, 0.010), AddrQuality(pub2, 0.020))
    assert not better_addr(AddrQuality(pub1, 0.0199), AddrQuality(pub2, 0.020))  # hysteresis: ≤1 point
    assert better_addr(AddrQuality(priv, 0.020), AddrQuality(pub1, 0.018))  # private bonus 20
    assert better_addr(AddrQuality(lo, 0.012), AddrQuality(priv, 0.010))  # loopback 50 vs 17+20
    assert not better_addr(AddrQuality(lo, 0.020), AddrQuality(priv, 0.005))
    assert better_addr(AddrQuality(v6, 0.010), AddrQuality(pub1, 0.010))  # IPv6 +10
    assert not better_addr(AddrQuality(pub1, 0.010), AddrQuality(pub1, 0.001))  # same address


def test_untrusted_best_is_replaced_by_any_pong() -> None:
    e = make((A, B))
    acts = pings(e.note_send(0.0))
    by = {p.dst: p for p in acts}
    e.on_pong(0.001, by[A].tx_id, A)  # private, fast
    assert e.best.addr == A
    t = 20.0  # trust long gone; B answers a fresh round first
    acts = pings(e.note_send(t))
    by = {p.dst: p for p in acts}
    e.on_pong(t + 0.05, by[B].tx_id, B)
    assert e.best.addr == B and e.addrs_for_send(t + 0.05) == (B, False)


def test_bounded_state_under_many_candidates() -> None:
    e = make(())
    for i in range(500):
        e.on_ping(float(i), i.to_bytes(12, "big"), (ipaddress.ip_address("10.1.0.0") + i, 1), DERP_SRC)
    assert len(e.candidates()) <= ep.MAX_ENDPOINTS
    for _ in range(500):
        e.note_send(1000.0)
        e.last_full_ping = None
        for st in e.endpoints.values():
            st.last_ping = None
    assert len(e.sent) <= ep.MAX_PINGS_IN_FLIGHT
