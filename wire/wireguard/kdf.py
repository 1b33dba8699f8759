"""Noise primitives over BLAKE2s: HASH, MAC, HMAC and the KDF1/2/3 chain (device/noise-helpers.go)."""

from __future__ import annotations

import hashlib
import hmac

from pytsnet.wire.wireguard.constants import NOISE_CONSTRUCTION, WG_IDENTIFIER


def hash_(*parts: bytes) -> bytes:
    """HASH: BLAKE2s-256 over the concatenation of ``parts``."""
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key: bytes, *parts: bytes | bytearray) -> bytes:
    """MAC: keyed BLAKE2s with a 16-byte digest (mac1, mac2, cookies)."""
    h = hashlib.blake2s(key=key, digest_size=16)
    for p in parts:
        h.update(p)
    return h.digest()


def hmac_(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2s-256 (RFC 2104 with a 64-byte block), as the Noise KDF needs."""
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf1(key: bytes, data: bytes) -> bytes:
    prk = hmac_(key, data)
    return hmac_(prk, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    prk = hmac_(key, data)
    t0 = hmac_(prk, b"\x01")
    return t0, hmac_(prk, t0 + b"\x02")


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    prk = hmac_(key, data)
    t0 = hmac_(prk, b"\x01")
    t1 = hmac_(prk, t0 + b"\x02")
    return t0, t1, hmac_(prk, t1 + b"\x03")


INITIAL_CHAIN_KEY = hash_(NOISE_CONSTRUCTION)
INITIAL_HASH = hash_(INITIAL_CHAIN_KEY, WG_IDENTIFIER)
