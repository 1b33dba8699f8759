"""Every DERP frame type: ``encode(frame)`` to bytes, ``decode(type, payload)`` back.

A frame is ``type (1) ‖ length (4, big-endian) ‖ payload`` (Go ``derp/derp.go``). Payload layouts
and limits follow ``docs/protocol/derp.md`` §4. Decoding is exactly as lenient as Go's readers are
(extra trailing bytes after a Ping, optional PeerGone reason, old-server PeerPresent forms) and no
more; anything else is a ``DerpParseError``. Unknown frame types decode to ``UnknownFrame`` so the
caller can skip them, as both Go ends do.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from pytsnet.wire.derp.errors import DerpParseError, FrameTooLargeError
from pytsnet.wire.ip16 import IPAddress, pack_ip16, unpack_ip16
from pytsnet.wire.keys import NodePublic

PROTOCOL_VERSION = 2
MAGIC = "DERP🔑".encode()  # 44 45 52 50 f0 9f 94 91
FRAME_HEADER_LEN = 5
KEY_LEN = 32
NONCE_LEN = 24
MAX_INFO_LEN = 1 << 20
MAX_PACKET_SIZE = 64 << 10
KEEP_ALIVE = 60.0  # seconds between server keep-alives (plus up to 5 s jitter)
MAX_FRAME_WRITE = 10 << 20  # Go's WriteFrame refuses anything larger
FAST_START_HEADER = "Derp-Fast-Start"
IDEAL_NODE_HEADER = "Ideal-Node"

AddrPort = tuple[IPAddress, int]

_HEADER = struct.Struct(">BI")


class FrameType(IntEnum):
    SERVER_KEY = 0x01
    CLIENT_INFO = 0x02
    SERVER_INFO = 0x03
    SEND_PACKET = 0x04
    RECV_PACKET = 0x05
    KEEP_ALIVE = 0x06
    NOTE_PREFERRED = 0x07
    PEER_GONE = 0x08
    PEER_PRESENT = 0x09
    FORWARD_PACKET = 0x0A
    WATCH_CONNS = 0x10
    CLOSE_PEER = 0x11
    PING = 0x12
    PONG = 0x13
    HEALTH = 0x14
    RESTARTING = 0x15


class PeerGoneReason(IntEnum):
    DISCONNECTED = 0x00
    NOT_HERE = 0x01
    MESH_CONN_BROKE = 0xF0  # invented by Go's mesh client; never on the wire


PEER_PRESENT_IS_REGULAR = 1 << 0
PEER_PRESENT_IS_MESH_PEER = 1 << 1
PEER_PRESENT_IS_PROBER = 1 << 2
PEER_PRESENT_NOT_IDEAL = 1 << 3


def _key(b: bytes | memoryview) -> NodePublic:
    return NodePublic.from_raw(bytes(b))


def _check_packet(n: int) -> None:
    if n > MAX_PACKET_SIZE:
        raise FrameTooLargeError(f"packet of {n} bytes exceeds MaxPacketSize {MAX_PACKET_SIZE}")


@dataclass(frozen=True, slots=True)
class ServerKey:
    """S→C, first frame: the server's node public key behind the magic."""

    TYPE: ClassVar[FrameType] = FrameType.SERVER_KEY
    key: NodePublic
    extra: bytes = b""  # "future use" bytes; Go ignores them

    def payload(self) -> bytes:
        return MAGIC + self.key.raw + self.extra

    @classmethod
    def parse(cls, p: bytes) -> ServerKey:
        if len(p) < len(MAGIC) + KEY_LEN:
            raise DerpParseError(f"ServerKey frame of {len(p)} bytes, need {len(MAGIC) + KEY_LEN}")
        if p[: len(MAGIC)] != MAGIC:
            raise DerpParseError("ServerKey frame lacks the DERP magic")
        return cls(_key(p[8:40]), bytes(p[40:]))


