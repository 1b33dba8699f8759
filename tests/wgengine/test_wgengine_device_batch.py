"""``Device.send_many``: the burst path the engine uses must route, order and count like ``send``."""

from __future__ import annotations

from wgengine_helpers import Link, udp

from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.device import Device, PeerConfig


def _mesh(n: int) -> tuple[list[Device], list[str], Link]:
    keys = [NodePrivate.generate() for _ in range(n)]
    addrs = [f"100.64.0.{i + 1}" for i in range(n)]
    devs = [Device(k) for k in keys]
    for i, d in enumerate(devs):
        d.set_peers(PeerConfig(keys[j].public(), (f"{addrs[j]}/32",), 25.0) for j in range(n) if j != i)
    return devs, addrs, Link({d.public.raw: d for d in devs})


def test_send_many_routes_interleaved_runs_in_order_and_counts_drops() -> None:
    (a, b, c), (ia, ib, ic), link = _mesh(3)
    a.send(udp(ia, ib, payload=b"hs-b"), 0.0)
    a.send(udp(ia, ic, payload=b"hs-c"), 0.0)
    link.pump(0.0)  # sessions up with both peers
    b.received_packets(), c.received_packets()
    dests = [ib, ib, ic, ib, ic, ic, "100.64.9.9", ib]
    pkts = [udp(ia, d, payload=f"p{i}".encode()) for i, d in enumerate(dests)]
    a.send_many([*pkts, b"\x00junk"], 0.1)
    link.pump(0.1)
    assert [p for _, p in b.received_packets()] == [p for p, d in zip(pkts, dests, strict=True) if d == ib]
    assert [p for _, p in c.received_packets()] == [p for p, d in zip(pkts, dests, strict=True) if d == ic]
    assert a.drops["no_route"] == 1 and a.drops["not_ip"] == 1


def test_send_many_before_a_session_stages_and_handshakes() -> None:
    (a, b), (ia, ib), link = _mesh(2)
    pkts = [udp(ia, ib, payload=f"early{i}".encode()) for i in range(5)]
    a.send_many(pkts, 0.0)
    link.pump(0.0)
    got = [p for _, p in b.received_packets()]
    assert got and got == pkts[-len(got):]  # staged packets go out after the handshake, in order
