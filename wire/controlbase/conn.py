"""The Noise transport record layer (control/controlbase/conn.go), sans-IO.

Records are ``0x04 · uint16 BE ciphertext length · ChaCha20-Poly1305(ciphertext)`` with an empty AD and a
12-byte nonce of 4 zero bytes + a 64-bit **big-endian** counter per direction. A record over 4096 bytes
on the wire, a bad type byte or a failed decryption kills the receive side for good, as in Go.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pytsnet.wire.controlbase.constants import (
    HEADER_LEN,
    INVALID_NONCE,
    MAX_CIPHERTEXT_SIZE,
    MAX_PLAINTEXT_SIZE,
    MSG_TYPE_RECORD,
    TAG_LEN,
)
from pytsnet.wire.controlbase.errors import ControlCryptoError, ControlParseError, ControlProtocolError
from pytsnet.wire.keys import MachinePublic

_HEADER = struct.Struct(">BH")


def _nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


class Conn:
    """An established control connection: plaintext ↔ records, with no I/O of its own.

    ``send`` returns the bytes to write; ``receive_data`` takes whatever arrived and returns the
    plaintext of every complete record (possibly ``b""``). At most one partial record is buffered.
    """

    def __init__(self, *, send_key: bytes, receive_key: bytes, protocol_version: int, peer: MachinePublic,
                 handshake_hash: bytes) -> None:
        self._tx = ChaCha20Poly1305(send_key)
        self._rx = ChaCha20Poly1305(receive_key)
        self._tx_counter = 0
        self._rx_counter = 0
        self._rx_buf = bytearray()
        self._rx_error: Exception | None = None
        self._tx_error: Exception | None = None
        self.protocol_version = protocol_version
        """The version from the initiation's cleartext header (bound in by the prologue)."""
        self.peer = peer
        """The peer's long-term key: the client's machine key, or the control server's key."""
        self.handshake_hash = handshake_hash
        """The final Noise ``h``: binds other messages to this connection."""

    # -- sending ---------------------------------------------------------------------------------
    def send(self, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` into as many records as needed (≤ 4077 plaintext bytes each).

        An empty input yields one empty record (zero-length records are legal in this protocol).
        """
        if self._tx_error is not None:
            raise ControlProtocolError("send side is dead") from self._tx_error
        out = bytearray()
        view = memoryview(plaintext)
        first = True
        while first or view:
            first = False
            chunk, view = view[:MAX_PLAINTEXT_SIZE], view[MAX_PLAINTEXT_SIZE:]
            if self._tx_counter >= INVALID_NONCE:
                self._tx_error = ControlProtocolError("cipher exhausted, no more nonces available")
                raise self._tx_error
            sealed = self._tx.encrypt(_nonce(self._tx_counter), bytes(chunk), None)
            self._tx_counter += 1
            out += _HEADER.pack(MSG_TYPE_RECORD, len(sealed))
            out += sealed
        return bytes(out)

    # -- receiving -------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> bytes:
        """Consume ciphertext bytes; return the plaintext of all records now complete."""
        if self._rx_error is not None:
            raise ControlProtocolError("receive side is dead") from self._rx_error
        self._rx_buf += data
        out = bytearray()
        try:
            while len(self._rx_buf) >= HEADER_LEN:
                msg_type, length = _HEADER.unpack_from(self._rx_buf)
                if msg_type != MSG_TYPE_RECORD:
                    raise ControlParseError(f"received message with unexpected type {msg_type}, want 4")
                if length > MAX_CIPHERTEXT_SIZE:
                    raise ControlParseError(f"record of {HEADER_LEN + length} bytes exceeds max frame size")
                if length < TAG_LEN:
                    raise ControlParseError(f"record of {length} bytes is shorter than its tag")
                if len(self._rx_buf) < HEADER_LEN + length:
                    break
                ciphertext = bytes(self._rx_buf[HEADER_LEN:HEADER_LEN + length])
                del self._rx_buf[:HEADER_LEN + length]
                out += self._open(ciphertext)
        except (ControlParseError, ControlCryptoError, ControlProtocolError) as exc:
            self._rx_error = exc
            self._rx_buf.clear()
            raise
        return bytes(out)

    def _open(self, ciphertext: bytes) -> bytes:
        if self._rx_counter >= INVALID_NONCE:
            raise ControlProtocolError("cipher exhausted, no more nonces available")
        try:
            plaintext = self._rx.decrypt(_nonce(self._rx_counter), ciphertext, None)
        except InvalidTag as exc:
            raise ControlCryptoError("record failed to authenticate") from exc
        self._rx_counter += 1
        return plaintext

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete record held back (always < 4096)."""
        return len(self._rx_buf)