@dataclass(frozen=True, slots=True)
class ClientInfoFrame:
    """C→S: the client's public key and its sealed ClientInfo JSON (nonce ‖ box), see ``client_info``."""

    TYPE: ClassVar[FrameType] = FrameType.CLIENT_INFO
    client_key: NodePublic
    sealed: bytes

    def payload(self) -> bytes:
        return self.client_key.raw + self.sealed

    @classmethod
    def parse(cls, p: bytes) -> ClientInfoFrame:
        if len(p) < KEY_LEN + NONCE_LEN:
            raise DerpParseError(f"short ClientInfo frame ({len(p)} bytes)")
        return cls(_key(p[:KEY_LEN]), bytes(p[KEY_LEN:]))


@dataclass(frozen=True, slots=True)
class ServerInfoFrame:
    """S→C: the sealed ServerInfo JSON (nonce ‖ box)."""

    TYPE: ClassVar[FrameType] = FrameType.SERVER_INFO
    sealed: bytes

    def payload(self) -> bytes:
        return self.sealed

    @classmethod
    def parse(cls, p: bytes) -> ServerInfoFrame:
        if len(p) < NONCE_LEN:
            raise DerpParseError(f"short ServerInfo frame ({len(p)} bytes)")
        if len(p) > MAX_INFO_LEN:
            raise FrameTooLargeError(f"ServerInfo frame of {len(p)} bytes exceeds MaxInfoLen")
        return cls(bytes(p))


@dataclass(frozen=True, slots=True)
class SendPacket:
    """C→S: relay ``packet`` to the client holding node key ``dst``."""

    TYPE: ClassVar[FrameType] = FrameType.SEND_PACKET
    dst: NodePublic
    packet: bytes

    def payload(self) -> bytes:
        _check_packet(len(self.packet))
        return self.dst.raw + self.packet

    @classmethod
    def parse(cls, p: bytes) -> SendPacket:
        if len(p) < KEY_LEN:
            raise DerpParseError("short SendPacket frame")
        _check_packet(len(p) - KEY_LEN)
        return cls(_key(p[:KEY_LEN]), bytes(p[KEY_LEN:]))


@dataclass(frozen=True, slots=True)
class RecvPacket:
    """S→C (protocol v2): ``packet`` relayed from node key ``src``."""

    TYPE: ClassVar[FrameType] = FrameType.RECV_PACKET
    src: NodePublic
    packet: bytes

    def payload(self) -> bytes:
        _check_packet(len(self.packet))
        return self.src.raw + self.packet

    @classmethod
    def parse(cls, p: bytes) -> RecvPacket:
        if len(p) < KEY_LEN:
            raise DerpParseError("short RecvPacket frame")
        _check_packet(len(p) - KEY_LEN)
        return cls(_key(p[:KEY_LEN]), bytes(p[KEY_LEN:]))


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """S→C: one-way liveness; no reply. Any payload is ignored, as in Go."""

    TYPE: ClassVar[FrameType] = FrameType.KEEP_ALIVE

    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, p: bytes) -> KeepAlive:
        return cls()


@dataclass(frozen=True, slots=True)
class NotePreferred:
    """C→S: whether this server is the client's home (stats only). Exactly one byte."""

    TYPE: ClassVar[FrameType] = FrameType.NOTE_PREFERRED
    preferred: bool

    def payload(self) -> bytes:
        return b"\x01" if self.preferred else b"\x00"

    @classmethod
    def parse(cls, p: bytes) -> NotePreferred:
        if len(p) != 1:
            raise DerpParseError(f"NotePreferred frame must be 1 byte, got {len(p)}")
        return cls(p[0] != 0)


@dataclass(frozen=True, slots=True)
class PeerGone:
    """S→C: ``peer`` left (or, NOT_HERE, was never here). Old servers omit the reason byte."""

    TYPE: ClassVar[FrameType] = FrameType.PEER_GONE
    peer: NodePublic
    reason: int = PeerGoneReason.DISCONNECTED

    def payload(self) -> bytes:
        return self.peer.raw + bytes([self.reason])

    @classmethod
    def parse(cls, p: bytes) -> PeerGone:
        if len(p) < KEY_LEN:
            raise DerpParseError("short PeerGone frame")
        reason = p[KEY_LEN] if len(p) > KEY_LEN else PeerGoneReason.DISCONNECTED
        return cls(_key(p[:KEY_LEN]), reason)


