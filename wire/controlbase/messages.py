"""Handshake message layouts (control/controlbase/messages.go); all integers big-endian."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pytsnet.wire.controlbase.constants import (
    HEADER_LEN,
    INITIATION_HEADER_LEN,
    INITIATION_LEN,
    INITIATION_PAYLOAD_LEN,
    KEY_LEN,
    MAX_ERROR_TEXT_LEN,
    MSG_TYPE_ERROR,
    MSG_TYPE_INITIATION,
    MSG_TYPE_RESPONSE,
    RESPONSE_LEN,
    RESPONSE_PAYLOAD_LEN,
    TAG_LEN,
)
from pytsnet.wire.controlbase.errors import ControlParseError

_INIT_HEADER = struct.Struct(">HBH")
_HEADER = struct.Struct(">BH")


@dataclass(frozen=True, slots=True)
class InitiationMessage:
    """Client → server, 101 bytes: version · 0x01 · length 96 · e.pub · enc(machine pub) · tag."""

    version: int
    ephemeral_pub: bytes
    machine_pub_ciphertext: bytes
    tag: bytes

    def encode(self) -> bytes:
        return (_INIT_HEADER.pack(self.version, MSG_TYPE_INITIATION, INITIATION_PAYLOAD_LEN)
                + self.ephemeral_pub + self.machine_pub_ciphertext + self.tag)

    @classmethod
    def parse(cls, data: bytes) -> InitiationMessage:
        """Parse exactly one initiation; the checks (and their order) follow Go's ``Server``."""
        if len(data) != INITIATION_LEN:
            raise ControlParseError("wrong handshake initiation size")
        version, msg_type, length = _INIT_HEADER.unpack_from(data)
        if msg_type != MSG_TYPE_INITIATION:
            raise ControlParseError("unexpected handshake message type")
        if length != INITIATION_PAYLOAD_LEN:
            raise ControlParseError("wrong handshake initiation length")
        p = INITIATION_HEADER_LEN
        return cls(version=version,
                   ephemeral_pub=bytes(data[p:p + KEY_LEN]),
                   machine_pub_ciphertext=bytes(data[p + KEY_LEN:p + 2 * KEY_LEN + TAG_LEN]),
                   tag=bytes(data[p + 2 * KEY_LEN + TAG_LEN:]))


@dataclass(frozen=True, slots=True)
class ResponseMessage:
    """Server → client, 51 bytes: 0x02 · length 48 · e.pub · tag."""

    ephemeral_pub: bytes
    tag: bytes

    def encode(self) -> bytes:
        return _HEADER.pack(MSG_TYPE_RESPONSE, RESPONSE_PAYLOAD_LEN) + self.ephemeral_pub + self.tag

    @classmethod
    def parse(cls, data: bytes) -> ResponseMessage:
        if len(data) != RESPONSE_LEN:
            raise ControlParseError(f"handshake response must be {RESPONSE_LEN} bytes, got {len(data)}")
        msg_type, length = _HEADER.unpack_from(data)
        if msg_type != MSG_TYPE_RESPONSE:
            raise ControlParseError(f"unexpected response message type {msg_type}")
        if length != RESPONSE_PAYLOAD_LEN:
            raise ControlParseError(f"wrong length {length} received for handshake response")
        return cls(ephemeral_pub=bytes(data[HEADER_LEN:HEADER_LEN + KEY_LEN]),
                   tag=bytes(data[HEADER_LEN + KEY_LEN:]))


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """Server → client in place of a response: 0x03 · length · UTF-8 text (unauthenticated)."""

    text: str

    def encode(self) -> bytes:
        return encode_error_message(self.text)

    @classmethod
    def parse(cls, data: bytes) -> ErrorMessage:
        if len(data) < HEADER_LEN:
            raise ControlParseError("truncated error message header")
        msg_type, length = _HEADER.unpack_from(data)
        if msg_type != MSG_TYPE_ERROR:
            raise ControlParseError(f"not an error message: type {msg_type}")
        if len(data) != HEADER_LEN + length:
            raise ControlParseError("error message length does not match its header")
        return cls(text=bytes(data[HEADER_LEN:]).decode("utf-8", errors="replace"))


def encode_error_message(text: str) -> bytes:
    """The refusal a server sends instead of a response; text is truncated to fit the uint16 length.

    Never put attacker-controlled input in ``text`` (Go deliberately does not format it either).
    """
    raw = text.encode("utf-8")[:MAX_ERROR_TEXT_LEN]
    return _HEADER.pack(MSG_TYPE_ERROR, len(raw)) + raw
