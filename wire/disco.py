"""Disco: the NaCl-boxed discovery messages magicsock exchanges over UDP and DERP.

Packet: ``magic "TS💬" (6) ‖ sender disco public key (32) ‖ nonce (24) ‖ box(type ‖ version ‖ payload)``,
the box being ``crypto_box`` between the two disco keys (Go ``disco/disco.go``,
``types/key/disco.go``). Parsing is as lax as Go's — trailing bytes ignored, CallMeMaybe with a bad
length yields no endpoints — and unknown message types come back as ``UnknownMessage`` so the
caller can ignore them. Facts: ``docs/protocol/disco.md`` sections 1-2.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, Self

from nacl.public import Box, PrivateKey, PublicKey

from pytsnet.wire.errors import CryptoError, ParseError
from pytsnet.wire.ip16 import IPAddress, pack_ip16, unpack_ip16
from pytsnet.wire.keys import DiscoPrivate, DiscoPublic, NodePublic

MAGIC = "TS💬".encode()  # 54 53 f0 9f 92 ac
KEY_LEN = 32
NONCE_LEN = 24
HEADER_LEN = len(MAGIC) + KEY_LEN + NONCE_LEN  # 62: LooksLikeDiscoWrapper's minimum
MESSAGE_HEADER_LEN = 2
PING_LEN = 12 + KEY_LEN
PONG_LEN = 12 + 16 + 2
EP_LENGTH = 16 + 2
BIND_UDP_RELAY_ENDPOINT_COMMON_LEN = 72
BIND_UDP_RELAY_CHALLENGE_LEN = 32
ALLOCATE_UDP_RELAY_ENDPOINT_REQUEST_LEN = 2 * KEY_LEN + 4
UDP_RELAY_ENDPOINT_LEN_MINUS_ADDR_PORTS = 3 * KEY_LEN + 8 + 4 + 8 + 8
MAX_DISCO_PING_SIZE = 65495 - 20 - 8  # tstun.MaxPacketSize - IPv4 - UDP headers (endpoint.go)
_BOX_OVERHEAD = 16
V0 = 0

AddrPort = tuple[IPAddress, int]


class MessageType(IntEnum):
    PING = 0x01
    PONG = 0x02
    CALL_ME_MAYBE = 0x03
    BIND_UDP_RELAY_ENDPOINT = 0x04
    BIND_UDP_RELAY_ENDPOINT_CHALLENGE = 0x05
    BIND_UDP_RELAY_ENDPOINT_ANSWER = 0x06
    CALL_ME_MAYBE_VIA = 0x07
    ALLOCATE_UDP_RELAY_ENDPOINT_REQUEST = 0x08
    ALLOCATE_UDP_RELAY_ENDPOINT_RESPONSE = 0x09


class DiscoParseError(ParseError):
    """Not a disco packet, or a known message type that is too short."""


class DiscoCryptoError(CryptoError):
    """The box did not open with our disco key and the claimed sender key (Go drops these silently)."""


def _encode_addr_ports(aps: tuple[AddrPort, ...]) -> bytes:
    return b"".join(pack_ip16(a) + struct.pack(">H", p) for a, p in aps)


def _decode_addr_ports(b: bytes) -> tuple[AddrPort, ...]:
    return tuple(
        (unpack_ip16(b[i : i + 16]), struct.unpack_from(">H", b, i + 16)[0])
        for i in range(0, len(b), EP_LENGTH)
    )


@dataclass(frozen=True, slots=True)
class Ping:
    """``node_key`` is absent from ≤1.16 senders; ``padding`` zero bytes probe the path MTU."""

    tx_id: bytes
    node_key: NodePublic | None = None
    padding: int = 0

    def payload(self) -> bytes:
        if len(self.tx_id) != 12:
            raise DiscoParseError("TxID must be 12 bytes")
        key = self.node_key.raw if self.node_key is not None and not self.node_key.is_zero() else b""
        if not 0 <= self.padding <= MAX_DISCO_PING_SIZE:
            raise DiscoParseError(f"ping padding {self.padding} out of range")
        return self.tx_id + key + bytes(self.padding)

    @classmethod
    def parse(cls, ver: int, p: bytes) -> Ping:
        if len(p) < 12:
            raise DiscoParseError("short ping")
        padding = len(p) - 12
        key = None
        if len(p) - 12 >= KEY_LEN:  # deliberately lax on longer messages, as Go is
            k = NodePublic.from_raw(p[12 : 12 + KEY_LEN])
            key = None if k.is_zero() else k
            padding -= KEY_LEN
        return cls(bytes(p[:12]), key, padding)


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a Ping; ``src`` is where the Ping came from (effectively a STUN answer)."""

    tx_id: bytes
    src: AddrPort

    def payload(self) -> bytes:
        if len(self.tx_id) != 12:
            raise DiscoParseError("TxID must be 12 bytes")
        return self.tx_id + pack_ip16(self.src[0]) + struct.pack(">H", self.src[1])

    @classmethod
    def parse(cls, ver: int, p: bytes) -> Pong:
        if len(p) < PONG_LEN:
            raise DiscoParseError("short pong")
        return cls(bytes(p[:12]), (unpack_ip16(p[12:28]), struct.unpack_from(">H", p, 28)[0]))


