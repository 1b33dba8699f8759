"""One DERP connection (per region): HTTP upgrade to ``/derp``, then the sans-IO ``ClientConnection``.

As Go magicsock ``derp.go``: the home region stays connected; any other region connects on the first
send to a peer homed there and closes ``derp_idle_close`` (60 s) after our last write to it. Reconnects
with jittered exponential backoff capped at 5 s while the connection is wanted; marks the home region
with NotePreferred (and clears it when netcheck moves home away); answers server pings
(``auto_pong``) and fails on the 120 s read deadline.
Received packets are demultiplexed like Go ``processDERPReadResult``: disco → DiscoPinger, the rest →
W as ``WgDatagramsIn(via="derp")``. The first packet from each admitted peer on a connection is noted to
the router as a ``DerpRoute`` (Go ``addDerpPeerRoute``), so replies can go back on this region while
the peer's home is unknown (``DerpInbound``). Once the handshake is complete the connection's reader
thread does that itself for each read (``DerpLink``/``RecvSplitter``: the packet lane); this actor
gets the other frames and keeps the connection's state. On a plain-TCP connection the engine writes
DERP-only peers' bursts on the socket itself (``derp_writer``, the send lane); this actor writes what
the socket did not take at once (``DerpFlush``) and its own frames through the same writer. Sends while
(re)connecting wait in a small bounded queue.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import ssl
from collections import deque

from pytsnet.actors.magicsock import derp_writer
from pytsnet.actors.magicsock.derp_lane import DerpInbound, DerpInCounters
from pytsnet.actors.magicsock.derp_link import DerpLink
from pytsnet.actors.magicsock.derp_writer import DerpWriter
from pytsnet.actors.runtime import Actor, ActorStopped, MailboxFull, StopReason, handles
from pytsnet.actors.runtime.io import IoLoop
from pytsnet.actors.runtime.logs import subsystem_logger
from pytsnet.messages.magicsock import (
    AdmittedPeers,
    DerpBytes,
    DerpClosed,
    DerpConnect,
    DerpDialed,
    DerpDialFailed,
    DerpFlush,
    DerpPeerCounters,
    DerpPeerGone,
    DerpRegion,
    DerpRoute,
    DerpSend,
    DerpSends,
    DerpStatus,
    DerpStatusRequest,
    DerpTick,
    HomeRegion,
    MagicsockKeys,
    MagicsockResend,
    MagicsockSpawn,
)
from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.handshake import ClientConnection, FrameReceived, ServerInfoReceived, ServerKeyReceived
from pytsnet.wire.derp.recv_split import RawPacket
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import KeyParseError, NodePrivate, NodePublic

log = subsystem_logger("magicsock")
MAX_BACKOFF = 5.0
MIN_BACKOFF = 0.05
TICK = 1.0
MAX_PENDING = 64
MAX_KEY_CACHE = 4096  # bound on the key caches: a relay may send from any key
_CONN_IDS = itertools.count(1)
"""Connection ids unique in the process: a ``DerpRoute`` names the connection it was seen on, and a
restarted client must not reuse an id its predecessor handed out."""


class DerpClient(Actor):
    def __init__(self, config: MagicsockSpawn, region: DerpRegion, keys: MagicsockKeys) -> None:
        self.config = config
        self.region = region
        self.node_private = NodePrivate.from_text(keys.node_private)
        self.home_region = config.home_region  # the StunProber's: it tells us changes (HomeRegion)
        self.admitted: frozenset[str] = frozenset()  # the DiscoPinger's peer set (AdmittedPeers)
        self.conn: ClientConnection | None = None
        self._link: DerpLink | None = None  # the connection being dialled or up; its I/O loop below
        self.conn_id = 0
        self.failures = 0
        self.connects = 0
        self.dropped = 0
        self._keys: dict[str, NodePublic] = {}  # peer text -> key, parsed once (not per packet)
        self._in = DerpInCounters()  # received bytes, across connections (written by their readers)
        self._inbound: DerpInbound | None = None  # the connection's received packets to their consumers
        self._reads_seen = 0  # the reader's framed reads at the last tick (the read deadline)
        self._writer: DerpWriter | None = None  # the connection's socket writes (plain TCP only)
        self._published = False  # the engine may write on ``_writer`` (derp_writer.publish)
        self._writes_seen = 0  # the engine's writes at the last tick (the idle close)
        self.health = ""
        self.pending: deque[DerpSend] = deque()
        self.bytes_out: dict[str, int] = {}
        self._loop: IoLoop | None = None
        self.last_write = float("-inf")  # our last send to this region, for the idle close
        self.idle_closes = 0
        self.last_error = ""  # why the last dial or connection failed (status shows it)
        self.peer_gone = 0
        self._retrying = False  # a DerpConnect is scheduled: sends must not bypass the backoff
        self._preferred = False  # what we last told the server with NotePreferred

    @property
    def bytes_in(self) -> dict[str, int]:
        """Bytes received per admitted peer (kept by the connections' readers, ``DerpInCounters``)."""
        return self._in.bytes_in

    @property
    def home(self) -> bool:
        return self.region.region_id == self.home_region

    def on_start(self) -> None:
        if self.home:
            self.ref.tell(DerpConnect())
        self.send_interval(TICK, DerpTick())
        resend = MagicsockResend(reply_to=self.name)  # a restart learns the home and peers again
        self.tell_named(self.config.name("stun"), resend)
        self.tell_named(self.config.name("disco"), resend)

    @handles(HomeRegion)
    def on_home(self, msg: HomeRegion) -> None:
        """Netcheck moved home: the tick connects the new home and un-prefers the old one."""
        self.home_region = msg.region

    @handles(AdmittedPeers)
    def on_admitted(self, msg: AdmittedPeers) -> None:
        self.admitted = frozenset(msg.peers)

    def _wanted(self, now: float) -> bool:
        return self.home or now - self.last_write < self.config.derp_idle_close

    def on_stop(self, reason: StopReason) -> None:
        self._close()

    # -- connecting ---------------------------------------------------------------------------------
    @handles(DerpConnect)
    def connect(self, msg: DerpConnect) -> None:
        """Start a dial on the I/O side (``DerpLink``); its outcome comes back as a message."""
        self._retrying = False
        if self._link is not None or not self._wanted(self.clock.monotonic()):
            return  # connected, or a dial is already under way
        self.conn_id = next(_CONN_IDS)
        self._inbound = DerpInbound(self.config, self.region.region_id, self.conn_id, self._in,
                                    lambda: self.admitted, self.lookup, self.tell_named)
        self._reads_seen = 0
        link = self._link = DerpLink(self.region, self.conn_id, self._inbound, ipv6=self.config.ipv6)  # 24d
        self._loop = self.start_io_loop(link.step, link.close)

    @handles(DerpDialFailed)
    def dial_failed(self, msg: DerpDialFailed) -> None:
        if msg.conn == self.conn_id and self._link is not None:
            log.debug("DERP region %d: %s", self.region.region_id, msg.reason)
            self._close()
            self._retry(msg.reason)

    @handles(DerpDialed)
    def dialed(self, msg: DerpDialed) -> None:
        """TCP, TLS and the ``101`` are done: the DERP handshake runs on the bytes that follow."""
        if msg.conn != self.conn_id or self._link is None:
            return
        log.debug("DERP region %d: connected to %s:%d", self.region.region_id, self.region.host,
                  self.region.port)
        self.conn = ClientConnection(self.node_private, self.clock.monotonic())
        sock = self._link.sock
        if sock is not None and not isinstance(sock, ssl.SSLSocket):  # one thread per SSLSocket
            conn_id, ref = self.conn_id, self.ref

            def wake() -> None:  # the engine's thread: the socket left bytes for us to write
                with contextlib.suppress(ActorStopped, MailboxFull):
                    ref.tell(DerpFlush(conn=conn_id))

            self._writer = DerpWriter(sock, wake)
            self._writes_seen = 0
        self._preferred = False
        self.connects += 1
        if msg.leftover:
            self._feed(msg.leftover)

    def _retry(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        self._retrying = True
        delay = min(MAX_BACKOFF, MIN_BACKOFF * (2 ** min(self.failures, 10)))
        self.send_after(delay * random.uniform(0.5, 1.0), DerpConnect())

    def _close(self) -> None:
        self.conn = None
        if self._writer is not None:
            w, self._writer = self._writer, None
            derp_writer.withdraw(self.ref, w)
            self._published = False
            w.fail(OSError("connection closed"))
            for peer, n in list(w.bytes_out.items()):  # what the engine wrote on it
                self.bytes_out[peer] = self.bytes_out.get(peer, 0) + n
            self.dropped += w.refused
        if self._loop is not None:
            loop, self._loop = self._loop, None
            loop.stopped.set()  # the link's close() below unblocks its dial or read
        if self._link is not None:
            link, self._link = self._link, None
            link.close()

    @handles(DerpClosed)
    def closed(self, msg: DerpClosed) -> None:
        if msg.conn == self.conn_id and self.conn is not None:
            log.debug("DERP region %d: connection lost (%s)", self.region.region_id, msg.reason)
            self._close()
            self._retry(msg.reason)

    # -- receiving ----------------------------------------------------------------------------------
    @handles(DerpBytes)
    def on_bytes(self, msg: DerpBytes) -> None:
        if msg.conn == self.conn_id and self.conn is not None:
            self._feed(msg.data)

    def _feed(self, data: bytes) -> None:
        """Frames the reader handed us (all of them until the handshake is complete, then all but the
        RecvPackets); packets among them go through ``DerpInbound`` as the reader's do."""
        assert self.conn is not None and self._inbound is not None
        try:
            events = self.conn.receive_packets(data, self.clock.monotonic())
        except WireError as e:  # a bad frame or ServerInfo from the relay: one line, drop it, dial again
            log.debug("DERP region %d: protocol error, closing: %s", self.region.region_id, e)
            self._close()
            self._retry(repr(e))
            return
        inbound = self._inbound
        packets: list[RawPacket] = []
        for ev in events:
            if isinstance(ev, tuple):  # a RecvPacket: (source key raw, packet)
                packets.append(ev)
                continue
            if packets:  # in order with the frame (a PeerGone may change the routes)
                inbound.packets(packets)
                packets = []
            if isinstance(ev, ServerKeyReceived):
                self.failures = 0
                if self.home:
                    self.conn.note_preferred(True)
                    self._preferred = True
                while self.pending:
                    p = self.pending.popleft()
                    self._send(p.peer, p.data)
            elif isinstance(ev, ServerInfoReceived):
                if self._link is not None:  # the reader may split packets off from now on
                    self._link.splitter.server_info_opened()
            elif isinstance(ev, FrameReceived):
                self._frame(ev.frame)
        if packets:
            inbound.packets(packets)
        self._flush()
        if (self._writer is not None and not self._published and self.conn is not None
                and self.conn.server_key is not None):  # after our queued sends: the engine may write
            self._published = True
            derp_writer.publish(self.ref, self._writer)

    def _frame(self, frame: f.Frame) -> None:
        if isinstance(frame, f.PeerGone):
            self.peer_gone += 1
            gone = frame.peer.to_text()
            routed = self._inbound.routed if self._inbound is not None else set()
            if gone in routed:  # Go removeDerpPeerRoute: it is no longer reachable here (the next
                routed.discard(gone)  # packet from it on this connection notes the route again)
                self.tell_named(self.config.name("udp"), DerpRoute(
                    peer=gone, region=self.region.region_id, conn=self.conn_id, present=False))
            self.tell_named(self.config.name("disco"), DerpPeerGone(
                region=self.region.region_id, peer=frame.peer.to_text(), reason=int(frame.reason)))
        elif isinstance(frame, f.Health):
            self.health = frame.problem

    # -- sending ------------------------------------------------------------------------------------
    @handles(DerpSend)
    def on_send(self, msg: DerpSend) -> None:
        self._note_write()
        if self.conn is None or self.conn.server_key is None:
            self._queue(msg)
            return
        self._send(msg.peer, msg.data)
        self._flush()

    @handles(DerpSends)
    def on_sends(self, msg: DerpSends) -> None:
        """A burst to one peer: every frame, then one socket write."""
        self._note_write()
        connected = self.conn is not None and self.conn.server_key is not None
        if not connected:
            for data in msg.datas:
                self._queue(DerpSend.model_construct(peer=msg.peer, data=data))
            return
        assert self.conn is not None
        key = self._key(msg.peer)
        if key is None:
            self.dropped += len(msg.datas)
            return
        try:
            n, skipped = self.conn.send_packets(key, msg.datas)
        except WireError:
            self.dropped += len(msg.datas)
            return
        self.dropped += skipped
        self.bytes_out[msg.peer] = self.bytes_out.get(msg.peer, 0) + n
        self._flush()

    def _note_write(self) -> None:
        """A send keeps a non-home region wanted; the first one dials it (unless a retry is due)."""
        self.last_write = self.clock.monotonic()
        if self._link is None and not self._retrying:
            self.connect(DerpConnect())

    def _queue(self, msg: DerpSend) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append(msg)

    def _send(self, peer: str, data: bytes) -> None:
        """Frame one packet into the connection's output (written by ``_flush``: a burst, one write)."""
        assert self.conn is not None
        key = self._key(peer)
        if key is None:
            self.dropped += 1
            return
        try:
            self.conn.send_packet(key, data)
        except WireError:
            self.dropped += 1
            return
        self.bytes_out[peer] = self.bytes_out.get(peer, 0) + len(data)

    def _key(self, peer: str) -> NodePublic | None:
        """``peer``'s key, parsed once (not per packet); None if the text is not a node key."""
        key = self._keys.get(peer)
        if key is None:
            try:
                key = NodePublic.from_text(peer)
            except KeyParseError:
                return None
            if len(self._keys) >= MAX_KEY_CACHE:
                self._keys.clear()
            self._keys[peer] = key
        return key

    def _flush(self) -> None:
        if self.conn is None or self._link is None or self._link.sock is None:
            return
        out = self.conn.data_to_send()
        if out:
            try:
                if self._writer is not None:
                    self._writer.write(out)  # behind what the engine wrote
                else:
                    self._link.sock.sendall(out)
            except OSError as e:
                self._close()
                self._retry(repr(e))

    @handles(DerpFlush)
    def on_flush(self, msg: DerpFlush) -> None:
        """The engine left bytes in the writer that the socket did not take at once: write them."""
        if msg.conn != self.conn_id or self._writer is None:
            return
        try:
            self._writer.flush()
        except OSError as e:
            self._close()
            self._retry(repr(e))

    @handles(DerpTick)
    def tick(self, msg: DerpTick) -> None:
        now = self.clock.monotonic()
        if self.conn is None:
            if self.home and not self._retrying and self._link is None:  # netcheck made this region home
                self.connect(DerpConnect())
            return
        if self._writer is not None and self._writer.writes != self._writes_seen:  # the engine wrote
            self._writes_seen = self._writer.writes
            self.last_write = now
        if not self._wanted(now):
            self.idle_closes += 1
            self._close()
            self.pending.clear()
            return
        if self.conn.server_key is not None and self._preferred != self.home:
            self._preferred = self.home
            self.conn.note_preferred(self.home)
            self._flush()
            if self.conn is None:
                return
        link = self._link
        if link is not None and link.splitter.reads != self._reads_seen:  # the packet lane read frames
            self._reads_seen = link.splitter.reads
            self.conn.note_activity(now)
        try:
            self.conn.handle_timeout(self.clock.monotonic())
        except WireError as e:
            self._close()
            self._retry(repr(e))

    @handles(DerpStatusRequest)
    def status(self, msg: DerpStatusRequest) -> DerpStatus:
        bytes_in = dict(self._in.bytes_in)  # a copy: the reader thread writes it
        bytes_out = dict(self.bytes_out)
        dropped = self.dropped
        if self._writer is not None:  # the engine's writes on the open connection
            for peer, n in list(self._writer.bytes_out.items()):
                bytes_out[peer] = bytes_out.get(peer, 0) + n
            dropped += self._writer.refused
        peers = sorted(set(bytes_in) | set(bytes_out))
        return DerpStatus(
            region=self.region.region_id,
            connected=self.conn is not None and self.conn.server_key is not None,
            home=self.home, connects=self.connects, dropped=dropped, health=self.health,
            idle_closes=self.idle_closes, peer_gone=self.peer_gone, last_error=self.last_error,
            bytes_in_unknown_sources=self._in.unknown_sources,
            peers=tuple(DerpPeerCounters(peer=p, bytes_in=bytes_in.get(p, 0),
                                         bytes_out=bytes_out.get(p, 0)) for p in peers))

