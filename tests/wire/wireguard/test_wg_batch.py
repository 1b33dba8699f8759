"""The inlined hot path (send/receive and send_many/receive_many) against a readable reference.

``ReferencePeer`` does transport the plain way: ``Keypair.seal``/``open``, ``Keypairs.received_with``
and the named ``Timers.on_*`` rules. All drivers run the same scripted traffic with the same keys and
random stream, so every datagram (handshakes, transport, keepalives), every delivered packet, every
drop, event and timer deadline must be identical. The traffic mixes what the inlined hot path must
hand off correctly: staging before a handshake, padding (also clamped at an MTU that is not a
multiple of 16), keepalives, replays, forgeries, junk and non-IP payloads, key confirmation and a
rekey in the middle of a batch.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import pytest

from pytsnet.wire.errors import CryptoError, ParseError
from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.constants import (
    MESSAGE_TRANSPORT_SIZE,
    MESSAGE_TRANSPORT_TYPE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_TIME,
)
from pytsnet.wire.wireguard.handshake import SessionKeys
from pytsnet.wire.wireguard.keypair import Keypair, padding_size
from pytsnet.wire.wireguard.peer import HandshakeCompleted, Peer

KA, KB = NodePrivate.generate(), NodePrivate.generate()


def ip4(size: int, ident: int) -> bytes:
    return struct.pack(">BBHH", 0x45, 0, size, ident) + bytes(size - 6)


class ReferencePeer(Peer):
    """Transport without inlining, one named rule per step (whitepaper section 6 / timers.go)."""

    def send(self, packet: bytes, now: float) -> None:
        kp = self.keypairs.current
        if (
            not self._staged
            and kp is not None
            and now - kp.created < REJECT_AFTER_TIME
            and kp.send_nonce < REJECT_AFTER_MESSAGES
        ):
            self._outbox.append(kp.seal(packet, self._mtu))
            self._after_send(now, data=bool(packet))
            self._keep_key_fresh_sending(kp, now)
            return
        self._staged.append(packet)
        self._send_staged(now)

    def receive(self, datagram: bytes, now: float, *, src: bytes = b"", under_load: bool = False) -> None:
        try:
            if len(datagram) >= MESSAGE_TRANSPORT_SIZE and datagram[0] == MESSAGE_TRANSPORT_TYPE:
                self._reference_transport(datagram, now)
            else:
                self._receive_other(datagram, now, src, under_load)
        except (ParseError, CryptoError):
            self.dropped += 1

    def _reference_transport(self, datagram: bytes, now: float) -> None:
        if datagram[1:4] != b"\x00\x00\x00":
            raise ParseError("not a WireGuard message type")
        kp = self.keypairs.lookup(struct.unpack_from("<I", datagram, 4)[0])
        if kp is None:
            raise CryptoError("unknown index")
        if now - kp.created >= REJECT_AFTER_TIME:
            raise CryptoError("expired")
        plain = kp.open(datagram)
        if self.keypairs.received_with(kp):
            self._handshake_complete(now)
            self._events.append(HandshakeCompleted(kp.local_index, is_initiator=False))
            if self._staged:
                self._send_staged(now)
        self._keep_key_fresh_receiving(now)
        self.timers.on_any_authenticated_packet_traversal(now)
        self.timers.on_any_authenticated_packet_received()
        if not plain:
            return
        if len(plain) >= 20 and plain[0] >> 4 == 4:
            length = struct.unpack_from(">H", plain, 2)[0]
        elif len(plain) >= 40 and plain[0] >> 4 == 6:
            length = 40 + struct.unpack_from(">H", plain, 4)[0]
        else:
            raise ParseError("not IP")
        if length > len(plain):
            raise ParseError("not IP")
        self._inbox.append(plain[:length])
        self.timers.on_data_received(now)


@dataclass
class Trace:
    wire: list[bytes] = field(default_factory=list)
    got: list[bytes] = field(default_factory=list)
    log: list[object] = field(default_factory=list)


def run(kind: str, keepalive: float) -> Trace:
    """``kind``: "reference", "single" (send/receive) or "batched" (send_many/receive_many)."""
    rng = random.Random(7)
    rb = lambda n: rng.randbytes(n)  # noqa: E731
    cls = ReferencePeer if kind == "reference" else Peer
    batched = kind == "batched"
    a = cls(KA, KB.public(), random_bytes=rb, mtu=1276, persistent_keepalive=keepalive)
    b = cls(KB, KA.public(), random_bytes=rb, mtu=1276, persistent_keepalive=keepalive)
    tr = Trace()

    def send(p: Peer, packets: list[bytes], now: float) -> None:
        if batched:
            p.send_many(packets, now)
        else:
            for pkt in packets:
                p.send(pkt, now)

    def deliver(src: Peer, dst: Peer, now: float, extra: list[bytes] = ()) -> None:  # type: ignore[assignment]
        ds = [bytes(d) for d in src.datagrams_to_send()]
        tr.wire += ds
        ds = ds[:1] + list(extra) + ds[1:] + ds[:2]  # junk in the middle, replays at the end
        if batched:
            dst.receive_many(ds, now)
        else:
            for d in ds:
                dst.receive(d, now)
        tr.got += dst.received_packets()
        for p in (a, b):
            tr.log.append(
                (
                    p.dropped,
                    sorted(p.timers.deadlines.items()),
                    p.events(),
                    p.timers.need_another_keepalive,
                    p._sent_last_minute_handshake,
                )
            )

    now = 100.0
    for step in range(12):
        pkts = [ip4(20 + (step * 37 + i * 101) % 1200, i) for i in range(5)] + [
            b"",
            ip4(1279, 9),
            ip4(1280, 9),
        ]
        send(a, pkts, now)
        forged = bytearray(tr.wire[-1]) if tr.wire else bytearray(64)
        forged[-1] ^= 1
        not_ip = bytes([4, 0, 0, 0]) + bytes(28)
        deliver(a, b, now, [bytes(forged), not_ip, b"\x04\x00\x00", b"\x01" + bytes(147)])
        send(b, pkts[::-1], now)
        deliver(b, a, now)
        for p in (a, b):
            p.tick(now)
        deliver(a, b, now)
        deliver(b, a, now)
        now += REKEY_AFTER_TIME / 3 if step != 8 else REJECT_AFTER_TIME
    return tr


@pytest.mark.parametrize("kind", ["single", "batched"])
@pytest.mark.parametrize("keepalive", [0.0, 25.0])
def test_hot_path_matches_reference(kind: str, keepalive: float) -> None:
    ref, fast = run("reference", keepalive), run(kind, keepalive)
    assert len(ref.got) > 50 and len(ref.wire) > 100
    assert sum(isinstance(e, HandshakeCompleted) for entry in ref.log for e in entry[2]) >= 6  # rekeys
    assert any(dropped for dropped, *_ in ref.log)
    assert fast.wire == ref.wire
    assert fast.got == ref.got
    assert fast.log == ref.log


def test_seal_padding_follows_padding_size() -> None:
    """Keypair.seal's fast padding case agrees with the general rule for every size around the MTUs."""
    keys = SessionKeys(send=bytes(32), receive=bytes(32), local_index=1, remote_index=2, is_initiator=True)
    kp = Keypair(keys, 0.0)
    for mtu in (0, 1276, 1280):
        for n in range(0, 2600):
            sealed = kp.seal(bytes(n), mtu)
            assert len(sealed) == MESSAGE_TRANSPORT_SIZE + n + padding_size(n, mtu), (mtu, n)