@dataclass(frozen=True, slots=True)
class CallMeMaybe:
    """Sent only over DERP: the sender's endpoints, so the receiver pings them."""

    my_number: tuple[AddrPort, ...] = ()

    def payload(self) -> bytes:
        return _encode_addr_ports(self.my_number)

    @classmethod
    def parse(cls, ver: int, p: bytes) -> CallMeMaybe:
        if len(p) % EP_LENGTH != 0 or ver != 0 or not p:
            return cls()  # Go accepts the message with no endpoints
        return cls(_decode_addr_ports(p))


@dataclass(frozen=True, slots=True)
class BindUDPRelayEndpointCommon:
    vni: int
    generation: int
    remote_key: DiscoPublic
    challenge: bytes = bytes(BIND_UDP_RELAY_CHALLENGE_LEN)

    def payload(self) -> bytes:
        if len(self.challenge) != BIND_UDP_RELAY_CHALLENGE_LEN:
            raise DiscoParseError("challenge must be 32 bytes")
        return struct.pack(">II", self.vni, self.generation) + self.remote_key.raw + self.challenge

    @classmethod
    def parse(cls, ver: int, p: bytes) -> Self:  # the subclass it is called on
        if len(p) < BIND_UDP_RELAY_ENDPOINT_COMMON_LEN:
            raise DiscoParseError("short bind-udp-relay message")
        vni, gen = struct.unpack_from(">II", p)
        return cls(vni, gen, DiscoPublic.from_raw(p[8:40]), bytes(p[40:72]))


class BindUDPRelayEndpoint(BindUDPRelayEndpointCommon):
    __slots__ = ()


class BindUDPRelayEndpointChallenge(BindUDPRelayEndpointCommon):
    __slots__ = ()


class BindUDPRelayEndpointAnswer(BindUDPRelayEndpointCommon):
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class UDPRelayEndpoint:
    """Mirror of Go's ``udprelay/endpoint.ServerEndpoint``; lifetimes are Go durations in nanoseconds."""

    server_disco: DiscoPublic
    client_disco: tuple[DiscoPublic, DiscoPublic]
    lamport_id: int
    vni: int
    bind_lifetime_ns: int
    steady_state_lifetime_ns: int
    addr_ports: tuple[AddrPort, ...] = field(default=())

    def encode(self) -> bytes:
        return (
            self.server_disco.raw
            + self.client_disco[0].raw
            + self.client_disco[1].raw
            + struct.pack(
                ">QIQQ",
                self.lamport_id,
                self.vni,
                self.bind_lifetime_ns & (2**64 - 1),
                self.steady_state_lifetime_ns & (2**64 - 1),
            )
            + _encode_addr_ports(self.addr_ports)
        )

    @classmethod
    def decode(cls, b: bytes) -> UDPRelayEndpoint:
        n = UDP_RELAY_ENDPOINT_LEN_MINUS_ADDR_PORTS
        if len(b) < n + EP_LENGTH or (len(b) - n) % EP_LENGTH:
            raise DiscoParseError("short or ragged UDP relay endpoint")
        lamport, vni, bind, steady = struct.unpack_from(">QIQQ", b, 96)
        return cls(
            DiscoPublic.from_raw(b[0:32]),
            (DiscoPublic.from_raw(b[32:64]), DiscoPublic.from_raw(b[64:96])),
            lamport,
            vni,
            _signed64(bind),
            _signed64(steady),
            _decode_addr_ports(b[n:]),
        )


