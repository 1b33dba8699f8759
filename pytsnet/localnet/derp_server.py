"""An asyncio DERP relay: the ``/derp`` HTTP upgrade and the packet forwarding behind it.

Each client stream is driven by the sans-IO :class:`pytsnet.wire.derp.handshake.ServerConnection`
(ServerKey, ClientInfo/ServerInfo, pings, keep-alives, frame limits); this module adds what Go's
``derp/derpserver`` does around it: admission (``is_known``), the client table (a second connection
with the same key replaces the first), forwarding SendPacket → RecvPacket through **bounded
per-client send queues** (oldest packet dropped when full, like Go's ``dropReasonQueueHead``; disco
packets in their own queue), PeerGone to clients that received from a departed peer, PeerGone
NotHere for disco packets to absent keys (rate-limited 3 burst, 1/s), PeerPresent/PeerGone to mesh
watchers, a write timeout that drops stuck clients, and counters tests can read.

A protocol error on one stream (oversize frame, bad box, garbage) closes only that stream.
Upgrade via ``Upgrade: websocket`` is not offered (only ``Upgrade: DERP``); other requests get 426.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pytsnet.localnet import http1
from pytsnet.localnet.limits import ConnectionGate  # 24b
from pytsnet.wire import disco
from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.client_info import ServerInfo
from pytsnet.wire.derp.errors import DerpTimeoutError, FrameTooLargeError
from pytsnet.wire.derp.handshake import (
    KEEP_ALIVE_JITTER,
    ClientAuthenticated,
    Event,
    FrameReceived,
    RawPacket,
    ServerConnection,
    State,
)
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import NodePrivate, NodePublic

log = logging.getLogger(__name__)

PER_CLIENT_SEND_QUEUE_DEPTH = 32  # Go defaultPerClientSendQueueDepth
WRITE_TIMEOUT = 2.0  # Go derpserver writeTimeout: a client that does not drain is dropped
PEER_GONE_BURST = 3  # Go: rate.NewLimiter(rate.Every(time.Second), 3) for NotHere
READ_CHUNK = 256 << 10
MAX_WRITE_BATCH = 256 << 10
SLOW_CLIENT_BUFFER = 64 << 10  # unsent bytes in a client's transport (asyncio's high-water mark) that
# mark it as not keeping up: its writer is then waiting in drain()
KEEPING_UP_QUEUE_BYTES = 1 << 20  # what a client keeping up may have queued between two writer runs
_RECV_HEADER = struct.Struct(">BI")
_RECV_PACKET = int(f.FrameType.RECV_PACKET)
_DISCO_MAGIC = disco.MAGIC
_DISCO_MIN = disco.HEADER_LEN
_PAYLOAD_OVERHEAD = f.FRAME_HEADER_LEN + f.KEY_LEN  # a RecvPacket frame's bytes around its packet
NO_CONTENT_CHALLENGE_HEADER = "X-Tailscale-Challenge"
NO_CONTENT_RESPONSE_HEADER = "X-Tailscale-Response"

# drop reasons (Go's dropReason names)
DROP_UNKNOWN_DEST = "unknown_dest"
DROP_QUEUE_HEAD = "queue_head"
DROP_GONE = "gone_disconnected"
DROP_WRITE_ERROR = "write_error"

IsKnown = Callable[[NodePublic], bool]
VerifyClient = Callable[[NodePublic, str], Awaitable[bool]]
"""An admission controller asked once per connection (Go ``verifyClient``): the client's node key and
source IP → admit? Awaited before the client is registered; an exception counts as a refusal."""
Handler = Callable[[http1.Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class KeyStats:
    """Counters for one node key, as source and as destination of relayed packets."""

    packets_from: int = 0  # written to a destination, sent by this key
    bytes_from: int = 0
    packets_to: int = 0  # written to this key's connection
    bytes_to: int = 0
    drops_to: int = 0  # packets for this key dropped (queue full, gone, write error)


@dataclass
class DerpStats:
    accepted: int = 0
    rejected_unknown: int = 0  # ClientInfo from a key the control server does not know (or expired)
    revoked: int = 0  # open connections closed because their key stopped being admitted (expired)
    replaced: int = 0  # an older connection closed by a newer one with the same key
    stream_errors: int = 0  # streams closed for a protocol/parse/crypto/timeout error
    bad_upgrades: int = 0  # /derp requests without Upgrade: DERP
    fast_starts: int = 0  # upgrades with Derp-Fast-Start: 1 (client took our key from the TLS meta cert)
    packets_forwarded: int = 0
    bytes_forwarded: int = 0
    pings: int = 0
    rejected_verify: int = 0  # ClientInfo from a key the admission controller (``verify``) refused
    verify_errors: int = 0  # admission checks that raised (counted in rejected_verify too)
    drops: collections.Counter[str] = field(default_factory=collections.Counter)
    keys: dict[NodePublic, KeyStats] = field(default_factory=dict)
    """Per-key counters, only for keys that were admitted (a sender can name any destination key:
    an entry per unknown key would grow without bound)."""
    unadmitted: KeyStats = field(default_factory=KeyStats)
    """Aggregate for every key never admitted: drops to absent destinations, mesh-forwarded sources."""

    def key(self, k: NodePublic) -> KeyStats:
        s = self.keys.get(k)
        if s is None:
            s = self.keys[k] = KeyStats()
        return s


class _TokenBucket:
    """Go's ``rate.Limiter(rate.Every(1s), 3)``: at most ``burst`` at once, refilling one per second."""

    def __init__(self, burst: int, now: float) -> None:
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last))
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _Client:
    """One connected stream: its sans-IO connection, send queues and writer task."""

    def __init__(self, server: DerpServer, conn: ServerConnection, writer: asyncio.StreamWriter,
                 addr: tuple[str, int] | None) -> None:
        self.server = server
        self.conn = conn
        self.writer = writer
        self.addr = addr
        self.key: NodePublic | None = None
        self.preferred = False
        self.watcher = False
        self.closed = False
        depth = server.queue_depth
        # (the source's counters, the whole RecvPacket frame), oldest first
        self.queue: collections.deque[tuple[KeyStats, bytes]] = collections.deque()
        self.disco_queue: collections.deque[tuple[KeyStats, bytes]] = collections.deque()
        self.depth = depth
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self._timer_at: float | None = None  # the deadline the write loop's timer is set for
        self.idle = False  # the write loop waits for work (not writing or draining): flush_now may write
        self.peer_gone_limit = _TokenBucket(PEER_GONE_BURST, time.monotonic())
        self.verified = False  # 24b: the admission controller approved this connection's key

    def enqueue(self, src: NodePublic, packet: bytes) -> None:
        """Queue one ``packet`` from ``src`` (see :meth:`enqueue_many`) and wake the writer."""
        self.enqueue_many(src, (packet,))
        self.wake.set()

    def enqueue_many(self, src: NodePublic, packets: list[bytes] | tuple[bytes, ...]) -> None:
        """Queue ``packets`` from ``src`` as RecvPacket frames; drop from the head over the bound.

        Go's relay drains each client's 32-deep queue from a writer goroutine while readers
        forward, so that queue fills only when the client is slow. On one event loop the writer
        cannot run while a reader forwards a whole read (dozens of packets), so the 32 applies only
        once the client's transport has ``SLOW_CLIENT_BUFFER`` unsent; until then the queue may hold
        up to ``KEEPING_UP_QUEUE_BYTES`` (a hard 32 dropped ~1% of a 10 MB/s stream to a client that
        was keeping up). A burst comes from one read, so the transport's state is read once for it
        (nothing is written while it is queued) and equal-size frames share their header bytes.
        The caller then writes or wakes the writer (:meth:`flush_now` or ``wake``)."""
        server = self.server
        stats = server.stats
        ks = stats.keys.get(src) or (stats.key(src) if src in server.clients else stats.unadmitted)
        src_raw = src.raw
        slow = self.writer.transport.get_write_buffer_size() >= SLOW_CLIENT_BUFFER
        depth = self.depth
        queue, disco_queue = self.queue, self.disco_queue
        queued = self.queued_bytes
        last_size = -1
        prefix = b""
        for packet in packets:
            size = len(packet)
            if size != last_size:
                prefix = _RECV_HEADER.pack(_RECV_PACKET, f.KEY_LEN + size) + src_raw
                last_size = size
            frame = prefix + packet
            q = disco_queue if size >= _DISCO_MIN and packet.startswith(_DISCO_MAGIC) else queue
            n = size + _PAYLOAD_OVERHEAD
            while q and (len(q) >= depth if slow else queued + n > KEEPING_UP_QUEUE_BYTES):
                queued -= len(q.popleft()[1])
                server._drop(DROP_QUEUE_HEAD, self.key)
            q.append((ks, frame))
            queued += n
        self.queued_bytes = queued

    def flush_now(self) -> None:
        """Write what is queued from the reader's turn of the loop, sparing the writer task a wake-up
        per read, while that task is idle and the transport is not backed up (under
        ``SLOW_CLIENT_BUFFER``, so the transport holds no more than the writer's own writes would);
        otherwise, or if a batch's worth is left, wake the writer (it drains, with the timeout)."""
        transport = self.writer.transport
        if (self.idle and not self.closed and not transport.is_closing()
                and transport.get_write_buffer_size() < SLOW_CLIENT_BUFFER):
            out = self.conn.data_to_send()
            parts = [out] if out else []
            self._take(parts, len(out))
            if parts:
                self.writer.write(b"".join(parts))
            if not (self.queue or self.disco_queue):
                return
        self.wake.set()

    def _take(self, parts: list[bytes], size: int) -> int:
        """Move queued frames (disco first) into ``parts`` up to ``MAX_WRITE_BATCH`` bytes, counting
        them as forwarded; returns the new batch size."""
        stats = self.server.stats
        packets = nbytes = 0
        ks_last: KeyStats | None = None
        k_packets = k_bytes = 0
        append = parts.append
        for q in (self.disco_queue, self.queue):
            popleft = q.popleft
            while q and size < MAX_WRITE_BATCH:
                ks, frame = popleft()
                n = len(frame)
                append(frame)
                size += n
                n -= _PAYLOAD_OVERHEAD
                if ks is not ks_last:
                    if ks_last is not None:
                        ks_last.packets_from += k_packets
                        ks_last.bytes_from += k_bytes
                    ks_last, k_packets, k_bytes = ks, 0, 0
                k_packets += 1
                k_bytes += n
                packets += 1
                nbytes += n
        if ks_last is not None:
            ks_last.packets_from += k_packets
            ks_last.bytes_from += k_bytes
        self.queued_bytes -= nbytes + packets * _PAYLOAD_OVERHEAD
        if self.key is not None:
            kd = stats.key(self.key)
            kd.packets_to += packets
            kd.bytes_to += nbytes
        stats.packets_forwarded += packets
        stats.bytes_forwarded += nbytes
        return size

    def send_control(self, frame: f.Frame) -> None:
        if self.closed or self.conn.state is not State.CONNECTED:
            return
        self.conn.send_frame(frame)
        self.wake.set()

    def close(self, abort: bool = False) -> None:
        """Close the stream; ``abort`` discards unsent bytes (a stuck client never drains them)."""
        if abort:
            self.writer.transport.abort()
        if not self.closed:
            self.closed = True
            self.wake.set()
            self.writer.close()

    async def write_loop(self) -> None:
        """Flush control frames, then queued packets (disco first), until closed or stuck."""
        loop = asyncio.get_running_loop()
        stuck = False
        timer: asyncio.TimerHandle | None = None  # wakes the loop at the connection's deadline

        def fired() -> None:
            self._timer_at = None  # a timer that fires a little early is set again
            self.wake.set()

        try:
            while not self.closed:
                deadline = self.conn.next_deadline()
                if deadline is not None and deadline <= loop.time():
                    self.conn.handle_timeout(loop.time())
                else:
                    if deadline != self._timer_at:  # one timer per deadline, not a wait_for per wake-up
                        if timer is not None:
                            timer.cancel()
                        timer = loop.call_at(deadline, fired) if deadline is not None else None
                        self._timer_at = deadline
                    self.idle = True
                    try:
                        await self.wake.wait()
                    finally:
                        self.idle = False
                self.wake.clear()
                while not self.closed:
                    out = self.conn.data_to_send()
                    parts = [out] if out else []
                    size = len(out)
                    if self.disco_queue or self.queue:
                        size = self._take(parts, size)
                    if not parts:
                        break
                    self.writer.write(b"".join(parts))
                    transport = self.writer.transport
                    if transport.get_write_buffer_size() or transport.is_closing():  # else drain() is a no-op
                        await asyncio.wait_for(self.writer.drain(), self.server.write_timeout)
        except DerpTimeoutError as e:
            self.server.stats.stream_errors += 1
            log.info("derp: %s: %s", self.addr, e)
        except (TimeoutError, ConnectionError, RuntimeError) as e:
            log.info("derp: write to %s failed: %r", self.key, e)
            stuck = True
        finally:
            if timer is not None:
                timer.cancel()
            for _ in range(len(self.queue) + len(self.disco_queue)):
                self.server._drop(DROP_WRITE_ERROR if not self.closed else DROP_GONE, self.key)
            self.queue.clear()
            self.disco_queue.clear()
            self.queued_bytes = 0
            self.close(abort=stuck)


