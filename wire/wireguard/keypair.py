"""Transport keypairs and the current/previous/next rotation (device/keypair.go, device/peer.go).

A ``Keypair`` owns one ``ChaCha20Poly1305`` object per direction for its whole life, so the
per-packet path is one header pack, one AEAD call and one replay check.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pytsnet.wire.errors import CryptoError
from pytsnet.wire.wireguard.constants import (
    MESSAGE_TRANSPORT_HEADER_SIZE,
    MESSAGE_TRANSPORT_TYPE,
    PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
)
from pytsnet.wire.wireguard.handshake import SessionKeys
from pytsnet.wire.wireguard.messages import TRANSPORT_HEADER
from pytsnet.wire.wireguard.replay import ReplayFilter

NONCE = struct.Struct("<4xQ")  # the 96-bit AEAD nonce: 32 zero bits, then the 64-bit counter (LE)
_NONCE_PACK = NONCE.pack
_COUNTER_UNPACK = struct.Struct("<Q").unpack_from
_PAD = bytes(PADDING_MULTIPLE)
_HEADER_PACK = TRANSPORT_HEADER.pack


def padding_size(packet_size: int, mtu: int) -> int:
    """Zero bytes appended so the plaintext length is a multiple of 16, never beyond the MTU."""
    last_unit = packet_size
    if mtu and packet_size > mtu:
        last_unit %= mtu
    padded = (last_unit + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1)
    if mtu and padded > mtu:
        padded = mtu
    return padded - last_unit


class Keypair:
    __slots__ = (
        "created",
        "is_initiator",
        "local_index",
        "recv_aead",
        "remote_index",
        "replay",
        "send_aead",
        "send_nonce",
    )

    def __init__(self, keys: SessionKeys, created: float) -> None:
        self.send_aead = ChaCha20Poly1305(keys.send)
        self.recv_aead = ChaCha20Poly1305(keys.receive)
        self.local_index = keys.local_index
        self.remote_index = keys.remote_index
        self.is_initiator = keys.is_initiator
        self.created = created
        self.send_nonce = 0
        self.replay = ReplayFilter()

    def seal(self, packet: bytes, mtu: int = 0) -> bytes:
        """A transport message carrying ``packet`` (padded); ``CryptoError`` once the counter is spent."""
        counter = self.send_nonce
        if counter >= REJECT_AFTER_MESSAGES:
            raise CryptoError("keypair exhausted its message counter")
        self.send_nonce = counter + 1
        n = len(packet)
        pad = -n & (PADDING_MULTIPLE - 1)
        if mtu and n + pad > mtu:
            pad = padding_size(n, mtu)  # oversized or MTU-clamped: the rare, general rule
        if pad:
            packet = packet + _PAD[:pad]
        # header + ciphertext by concatenation: measured cheaper than encrypt_into a fresh zeroed
        # bytearray through a memoryview slice (the copy of ~1.3 kB is less than those two objects).
        return _HEADER_PACK(MESSAGE_TRANSPORT_TYPE, self.remote_index, counter) + self.send_aead.encrypt(
            _NONCE_PACK(counter), packet, None
        )

    def open(self, datagram: bytes) -> bytes:
        """Decrypt a transport message to this keypair; replays and forgeries are ``CryptoError``."""
        counter = _COUNTER_UNPACK(datagram, 8)[0]
        try:
            plain = self.recv_aead.decrypt(
                _NONCE_PACK(counter), memoryview(datagram)[MESSAGE_TRANSPORT_HEADER_SIZE:], None
            )
        except InvalidTag as e:
            raise CryptoError("transport message does not authenticate") from e
        if not self.replay.validate_counter(counter, REJECT_AFTER_MESSAGES):
            raise CryptoError("replayed or too old transport counter")
        return plain


class Keypairs:
    """The peer's current, previous and next (unconfirmed, responder-side) keypairs."""

    __slots__ = ("current", "next", "previous")

    def __init__(self) -> None:
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.next: Keypair | None = None

    def install(self, kp: Keypair) -> None:
        """BeginSymmetricSession: the initiator uses a new keypair at once; the responder waits
        for the initiator's first transport message (key confirmation) before sending with it."""
        if kp.is_initiator:
            if self.next is not None:
                self.previous = self.next
                self.next = None
            else:
                self.previous = self.current
            self.current = kp
        else:
            self.next = kp
            self.previous = None

    def received_with(self, kp: Keypair) -> bool:
        """ReceivedWithKeypair: a packet under ``next`` confirms it; returns True on that rotation."""
        if self.next is not kp:
            return False
        self.previous = self.current
        self.current = kp
        self.next = None
        return True

    def lookup(self, local_index: int) -> Keypair | None:
        for kp in (self.current, self.next, self.previous):
            if kp is not None and kp.local_index == local_index:
                return kp
        return None

    def clear(self) -> None:
        self.current = self.previous = self.next = None
