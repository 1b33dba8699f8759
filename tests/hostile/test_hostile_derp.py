"""A rogue DERP client with a node key the control server knows attacks a device through the relay.

The rogue registers as a third node (so the relay admits it), then sends the victim's node key
garbage, WireGuard-shaped junk, disco packets with bad boxes and disco packets forged with the real
peer's disco key (the DERP source then mismatches the disco key's owner). A DERP-only transfer runs
between the two honest devices meanwhile and must stay byte-exact; every class is a counted drop,
no actor restarts, the victim's DERP connection stays up.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from pathlib import Path

import anyio
from hostile_rig import Liveness, actor, healthy_exchange, rss_mb, tailnet_pair

from pytsnet.localnet.server import LocalTailnet
from pytsnet.localnet.testclient import ControlClient
from pytsnet.wire import disco
from pytsnet.wire.derp.handshake import ClientConnection, ServerInfoReceived
from pytsnet.wire.keys import NodePrivate, NodePublic


class RogueDerp:
    """A DERP client on asyncio streams driven by the sans-IO ``ClientConnection``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: ClientConnection):
        self.reader, self.writer, self.conn = reader, writer, conn

    @classmethod
    async def connect(cls, port: int, priv: NodePrivate) -> RogueDerp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 "), head
        c = cls(reader, writer, ClientConnection(priv, time.monotonic()))
        end = time.monotonic() + 5
        while True:
            data = await asyncio.wait_for(reader.read(1 << 16), max(0.01, end - time.monotonic()))
            assert data, "relay closed the rogue's stream"
            evs = c.conn.receive_data(data, time.monotonic())
            c.flush()
            if any(isinstance(e, ServerInfoReceived) for e in evs):
                return c

    def flush(self) -> None:
        if out := self.conn.data_to_send():
            self.writer.write(out)

    async def send(self, dst: NodePublic, packets: list[bytes]) -> None:
        for i, pkt in enumerate(packets):
            self.conn.send_packet(dst, pkt)
            if i % 16 == 15:  # paced: the relay's per-destination queue is short (Go: 32)
                self.flush()
                await self.writer.drain()
                await asyncio.sleep(0.004)
        self.flush()
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


def _register(net: LocalTailnet, hostname: str) -> ControlClient:
    """A third node, registered with control (so the relay knows its key); it never polls a map."""
    async def go() -> ControlClient:
        c = ControlClient(net.control_url)
        await c.connect()
        await c.register(net.create_authkey(), hostname=hostname)
        return c

    return asyncio.run(go())


def _junk(rng: random.Random, rogue_disco: bytes, peer_disco: bytes, n: int) -> dict[str, list[bytes]]:
    rb = rng.randbytes
    return {
        "random": [rb(rng.randrange(1, 1400)) for _ in range(n)],
        "wg_transport": [struct.pack("<II", 4, rng.getrandbits(32)) + rb(rng.randrange(24, 400))
                         for _ in range(n)],
        "wg_initiation": [struct.pack("<II", 1, rng.getrandbits(32)) + rb(140) for _ in range(n)],
        "wg_truncated": [bytes([rng.randrange(1, 5)]) + b"\0\0\0" + rb(rng.randrange(0, 4))
                         for _ in range(n)],
        "disco_own_bad_box": [disco.MAGIC + rogue_disco + rb(disco.NONCE_LEN + rng.randrange(0, 80))
                              for _ in range(n)],
        "disco_forged_peer": [disco.MAGIC + peer_disco + rb(disco.NONCE_LEN + rng.randrange(0, 80))
                              for _ in range(n)],
        "disco_unknown_key": [disco.MAGIC + rb(32) + rb(disco.NONCE_LEN + 40) for _ in range(n)],
    }


