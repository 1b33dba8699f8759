"""Sans-IO DERP connections: the client side and the server side of one TCP/TLS stream.

Both follow h11's shape: feed received bytes with ``receive_data(data, now)`` and get events back;
queue frames with the ``send_*`` methods and collect the bytes with ``data_to_send()``; ask
``next_deadline()`` and call ``handle_timeout(now)`` when it passes. Nothing here reads a clock or
touches a socket. The session start is (Go ``derp/derp_client.go``, ``derpserver.go``)::

    server → client  ServerKey    magic ‖ server_pub
    client → server  ClientInfo   client_pub ‖ nonce ‖ box(JSON)   (client_priv → server_pub)
    server → client  ServerInfo   nonce ‖ box(JSON)                (server_priv → client_pub)

A client may send packets as soon as it has sent ClientInfo. The relay's and magicsock's hot paths use
``receive_packets`` (a packet frame comes out as a bare ``(key raw, packet)`` tuple, no frame or key
object) and ``send_packets`` (a burst to one key framed straight into the output buffer); both check
exactly what the frame classes check. Any typed error raised by
``receive_data``/``handle_timeout`` closes the connection (state ``CLOSED``); the driver drops the
stream. HTTP upgrade and TLS are the driver's job.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, auto

from pytsnet.wire.derp import frames as f
from pytsnet.wire.derp.client_info import (
    ClientInfo,
    ServerInfo,
    open_client_info,
    open_server_info,
    seal_client_info,
    seal_server_info,
)
from pytsnet.wire.derp.errors import (
    DerpParseError,
    DerpProtocolError,
    DerpTimeoutError,
    FrameTooLargeError,
)
from pytsnet.wire.derp.reader import CLIENT_MAX_FRAME_LEN, SERVER_MAX_FRAME_LEN, FrameReader
from pytsnet.wire.errors import WireError
from pytsnet.wire.keys import NodePrivate, NodePublic

CLIENT_READ_TIMEOUT = 120.0  # Go client's Recv read deadline
SERVER_HANDSHAKE_TIMEOUT = 10.0  # Go server: ServerKey send + ClientInfo receive
KEEP_ALIVE_JITTER = 5.0  # Go server adds rand.N(5s) to each keep-alive interval
MAX_SERVER_KEY_LEN = 1 << 10  # Go client reads ServerKey with a 1 KiB cap
_LEN = struct.Struct(">I")


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerKeyReceived:
    """Client: the server's key arrived and ClientInfo is queued; packets may be sent now."""

    server_key: NodePublic


@dataclass(frozen=True, slots=True)
class ServerInfoReceived:
    """Client: the handshake is complete."""

    info: ServerInfo


@dataclass(frozen=True, slots=True)
class ClientAuthenticated:
    """Server: a client proved it holds ``client_key``; call ``accept()`` (or drop the stream)."""

    client_key: NodePublic
    info: ClientInfo
    is_mesh_peer: bool


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """A frame after the handshake (RecvPacket, KeepAlive, PeerGone, Ping, SendPacket, …)."""

    frame: f.Frame


Event = ServerKeyReceived | ServerInfoReceived | ClientAuthenticated | FrameReceived

RawPacket = tuple[bytes, bytes]
"""``receive_packets``' form of a packet frame: (the peer's 32-byte key, the packet). Server: a SendPacket
(the key is the destination); client: a RecvPacket (the key is the source)."""

_SEND_PACKET = int(f.FrameType.SEND_PACKET)
_RECV_PACKET = int(f.FrameType.RECV_PACKET)
_SEND_HEADER = f.FrameType.SEND_PACKET.to_bytes(1, "big")


class State(Enum):
    AWAIT_SERVER_KEY = auto()  # client
    AWAIT_SERVER_INFO = auto()  # client: ClientInfo sent, may already send packets
    AWAIT_CLIENT_INFO = auto()  # server: ServerKey sent
    AWAIT_ACCEPT = auto()  # server: client authenticated, owner has not accepted yet
    CONNECTED = auto()
    CLOSED = auto()


