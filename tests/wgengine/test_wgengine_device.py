"""Sans-IO multi-peer WireGuard device: handshakes, routing, index table, anti-spoofing, idle tunnels."""

from __future__ import annotations

import itertools
import os

import pytest
from wgengine_helpers import Link, udp

from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.constants import REJECT_AFTER_TIME
from pytsnet.wire.wireguard.device import AllowedIPs, Device, PeerConfig, ip_endpoints
from pytsnet.wire.wireguard.peer import HandshakeCompleted


def _mesh(n: int, keepalive: float = 25.0) -> tuple[list[Device], list[str], Link]:
    keys = [NodePrivate.generate() for _ in range(n)]
    addrs = [f"100.64.0.{i + 1}" for i in range(n)]
    devs = [Device(k) for k in keys]
    for i, d in enumerate(devs):
        d.set_peers(
            PeerConfig(keys[j].public(), (f"{addrs[j]}/32",), keepalive) for j in range(n) if j != i
        )
    return devs, addrs, Link({d.public.raw: d for d in devs})


def test_handshake_on_first_packet_and_delivery_both_ways() -> None:
    (a, b), (ia, ib), link = _mesh(2)
    pkt = udp(ia, ib, payload=b"first")
    assert a.send(pkt, 0.0) == b.public
    link.pump(0.0)
    got = b.received_packets()
    assert [(p, d) for p, d in got] == [(a.public, pkt)]
    assert any(isinstance(e, HandshakeCompleted) for _, e in a.events())
    reply = udp(ib, ia, 2000, 1000, b"reply")
    b.send(reply, 0.1)
    link.pump(0.1)
    assert a.received_packets() == [(b.public, reply)]


def test_many_peers_route_by_destination() -> None:
    devs, addrs, link = _mesh(6)
    now = 0.0
    for i, src in enumerate(devs):
        for j in range(len(devs)):
            if i != j:
                src.send(udp(addrs[i], addrs[j], payload=f"{i}->{j}".encode()), now)
        link.pump(now)
        now += 0.05
    for j, dst in enumerate(devs):
        got = dst.received_packets()
        senders = sorted(int(bytes(p[28:]).decode().split("->")[0]) for _, p in got)
        assert senders == [i for i in range(len(devs)) if i != j]
        for peer, p in got:
            ends = ip_endpoints(p)
            assert ends is not None and devs[(ends[1] & 0xFF) - 1].public == peer  # delivered from its owner
    assert all(not d.drops for d in devs)


def test_unknown_destination_dropped_and_counted() -> None:
    (a, _b), (ia, _), _link = _mesh(2)
    assert a.send(udp(ia, "100.64.9.9"), 0.0) is None
    assert a.send(b"\x00junk", 0.0) is None
    assert a.datagrams_to_send() == []
    assert a.drops["no_route"] == 1 and a.drops["not_ip"] == 1


def test_spoofed_source_dropped() -> None:
    (a, b, _c), (ia, ib, ic), link = _mesh(3)
    # a claims c's address as its source: b must drop it after decryption (anti-spoofing).
    a.send(udp(ic, ib), 0.0)
    link.pump(0.0)
    assert b.received_packets() == []
    assert b.drops["source_not_allowed"] == 1
    a.send(udp(ia, ib), 0.1)
    link.pump(0.1)
    assert len(b.received_packets()) == 1


def test_longest_prefix_match() -> None:
    t = AllowedIPs()
    import ipaddress
    t.insert(ipaddress.ip_network("10.0.0.0/8"), b"wide")
    t.insert(ipaddress.ip_network("10.1.0.0/16"), b"mid")
    t.insert(ipaddress.ip_network("10.1.2.3/32"), b"host")
    t.insert(ipaddress.ip_network("fd7a:115c:a1e0::/48"), b"v6")
    ip = lambda s: int(ipaddress.ip_address(s))  # noqa: E731
    assert t.lookup(4, ip("10.1.2.3")) == b"host"
    assert t.lookup(4, ip("10.1.2.4")) == b"mid"
    assert t.lookup(4, ip("10.9.9.9")) == b"wide"
    assert t.lookup(4, ip("192.0.2.77")) is None
    assert t.lookup(6, ip("fd7a:115c:a1e0::5")) == b"v6"
    assert t.lookup(6, ip("fd7a:115c:a1e1::5")) is None


