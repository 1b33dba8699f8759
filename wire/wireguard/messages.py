"""WireGuard message layouts (device/noise-protocol.go): parse and emit, strict sizes.

Integers are little-endian; the type is one byte followed by three zero bytes. Parsers return a
typed value or raise ``WireGuardParseError`` and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pytsnet.wire.errors import ParseError
from pytsnet.wire.wireguard.constants import (
    MESSAGE_COOKIE_REPLY_SIZE,
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_INITIATION_TYPE,
    MESSAGE_RESPONSE_SIZE,
    MESSAGE_RESPONSE_TYPE,
    MESSAGE_TRANSPORT_SIZE,
    MESSAGE_TRANSPORT_TYPE,
)


class WireGuardParseError(ParseError):
    """Bytes that are not a WireGuard message of the expected type and size."""


_INITIATION = struct.Struct("<II32s48s28s16s16s")
_RESPONSE = struct.Struct("<III32s16s16s16s")
_COOKIE_REPLY = struct.Struct("<II24s32s")
TRANSPORT_HEADER = struct.Struct("<IIQ")

# mac1 covers everything before it; mac2 everything before mac2.
INITIATION_MAC1_OFFSET = 116
INITIATION_MAC2_OFFSET = 132
RESPONSE_MAC1_OFFSET = 60
RESPONSE_MAC2_OFFSET = 76


@dataclass(frozen=True, slots=True)
class MessageInitiation:
    sender: int
    ephemeral: bytes
    static: bytes  # encrypted (32 + tag)
    timestamp: bytes  # encrypted (12 + tag)
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def emit(self) -> bytes:
        return _INITIATION.pack(
            MESSAGE_INITIATION_TYPE,
            self.sender,
            self.ephemeral,
            self.static,
            self.timestamp,
            self.mac1,
            self.mac2,
        )


@dataclass(frozen=True, slots=True)
class MessageResponse:
    sender: int
    receiver: int
    ephemeral: bytes
    empty: bytes  # encrypted empty payload (tag only)
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def emit(self) -> bytes:
        return _RESPONSE.pack(
            MESSAGE_RESPONSE_TYPE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.empty,
            self.mac1,
            self.mac2,
        )


@dataclass(frozen=True, slots=True)
class MessageCookieReply:
    receiver: int
    nonce: bytes
    cookie: bytes  # encrypted (16 + tag)

    def emit(self) -> bytes:
        return _COOKIE_REPLY.pack(MESSAGE_COOKIE_REPLY_TYPE, self.receiver, self.nonce, self.cookie)


@dataclass(frozen=True, slots=True)
class MessageTransportHeader:
    receiver: int
    counter: int


Message = MessageInitiation | MessageResponse | MessageCookieReply | MessageTransportHeader


def message_type(datagram: bytes) -> int:
    """The message type, or ``WireGuardParseError`` if the 4-byte type field is not 1..4."""
    if len(datagram) < 4:
        raise WireGuardParseError("datagram shorter than the type field")
    t = datagram[0]
    if datagram[1:4] != b"\x00\x00\x00" or not MESSAGE_INITIATION_TYPE <= t <= MESSAGE_TRANSPORT_TYPE:
        raise WireGuardParseError("not a WireGuard message type")
    return t


def _check(datagram: bytes, want_type: int, size: int, exact: bool = True) -> None:
    if message_type(datagram) != want_type:
        raise WireGuardParseError(f"expected message type {want_type}")
    n = len(datagram)
    if (exact and n != size) or n < size:
        raise WireGuardParseError(f"message type {want_type} must be {size} bytes, got {n}")


def parse_initiation(datagram: bytes) -> MessageInitiation:
    _check(datagram, MESSAGE_INITIATION_TYPE, MESSAGE_INITIATION_SIZE)
    _, sender, eph, static, ts, m1, m2 = _INITIATION.unpack(datagram)
    return MessageInitiation(sender, eph, static, ts, m1, m2)


def parse_response(datagram: bytes) -> MessageResponse:
    _check(datagram, MESSAGE_RESPONSE_TYPE, MESSAGE_RESPONSE_SIZE)
    _, sender, receiver, eph, empty, m1, m2 = _RESPONSE.unpack(datagram)
    return MessageResponse(sender, receiver, eph, empty, m1, m2)


def parse_cookie_reply(datagram: bytes) -> MessageCookieReply:
    _check(datagram, MESSAGE_COOKIE_REPLY_TYPE, MESSAGE_COOKIE_REPLY_SIZE)
    _, receiver, nonce, cookie = _COOKIE_REPLY.unpack(datagram)
    return MessageCookieReply(receiver, nonce, cookie)


def parse_transport_header(datagram: bytes) -> MessageTransportHeader:
    """Header of a transport message; at least header + tag (a keepalive) must be present."""
    _check(datagram, MESSAGE_TRANSPORT_TYPE, MESSAGE_TRANSPORT_SIZE, exact=False)
    _, receiver, counter = TRANSPORT_HEADER.unpack_from(datagram)
    return MessageTransportHeader(receiver, counter)


def parse(datagram: bytes) -> Message:
    """Any WireGuard message, dispatched on its type."""
    t = message_type(datagram)
    if t == MESSAGE_INITIATION_TYPE:
        return parse_initiation(datagram)
    if t == MESSAGE_RESPONSE_TYPE:
        return parse_response(datagram)
    if t == MESSAGE_COOKIE_REPLY_TYPE:
        return parse_cookie_reply(datagram)
    return parse_transport_header(datagram)
