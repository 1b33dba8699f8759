"""The sans-IO peer: handshakes, transport, rotation, cookies and timers on a simulated clock."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard import handshake, messages
from pytsnet.wire.wireguard.constants import (
    MESSAGE_COOKIE_REPLY_SIZE,
    REJECT_AFTER_TIME,
    REKEY_AFTER_TIME,
    TAILSCALE_PERSISTENT_KEEPALIVE,
)
from pytsnet.wire.wireguard.peer import HandshakeCompleted, HandshakeGaveUp, Peer


def ipv4_packet(payload: bytes, ident: int = 0) -> bytes:
    """A minimal IPv4/UDP-ish packet: only the total-length field matters to the peer."""
    total = 20 + len(payload)
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, ident, 0, 64, 17, 0, bytes(4), bytes(4)) + payload


class Link:
    """Two peers and a lossless in-memory relay, driven only by each peer's next_deadline()."""

    def __init__(self, keepalive: float = 0.0, seed: int = 1) -> None:
        rng = random.Random(seed)
        rb = lambda n: rng.randbytes(n)  # noqa: E731
        ka, kb = NodePrivate.generate(), NodePrivate.generate()
        self.a = Peer(ka, kb.public(), persistent_keepalive=keepalive, random_bytes=rb, mtu=1280)
        self.b = Peer(kb, ka.public(), persistent_keepalive=keepalive, random_bytes=rb, mtu=1280)
        self.now = 1000.0
        self.got: dict[str, list[bytes]] = {"a": [], "b": []}
        self.wire_count = 0

    def pump(self) -> None:
        for _ in range(20):
            moved = False
            for src, dst, name in ((self.a, self.b, "b"), (self.b, self.a, "a")):
                for d in src.datagrams_to_send():
                    moved = True
                    self.wire_count += 1
                    dst.receive(bytes(d), self.now)
                self.got[name] += dst.received_packets()
            if not moved:
                return

    def run_until(self, t_end: float) -> None:
        """Advance time deadline by deadline (the only way a real driver would wake up)."""
        while True:
            ds = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d is not None]
            nxt = min(ds, default=None)
            if nxt is None or nxt > t_end:
                self.now = t_end
                return
            self.now = max(self.now, nxt)
            self.a.tick(self.now)
            self.b.tick(self.now)
            self.pump()


def test_handshake_and_transport_both_directions() -> None:
    L = Link()
    L.a.send(ipv4_packet(b"hello"), L.now)  # staged; initiation goes out
    L.pump()
    assert L.got["b"] == [ipv4_packet(b"hello")]
    ev_a, ev_b = L.a.events(), L.b.events()
    assert [type(e) for e in ev_a] == [HandshakeCompleted] and ev_a[0].is_initiator
    assert [type(e) for e in ev_b] == [HandshakeCompleted] and not ev_b[0].is_initiator
    L.b.send(ipv4_packet(b"back"), L.now)
    L.pump()
    assert L.got["a"] == [ipv4_packet(b"back")]
    assert L.a.dropped == L.b.dropped == 0


def test_replayed_and_forged_transport_dropped() -> None:
    L = Link()
    L.a.send(ipv4_packet(b"x"), L.now)
    L.pump()
    L.a.send(ipv4_packet(b"y"), L.now)
    (d,) = L.a.datagrams_to_send()
    L.b.receive(bytes(d), L.now)
    L.b.receive(bytes(d), L.now)
    forged = bytearray(d)
    forged[-1] ^= 1
    L.b.receive(bytes(forged), L.now)
    assert L.b.received_packets() == [ipv4_packet(b"y")]
    assert L.b.dropped == 2


def test_rekey_rotates_keypairs_without_loss() -> None:
    L = Link()
    L.a.send(ipv4_packet(b"0"), L.now)
    L.pump()
    first = L.a.keypairs.current
    for i in range(1, 5):
        L.now += 1.0  # initiations closer than 20 ms (or within one TAI64N tick) are refused
        L.a.initiate(L.now, force=True)
        # data in flight under the old keypair while the handshake is pending
        L.a.send(ipv4_packet(bytes([i])), L.now)
        L.b.send(ipv4_packet(bytes([100 + i])), L.now)
        L.pump()
    assert L.a.keypairs.current is not first
    assert L.a.keypairs.current.local_index != first.local_index
    assert len(L.got["b"]) == 5 and len(L.got["a"]) == 4
    assert L.b.keypairs.current.remote_index == L.a.keypairs.current.local_index


def test_responder_rejects_replayed_initiation() -> None:
    L = Link()
    L.a.initiate(L.now)
    (init,) = L.a.datagrams_to_send()
    L.b.receive(init, L.now)
    assert len(L.b.datagrams_to_send()) == 1
    L.b.receive(init, L.now + 1)
    assert L.b.datagrams_to_send() == [] and L.b.dropped == 1


