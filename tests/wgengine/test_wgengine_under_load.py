"""Handshakes under load (wireguard-go RoutineHandshake): cookie replies before any DH, the per-source
budget, the live receiver indexes a driver publishes, and that a legitimate peer still gets through."""

from __future__ import annotations

import struct

from wgengine_helpers import udp

from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.constants import REKEY_TIMEOUT
from pytsnet.wire.wireguard.cookie import CookieGenerator
from pytsnet.wire.wireguard.device import Device, PeerConfig
from pytsnet.wire.wireguard.handshake import create_initiation
from pytsnet.wire.wireguard.ratelimit import PACKET_COST, PACKETS_BURSTABLE, RateLimiter, TokenBucket

SRC = b"192.0.2.7:41641"


def _pair() -> tuple[Device, Device]:
    ka, kb = NodePrivate.generate(), NodePrivate.generate()
    a, b = Device(ka), Device(kb)
    a.set_peers([PeerConfig(kb.public(), ("100.64.0.2/32",))])
    b.set_peers([PeerConfig(ka.public(), ("100.64.0.1/32",))])
    return a, b


def _stranger_initiation(victim: Device, i: int) -> bytes:
    msg, _ = create_initiation(NodePrivate.generate().raw, victim.public.raw, i, 1000.0, bytes(32))
    raw = bytearray(msg.emit())
    CookieGenerator(victim.public.raw).add_macs(raw, 0.0)
    return bytes(raw)


def test_under_load_initiations_get_cookie_replies_and_no_dh() -> None:
    _, b = _pair()
    for i in range(50):
        assert b.receive(_stranger_initiation(b, i), 1.0, src=SRC, under_load=True) is None
        [reply] = b.cookie_replies()
        assert reply[0] == 3 and len(reply) == 64
    assert b.work["cookie_replies"] == 50 and b.work["handshake_dh"] == 0
    assert b.datagrams_to_send() == []  # nothing to any peer: the driver returns replies to the source


def test_not_under_load_unknown_keys_cost_a_dh_and_are_refused() -> None:
    _, b = _pair()
    b.receive(_stranger_initiation(b, 1), 1.0, src=SRC)
    assert b.work["handshake_dh"] == 1 and b.drops["unknown_peer"] == 1 and not b.cookie_replies()


def test_legitimate_peer_completes_a_handshake_under_load_with_its_cookie() -> None:
    a, b = _pair()
    a.send(udp("100.64.0.1", "100.64.0.2", payload=b"hi"), 0.0)
    [(_, init)] = a.datagrams_to_send()
    assert b.receive(bytes(init), 0.0, src=SRC, under_load=True) is None
    [cookie] = b.cookie_replies()
    assert b.work["handshake_dh"] == 0
    a.receive(cookie, 0.01, src=b"b")  # a's peer keeps the cookie for its next initiation
    assert not a.drops
    a.tick(REKEY_TIMEOUT + 1.0)  # the retransmission carries mac2 under that cookie
    [(_, retry)] = a.datagrams_to_send()
    assert b.receive(bytes(retry), REKEY_TIMEOUT + 1.0, src=SRC, under_load=True) == a.public
    assert b.work["handshake_dh"] == 1 and not b.cookie_replies()
    [(_, response)] = b.datagrams_to_send()
    a.receive(bytes(response), REKEY_TIMEOUT + 1.01, src=b"b")
    peer = a.peer(b.public)
    assert peer is not None and peer.keypairs.current is not None


def test_cookie_is_bound_to_the_source_address() -> None:
    a, b = _pair()
    a.send(udp("100.64.0.1", "100.64.0.2", payload=b"hi"), 0.0)
    [(_, init)] = a.datagrams_to_send()
    b.receive(bytes(init), 0.0, src=SRC, under_load=True)
    a.receive(b.cookie_replies()[0], 0.01, src=b"b")
    a.tick(REKEY_TIMEOUT + 1.0)
    [(_, retry)] = a.datagrams_to_send()
    b.receive(bytes(retry), REKEY_TIMEOUT + 1.0, src=b"198.51.100.9:1", under_load=True)  # another source
    assert b.work["handshake_dh"] == 0 and len(b.cookie_replies()) == 1


def test_budget_per_source_under_load() -> None:
    a, b = _pair()
    a.send(udp("100.64.0.1", "100.64.0.2", payload=b"hi"), 0.0)
    [(_, init)] = a.datagrams_to_send()
    b.receive(bytes(init), 0.0, src=SRC, under_load=True)
    a.receive(b.cookie_replies()[0], 0.01, src=b"b")
    a.tick(REKEY_TIMEOUT + 1.0)
    [(_, retry)] = a.datagrams_to_send()
    now = REKEY_TIMEOUT + 1.0
    for _ in range(PACKETS_BURSTABLE + 10):  # replays with a valid mac2 from one IP, all at once
        b.receive(bytes(retry), now, src=SRC, under_load=True, rate_key=b"192.0.2.7")
    assert b.work["handshake_dh"] == PACKETS_BURSTABLE
    assert b.drops["handshake_rate_limited"] == 10


def test_rate_limiter_refills_forgets_and_stays_bounded() -> None:
    rl = RateLimiter(max_entries=2)
    assert [rl.allow(b"x", 0.0) for _ in range(PACKETS_BURSTABLE + 1)] == [True] * PACKETS_BURSTABLE + [False]
    assert rl.allow(b"x", PACKET_COST * 1.01) and not rl.allow(b"x", PACKET_COST * 1.02)
    assert rl.allow(b"y", 0.1) and not rl.allow(b"z", 0.1)  # full: a new source is refused
    assert rl.allow(b"z", 5.0) and len(rl) == 1  # idle entries were collected


def test_live_indexes_follow_sessions() -> None:
    a, b = _pair()
    v0 = a.index_version
    a.send(udp("100.64.0.1", "100.64.0.2", payload=b"hi"), 0.0)
    [(_, init)] = a.datagrams_to_send()
    sender = struct.unpack_from("<I", init, 4)[0]
    assert a.index_version > v0 and a.live_indexes() == {sender}
    b.receive(bytes(init), 0.0, src=SRC)
    [(_, response)] = b.datagrams_to_send()
    assert b.live_indexes() == {struct.unpack_from("<I", response, 4)[0]}
    a.set_peers([])
    assert a.live_indexes() == frozenset()


def test_token_bucket_rate_and_burst() -> None:
    tb = TokenBucket(100.0, 10.0)
    assert sum(tb.allow(0.0) for _ in range(50)) == 10  # the burst
    assert sum(tb.allow(0.5) for _ in range(100)) == 10  # refilled to the burst, not to 50
    assert sum(tb.allow(0.5 + i / 1000) for i in range(1, 1001)) in range(99, 102)  # 100 per second