class DerpServer:
    """The relay. Mount :meth:`handle_derp` at ``/derp`` (see :meth:`routes`) or call :meth:`start`.

    ``is_known(node_key)`` admits clients (default: everyone). All methods run on one event loop.
    """

    def __init__(self, private: NodePrivate | None = None, *, is_known: IsKnown | None = None,
                 mesh_key: bytes | None = None, queue_depth: int = PER_CLIENT_SEND_QUEUE_DEPTH,
                 write_timeout: float = WRITE_TIMEOUT, keep_alive: float = f.KEEP_ALIVE,
                 keep_alive_jitter: float = KEEP_ALIVE_JITTER, handshake_timeout: float = 10.0,
                 verify: VerifyClient | None = None) -> None:
        self.private = private or NodePrivate.generate()
        self.public = self.private.public()
        self.is_known: IsKnown = is_known or (lambda _k: True)
        self.verify = verify  # 24b: the standalone derper's --verify-client-url (None: no such check)
        self.gate: ConnectionGate | None = None  # 24b: caps connections to start()'s own listener
        self.conns_refused = 0  # 24b: connections closed unread because the gate was full
        self.mesh_key = mesh_key
        self.queue_depth = queue_depth
        self.write_timeout = write_timeout
        self.keep_alive = keep_alive
        self.keep_alive_jitter = keep_alive_jitter
        self.handshake_timeout = handshake_timeout
        self.stats = DerpStats()
        self.clients: dict[NodePublic, _Client] = {}
        self._by_raw: dict[bytes, _Client] = {}  # the same clients by raw key: the packet path's lookup
        self._touched: list[_Client] = []  # destinations queued to by the read being handled
        self._gone_watch: dict[NodePublic, set[_Client]] = {}  # src → clients that received from it
        self._watchers: set[_Client] = set()
        self._server: asyncio.Server | None = None
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self.host = ""
        self.port = 0

    # -- standalone listener (tests, bench); LocalTailnet mounts routes() instead ----------------
    def routes(self) -> dict[str, Handler]:
        return {"/derp": self.handle_derp, "/derp/probe": self.handle_probe,
                "/derp/latency-check": self.handle_probe, "/generate_204": self.handle_generate_204}

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl: Any = None) -> None:
        """Listen on ``host:port`` for ``/derp`` and the probes; ``ssl`` (an SSLContext) makes it TLS."""
        self._server = await asyncio.start_server(self._on_conn, host, port, ssl=ssl,
                                                  ssl_handshake_timeout=10 if ssl is not None else None)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self.clients.values()):
            c.close()
        for t in list(self._conn_tasks):
            t.cancel()
        await asyncio.gather(*self._conn_tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.gate is not None:
            peer = writer.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            if self.gate.admit(ip) is not None:
                self.conns_refused += 1
                writer.transport.abort()
                return
            try:
                await self._serve_conn(reader, writer)
            finally:
                self.gate.release(ip)
            return
        await self._serve_conn(reader, writer)

    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await http1.accept_request(reader, writer, self._conn_tasks)
            if req is None:
                return
            handler = self.routes().get(req.path)
            if handler is None:
                writer.write(http1.response(404, b"not found\n"))
                return
            await handler(req, reader, writer)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # cancellation is close(); 3.11's start_server logs it if re-raised
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.drain()
            writer.close()

    # -- plain HTTP handlers ------------------------------------------------------------------
    async def handle_probe(self, req: http1.Request, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        """``/derp/probe`` and ``/derp/latency-check`` (Go ``ProbeHandler``): 200 to HEAD/GET."""
        if req.method in ("HEAD", "GET"):
            writer.write(http1.response(200, headers={"Access-Control-Allow-Origin": "*"}))
        else:
            writer.write(http1.response(405, b"bogus probe method\n"))

    async def handle_generate_204(self, req: http1.Request, reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> None:
        """Captive-portal check (Go ``ServeNoContent``): 204, echoing a well-formed challenge."""
        headers = {"Cache-Control": "no-cache, no-store, must-revalidate, no-transform, max-age=0"}
        challenge = req.headers.get(NO_CONTENT_CHALLENGE_HEADER.lower(), "")
        if challenge and len(challenge) <= 64 and all(c.isascii() and (c.isalnum() or c in ".-_:")
                                                      for c in challenge):
            headers[NO_CONTENT_RESPONSE_HEADER] = "response " + challenge
        writer.write(http1.response(204, headers=headers))

    async def handle_derp(self, req: http1.Request, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """The upgrade: 101 (unless ``Derp-Fast-Start: 1``), then one DERP stream until it ends."""
        if req.headers.get("upgrade", "").lower() != "derp":
            self.stats.bad_upgrades += 1
            body = b"DERP requires connection upgrade\n"
            writer.write(b"HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            return
        if req.headers.get(f.FAST_START_HEADER.lower()) == "1":
            self.stats.fast_starts += 1
        else:
            writer.write((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                          f"Derp-Version: {f.PROTOCOL_VERSION}\r\nDerp-Public-Key: {self.public.raw.hex()}"
                          "\r\n\r\n").encode())
        await self.serve_stream(reader, writer)

    # -- one DERP stream ----------------------------------------------------------------------
    async def serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run the DERP protocol on an already-upgraded stream until either side closes it."""
        loop = asyncio.get_running_loop()
        conn = ServerConnection(self.private, loop.time(), mesh_key=self.mesh_key,
                                handshake_timeout=self.handshake_timeout, keep_alive=self.keep_alive,
                                jitter=lambda: random.uniform(0.0, self.keep_alive_jitter))
        peer = writer.get_extra_info("peername")
        c = _Client(self, conn, writer, tuple(peer[:2]) if peer else None)
        wtask = asyncio.ensure_future(c.write_loop())
        c.wake.set()
        try:
            while not c.closed:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                try:
                    events = conn.receive_packets(data, loop.time())
                except WireError as e:
                    self.stats.stream_errors += 1
                    level = logging.INFO if isinstance(e, FrameTooLargeError) else logging.DEBUG
                    log.log(level, "derp: closing %s (%s): %s", peer, c.key, e)
                    break
                if self.verify is not None and not c.verified and not await self._verify(c, events):
                    return
                if not self._on_events(c, events, loop.time()):
                    return
                touched, self._touched = self._touched, []
                for target in touched:
                    target.flush_now()
                if c.closed:
                    break
                if conn.bytes_to_send:  # Pongs queued by the connection
                    c.wake.set()
        except (ConnectionError, OSError):
            pass
        finally:
            c.closed = True
            c.wake.set()
            self._unregister(c)
            wtask.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await wtask
            writer.close()

    def _on_events(self, c: _Client, events: list[Event | RawPacket], now: float) -> bool:
        """Handle one read's events in order; consecutive packets to one destination are forwarded
        as one burst. False: the client was refused (the stream must end)."""
        dst_raw = b""
        burst: list[bytes] = []
        for ev in events:
            if isinstance(ev, tuple):
                dst, packet = ev
                if dst != dst_raw:
                    if burst:
                        self._forward_burst(c, dst_raw, burst)
                        burst = []
                    dst_raw = dst
                burst.append(packet)
                continue
            if burst:
                self._forward_burst(c, dst_raw, burst)
                burst = []
            if isinstance(ev, FrameReceived):
                self._on_frame(c, ev.frame)
            elif isinstance(ev, ClientAuthenticated) and not self._admit(c, ev, now):
                return False
        if burst:
            self._forward_burst(c, dst_raw, burst)
        return True

    def _forward_burst(self, c: _Client, dst_raw: bytes, packets: list[bytes]) -> None:
        """SendPackets from ``c`` to one destination key (raw), as :meth:`forward` would, one by one."""
        assert c.key is not None  # ClientAuthenticated came first in this or an earlier read
        target = self._by_raw.get(dst_raw)
        if target is None or target.closed:
            dst = NodePublic.from_raw(dst_raw)
            for p in packets:
                self.forward(c, c.key, dst, p)
            return
        watchers = self._gone_watch.get(c.key)
        if watchers is None:
            watchers = self._gone_watch[c.key] = set()
        watchers.add(target)
        target.enqueue_many(c.key, packets)
        if target not in self._touched:
            self._touched.append(target)

    async def _verify(self, c: _Client, events: list[Event | RawPacket]) -> bool:
        """Ask ``verify`` about the key this read authenticated (if it did) before any event is
        handled; False: refused (counted, logged once, the stream must end). Mesh peers are not
        asked (Go: a mesh peer is not a tailnet node the controller could know)."""
        auth = next((ev for ev in events if isinstance(ev, ClientAuthenticated)), None)
        if auth is None or auth.is_mesh_peer:
            c.verified = auth is not None
            return True
        assert self.verify is not None
        source = c.addr[0] if c.addr is not None else ""
        try:
            ok = bool(await self.verify(auth.client_key, source))
        except Exception as e:  # fail closed; one line per connection, not a traceback
            self.stats.verify_errors += 1
            log.warning("derp: admission check for %s failed: %s: %s", auth.client_key.to_text(),
                        type(e).__name__, str(e)[:200])
            ok = False
        if not ok:
            self.stats.rejected_verify += 1
            log.info("derp: client %s (%s) refused by the admission controller",
                     auth.client_key.to_text(), source)
            return False
        c.verified = True
        return True

    def _admit(self, c: _Client, ev: ClientAuthenticated, now: float) -> bool:
        try:
            known = ev.is_mesh_peer or bool(self.is_known(ev.client_key))
        except Exception as e:  # fail closed; one line per connection, not a traceback
            log.error("derp: is_known failed: %s: %s", type(e).__name__, str(e)[:200])
            known = False
        if not known:
            self.stats.rejected_unknown += 1
            log.info("derp: client %s rejected: unknown or expired node key", ev.client_key.to_text())
            return False  # Go closes the stream without ServerInfo
        c.key = ev.client_key
        old = self.clients.get(c.key)
        if old is not None:
            self.stats.replaced += 1
            old.close()
        self.clients[c.key] = c
        self._by_raw[c.key.raw] = c
        self.stats.accepted += 1
        self.stats.key(c.key)  # per-key counters start at admission (and only there)
        c.conn.accept(now, ServerInfo())
        c.wake.set()
        for w in list(self._watchers):
            if w is not c:
                w.send_control(f.PeerPresent(c.key, self._addr(c), self._flags(c)))
        return True

    def recheck(self) -> int:
        """Close every open connection whose key ``is_known`` no longer admits (expired, deleted,
        logged out); returns how many. Mesh peers are not node keys and stay."""
        gone = 0
        for k, c in list(self.clients.items()):
            if c.conn.is_mesh_peer:
                continue
            try:
                known = bool(self.is_known(k))
            except Exception:
                log.exception("derp: is_known failed")
                known = False
            if not known:
                log.info("derp: closing %s: key no longer admitted", k.to_text())
                self.stats.revoked += 1
                gone += 1
                c.close()
        return gone

    @staticmethod
    def _addr(c: _Client) -> f.AddrPort | None:
        if c.addr is None:
            return None
        try:
            return ipaddress.ip_address(c.addr[0].split("%")[0]), int(c.addr[1])
        except ValueError:
            return None

    @staticmethod
    def _flags(c: _Client) -> int:
        flags = f.PEER_PRESENT_IS_MESH_PEER if c.conn.is_mesh_peer else f.PEER_PRESENT_IS_REGULAR
        if c.conn.client_info is not None and c.conn.client_info.is_prober:
            flags |= f.PEER_PRESENT_IS_PROBER
        return flags

    def _unregister(self, c: _Client) -> None:
        self._watchers.discard(c)
        if c.key is None or self.clients.get(c.key) is not c:
            return  # never admitted, or replaced by a newer connection with the same key
        del self.clients[c.key]
        del self._by_raw[c.key.raw]
        for ws in self._gone_watch.values():
            ws.discard(c)
        for w in self._gone_watch.pop(c.key, ()):
            if self.clients.get(w.key) is w:  # type: ignore[arg-type]
                w.send_control(f.PeerGone(c.key, f.PeerGoneReason.DISCONNECTED))
        for w in list(self._watchers):
            w.send_control(f.PeerGone(c.key, f.PeerGoneReason.DISCONNECTED))

    def _drop(self, reason: str, dst: NodePublic | None) -> None:
        self.stats.drops[reason] += 1
        if dst is not None:
            known = dst in self.stats.keys or dst in self.clients
            (self.stats.key(dst) if known else self.stats.unadmitted).drops_to += 1

    def _on_frame(self, c: _Client, frame: f.Frame) -> None:
        assert c.key is not None
        if isinstance(frame, f.SendPacket):
            self.forward(c, c.key, frame.dst, frame.packet)
        elif isinstance(frame, f.ForwardPacket):  # only mesh peers get here (ServerConnection checks)
            self.forward(c, frame.src, frame.dst, frame.packet)
        elif isinstance(frame, f.NotePreferred):
            c.preferred = frame.preferred
        elif isinstance(frame, f.Ping):
            self.stats.pings += 1  # the connection already queued the Pong
        elif isinstance(frame, f.WatchConns):
            self._watchers.add(c)
            for k, other in self.clients.items():
                if other is not c:
                    c.send_control(f.PeerPresent(k, self._addr(other), self._flags(other)))
        elif isinstance(frame, f.ClosePeer):
            target = self.clients.get(frame.peer)
            if target is not None:
                target.close()

    def forward(self, sender: _Client, src: NodePublic, dst: NodePublic, packet: bytes) -> None:
        """Queue ``packet`` from ``src`` for ``dst``'s connection, or drop and count it."""
        target = self.clients.get(dst)
        if target is None or target.closed:
            self._drop(DROP_UNKNOWN_DEST, dst)
            now = time.monotonic()
            if disco.looks_like_disco_wrapper(packet) and sender.peer_gone_limit.allow(now):
                sender.send_control(f.PeerGone(dst, f.PeerGoneReason.NOT_HERE))
            return
        watchers = self._gone_watch.get(src)
        if watchers is None:
            watchers = self._gone_watch[src] = set()
        watchers.add(target)
        target.enqueue(src, packet)
