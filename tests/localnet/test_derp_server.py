"""The DERP relay over real loopback sockets, with the sans-IO ``ClientConnection`` as the client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pytsnet.localnet import LocalTailnet
from pytsnet.localnet.derp_server import (
    DROP_QUEUE_HEAD,
    KEEPING_UP_QUEUE_BYTES,
    SLOW_CLIENT_BUFFER,
    DerpServer,
)
from pytsnet.localnet.derp_tls import CERT_FILE, CHAIN_FILE
from pytsnet.localnet.relay import attach_relay
from pytsnet.testing.derpclient import DerpTestClient
from pytsnet.wire import disco
from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.handshake import ClientConnection, ServerInfoReceived
from pytsnet.wire.keys import NodePrivate, NodePublic

_WRITERS: list[asyncio.StreamWriter] = []  # every Client's, closed by the run that opened it


async def _close_clients() -> None:
    """Close the clients a test left open while their loop still runs: a StreamWriter collected after
    ``asyncio.run`` closed its loop leaves its transport open, a ResourceWarning in a later test."""
    writers, _WRITERS[:] = list(_WRITERS), []
    for w in writers:
        w.close()
    for w in writers:
        with contextlib.suppress(Exception):
            await w.wait_closed()


def arun(coro: Awaitable[Any]) -> Any:
    """``asyncio.run`` that closes the test's clients before the loop ends."""
    async def main() -> Any:
        try:
            return await coro
        finally:
            await _close_clients()

    return asyncio.run(main())


class Client(DerpTestClient):
    """The shared test client with 5 s reads, closed by ``arun``/``run`` if a test leaves it open."""

    timeout = 5.0

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: ClientConnection):
        super().__init__(reader, writer, conn)
        _WRITERS.append(writer)


def run(coro_fn: Callable[..., Awaitable[None]], **server_kw: Any) -> None:
    async def main() -> None:
        server = DerpServer(**server_kw)
        await server.start()
        try:
            await asyncio.wait_for(coro_fn(server), 30)
        finally:
            await _close_clients()
            await server.close()

    asyncio.run(main())


def test_two_clients_exchange_packets_both_ways() -> None:
    async def body(s: DerpServer) -> None:
        a, b = await Client.connect(s.port), await Client.connect(s.port)
        a.send(b.key, b"hello b")
        got = await b.recv_frame(f.RecvPacket)
        assert (got.src, got.packet) == (a.key, b"hello b")
        b.send(a.key, b"x" * f.MAX_PACKET_SIZE)  # the largest legal packet
        got = await a.recv_frame(f.RecvPacket)
        assert (got.src, got.packet) == (b.key, b"x" * f.MAX_PACKET_SIZE)
        assert s.stats.key(a.key).packets_from == 1 and s.stats.key(a.key).bytes_from == 7
        assert s.stats.key(b.key).packets_to == 1 and s.stats.key(a.key).bytes_to == f.MAX_PACKET_SIZE
        assert s.stats.packets_forwarded == 2 and s.stats.accepted == 2

    run(body)


def test_fast_start_skips_the_101() -> None:
    async def body(s: DerpServer) -> None:
        a = await Client.connect(s.port, fast_start=s.public)
        b = await Client.connect(s.port)
        b.send(a.key, b"fast")
        got = await a.recv_frame(f.RecvPacket)
        assert got.packet == b"fast"

    run(body)


def test_unknown_key_is_refused_and_known_clients_keep_working() -> None:
    known = [NodePrivate.generate(), NodePrivate.generate()]
    allowed = {k.public() for k in known}

    async def body(s: DerpServer) -> None:
        a = await Client.connect(s.port, known[0])
        stranger = await Client.connect(s.port, handshake=False)
        with pytest.raises(EOFError):  # closed without a ServerInfo, as Go's verifyClient rejection
            await stranger.until(lambda ev: isinstance(ev, ServerInfoReceived))
        assert stranger.conn.server_info is None
        assert s.stats.rejected_unknown == 1 and stranger.key not in s.clients
        b = await Client.connect(s.port, known[1])
        a.send(b.key, b"still fine")
        assert (await b.recv_frame(f.RecvPacket)).packet == b"still fine"

    run(body, is_known=lambda k: k in allowed)


