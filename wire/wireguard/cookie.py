"""mac1/mac2 and cookie replies (device/cookie.go): DoS protection for handshake messages.

``CookieChecker`` is the receiving side, keyed by our own static public key: it verifies mac1
always, mac2 under load, and issues cookie replies. ``CookieGenerator`` is the sending side, keyed
by the peer's static public key: it stamps mac1/mac2 on outgoing handshake messages and absorbs
the cookie replies the peer sends back.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError as NaclCryptoError

from pytsnet.wire.errors import CryptoError
from pytsnet.wire.wireguard.constants import (
    COOKIE_NONCE_SIZE,
    COOKIE_REFRESH_TIME,
    WG_LABEL_COOKIE,
    WG_LABEL_MAC1,
)
from pytsnet.wire.wireguard.kdf import hash_, mac
from pytsnet.wire.wireguard.messages import MessageCookieReply

_ZERO16 = bytes(16)


def _macs_offsets(msg: bytes | bytearray) -> tuple[int, int]:
    """mac1 and mac2 are the last 32 bytes of both handshake messages."""
    n = len(msg)
    return n - 32, n - 16


class CookieChecker:
    def __init__(self, local_public: bytes, random_bytes: Callable[[int], bytes]) -> None:
        self._mac1_key = hash_(WG_LABEL_MAC1, local_public)
        self._cookie_key = hash_(WG_LABEL_COOKIE, local_public)
        self._random = random_bytes
        self._secret = b""
        self._secret_set = float("-inf")

    def check_mac1(self, msg: bytes) -> bool:
        o1, o2 = _macs_offsets(msg)
        return hmac.compare_digest(mac(self._mac1_key, msg[:o1]), msg[o1:o2])

    def _cookie(self, src: bytes, now: float) -> bytes:
        if now - self._secret_set > COOKIE_REFRESH_TIME:
            self._secret = self._random(32)
            self._secret_set = now
        return mac(self._secret, src)

    def check_mac2(self, msg: bytes, src: bytes, now: float) -> bool:
        """mac2 must be keyed by a cookie we issued to ``src`` within the last secret period."""
        if now - self._secret_set > COOKIE_REFRESH_TIME:
            return False
        _, o2 = _macs_offsets(msg)
        return hmac.compare_digest(mac(mac(self._secret, src), msg[:o2]), msg[o2:])

    def create_reply(self, msg: bytes, receiver: int, src: bytes, now: float) -> bytes:
        """A cookie reply to handshake message ``msg`` (whose sender index is ``receiver``)."""
        o1, o2 = _macs_offsets(msg)
        nonce = self._random(COOKIE_NONCE_SIZE)
        sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(
            self._cookie(src, now), msg[o1:o2], nonce, self._cookie_key
        )
        return MessageCookieReply(receiver, nonce, sealed).emit()


class CookieGenerator:
    def __init__(self, peer_public: bytes) -> None:
        self._mac1_key = hash_(WG_LABEL_MAC1, peer_public)
        self._cookie_key = hash_(WG_LABEL_COOKIE, peer_public)
        self._cookie = b""
        self._cookie_set = float("-inf")
        self._last_mac1: bytes | None = None

    def add_macs(self, msg: bytearray, now: float) -> None:
        """Fill mac1 (and mac2 if we hold a fresh cookie) in place; remembers mac1 for the reply's AD."""
        o1, o2 = _macs_offsets(msg)
        m1 = mac(self._mac1_key, msg[:o1])
        msg[o1:o2] = m1
        self._last_mac1 = m1
        if self._cookie and now - self._cookie_set <= COOKIE_REFRESH_TIME:
            msg[o2:] = mac(self._cookie, msg[:o2])
        else:
            msg[o2:] = _ZERO16

    def consume_reply(self, reply: MessageCookieReply, now: float) -> None:
        """Store the cookie; ``CryptoError`` if it does not answer our last mac1."""
        if self._last_mac1 is None:
            raise CryptoError("cookie reply without an outstanding handshake message")
        try:
            cookie = crypto_aead_xchacha20poly1305_ietf_decrypt(
                reply.cookie, self._last_mac1, reply.nonce, self._cookie_key
            )
        except NaclCryptoError as e:
            raise CryptoError("cookie reply does not authenticate") from e
        self._cookie = cookie
        self._cookie_set = now
        self._last_mac1 = None  # one reply per message, as wireguard-go's hasLastMAC1