def test_cookie_reply_under_load() -> None:
    L = Link()
    src = b"\x7f\x00\x00\x01\x00\x35"
    L.a.initiate(L.now)
    (init,) = L.a.datagrams_to_send()
    L.b.receive(init, L.now, src=src, under_load=True)
    (reply,) = L.b.datagrams_to_send()
    assert len(reply) == MESSAGE_COOKIE_REPLY_SIZE and reply[0] == 3
    assert L.b.keypairs.next is None  # no state was created for the unproven sender
    L.a.receive(reply, L.now)
    assert L.a.dropped == 0
    L.a.initiate(L.now + 0.1, force=True)
    (init2,) = L.a.datagrams_to_send()
    assert init2[132:] != bytes(16)  # mac2 now carries the cookie
    L.b.receive(init2, L.now + 0.1, src=src, under_load=True)
    (resp,) = L.b.datagrams_to_send()
    assert resp[0] == 2
    L.b.receive(init2, L.now + 0.2, src=b"other", under_load=True)  # same mac2, other address
    assert L.b.datagrams_to_send()[0][0] == 3


def test_bad_mac1_dropped() -> None:
    L = Link()
    L.a.initiate(L.now)
    (init,) = L.a.datagrams_to_send()
    bad = bytearray(init)
    bad[120] ^= 1
    L.b.receive(bytes(bad), L.now)
    assert L.b.datagrams_to_send() == [] and L.b.dropped == 1


def test_handshake_retries_then_gives_up() -> None:
    L = Link()
    L.a.send(ipv4_packet(b"lost"), L.now)
    sent = len(L.a.datagrams_to_send())
    t = L.now
    while (d := L.a.next_deadline()) is not None and d < t + 200:
        L.a.tick(d)
        sent += len(L.a.datagrams_to_send())
        if any(isinstance(e, HandshakeGaveUp) for e in L.a.events()):
            break
    assert sent == 20  # MaxTimerHandshakes + 2
    assert L.a.next_deadline() - t > 90  # only key zeroing remains


@pytest.mark.parametrize("keepalive", [TAILSCALE_PERSISTENT_KEEPALIVE, 0.0])
def test_idle_relayed_tunnel_survives(keepalive: float) -> None:
    """Regression for the Rust port's dead DERP tunnels: > 5 minutes idle, then traffic both ways."""
    L = Link(keepalive=keepalive)
    L.a.send(ipv4_packet(b"start"), L.now)
    L.pump()
    start = L.now
    t = start
    while t < start + 7 * 60:
        t += 17.0
        L.run_until(t)
        if keepalive:
            # a warm tunnel: someone always has a deadline, and A's keys never go stale
            assert L.a.next_deadline() is not None
            assert L.now - L.a.keypairs.current.created < REKEY_AFTER_TIME + keepalive + 10
            assert L.now - L.b.keypairs.current.created < REJECT_AFTER_TIME
    # either side can talk right away (the keepalive case) or after one handshake (the cold case)
    L.b.send(ipv4_packet(b"from-b"), L.now)
    L.a.send(ipv4_packet(b"from-a"), L.now)
    L.pump()
    if keepalive:  # warm: delivered at once, no handshake needed
        assert ipv4_packet(b"from-b") in L.got["a"] and ipv4_packet(b"from-a") in L.got["b"]
    # cold case: both initiate at once, the crossed handshakes overwrite each other (as in
    # wireguard-go) and the jittered retransmit settles it within one REKEY_TIMEOUT
    L.run_until(L.now + 6)
    assert ipv4_packet(b"from-b") in L.got["a"]
    assert ipv4_packet(b"from-a") in L.got["b"]
    if keepalive:
        assert L.wire_count > 7 * 60 / keepalive  # keepalives really flowed


def test_next_deadline_drives_passive_keepalive() -> None:
    L = Link()
    L.a.send(ipv4_packet(b"x"), L.now)
    L.pump()
    L.a.send(ipv4_packet(b"y"), L.now)
    L.pump()
    assert L.b.next_deadline() == pytest.approx(L.now + 10.0)
    L.run_until(L.now + 11)
    assert L.a.dropped == 0


def test_low_order_ephemeral_is_crypto_error() -> None:
    k = NodePrivate.generate()
    msg = messages.MessageInitiation(1, bytes(32), bytes(48), bytes(28))
    with pytest.raises(Exception) as ei:
        handshake.consume_initiation(k.raw, msg)
    from pytsnet.wire.errors import CryptoError

    assert isinstance(ei.value, CryptoError)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 3))
def test_peer_receive_never_raises(junk: bytes, t: int) -> None:
    L = Link()
    L.a.send(ipv4_packet(b"x"), L.now)
    L.pump()
    data = bytes([t + 1, 0, 0, 0]) + junk
    L.b.receive(data, L.now)
    L.b.receive(junk, L.now)