def _signed64(v: int) -> int:
    return v - 2**64 if v >= 2**63 else v


@dataclass(frozen=True, slots=True)
class CallMeMaybeVia:
    endpoint: UDPRelayEndpoint

    def payload(self) -> bytes:
        return self.endpoint.encode()

    @classmethod
    def parse(cls, ver: int, p: bytes) -> CallMeMaybeVia | UnknownMessage:
        if ver != 0:
            return UnknownMessage(MessageType.CALL_ME_MAYBE_VIA, ver, bytes(p))  # Go: empty message
        return cls(UDPRelayEndpoint.decode(p))


@dataclass(frozen=True, slots=True)
class AllocateUDPRelayEndpointRequest:
    client_disco: tuple[DiscoPublic, DiscoPublic]
    generation: int

    def payload(self) -> bytes:
        return self.client_disco[0].raw + self.client_disco[1].raw + struct.pack(">I", self.generation)

    @classmethod
    def parse(cls, ver: int, p: bytes) -> AllocateUDPRelayEndpointRequest | UnknownMessage:
        if ver != 0:
            return UnknownMessage(MessageType.ALLOCATE_UDP_RELAY_ENDPOINT_REQUEST, ver, bytes(p))
        if len(p) < ALLOCATE_UDP_RELAY_ENDPOINT_REQUEST_LEN:
            raise DiscoParseError("short allocate-udp-relay-endpoint request")
        return cls(
            (DiscoPublic.from_raw(p[0:32]), DiscoPublic.from_raw(p[32:64])),
            struct.unpack_from(">I", p, 64)[0],
        )