@dataclass(frozen=True, slots=True)
class PeerPresent:
    """S→mesh watcher: ``key`` connected from ``addr`` with ``flags`` (both absent from old servers)."""

    TYPE: ClassVar[FrameType] = FrameType.PEER_PRESENT
    key: NodePublic
    addr: AddrPort | None = None
    flags: int | None = None

    def payload(self) -> bytes:
        out = self.key.raw
        if self.addr is not None:
            out += pack_ip16(self.addr[0]) + struct.pack(">H", self.addr[1])
            if self.flags is not None:
                out += bytes([self.flags])
        return out

    @classmethod
    def parse(cls, p: bytes) -> PeerPresent:
        if len(p) < KEY_LEN:
            raise DerpParseError("short PeerPresent frame")
        key = _key(p[:KEY_LEN])
        if len(p) < KEY_LEN + 18:
            return cls(key)
        addr = (unpack_ip16(bytes(p[32:48])), struct.unpack(">H", p[48:50])[0])
        if len(p) < KEY_LEN + 19:
            return cls(key, addr)
        return cls(key, addr, p[50])


@dataclass(frozen=True, slots=True)
class ForwardPacket:
    """mesh→S: a packet from ``src`` for ``dst`` forwarded by a mesh peer."""

    TYPE: ClassVar[FrameType] = FrameType.FORWARD_PACKET
    src: NodePublic
    dst: NodePublic
    packet: bytes

    def payload(self) -> bytes:
        _check_packet(len(self.packet))
        return self.src.raw + self.dst.raw + self.packet

    @classmethod
    def parse(cls, p: bytes) -> ForwardPacket:
        if len(p) < 2 * KEY_LEN:
            raise DerpParseError("short ForwardPacket frame")
        _check_packet(len(p) - 2 * KEY_LEN)
        return cls(_key(p[:32]), _key(p[32:64]), bytes(p[64:]))


@dataclass(frozen=True, slots=True)
class WatchConns:
    """mesh→S: subscribe to PeerPresent/PeerGone. Must be empty."""

    TYPE: ClassVar[FrameType] = FrameType.WATCH_CONNS

    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, p: bytes) -> WatchConns:
        if p:
            raise DerpParseError("WatchConns frame must be empty")
        return cls()


@dataclass(frozen=True, slots=True)
class ClosePeer:
    """mesh→S: disconnect the client holding ``peer``. Exactly one key."""

    TYPE: ClassVar[FrameType] = FrameType.CLOSE_PEER
    peer: NodePublic

    def payload(self) -> bytes:
        return self.peer.raw

    @classmethod
    def parse(cls, p: bytes) -> ClosePeer:
        if len(p) != KEY_LEN:
            raise DerpParseError(f"ClosePeer frame must be {KEY_LEN} bytes, got {len(p)}")
        return cls(_key(p))


def _ping_data(p: bytes, name: str) -> bytes:
    if len(p) < 8:
        raise DerpParseError(f"short {name} frame ({len(p)} bytes)")
    return bytes(p[:8])


@dataclass(frozen=True, slots=True)
class Ping:
    """Either direction: 8 opaque bytes to echo in a Pong. Extra bytes are ignored, as in Go."""

    TYPE: ClassVar[FrameType] = FrameType.PING
    data: bytes

    def payload(self) -> bytes:
        if len(self.data) != 8:
            raise DerpParseError("Ping data must be 8 bytes")
        return self.data

    @classmethod
    def parse(cls, p: bytes) -> Ping:
        return cls(_ping_data(p, "Ping"))