class _Connection:
    def __init__(self, private: NodePrivate, max_frame_len: int) -> None:
        self.private = private
        self.public = private.public()
        self.state: State = State.CLOSED
        self._reader = FrameReader(max_frame_len)
        self._out = bytearray()

    @property
    def bytes_to_send(self) -> int:
        """How many bytes ``data_to_send`` would return now."""
        return len(self._out)

    def data_to_send(self) -> bytes:
        """Every byte queued so far (and clear the queue)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _queue(self, frame: f.Frame) -> None:
        self._out += f.encode(frame)

    def _check_open(self) -> None:
        if self.state is State.CLOSED:
            raise DerpProtocolError("connection is closed")

    def _fail(self, e: WireError) -> WireError:
        self.state = State.CLOSED
        return e

    def close(self) -> None:
        """Mark closed locally (the driver closes the stream); later calls raise."""
        self.state = State.CLOSED

    def send_ping(self, data: bytes) -> None:
        self._check_open()
        self._queue(f.Ping(data))

    def send_pong(self, data: bytes) -> None:
        self._check_open()
        self._queue(f.Pong(data))


class ClientConnection(_Connection):
    """The client end of a DERP stream.

    ``server_key`` given ⇒ fast start (Go ``Derp-Fast-Start``): ClientInfo is queued at once and the
    server's later ServerKey frame is ignored. ``auto_pong`` answers server Pings like magicsock.
    """

    def __init__(
        self,
        private: NodePrivate,
        now: float,
        *,
        info: ClientInfo | None = None,
        server_key: NodePublic | None = None,
        auto_pong: bool = True,
        read_timeout: float = CLIENT_READ_TIMEOUT,
    ) -> None:
        super().__init__(private, CLIENT_MAX_FRAME_LEN)
        self.info = info or ClientInfo()
        self.auto_pong = auto_pong
        self.read_timeout = read_timeout
        self.server_key: NodePublic | None = None
        self.server_info: ServerInfo | None = None
        self._last_recv = now
        self._fast_start = server_key is not None
        self.state = State.AWAIT_SERVER_KEY
        if server_key is not None:
            self._start(server_key)

    def _start(self, server_key: NodePublic) -> None:
        self.server_key = server_key
        self._queue(seal_client_info(self.private, server_key, self.info))
        self.state = State.AWAIT_SERVER_INFO

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        self._check_open()
        try:
            raw = self._reader.feed_raw(data)
        except WireError as e:
            raise self._fail(e) from None
        events: list[Event] = []
        for t, payload in raw:
            self._last_recv = now
            try:
                events.extend(self._on_frame(t, payload))
            except WireError as e:
                raise self._fail(e) from None
        return events

    def receive_packets(self, data: bytes, now: float) -> list[Event | RawPacket]:
        """``receive_data``, but once the server key is known each RecvPacket is ``(src raw, packet)``.

        The checks are RecvPacket's: shorter than a key is dropped (as Go does), a packet over
        ``MAX_PACKET_SIZE`` too (the frame decoder raises, ``_on_frame`` drops)."""
        self._check_open()
        try:
            raw = self._reader.feed_split(data, _RECV_PACKET)
        except WireError as e:
            raise self._fail(e) from None
        if raw:
            self._last_recv = now
        events: list[Event | RawPacket] = []
        append = events.append
        for t, payload, packet in raw:
            if packet is not None and self.server_key is not None:
                if len(packet) <= f.MAX_PACKET_SIZE:
                    append((payload, packet))
                continue
            try:
                events.extend(self._on_frame(t, payload if packet is None else payload + packet))
            except WireError as e:
                raise self._fail(e) from None
        return events

    def _on_frame(self, t: int, payload: bytes) -> list[Event]:
        if self.state is State.AWAIT_SERVER_KEY:
            if t != f.FrameType.SERVER_KEY:
                raise DerpProtocolError(f"bad frame type 0x{t:x}, want ServerKey")
            if len(payload) > MAX_SERVER_KEY_LEN:
                raise DerpParseError("ServerKey frame over 1 KiB")
            key = f.ServerKey.parse(payload).key
            self._start(key)
            return [ServerKeyReceived(key)]
        if t == f.FrameType.SERVER_INFO:  # the Go client accepts it at any time; it is fatal if bad
            assert self.server_key is not None
            info = open_server_info(self.private, self.server_key, f.ServerInfoFrame.parse(payload))
            self.server_info = info
            self.state = State.CONNECTED
            return [ServerInfoReceived(info)]
        if t in _CLIENT_RECEIVES:
            try:
                frame = f.decode(t, payload)
            except DerpParseError:
                return []  # Go: "[unexpected] dropping short … frame" and read on
            if isinstance(frame, f.Ping) and self.auto_pong:
                self._queue(f.Pong(frame.data))
            return [FrameReceived(frame)]
        return []  # ServerKey after fast start, client-bound types and unknown types: skipped, as in Go

    def _check_ready(self) -> None:
        self._check_open()
        if self.server_key is None:
            raise DerpProtocolError("cannot send before the server key is known")

    def send_packet(self, dst: NodePublic, packet: bytes) -> None:
        """Relay ``packet`` (≤ 64 KiB) to the node holding ``dst``."""
        self._check_ready()
        self._queue(f.SendPacket(dst, packet))

    def send_packets(self, dst: NodePublic, packets: list[bytes] | tuple[bytes, ...]) -> tuple[int, int]:
        """Frame a burst to ``dst`` straight into the output: ``(bytes of packets queued, packets
        skipped)``. A packet over ``MAX_PACKET_SIZE`` (which ``send_packet`` refuses with
        ``FrameTooLargeError``) is skipped and counted, so one bad packet does not cost the burst."""
        self._check_ready()
        return frame_send_packets(self._out, dst.raw, packets)

    def note_preferred(self, preferred: bool) -> None:
        self._check_ready()
        self._queue(f.NotePreferred(preferred))

    def send_ping(self, data: bytes) -> None:
        self._check_ready()
        super().send_ping(data)

    def send_pong(self, data: bytes) -> None:
        self._check_ready()
        super().send_pong(data)

    def send_frame(self, frame: f.Frame) -> None:
        """Any other frame (mesh clients: WatchConns, ClosePeer, ForwardPacket)."""
        self._check_ready()
        self._queue(frame)

    def note_activity(self, now: float) -> None:
        """Frames arrived that the driver handled without this connection (magicsock's packet lane,
        ``RecvSplitter``): they count against the read deadline as if received here."""
        self._last_recv = max(self._last_recv, now)

    def next_deadline(self) -> float | None:
        """When the connection is dead if nothing arrives (the Go client's 120 s read deadline)."""
        return None if self.state is State.CLOSED else self._last_recv + self.read_timeout

    def handle_timeout(self, now: float) -> None:
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            raise self._fail(DerpTimeoutError(f"no frame from the DERP server for {self.read_timeout:g} s"))


def frame_send_packets(out: bytearray, key: bytes, packets: Sequence[bytes | bytearray]) -> tuple[int, int]:
    """Append a SendPacket frame to the 32-byte ``key`` for each of ``packets`` to ``out``: ``(bytes of
    packets framed, packets skipped)``; a packet over ``MAX_PACKET_SIZE`` is skipped. The framing of
    ``ClientConnection.send_packets``, for a writer that is not the connection (magicsock's send lane)."""
    pack = _LEN.pack
    n = skipped = 0
    for p in packets:
        size = len(p)
        if size > f.MAX_PACKET_SIZE:
            skipped += 1
            continue
        out += _SEND_HEADER
        out += pack(f.KEY_LEN + size)
        out += key
        out += p
        n += size
    return n, skipped


_CLIENT_RECEIVES = frozenset(
    {
        f.FrameType.RECV_PACKET, f.FrameType.KEEP_ALIVE, f.FrameType.PEER_GONE, f.FrameType.PEER_PRESENT,
        f.FrameType.PING, f.FrameType.PONG, f.FrameType.HEALTH, f.FrameType.RESTARTING,
    }
)
_SERVER_RECEIVES = frozenset(
    {f.FrameType.SEND_PACKET, f.FrameType.NOTE_PREFERRED, f.FrameType.PING, f.FrameType.PONG}
)
_MESH_ONLY = frozenset({f.FrameType.FORWARD_PACKET, f.FrameType.WATCH_CONNS, f.FrameType.CLOSE_PEER})


class ServerConnection(_Connection):
    """The server end of one client's DERP stream.

    ServerKey is queued on construction. After ``ClientAuthenticated`` the owner (the DERP server)
    registers the client and calls ``accept()``, which queues ServerInfo. Client Pings are answered
    automatically (and still reported). Mesh-only frames from a client without the server's mesh key
    are a ``DerpProtocolError`` ("insufficient permissions" in Go). Keep-alives are due every
    ``keep_alive`` seconds plus ``jitter()``; pass ``jitter=lambda: 0.0`` for determinism.
    """

    def __init__(
        self,
        private: NodePrivate,
        now: float,
        *,
        mesh_key: bytes | None = None,
        handshake_timeout: float = SERVER_HANDSHAKE_TIMEOUT,
        keep_alive: float = f.KEEP_ALIVE,
        jitter: Callable[[], float] = lambda: random.uniform(0.0, KEEP_ALIVE_JITTER),
        max_frame_len: int = SERVER_MAX_FRAME_LEN,
    ) -> None:
        super().__init__(private, max_frame_len)
        self.mesh_key = mesh_key
        self.keep_alive = keep_alive
        self._jitter = jitter
        self.client_key: NodePublic | None = None
        self.client_info: ClientInfo | None = None
        self.is_mesh_peer = False
        self._handshake_deadline = now + handshake_timeout
        self._next_keep_alive: float | None = None
        self.state = State.AWAIT_CLIENT_INFO
        self._queue(f.ServerKey(self.public))

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        self._check_open()
        try:
            raw = self._reader.feed_raw(data)
            events: list[Event] = []
            for t, payload in raw:
                events.extend(self._on_frame(t, payload))
        except WireError as e:
            raise self._fail(e) from None
        return events

    def receive_packets(self, data: bytes, now: float) -> list[Event | RawPacket]:
        """``receive_data``, but after ClientInfo each SendPacket is ``(dst raw, packet)``.

        The checks are SendPacket's: shorter than a key or a packet over ``MAX_PACKET_SIZE`` is a
        ``DerpParseError`` (the stream closes), as on the frame path."""
        self._check_open()
        try:
            raw = self._reader.feed_split(data, _SEND_PACKET)
            events: list[Event | RawPacket] = []
            append = events.append
            for t, payload, packet in raw:
                if packet is not None and self.state is not State.AWAIT_CLIENT_INFO:
                    if len(packet) > f.MAX_PACKET_SIZE:
                        raise FrameTooLargeError(
                            f"packet of {len(packet)} bytes exceeds MaxPacketSize {f.MAX_PACKET_SIZE}")
                    append((payload, packet))
                else:  # a short SendPacket fails here, as SendPacket.parse fails it
                    events.extend(self._on_frame(t, payload if packet is None else payload + packet))
        except WireError as e:
            raise self._fail(e) from None
        return events

    def _on_frame(self, t: int, payload: bytes) -> list[Event]:
        if self.state is State.AWAIT_CLIENT_INFO:
            if t != f.FrameType.CLIENT_INFO:
                raise DerpProtocolError(f"bad frame type 0x{t:x}, want ClientInfo")
            frame = f.ClientInfoFrame.parse(payload)
            info = open_client_info(self.private, frame)
            self.client_key, self.client_info = frame.client_key, info
            self.is_mesh_peer = info.mesh_key_matches(self.mesh_key)
            self.state = State.AWAIT_ACCEPT
            return [ClientAuthenticated(frame.client_key, info, self.is_mesh_peer)]
        if t in _MESH_ONLY:
            if not self.is_mesh_peer:
                raise DerpProtocolError("insufficient permissions: mesh frame from a non-mesh client")
        elif t not in _SERVER_RECEIVES:
            return []  # Go's server reads and discards any other frame type
        frame2 = f.decode(t, payload)
        if isinstance(frame2, f.Ping):
            self._queue(f.Pong(frame2.data))
        return [FrameReceived(frame2)]

    def accept(self, now: float, info: ServerInfo | None = None) -> None:
        """Admit the authenticated client: queue ServerInfo and start the keep-alive timer."""
        if self.state is not State.AWAIT_ACCEPT or self.client_key is None:
            raise DerpProtocolError(f"accept() in state {self.state.name}")
        self._queue(seal_server_info(self.private, self.client_key, info or ServerInfo()))
        self.state = State.CONNECTED
        self._next_keep_alive = now + self.keep_alive + self._jitter()

    def _check_connected(self) -> None:
        if self.state is not State.CONNECTED:
            raise DerpProtocolError(f"cannot send in state {self.state.name}")

    def send_packet(self, src: NodePublic, packet: bytes) -> None:
        """Deliver ``packet`` from ``src`` to this client (RecvPacket, v2)."""
        self._check_connected()
        self._queue(f.RecvPacket(src, packet))

    def send_frame(self, frame: f.Frame) -> None:
        """Any other server→client frame: PeerGone, PeerPresent, Health, Restarting, KeepAlive, Ping."""
        self._check_connected()
        self._queue(frame)

    def next_deadline(self) -> float | None:
        if self.state in (State.AWAIT_CLIENT_INFO, State.AWAIT_ACCEPT):
            return self._handshake_deadline
        if self.state is State.CONNECTED:
            return self._next_keep_alive
        return None

    def handle_timeout(self, now: float) -> None:
        """Fail a handshake that overran its window; queue a KeepAlive when one is due."""
        if self.state in (State.AWAIT_CLIENT_INFO, State.AWAIT_ACCEPT):
            if now >= self._handshake_deadline:
                raise self._fail(DerpTimeoutError("no ClientInfo within the handshake window"))
        elif (
            self.state is State.CONNECTED
            and self._next_keep_alive is not None
            and now >= self._next_keep_alive
        ):
            self._queue(f.KeepAlive())
            self._next_keep_alive = now + self.keep_alive + self._jitter()