@dataclass(frozen=True, slots=True)
class AllocateUDPRelayEndpointResponse:
    generation: int
    endpoint: UDPRelayEndpoint

    def payload(self) -> bytes:
        return struct.pack(">I", self.generation) + self.endpoint.encode()

    @classmethod
    def parse(cls, ver: int, p: bytes) -> AllocateUDPRelayEndpointResponse | UnknownMessage:
        if ver != 0:
            return UnknownMessage(MessageType.ALLOCATE_UDP_RELAY_ENDPOINT_RESPONSE, ver, bytes(p))
        if len(p) < 4:
            raise DiscoParseError("short allocate-udp-relay-endpoint response")
        return cls(struct.unpack_from(">I", p)[0], UDPRelayEndpoint.decode(p[4:]))


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A type (or version) this port does not understand; magicsock ignores these."""

    message_type: int
    version: int
    data: bytes


Message = (
    Ping | Pong | CallMeMaybe | BindUDPRelayEndpoint | BindUDPRelayEndpointChallenge
    | BindUDPRelayEndpointAnswer | CallMeMaybeVia | AllocateUDPRelayEndpointRequest
    | AllocateUDPRelayEndpointResponse | UnknownMessage
)

class _Parses(Protocol):
    def parse(self, ver: int, p: bytes) -> Message: ...


_TYPES: dict[_Parses, MessageType] = {
    Ping: MessageType.PING,
    Pong: MessageType.PONG,
    CallMeMaybe: MessageType.CALL_ME_MAYBE,
    BindUDPRelayEndpoint: MessageType.BIND_UDP_RELAY_ENDPOINT,
    BindUDPRelayEndpointChallenge: MessageType.BIND_UDP_RELAY_ENDPOINT_CHALLENGE,
    BindUDPRelayEndpointAnswer: MessageType.BIND_UDP_RELAY_ENDPOINT_ANSWER,
    CallMeMaybeVia: MessageType.CALL_ME_MAYBE_VIA,
    AllocateUDPRelayEndpointRequest: MessageType.ALLOCATE_UDP_RELAY_ENDPOINT_REQUEST,
    AllocateUDPRelayEndpointResponse: MessageType.ALLOCATE_UDP_RELAY_ENDPOINT_RESPONSE,
}
_PARSERS: dict[int, Callable[[int, bytes], Message]] = {
    t: cls.parse for cls, t in _TYPES.items()
}


def marshal(msg: Message) -> bytes:
    """The inner (pre-box) bytes: ``type ‖ version 0 ‖ payload``."""
    if isinstance(msg, UnknownMessage):
        return bytes([msg.message_type, msg.version]) + msg.data
    return bytes([_TYPES[type(msg)], V0]) + msg.payload()


def parse(p: bytes) -> Message:
    """The message inside an opened box."""
    if len(p) < MESSAGE_HEADER_LEN:
        raise DiscoParseError("short message")
    t, ver, body = p[0], p[1], bytes(p[2:])
    parser = _PARSERS.get(t)
    if parser is None:
        return UnknownMessage(t, ver, body)
    return parser(ver, body)


def looks_like_disco_wrapper(p: bytes) -> bool:
    """Go ``LooksLikeDiscoWrapper``: long enough for magic, key and nonce, and starts with the magic."""
    return len(p) >= HEADER_LEN and p[: len(MAGIC)] == MAGIC


def source(p: bytes) -> DiscoPublic:
    """The cleartext sender disco key of a disco packet."""
    if not looks_like_disco_wrapper(p):
        raise DiscoParseError("not a disco packet")
    return DiscoPublic.from_raw(p[len(MAGIC) : len(MAGIC) + KEY_LEN])


class DiscoShared:
    """The precomputed NaCl box key between our disco key and one peer's (Go ``DiscoShared``)."""

    __slots__ = ("_box",)

    def __init__(self, mine: DiscoPrivate, peer: DiscoPublic) -> None:
        try:
            self._box = Box(PrivateKey(mine.raw), PublicKey(peer.raw))
        except Exception as e:  # libsodium refuses low-order public keys
            raise DiscoCryptoError("cannot derive a disco box key with this peer key") from e

    def seal(self, plaintext: bytes, nonce: bytes | None = None) -> bytes:
        """``nonce ‖ box``."""
        return bytes(self._box.encrypt(plaintext, os.urandom(NONCE_LEN) if nonce is None else nonce))

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < NONCE_LEN + _BOX_OVERHEAD:
            raise DiscoCryptoError("disco box too short")
        try:
            return bytes(self._box.decrypt(sealed))
        except Exception as e:  # nacl.exceptions.CryptoError
            raise DiscoCryptoError("disco box did not open") from e


def seal_packet(
    mine: DiscoPrivate, peer: DiscoPublic | DiscoShared, msg: Message, nonce: bytes | None = None
) -> bytes:
    """A whole disco packet from us to ``peer`` (pass a cached ``DiscoShared`` to skip the X25519)."""
    shared = peer if isinstance(peer, DiscoShared) else DiscoShared(mine, peer)
    return MAGIC + mine.public().raw + shared.seal(marshal(msg), nonce)


def open_packet(
    mine: DiscoPrivate, packet: bytes, shared: DiscoShared | None = None
) -> tuple[DiscoPublic, Message]:
    """``(sender, message)`` of a disco packet sent to us. ``shared``, if given, must be for the sender."""
    sender = source(packet)
    box = shared if shared is not None else DiscoShared(mine, sender)
    return sender, parse(box.open(packet[len(MAGIC) + KEY_LEN :]))