@pytest.mark.parametrize("oversize", ["header", "packet"])
def test_oversize_frame_closes_only_that_client(oversize: str) -> None:
    async def body(s: DerpServer) -> None:
        a, b, bad = await Client.connect(s.port), await Client.connect(s.port), await Client.connect(s.port)
        if oversize == "header":  # announces 2 MiB: refused on the header, before any body is read
            bad.writer.write(f.encode_header(f.FrameType.SEND_PACKET, 2 << 20))
        else:  # a legal-size frame carrying a packet one byte over MaxPacketSize
            p = b.key.raw + b"\0" * (f.MAX_PACKET_SIZE + 1)
            bad.writer.write(f.encode_header(f.FrameType.SEND_PACKET, len(p)) + p)
        assert await bad.closed_by_server()
        assert s.stats.stream_errors == 1 and bad.key not in s.clients
        a.send(b.key, b"ok")
        assert (await b.recv_frame(f.RecvPacket)).packet == b"ok"
        b.send(a.key, b"ok too")
        assert (await a.recv_frame(f.RecvPacket)).packet == b"ok too"
        assert not any(isinstance(fr, f.RecvPacket) and fr.src == bad.key for fr in b.frames)

    run(body)


def test_a_burst_to_a_client_that_keeps_up_is_not_dropped() -> None:
    """Go's relay drains each client's 32-deep queue from its own goroutine while readers forward;
    here one read can carry hundreds of packets, and a client that reads must lose none of them."""
    async def body(s: DerpServer) -> None:
        a, b = await Client.connect(s.port), await Client.connect(s.port)
        for i in range(300):  # one flush: the server reads the burst in a few large chunks
            a.conn.send_packet(b.key, i.to_bytes(2, "big") + bytes(1200))
        a.flush()
        def packets() -> list[int]:
            return [int.from_bytes(x.packet[:2], "big") for x in b.frames if isinstance(x, f.RecvPacket)]

        with contextlib.suppress(TimeoutError):
            await b.until(lambda ev: len(packets()) >= 300, timeout=3)
        assert packets() == list(range(300)), s.stats.drops
        assert s.stats.drops[DROP_QUEUE_HEAD] == 0 and s.stats.packets_forwarded == 300

    run(body)


def test_slow_client_queue_is_bounded_and_drops_are_counted() -> None:
    depth = 8

    async def body(s: DerpServer) -> None:
        a, c = await Client.connect(s.port), await Client.connect(s.port)
        slow = await Client.connect(s.port, rcvbuf=4096)  # then never reads
        pkt = os.urandom(16 << 10)
        for i in range(1500):  # 24 MiB: far more than socket buffers hold
            a.send(slow.key, pkt)
            if i % 50 == 0:
                await a.writer.drain()
                await asyncio.sleep(0)
                assert s.clients[slow.key].queued_bytes <= KEEPING_UP_QUEUE_BYTES  # always bounded
        a.send(c.key, b"for c")
        assert (await c.recv_frame(f.RecvPacket)).packet == b"for c"  # others unaffected meanwhile
        ks = s.stats.key(slow.key)
        queue = s.clients[slow.key].queue
        deadline = time.monotonic() + 10
        while ks.packets_to + ks.drops_to + len(queue) < 1500 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # it never reads, so its transport stays over the high-water mark: Go's depth applies now
        assert s.clients[slow.key].writer.transport.get_write_buffer_size() >= SLOW_CLIENT_BUFFER
        assert len(queue) <= depth
        dropped = s.stats.drops[DROP_QUEUE_HEAD]
        assert dropped > 500, s.stats
        assert ks.drops_to == dropped and ks.packets_to + dropped + len(queue) == 1500
        assert slow.key in s.clients  # slow but not stuck past the write timeout: still connected

    run(body, queue_depth=depth, write_timeout=60)


def test_stuck_client_is_dropped_after_the_write_timeout() -> None:
    async def body(s: DerpServer) -> None:
        a = await Client.connect(s.port)
        slow = await Client.connect(s.port, rcvbuf=4096)
        pkt = os.urandom(32 << 10)
        for _ in range(400):
            a.send(slow.key, pkt)
        await a.writer.drain()
        deadline = time.monotonic() + 5
        while slow.key in s.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert slow.key not in s.clients and a.key in s.clients

    run(body, write_timeout=0.5)


