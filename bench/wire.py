"""WireGuard transport throughput vs the raw ChaCha20-Poly1305 limit, 1280-byte packets.

Run: ``.venv/bin/python bench/wire.py [seconds]``. All numbers come from the same run, so each ratio
is what the sans-IO core (framing, counters, replay window, timers) costs on this machine. The
machine is shared, so the loops run interleaved in rounds of 1000 packets and each rate is taken
from its fastest round (as ``timeit`` does): a burst of load elsewhere then hits all loops alike
instead of whichever happened to be running. Every loop does one encrypt and one decrypt per packet.

It then prints µs per call of the per-packet framing around the crypto (``Device`` routing and
anti-spoofing lookups, whole ``Device`` send/receive per packet). Only long-standing signatures are
called, so running this file against an older checkout (``cd /tmp && PYTHONPATH=<old worktree>
python <this file>``) gives before/after numbers on the same minute.
"""

from __future__ import annotations

import ipaddress
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pytsnet.wire.keys import NodePrivate
from pytsnet.wire.wireguard.device import AllowedIPs, Device, PeerConfig, ip_endpoints
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


def _device_pair() -> tuple[Device, Device, NodePrivate, NodePrivate]:
    ka, kb = NodePrivate.generate(), NodePrivate.generate()
    a, b = Device(ka, mtu=1280), Device(kb, mtu=1280)
    a.set_peers([PeerConfig(kb.public(), ("100.64.0.2/32",))])
    b.set_peers([PeerConfig(ka.public(), ("100.64.0.1/32",))])
    a.initiate(kb.public(), NOW)
    for _ in range(3):
        for _, d in a.datagrams_to_send():
            b.receive(bytes(d), NOW)
        for _, d in b.datagrams_to_send():
            a.receive(bytes(d), NOW)
    b.received_packets()
    return a, b, ka, kb


def micro_cases() -> dict[str, Callable[[], object]]:
    """One closure per framing function, on a 1,280-byte IPv4 packet 100.64.0.1 -> 100.64.0.2."""
    pkt = bytearray(_ipv4(PACKET))
    pkt[12:20] = ipaddress.IPv4Address("100.64.0.1").packed + ipaddress.IPv4Address("100.64.0.2").packed
    packet = bytes(pkt)
    routes = AllowedIPs()
    for i in range(20):
        routes.insert(ipaddress.ip_network(f"100.64.1.{i}/32"), bytes(32))
    routes.insert(ipaddress.ip_network("10.0.0.0/8"), bytes(32))
    dst = int(ipaddress.IPv4Address("100.64.1.7"))
    a, b, _, _ = _device_pair()
    batch = [packet] * BATCH

    def device_round() -> None:
        a.send_many(batch, NOW)
        for _, d in a.datagrams_to_send():
            b.receive(d, NOW)
        assert len(b.received_packets()) == BATCH

    cases: dict[str, Callable[[], object]] = {
        "device.ip_endpoints": lambda: ip_endpoints(packet),
        "AllowedIPs.lookup (/32 of 21 routes)": lambda: routes.lookup(4, dst),
        f"Device.send_many+receive, per packet (x{BATCH})": device_round,
    }
    c, d, _, _ = _device_pair()
    if hasattr(d, "receive_many"):  # issue 14; absent in older checkouts

        def device_batch_round() -> None:
            c.send_many(batch, NOW)
            d.receive_many([dgram for _, dgram in c.datagrams_to_send()], NOW)
            assert len(d.received_packets()) == BATCH

        cases[f"Device.send_many+receive_many, per packet (x{BATCH})"] = device_batch_round
    return cases


def micro(seconds: float) -> dict[str, float]:
    """µs per packet of each case: the best of interleaved timeit rounds."""
    cases = micro_cases()
    per = {name: BATCH if name.startswith("Device.") else 1 for name in cases}
    best = dict.fromkeys(cases, float("inf"))
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        for name, fn in cases.items():
            number = 20 if per[name] > 1 else 2000
            best[name] = min(best[name], timeit.timeit(fn, number=number) / number / per[name])
    return {name: t * 1e6 for name, t in best.items()}


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    print(f"load {Path('/proc/loadavg').read_text().split()[0]}")
    r = rates(seconds)
    raw, wg, wgb = r["raw"], r["wireguard"], r["batched"]
    print(f"raw ChaCha20-Poly1305 encrypt+decrypt      ({PACKET} B): {raw:8.1f} MB/s")
    print(f"WireGuard send+receive, per packet        ({PACKET} B): {wg:8.1f} MB/s  ratio {wg / raw:.2f}")
    print(
        f"WireGuard send_many+receive_many x{BATCH:<3}    ({PACKET} B): {wgb:8.1f} MB/s  "
        f"ratio {wgb / raw:.2f}"
    )
    print(f"ratio: {wg / raw:.2f} (per packet), {wgb / raw:.2f} (batched)")
    print(f"per packet: raw {PACKET / raw:.2f} µs, WireGuard {PACKET / wg:.2f} µs, "
          f"batched {PACKET / wgb:.2f} µs")
    for name, us in micro(seconds * 2).items():
        print(f"  {name:48s} {us:7.2f} µs")


if __name__ == "__main__":
    main()
