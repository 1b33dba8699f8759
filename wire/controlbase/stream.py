"""Byte-stream adapters so an HTTP/2 connection (``h2``) can run over the Noise transport.

Feed raw socket bytes in, get the plaintext h2 wants; hand h2's output in, get bytes for the socket.
The client side also consumes the handshake response (or an error message) and the early payload.
"""

from __future__ import annotations

import struct

from pytsnet.wire.controlbase.conn import Conn
from pytsnet.wire.controlbase.constants import (
    HEADER_LEN,
    MSG_TYPE_ERROR,
    MSG_TYPE_RESPONSE,
    RESPONSE_LEN,
)
from pytsnet.wire.controlbase.early import EarlyPayloadReader, encode_early_payload
from pytsnet.wire.controlbase.errors import ControlParseError, ControlProtocolError, ServerErrorMessage
from pytsnet.wire.controlbase.handshake import Accepted, ClientHandshake
from pytsnet.wire.controlbase.messages import ErrorMessage


class ClientStream:
    """Client after sending ``handshake.initiation``: everything the server sends goes to ``receive_data``."""

    def __init__(self, handshake: ClientHandshake) -> None:
        self._handshake = handshake
        self._pending = bytearray()
        self._early = EarlyPayloadReader()
        self.conn: Conn | None = None
        """Set once the handshake response was verified."""

    @property
    def established(self) -> bool:
        return self.conn is not None

    @property
    def early_payload(self) -> bytes | None:
        """The server's early-payload JSON, if it sent one (known once HTTP/2 bytes arrived)."""
        return self._early.payload

    def receive_data(self, data: bytes) -> bytes:
        """Returns the HTTP/2 plaintext now available (possibly ``b""``).

        Raises ``ServerErrorMessage`` when the server refused the handshake.
        """
        if self.conn is None:
            self._pending += data
            if len(self._pending) < HEADER_LEN:
                return b""
            msg_type, length = struct.unpack_from(">BH", self._pending)
            if msg_type == MSG_TYPE_ERROR:
                if len(self._pending) < HEADER_LEN + length:
                    return b""
                raise ServerErrorMessage(ErrorMessage.parse(bytes(self._pending[:HEADER_LEN + length])).text)
            if msg_type != MSG_TYPE_RESPONSE:
                raise ControlParseError(f"unexpected response message type {msg_type}")
            if len(self._pending) < RESPONSE_LEN:
                return b""
            self.conn = self._handshake.receive_response(bytes(self._pending[:RESPONSE_LEN]))
            data = bytes(self._pending[RESPONSE_LEN:])
            self._pending.clear()
        return self._early.feed(self.conn.receive_data(data))

    def send(self, plaintext: bytes) -> bytes:
        if self.conn is None:
            raise ControlProtocolError("cannot send before the handshake response arrived")
        return self.conn.send(plaintext)


class ServerStream:
    """Server after ``accept_initiation``: write ``initial`` first (response + optional early payload)."""

    def __init__(self, accepted: Accepted, early_payload: bytes | None = None) -> None:
        self.conn = accepted.conn
        self.machine_public = accepted.machine_public
        self.protocol_version = accepted.protocol_version
        early = b"" if early_payload is None else self.conn.send(encode_early_payload(early_payload))
        self.initial: bytes = accepted.response + early
        """Corked like Go's server: the response and the early payload leave in one write."""

    def receive_data(self, data: bytes) -> bytes:
        return self.conn.receive_data(data)

    def send(self, plaintext: bytes) -> bytes:
        return self.conn.send(plaintext)