def test_peer_gone_when_a_sender_disconnects() -> None:
    async def body(s: DerpServer) -> None:
        a, b, other = await Client.connect(s.port), await Client.connect(s.port), await Client.connect(s.port)
        a.send(b.key, b"hi")
        await b.recv_frame(f.RecvPacket)
        a.close()
        gone = await b.recv_frame(f.PeerGone)
        assert gone == f.PeerGone(a.key, f.PeerGoneReason.DISCONNECTED)
        # a client that never received from a gets no PeerGone for it
        other.conn.send_ping(b"12345678")
        other.flush()
        await other.recv_frame(f.Pong)
        assert not any(isinstance(fr, f.PeerGone) for fr in other.frames)

    run(body)


def test_peer_gone_not_here_for_disco_to_an_absent_key() -> None:
    async def body(s: DerpServer) -> None:
        a = await Client.connect(s.port)
        nobody = NodePrivate.generate().public()
        a.send(nobody, disco.MAGIC + b"\0" * 70)
        gone = await a.recv_frame(f.PeerGone)
        assert gone == f.PeerGone(nobody, f.PeerGoneReason.NOT_HERE)
        for _ in range(10):  # rate-limited: a burst of 3 (one already used)
            a.send(nobody, disco.MAGIC + b"\0" * 70)
        a.send(nobody, b"not disco")  # never answered
        a.conn.send_ping(b"abcdefgh")
        a.flush()
        await a.recv_frame(f.Pong)
        assert sum(isinstance(fr, f.PeerGone) for fr in a.frames) == 3
        assert s.stats.drops["unknown_dest"] == 12

    run(body)


def test_ping_pong_and_note_preferred() -> None:
    async def body(s: DerpServer) -> None:
        a = await Client.connect(s.port)
        a.conn.note_preferred(True)
        a.conn.send_ping(b"pingpong")
        a.flush()
        assert (await a.recv_frame(f.Pong)).data == b"pingpong"
        assert s.clients[a.key].preferred and s.stats.pings == 1

    run(body)


def test_keep_alives_are_sent() -> None:
    async def body(s: DerpServer) -> None:
        a = await Client.connect(s.port)
        await a.recv_frame(f.KeepAlive, timeout=3)

    run(body, keep_alive=0.2, keep_alive_jitter=0.0)


def test_second_connection_with_same_key_replaces_the_first() -> None:
    async def body(s: DerpServer) -> None:
        priv = NodePrivate.generate()
        first = await Client.connect(s.port, priv)
        second = await Client.connect(s.port, priv)
        assert await first.closed_by_server()
        b = await Client.connect(s.port)
        b.send(second.key, b"to the newest")
        assert (await second.recv_frame(f.RecvPacket)).packet == b"to the newest"
        assert s.stats.replaced == 1

    run(body)


