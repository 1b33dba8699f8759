"""The Noise symmetric state as controlbase uses it: BLAKE2s hash, HKDF-BLAKE2s, one-shot ChaChaPoly.

Each handshake cipher key encrypts exactly one message, so the nonce is always zero.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pytsnet.wire.controlbase.constants import PROTOCOL_NAME, PROTOCOL_VERSION_PREFIX
from pytsnet.wire.controlbase.errors import ControlCryptoError, ControlProtocolError

_ZERO_NONCE = bytes(12)


def protocol_version_prologue(version: int) -> bytes:
    """``"Tailscale Control Protocol v<version>"``: binds the cleartext version into the handshake."""
    return PROTOCOL_VERSION_PREFIX + str(version).encode("ascii")


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def hkdf2(salt: bytes, secret: bytes) -> tuple[bytes, bytes]:
    """Go's ``hkdf.New(blake2s, secret, salt, nil)`` read for 64 bytes: two 32-byte outputs."""
    prk = _hmac(salt, secret)
    t1 = _hmac(prk, b"\x01")
    t2 = _hmac(prk, t1 + b"\x02")
    return t1, t2


def x25519(private: bytes, public: bytes) -> bytes:
    """X25519 that refuses an all-zero result (a low-order peer key), as Go's curve25519 does."""
    try:
        ours = X25519PrivateKey.from_private_bytes(private)
        return ours.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:
        raise ControlCryptoError("X25519 produced an invalid (all-zero) shared secret") from exc


class SymmetricState:
    """``h`` and ``ck`` of an in-flight handshake; unusable after ``split``."""

    def __init__(self) -> None:
        self.h = hashlib.blake2s(PROTOCOL_NAME).digest()
        self.ck = self.h
        self._finished = False

    def _check(self) -> None:
        if self._finished:
            raise ControlProtocolError("handshake state used after split")

    def mix_hash(self, data: bytes) -> None:
        self._check()
        self.h = hashlib.blake2s(self.h + data).digest()

    def mix_dh(self, private: bytes, public: bytes) -> bytes:
        """MixKey(X25519(private, public)); returns the single-use cipher key."""
        self._check()
        self.ck, key = hkdf2(self.ck, x25519(private, public))
        return key

    def encrypt_and_hash(self, key: bytes, plaintext: bytes) -> bytes:
        self._check()
        ciphertext = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, self.h)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, key: bytes, ciphertext: bytes) -> bytes:
        self._check()
        try:
            plaintext = ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, ciphertext, self.h)
        except InvalidTag as exc:
            raise ControlCryptoError("handshake message failed to authenticate") from exc
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """The two transport keys: the initiator sends with the first, the responder with the second."""
        self._check()
        self._finished = True
        return hkdf2(self.ck, b"")