@dataclass(frozen=True, slots=True)
class Pong:
    """The 8 bytes of the Ping being answered."""

    TYPE: ClassVar[FrameType] = FrameType.PONG
    data: bytes

    def payload(self) -> bytes:
        if len(self.data) != 8:
            raise DerpParseError("Pong data must be 8 bytes")
        return self.data

    @classmethod
    def parse(cls, p: bytes) -> Pong:
        return cls(_ping_data(p, "Pong"))


@dataclass(frozen=True, slots=True)
class Health:
    """S→C: a problem description; empty means healthy again."""

    TYPE: ClassVar[FrameType] = FrameType.HEALTH
    problem: str

    def payload(self) -> bytes:
        return self.problem.encode()

    @classmethod
    def parse(cls, p: bytes) -> Health:
        return cls(bytes(p).decode("utf-8", errors="replace"))  # Go's string(b) never fails either


@dataclass(frozen=True, slots=True)
class Restarting:
    """S→C: the server restarts; reconnect in ``reconnect_in_ms`` and keep trying for ``try_for_ms``."""

    TYPE: ClassVar[FrameType] = FrameType.RESTARTING
    reconnect_in_ms: int
    try_for_ms: int

    def payload(self) -> bytes:
        return struct.pack(">II", self.reconnect_in_ms, self.try_for_ms)

    @classmethod
    def parse(cls, p: bytes) -> Restarting:
        if len(p) < 8:
            raise DerpParseError("short Restarting frame")
        a, b = struct.unpack(">II", p[:8])
        return cls(a, b)


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame type this codec does not know; both Go ends read and skip these."""

    frame_type: int
    data: bytes

    def payload(self) -> bytes:
        return self.data


Frame = (
    ServerKey | ClientInfoFrame | ServerInfoFrame | SendPacket | RecvPacket | KeepAlive | NotePreferred
    | PeerGone | PeerPresent | ForwardPacket | WatchConns | ClosePeer | Ping | Pong | Health | Restarting
    | UnknownFrame
)

_PARSERS = {
    cls.TYPE: cls.parse
    for cls in (
        ServerKey, ClientInfoFrame, ServerInfoFrame, SendPacket, RecvPacket, KeepAlive, NotePreferred,
        PeerGone, PeerPresent, ForwardPacket, WatchConns, ClosePeer, Ping, Pong, Health, Restarting,
    )
}


def frame_type_of(frame: Frame) -> int:
    return frame.frame_type if isinstance(frame, UnknownFrame) else int(frame.TYPE)


def encode_header(frame_type: int, length: int) -> bytes:
    if not 0 <= frame_type <= 0xFF:
        raise DerpParseError(f"frame type {frame_type} out of range")
    if length > MAX_FRAME_WRITE:
        raise FrameTooLargeError(f"frame of {length} bytes exceeds the {MAX_FRAME_WRITE}-byte write limit")
    return _HEADER.pack(frame_type, length)


def encode(frame: Frame) -> bytes:
    """Header and payload of ``frame``, ready for the byte stream."""
    payload = frame.payload()
    return encode_header(frame_type_of(frame), len(payload)) + payload


def parse_header(b: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(frame_type, payload_length)`` from the first 5 bytes of ``b``."""
    if len(b) < FRAME_HEADER_LEN:
        raise DerpParseError("short frame header")
    t, n = _HEADER.unpack_from(b)
    return t, n


def decode(frame_type: int, payload: bytes | memoryview) -> Frame:
    """The frame of ``frame_type`` carried in ``payload`` (the bytes after the 5-byte header)."""
    payload = bytes(payload)
    parser = _PARSERS.get(frame_type)  # type: ignore[call-overload]
    if parser is None:
        return UnknownFrame(frame_type, payload)
    return parser(payload)  # type: ignore[no-any-return]


def parse_frame(b: bytes) -> Frame:
    """One complete frame (header included, nothing after it)."""
    t, n = parse_header(b)
    if len(b) - FRAME_HEADER_LEN != n:
        raise DerpParseError(f"frame header says {n} bytes, have {len(b) - FRAME_HEADER_LEN}")
    return decode(t, memoryview(b)[FRAME_HEADER_LEN:])