def test_index_collisions_impossible_even_with_a_colliding_rng() -> None:
    """An RNG that repeats values: the device still hands out unique receiver indices."""
    counter = itertools.count()

    def repeating(n: int) -> bytes:
        if n == 4:
            return (next(counter) // 3 % 5).to_bytes(4, "little")  # each index drawn 3x, only 5 values
        return os.urandom(n)

    keys = [NodePrivate.generate() for _ in range(3)]
    dev = Device(keys[0], random_bytes=repeating)
    dev.set_peers([PeerConfig(keys[1].public(), ("100.64.0.2/32",)),
                   PeerConfig(keys[2].public(), ("100.64.0.3/32",))])
    dev.send(udp("100.64.0.1", "100.64.0.2"), 0.0)
    dev.send(udp("100.64.0.1", "100.64.0.3"), 0.0)
    assert dev.index_count() == 2
    init = [bytes(d) for _, d in dev.datagrams_to_send()]
    senders = {int.from_bytes(d[4:8], "little") for d in init}
    assert len(senders) == 2


def test_indices_bounded_under_repeated_initiations() -> None:
    (a, _b), (ia, ib), link = _mesh(2, keepalive=0)
    link.drop = True
    now = 0.0
    a.send(udp(ia, ib), now)
    for _ in range(40):
        now += 6.0
        a.tick(now)
        a.datagrams_to_send()
    assert a.index_count() <= 4


def test_peer_removal_frees_indices_and_unknown_initiator_dropped() -> None:
    (a, b), (ia, ib), link = _mesh(2)
    a.send(udp(ia, ib), 0.0)
    link.pump(0.0)
    assert a.index_count() >= 1 and b.index_count() >= 1
    assert len(b.received_packets()) == 1
    b.set_peers([])
    assert b.index_count() == 0
    a.send(udp(ia, ib), 0.1)
    assert a.initiate(b.public, 10.0, force=True)
    for _, d in a.datagrams_to_send():
        b.receive(bytes(d), 10.0)
    assert b.drops["unknown_peer"] >= 1
    assert b.received_packets() == []


def test_garbage_never_raises() -> None:
    (a, _b), _, _ = _mesh(2)
    for blob in (b"", b"\x01", b"\x04\x00\x00\x00" + bytes(40), b"\x01\x00\x00\x00" + os.urandom(144),
                 b"\x02\x00\x00\x00" + os.urandom(88), b"\x09\x00\x00\x00", os.urandom(200)):
        a.receive(blob, 0.0)
    assert sum(a.drops.values()) >= 6


def test_idle_derp_tunnel_still_carries_traffic_after_five_minutes() -> None:
    """Persistent keepalive 25 s keeps sessions rekeyed; after 5 idle minutes a packet goes through
    with no new handshake needed from the idle side."""
    (a, b), (ia, ib), link = _mesh(2)
    now = 0.0
    a.send(udp(ia, ib), now)
    link.pump(now)
    assert b.received_packets()
    while now < 300.0:
        deadlines = [d for d in (a.next_deadline(), b.next_deadline()) if d is not None]
        assert deadlines, "a keepalive-configured tunnel always has a deadline"
        now = min(deadlines)
        a.tick(now)
        b.tick(now)
        link.pump(now)
    carried = link.carried
    now += 1.0
    b.send(udp(ib, ia, payload=b"after idle"), now)
    link.pump(now)
    assert [p for _, p in a.received_packets()][-1].endswith(b"after idle")
    kp = b.peer(a.public).keypairs.current  # type: ignore[union-attr]
    assert kp is not None and now - kp.created < REJECT_AFTER_TIME
    assert carried > 10  # keepalives flowed while idle


def test_no_keepalive_tunnel_goes_quiet() -> None:
    """Control: without persistent keepalive an idle tunnel goes silent (so the test above can fail)."""
    (a, b), (ia, ib), link = _mesh(2, keepalive=0)
    a.send(udp(ia, ib), 0.0)
    link.pump(0.0)
    now = 0.0
    for _ in range(100):
        ds = [d for d in (a.next_deadline(), b.next_deadline()) if d is not None]
        if not ds:
            break
        now = min(ds)
        a.tick(now)
        b.tick(now)
        link.pump(now)
    before = link.carried
    a.tick(300.0)
    b.tick(300.0)
    link.pump(300.0)
    assert link.carried == before


@pytest.mark.parametrize("peers", [1, 50])
def test_next_deadline_aggregates(peers: int) -> None:
    keys = [NodePrivate.generate() for _ in range(peers)]
    dev = Device(NodePrivate.generate())
    dev.set_peers(PeerConfig(k.public(), (f"100.65.{i // 250}.{i % 250 + 1}/32",))
                  for i, k in enumerate(keys))
    assert dev.next_deadline() is None
    dev.send(udp("100.64.0.1", "100.65.0.1"), 7.0)
    d = dev.next_deadline()
    assert d is not None and 7.0 < d <= 7.0 + 5.0 + 0.334