def test_rogue_derp_client_cannot_disturb_the_victim(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path, direct=False) as p:
        assert p.net.relay is not None
        victim = p.a
        victim_key = NodePublic.from_text(p.b.status().peers[0].node_key)
        healthy_exchange(p, port=7501)
        rogue_ctl = _register(p.net, "rogue")
        live = Liveness(victim)
        drops0 = dict(victim.status().drops)
        rss0 = rss_mb()
        n = 300
        junk = _junk(random.Random(7), rogue_ctl.disco.public().raw, p.b.disco.public().raw, n)
        packets = [pkt for i in range(n) for kind in junk.values() for pkt in [kind[i]]]

        async def attack() -> None:
            rogue = await RogueDerp.connect(p.net.relay.derp_port, rogue_ctl.node)  # type: ignore[union-attr]
            try:
                for _ in range(3):
                    await rogue.send(victim_key, packets)
                    await asyncio.sleep(0.2)
            finally:
                rogue.close()

        def attack_thread() -> None:
            asyncio.run(attack())

        x = anyio.run(lambda: _exchange_during(p, attack_thread))
        assert x, "DERP-only transfer corrupted during the attack"
        healthy_exchange(p, port=7599)

        st = victim.status()
        grew = {k: v - drops0.get(k, 0) for k, v in st.drops.items() if v != drops0.get(k, 0)}
        wg_dropped = sum(v for k, v in grew.items() if k.startswith("wg_"))
        disco_dropped = grew.get("disco_unknown_key", 0) + grew.get("disco_bad_box", 0)
        relay = p.net.relay.derp.stats
        delivered = relay.keys[rogue_ctl.node.public()].packets_from  # the relay drops when queues fill
        assert delivered >= len(packets), f"attack too weak: relay delivered {delivered}"
        shed = sum(actor_dropped(victim, n) for n in ("wgengine", "magicsock.disco"))
        assert wg_dropped + disco_dropped + shed >= delivered, (
            f"{delivered} rogue packets delivered, {wg_dropped} WireGuard + {disco_dropped} disco drops, "
            f"{shed} shed by full mailboxes: {grew}")
        assert wg_dropped > 0 and disco_dropped > 0
        assert all(st.derp_connected.values()), "the victim lost its DERP connection"
        assert st.peers[0].has_session
        live.assert_unharmed()
        assert rss_mb() - rss0 < 150


def actor_dropped(dev: object, name: str) -> int:
    ref = dev.system.lookup(name)  # type: ignore[attr-defined]
    return 0 if ref is None else int(ref.dropped)


async def _exchange_during(p: object, attack: object) -> bool:
    from hostile_rig import exchange

    x = await exchange(p, 512 << 10, port=7510, during=attack)  # type: ignore[arg-type]
    return x.got_ab == x.sent_ab and x.got_ba == x.sent_ba


def test_many_rogue_derp_keys_do_not_grow_victim_state(tmp_path: Path) -> None:
    with tailnet_pair(tmp_path, direct=False) as p:
        assert p.net.relay is not None
        p.net.relay.derp.is_known = lambda _k: True  # a public relay: any key may connect
        victim_key = NodePublic.from_text(p.b.status().peers[0].node_key)
        derp = actor(p.a, "magicsock.derp.900")
        before = len(derp.bytes_in)
        unknown0 = p.a.status().drops.get("derp900_bytes_in_unknown_sources", 0)

        async def attack() -> None:
            for _ in range(300):
                r = await RogueDerp.connect(p.net.relay.derp_port, NodePrivate.generate())  # type: ignore[union-attr]
                await r.send(victim_key, [b"\x04\0\0\0" + bytes(28)])
                r.close()

        asyncio.run(attack())
        time.sleep(1.0)
        assert len(derp.bytes_in) - before < 64, f"{len(derp.bytes_in) - before} per-source entries kept"
        unknown = p.a.status().drops.get("derp900_bytes_in_unknown_sources", 0)
        assert unknown > unknown0, "bytes from strangers not counted"
        healthy_exchange(p, port=7601)

