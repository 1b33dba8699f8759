"""WireGuard transport throughput vs the raw ChaCha20-Poly1305 limit, 1280-byte packets.

Run: ``.venv/bin/python bench/wire.py [seconds]``. All numbers come from the same run, so each ratio
is what the sans-IO core (framing, counters, replay window, timers) costs on this machine. The
machine is shared, so the loops run interleaved in rounds of 1000 packets and each rate is taken
from its fastest round (as ``timeit`` does): a burst of load elsewhere then hits all loops alike
instead of whichever happened to be running. Every loop does one encrypt and one decrypt per packet.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.peer import Peer

PACKET = 1280
ROUND = 1000  # packets per timed round
BATCH = 50  # datagrams per send_many/receive_many call, the order of an actor mailbox batch
NOW = 1.0


def _ipv4(n: int) -> bytes:
    return bytes([0x45, 0]) + n.to_bytes(2, "big") + bytes(n - 4)


def raw_round() -> Callable[[], None]:
    """Encrypt+decrypt with one reused ChaCha20Poly1305 object: the ceiling."""
    aead = ChaCha20Poly1305(bytes(range(32)))
    pkt = _ipv4(PACKET)

    def run() -> None:
        for i in range(ROUND):
            nonce = i.to_bytes(12, "little")
            aead.decrypt(nonce, aead.encrypt(nonce, pkt, None), None)

    return run


def _handshaken_pair() -> tuple[Peer, Peer]:
    ka, kb = NodePrivate.generate(), NodePrivate.generate()
    a, b = Peer(ka, kb.public(), mtu=1280), Peer(kb, ka.public(), mtu=1280)
    a.initiate(NOW)
    for _ in range(3):
        for d in a.datagrams_to_send():
            b.receive(bytes(d), NOW)
        for d in b.datagrams_to_send():
            a.receive(bytes(d), NOW)
    assert a.keypairs.current is not None and b.keypairs.current is not None
    return a, b


def wireguard_round() -> Callable[[], None]:
    """Peer.send on one side, Peer.receive on the other, one packet per call, drained per call
    as Device does."""
    a, b = _handshaken_pair()
    pkt = _ipv4(PACKET)

    def run() -> None:
        for _ in range(ROUND):
            a.send(pkt, NOW)
            (d,) = a.datagrams_to_send()
            b.receive(d, NOW)
            (got,) = b.received_packets()
        assert got == pkt and b.dropped == 0

    return run


def wireguard_batch_round() -> Callable[[], None]:
    """Peer.send_many / Peer.receive_many, BATCH packets per call."""
    a, b = _handshaken_pair()
    pkts = [_ipv4(PACKET)] * BATCH

    def run() -> None:
        for _ in range(ROUND // BATCH):
            a.send_many(pkts, NOW)
            b.receive_many(a.datagrams_to_send(), NOW)
            got = b.received_packets()
            assert len(got) == BATCH
        assert got[-1] == pkts[0] and b.dropped == 0

    return run


def rates(seconds: float) -> dict[str, float]:
    """MB/s of each loop's fastest round, the loops interleaved for about ``seconds`` each."""
    loops = {"raw": raw_round(), "wireguard": wireguard_round(), "batched": wireguard_batch_round()}
    best = dict.fromkeys(loops, float("inf"))
    t_end = time.perf_counter() + seconds * len(loops)
    while time.perf_counter() < t_end:
        for name, run in loops.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: ROUND * PACKET / t / 1e6 for name, t in best.items()}


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    r = rates(seconds)
    raw, wg, wgb = r["raw"], r["wireguard"], r["batched"]
    print(f"raw ChaCha20-Poly1305 encrypt+decrypt      ({PACKET} B): {raw:8.1f} MB/s")
    print(f"WireGuard send+receive, per packet        ({PACKET} B): {wg:8.1f} MB/s  ratio {wg / raw:.2f}")
    print(
        f"WireGuard send_many+receive_many x{BATCH:<3}    ({PACKET} B): {wgb:8.1f} MB/s  "
        f"ratio {wgb / raw:.2f}"
    )
    print(f"ratio: {wg / raw:.2f} (per packet), {wgb / raw:.2f} (batched)")


if __name__ == "__main__":
    main()
