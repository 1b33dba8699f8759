"""Garbage datagrams fired at a running device's magicsock UDP port while it carries a transfer.

Random bytes, truncated WireGuard headers, transport messages for unknown receiver indices,
mac1-shaped junk initiations, genuine initiations (valid mac1) from static keys the victim does not
know, disco packets with bad boxes (from an unknown key and forged from the peer's real disco key),
truncated disco, STUN-looking junk, Geneve junk: the transfer keeps going, each class lands in a drop
counter, no actor crashes or restarts, memory stays bounded; a spray from 1500 source ports leaves
the per-source caches within their caps.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from hostile_rig import Liveness, actor, healthy_exchange, rss_mb, tailnet_pair, udp_port

from pytsnet.wire import disco, stun
from pytsnet.wire.keys import NodePublic
from pytsnet.wire.udp_demux import PacketKind, classify
from pytsnet.wire.wireguard.cookie import CookieGenerator
from pytsnet.wire.wireguard.handshake import create_initiation

pytestmark = [pytest.mark.serial]  # load-sensitive: run alone (Makefile, `make test`)

ATTACK_SECONDS = 3.0
RATE = 8000  # datagrams per second, across all attacking sockets (2 shared cores)


def _junk(rng: random.Random, peer_disco: bytes) -> list[bytes]:
    rb = rng.randbytes
    out: list[bytes] = []
    for _ in range(200):
        out.append(rb(rng.randrange(0, 1500)))                                   # random bytes
        out.append(bytes([rng.randrange(1, 5)]) + b"\0\0\0" + rb(rng.randrange(0, 4)))  # truncated WG
        out.append(struct.pack("<II", 4, rng.getrandbits(32)) + rb(rng.randrange(24, 200)))  # transport
        out.append(struct.pack("<II", 1, rng.getrandbits(32)) + rb(140))        # initiation, junk mac1
        out.append(struct.pack("<II", 2, rng.getrandbits(32)) + rb(84))         # response, unknown index
        out.append(disco.MAGIC + rb(disco.KEY_LEN) + rb(disco.NONCE_LEN) + rb(rng.randrange(0, 100)))
        out.append(disco.MAGIC + peer_disco + rb(disco.NONCE_LEN) + rb(rng.randrange(0, 99)))  # forged

        out.append(disco.MAGIC + peer_disco + rb(rng.randrange(0, disco.NONCE_LEN)))  # truncated box
        attrs = rb(rng.randrange(0, 60))
        out.append(struct.pack(">HH", 0x0001, len(attrs)) + stun.MAGIC_COOKIE + rb(12) + attrs)  # request
        attrs = rb(rng.randrange(0, 60))
        out.append(struct.pack(">HH", 0x0101, rng.randrange(0, 0xFFFF)) + stun.MAGIC_COOKIE + rb(12) + attrs)
        out.append(b"\x00\x00\x7a\x11\x00\x00\x00\x00" + rb(rng.randrange(0, 80)))  # Geneve-disco junk
        out.append(b"\x00\x00\x7a\x12\x00\x00\x00\x00" + rb(rng.randrange(0, 80)))  # Geneve-WG junk
    return out


def _unknown_key_initiations(victim_public: bytes, n: int) -> list[bytes]:
    """Genuine handshake initiations (valid mac1 for the victim) from static keys it does not know."""
    out = []
    for i in range(n):
        msg, _ = create_initiation(os.urandom(32), victim_public, i, time.time(), os.urandom(32))
        raw = bytearray(msg.emit())
        CookieGenerator(victim_public).add_macs(raw, 0.0)
        out.append(bytes(raw))
    return out


def _spray_sources(port: int, n: int) -> None:
    """One WireGuard-shaped datagram from each of ``n`` fresh source ports (per-source caches)."""
    for i in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(struct.pack("<II", 4, i) + bytes(24), ("127.0.0.1", port))
        if i % 100 == 99:
            time.sleep(0.005)


def _fire(port: int, packets: list[bytes], stop: threading.Event, sent: list[int]) -> None:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    n, start = 0, time.monotonic()
    try:
        while not stop.is_set() and time.monotonic() - start < ATTACK_SECONDS:
            for _ in range(200):
                s = socks[n % len(socks)]
                with contextlib.suppress(OSError):
                    s.sendto(packets[n % len(packets)], ("127.0.0.1", port))
                n += 1
            ahead = n / RATE - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    finally:
        sent.append(n)
        for s in socks:
            s.close()


def test_garbage_udp_flood_is_dropped_and_counted(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path, direct=True) as p:
        victim = p.a
        healthy_exchange(p, port=7101)
        live = Liveness(victim)
        st0 = victim.status()
        drops0, cookies0 = dict(st0.drops), st0.counters.get("wg_cookie_replies", 0)
        rss0 = rss_mb()
        packets = _junk(random.Random(int.from_bytes(os.urandom(4), "big")), p.b.disco.public().raw)
        victim_key = NodePublic.from_text(p.b.status().peers[0].node_key).raw
        packets += _unknown_key_initiations(victim_key, 200)
        stop, sent = threading.Event(), []
        t = threading.Thread(target=_fire, args=(udp_port(victim), packets, stop, sent), daemon=True)
        t.start()
        try:
            rounds = 0
            while t.is_alive():
                healthy_exchange(p, port=7110 + rounds)  # the tunnel carries data during the flood
                rounds += 1
        finally:
            stop.set()
            t.join(10)
        _spray_sources(udp_port(victim), 1500)
        healthy_exchange(p, port=7199)  # and after it
        udp = actor(victim, "magicsock.udp")
        assert len(udp._src_cache) <= 1024, "per-source cache unbounded"
        assert sent and sent[0] > RATE  # the flood really happened
        st = victim.status()
        drops = st.drops
        grew = {k: drops.get(k, 0) - drops0.get(k, 0) for k in drops}
        # initiations from unknown keys: refused after their DH, or (once the engine's handshake queue
        # backs up: under load) answered with a cookie reply and no DH
        cookies = st.counters.get("wg_cookie_replies", 0) - cookies0
        assert grew.get("wg_unknown_peer", 0) + cookies > 0, f"unknown-key initiations not counted: {grew}"
        for k in ("magicsock_unknown_index",  # transport for no live session: dropped on read
                  "magicsock_bad_length",  # truncated WireGuard headers: dropped on read
                  "wg_bad_initiation",
                  "magicsock_unknown_udp_source",
                  "disco_bad_box",  # forged disco boxes
                  "disco_unknown_key",  # disco from unknown keys
                  "disco_malformed",  # truncated disco
                  "stun_unsolicited"):  # STUN junk
            assert grew.get(k, 0) > 0, f"{k} did not count the junk: {grew}"
        live.assert_unharmed()
        assert rss_mb() - rss0 < 150, f"memory grew {rss_mb() - rss0:.0f} MiB"
        for name in ("magicsock.udp", "wgengine", "magicsock.disco", "magicsock.stun"):
            ref = victim.system.lookup(name)  # type: ignore[union-attr]
            assert ref is not None
            mb = ref._cell.mailbox
            assert len(mb) <= mb.config.capacity, f"{name} mailbox over its bound"
        assert p.b.status().peers[0].has_session


def test_unclassifiable_datagrams_are_counted(tmp_path: Path) -> None:
    rng = random.Random(11)
    junk = [d for d in (rng.randbytes(rng.randrange(1, 1200)) for _ in range(3000))
            if classify(d).kind is PacketKind.UNKNOWN][:1000]
    with tailnet_pair(tmp_path, direct=True) as p:
        victim = p.a
        before = sum(victim.status().drops.values())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i, d in enumerate(junk):
                s.sendto(d, ("127.0.0.1", udp_port(victim)))
                if i % 100 == 99:
                    time.sleep(0.01)
        time.sleep(1.0)
        counted = sum(victim.status().drops.values()) - before
        assert counted >= len(junk), f"{len(junk)} junk datagrams, {counted} counted"
