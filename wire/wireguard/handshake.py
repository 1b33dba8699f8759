"""Noise_IKpsk2 handshake computations (device/noise-protocol.go), both roles, as plain functions.

The functions only compute; the ``peer`` module decides when to call them. Message MACs are added
afterwards by ``cookie.CookieGenerator`` because they are not part of the Noise transcript.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import RuntimeError as NaclRuntimeError

from pytsnet.wire.errors import CryptoError
from pytsnet.wire.wireguard import tai64n
from pytsnet.wire.wireguard.kdf import INITIAL_CHAIN_KEY, INITIAL_HASH, hash_, kdf1, kdf2, kdf3
from pytsnet.wire.wireguard.messages import MessageInitiation, MessageResponse

_ZERO12 = bytes(12)
_ZERO32 = bytes(32)
ZERO_PSK = _ZERO32  # Tailscale configures no pre-shared key


def dh(private: bytes, public: bytes) -> bytes:
    """X25519; a low-order peer key (all-zero result) is a ``CryptoError`` (errInvalidPublicKey)."""
    try:
        out = crypto_scalarmult(private, public)
    except NaclRuntimeError as e:
        raise CryptoError("X25519 with a low-order public key") from e
    if hmac.compare_digest(out, _ZERO32):
        raise CryptoError("X25519 with a low-order public key")
    return out


def _seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_ZERO12, plaintext, ad)


def _open(key: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO12, ciphertext, ad)
    except InvalidTag as e:
        raise CryptoError("handshake field does not authenticate") from e


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """What a completed handshake yields: directional keys and both indices."""

    send: bytes
    receive: bytes
    local_index: int
    remote_index: int
    is_initiator: bool


@dataclass(frozen=True, slots=True)
class InitiatorState:
    chain_key: bytes
    hash: bytes
    ephemeral_private: bytes
    local_index: int


def create_initiation(
    local_private: bytes, remote_public: bytes, local_index: int, unix_time: float, ephemeral_private: bytes
) -> tuple[MessageInitiation, InitiatorState]:
    """Initiator step 1 (CreateMessageInitiation); MACs are left zero."""
    h = hash_(INITIAL_HASH, remote_public)
    e_pub = crypto_scalarmult_base(ephemeral_private)
    c = kdf1(INITIAL_CHAIN_KEY, e_pub)
    h = hash_(h, e_pub)
    c, k = kdf2(c, dh(ephemeral_private, remote_public))
    static = _seal(k, crypto_scalarmult_base(local_private), h)
    h = hash_(h, static)
    c, k = kdf2(c, dh(local_private, remote_public))
    timestamp = _seal(k, tai64n.stamp(unix_time), h)
    h = hash_(h, timestamp)
    return MessageInitiation(local_index, e_pub, static, timestamp), InitiatorState(
        c, h, ephemeral_private, local_index
    )


@dataclass(frozen=True, slots=True)
class ConsumedInitiation:
    """A decrypted initiation: who sent it, when, and the transcript to answer it."""

    remote_static: bytes
    timestamp: bytes
    remote_ephemeral: bytes
    remote_index: int
    chain_key: bytes
    hash: bytes


def consume_initiation(local_private: bytes, msg: MessageInitiation) -> ConsumedInitiation:
    """Responder step 1 (ConsumeMessageInitiation): ``CryptoError`` if it is not for us."""
    local_public = crypto_scalarmult_base(local_private)
    h = hash_(INITIAL_HASH, local_public)
    h = hash_(h, msg.ephemeral)
    c = kdf1(INITIAL_CHAIN_KEY, msg.ephemeral)
    c, k = kdf2(c, dh(local_private, msg.ephemeral))
    remote_static = _open(k, msg.static, h)
    h = hash_(h, msg.static)
    c, k = kdf2(c, dh(local_private, remote_static))
    timestamp = _open(k, msg.timestamp, h)
    h = hash_(h, msg.timestamp)
    return ConsumedInitiation(remote_static, timestamp, msg.ephemeral, msg.sender, c, h)


def create_response(
    consumed: ConsumedInitiation, local_index: int, ephemeral_private: bytes, psk: bytes = ZERO_PSK
) -> tuple[MessageResponse, SessionKeys]:
    """Responder step 2 (CreateMessageResponse + BeginSymmetricSession)."""
    e_pub = crypto_scalarmult_base(ephemeral_private)
    h = hash_(consumed.hash, e_pub)
    c = kdf1(consumed.chain_key, e_pub)
    c = kdf1(c, dh(ephemeral_private, consumed.remote_ephemeral))
    c = kdf1(c, dh(ephemeral_private, consumed.remote_static))
    c, tau, k = kdf3(c, psk)
    h = hash_(h, tau)
    empty = _seal(k, b"", h)
    recv, send = kdf2(c, b"")
    msg = MessageResponse(local_index, consumed.remote_index, e_pub, empty)
    return msg, SessionKeys(send, recv, local_index, consumed.remote_index, is_initiator=False)


def consume_response(
    state: InitiatorState, local_private: bytes, msg: MessageResponse, psk: bytes = ZERO_PSK
) -> SessionKeys:
    """Initiator step 2 (ConsumeMessageResponse + BeginSymmetricSession)."""
    h = hash_(state.hash, msg.ephemeral)
    c = kdf1(state.chain_key, msg.ephemeral)
    c = kdf1(c, dh(state.ephemeral_private, msg.ephemeral))
    c = kdf1(c, dh(local_private, msg.ephemeral))
    c, tau, k = kdf3(c, psk)
    h = hash_(h, tau)
    _open(k, msg.empty, h)
    send, recv = kdf2(c, b"")
    return SessionKeys(send, recv, state.local_index, msg.sender, is_initiator=True)