def test_handshake_timeout_and_garbage_do_not_stop_the_server() -> None:
    async def body(s: DerpServer) -> None:
        # silent after the upgrade: closed at the handshake deadline
        r, w = await asyncio.open_connection("127.0.0.1", s.port)
        w.write(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
        got = await asyncio.wait_for(r.read(), 3)  # 101 + ServerKey, then EOF at the deadline
        assert got.startswith(b"HTTP/1.1 101 ") and f.MAGIC in got
        w.close()
        # garbage after the upgrade
        g = await Client.connect(s.port, handshake=False)
        g.writer.write(os.urandom(4096))
        assert await g.closed_by_server()
        # garbage instead of HTTP, and /derp without the Upgrade header
        for raw, want in ((os.urandom(300) + b"\r\n\r\n", b"HTTP/1.1 400"),
                          (b"GET /derp HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 426")):
            r, w = await asyncio.open_connection("127.0.0.1", s.port)
            w.write(raw)
            assert (await asyncio.wait_for(r.read(), 5)).startswith(want)
            w.close()
        a, b = await Client.connect(s.port), await Client.connect(s.port)
        a.send(b.key, b"alive")
        assert (await b.recv_frame(f.RecvPacket)).packet == b"alive"
        assert s.stats.bad_upgrades == 1 and s.stats.stream_errors == 2

    run(body, handshake_timeout=0.5)


def test_generate_204_and_latency_check() -> None:
    async def get(port: int, path: str, headers: str = "") -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        out = await asyncio.wait_for(r.read(), 5)
        w.close()
        return out

    async def body(s: DerpServer) -> None:
        out = await get(s.port, "/generate_204", "X-Tailscale-Challenge: abc.DEF-1_2:3\r\n")
        assert out.startswith(b"HTTP/1.1 204") and b"X-Tailscale-Response: response abc.DEF-1_2:3\r\n" in out
        out = await get(s.port, "/generate_204", "X-Tailscale-Challenge: bad/char\r\n")
        assert out.startswith(b"HTTP/1.1 204") and b"X-Tailscale-Response" not in out
        out = await get(s.port, "/generate_204", f"X-Tailscale-Challenge: {'a' * 65}\r\n")
        assert b"X-Tailscale-Response" not in out
        assert (await get(s.port, "/derp/latency-check")).startswith(b"HTTP/1.1 200")
        assert (await get(s.port, "/derp/probe")).startswith(b"HTTP/1.1 200")

    run(body)


def test_mesh_watcher_sees_presence() -> None:
    mesh = os.urandom(32)

    async def body(s: DerpServer) -> None:
        from pytsnet.wire.derp.client_info import ClientInfo

        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        w = Client(reader, writer, ClientConnection(NodePrivate.generate(), time.monotonic(),
                                                    info=ClientInfo(mesh_key=mesh)))
        await w.until(lambda ev: isinstance(ev, ServerInfoReceived))
        w.conn.send_frame(f.WatchConns())
        w.flush()
        a = await Client.connect(s.port)
        present = await w.recv_frame(f.PeerPresent)
        assert present.key == a.key and present.flags == f.PEER_PRESENT_IS_REGULAR
        a.close()
        assert (await w.recv_frame(f.PeerGone)).peer == a.key

    run(body, mesh_key=mesh)


def _add_known(net: LocalTailnet, hostname: str) -> NodePrivate:
    known = NodePrivate.generate()
    net.store.add_node(machine_key="mkey:" + os.urandom(32).hex(), node_key=known.public().to_text(),
                       user_id=net.control.default_user.id, hostname=hostname, authorized=True,
                       ephemeral=False)
    return known


def test_relay_on_local_tailnet_admits_only_known_node_keys(tmp_path) -> None:
    with LocalTailnet(tmp_path) as net:
        relay = net.relay  # the relay LocalTailnet attaches by default
        assert relay is not None and not relay.tls and relay.go_env == {"TS_DEBUG_USE_DERP_HTTP": "1"}
        node = relay.derp_map["Regions"]["900"]["Nodes"][0]
        assert net.control.derp_map == relay.derp_map
        assert (node["DERPPort"], node["STUNPort"], node["IPv4"]) == (net.port, relay.stun.port, "127.0.0.1")
        known = _add_known(net, "k")

        async def body() -> None:
            a = await Client.connect(net.port, known)
            stranger = await Client.connect(net.port, handshake=False)
            assert await stranger.closed_by_server()
            a.send(a.key, b"loop")  # to itself: the relay forwards to any connected key
            assert (await a.recv_frame(f.RecvPacket)).packet == b"loop"
            a.close()

        arun(body())
        assert relay.derp.stats.rejected_unknown == 1 and relay.derp.stats.accepted == 1


def test_relay_attached_by_hand_when_relay_false(tmp_path) -> None:
    with LocalTailnet(tmp_path, relay=False) as net:
        assert net.relay is None

        async def no_derp() -> bytes:  # nothing serves /derp yet
            r, w = await asyncio.open_connection("127.0.0.1", net.port)
            w.write(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            w.close()
            return head

        assert not asyncio.run(no_derp()).startswith(b"HTTP/1.1 101")
        relay = attach_relay(net, require_known_keys=False)
        try:
            assert net.control.derp_map == relay.derp_map

            async def body() -> None:
                a = await Client.connect(net.port)
                a.send(a.key, b"loop")
                assert (await a.recv_frame(f.RecvPacket)).packet == b"loop"
                a.close()

            arun(body())
        finally:
            relay.close()


def test_tls_relay_with_self_signed_certificate(tmp_path) -> None:
    with LocalTailnet(tmp_path, derp_tls=True) as net:
        relay = net.relay
        assert relay is not None and relay.tls and relay.go_env == {}
        node = relay.derp_map["Regions"]["900"]["Nodes"][0]
        assert node["DERPPort"] == relay.derp_port != net.port and node["InsecureForTests"] is True
        assert (node["HostName"], node["IPv4"], node["IPv6"]) == ("127.0.0.1", "127.0.0.1", "none")
        a_priv, b_priv = _add_known(net, "a"), _add_known(net, "b")
        pinned = ssl.create_default_context(cafile=str(tmp_path / CERT_FILE))  # verifies name and chain
        strict = ssl.create_default_context()  # system roots only: must reject the self-signed cert

        async def body() -> None:
            a = await Client.connect(relay.derp_port, a_priv, tls=pinned)
            b = await Client.connect(relay.derp_port, b_priv, tls=pinned)
            a.send(b.key, b"over tls")
            got = await b.recv_frame(f.RecvPacket)
            assert (got.src, got.packet) == (a.key, b"over tls")
            assert a.writer.get_extra_info("ssl_object").version() in ("TLSv1.3", "TLSv1.2")
            with pytest.raises(ssl.SSLCertVerificationError):
                await Client.connect(relay.derp_port, tls=strict)
            plain = await asyncio.open_connection("127.0.0.1", relay.derp_port)  # plain HTTP to TLS port
            plain[1].write(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\n\r\n")
            assert not (await asyncio.wait_for(plain[0].read(100), 5)).startswith(b"HTTP/1.1 101")
            plain[1].close()
            a.send(b.key, b"still serving")  # the bad connections did not disturb the others
            assert (await b.recv_frame(f.RecvPacket)).packet == b"still serving"
            fast = await Client.connect(relay.derp_port, _add_known(net, "fast"), tls=pinned,
                                        fast_start=relay.derp.public)  # key known from the meta cert
            fast.send(b.key, b"fast start")
            assert (await b.recv_frame(f.RecvPacket)).packet == b"fast start"
            for c in (a, b, fast):
                c.close()

        arun(body())
        stats = relay.derp.stats
        assert stats.accepted == 3 and stats.packets_forwarded == 3 and stats.fast_starts == 1
        # Go's meta cert follows the leaf: CN derpkey<hex server key>, serial = protocol version 2
        pems = (tmp_path / CHAIN_FILE).read_bytes().split(b"-----END CERTIFICATE-----")[:2]
        leaf, meta = (x509.load_pem_x509_certificate(p + b"-----END CERTIFICATE-----") for p in pems)
        with pytest.warns(UserWarning, match="length"):  # Go's 71-character CN is over X.520's bound
            cn = meta.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert cn == "derpkey" + relay.derp.public.raw.hex() and meta.serial_number == f.PROTOCOL_VERSION
        assert leaf.public_bytes(serialization.Encoding.PEM) == (tmp_path / CERT_FILE).read_bytes()
        cert = (tmp_path / CERT_FILE).read_bytes()
    with LocalTailnet(tmp_path, derp_tls=True) as net:  # a restart serves the same certificate
        assert (tmp_path / CERT_FILE).read_bytes() == cert and net.relay is not None and net.relay.tls


def test_sends_to_random_keys_do_not_grow_the_per_key_stats() -> None:
    """100k packets to never-admitted keys: one aggregate counter, no entry per key (it was +30 MiB)."""
    n = 100_000

    async def body(s: DerpServer) -> None:
        a, b = await Client.connect(s.port), await Client.connect(s.port)
        before = set(s.stats.keys)
        assert before <= {a.key, b.key}
        for i in range(n):
            a.conn.send_packet(NodePublic.from_raw(os.urandom(32)), b"x")
            if i % 1000 == 999:
                a.flush()
                await a.writer.drain()
        a.flush()
        a.send(b.key, b"marker")  # processed after every drop above (one stream, in order)
        await b.recv_frame(f.RecvPacket, timeout=25)
        assert s.stats.drops["unknown_dest"] == n
        assert set(s.stats.keys) == before
        assert s.stats.unadmitted.drops_to == n
        assert s.stats.key(a.key).packets_from == 1 and s.stats.key(b.key).packets_to == 1

    run(body)
