"""WireGuard transport throughput vs the raw ChaCha20-Poly1305 limit, 1280-byte packets.

Run: ``.venv/bin/python bench/wire.py [seconds]``. Both numbers come from the same run, so the
ratio is what the sans-IO core (framing, counters, replay window, timers) costs on this machine.
"""

from __future__ import annotations

import sys
import time

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.peer import Peer

PACKET = 1280


def _ipv4(n: int) -> bytes:
    return bytes([0x45, 0]) + n.to_bytes(2, "big") + bytes(n - 4)


def raw_rate(seconds: float) -> float:
    """MB/s of encrypt+decrypt with one reused ChaCha20Poly1305 object: the ceiling."""
    aead = ChaCha20Poly1305(bytes(range(32)))
    pkt = _ipv4(PACKET)
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for i in range(1000):
            nonce = i.to_bytes(12, "little")
            aead.decrypt(nonce, aead.encrypt(nonce, pkt, None), None)
        n += 1000
    return n * PACKET / elapsed / 1e6


def wireguard_rate(seconds: float) -> float:
    """MB/s of Peer.send on one side and Peer.receive on the other, after a real handshake."""
    ka, kb = NodePrivate.generate(), NodePrivate.generate()
    a, b = Peer(ka, kb.public(), mtu=1280), Peer(kb, ka.public(), mtu=1280)
    now = 1.0
    a.initiate(now)
    for _ in range(3):
        for d in a.datagrams_to_send():
            b.receive(bytes(d), now)
        for d in b.datagrams_to_send():
            a.receive(bytes(d), now)
    assert a.keypairs.current is not None and b.keypairs.current is not None
    pkt = _ipv4(PACKET)
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(1000):
            a.send(pkt, now)
            (d,) = a.datagrams_to_send()
            b.receive(d, now)
        got = b.received_packets()
        assert len(got) == 1000 and got[-1] == pkt
        n += 1000
    assert b.dropped == 0
    return n * PACKET / elapsed / 1e6


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    raw = raw_rate(seconds)
    wg = wireguard_rate(seconds)
    print(f"raw ChaCha20-Poly1305 encrypt+decrypt ({PACKET} B): {raw:8.1f} MB/s")
    print(f"WireGuard transport send+receive      ({PACKET} B): {wg:8.1f} MB/s")
    print(f"ratio: {wg / raw:.2f}")


if __name__ == "__main__":
    main()
