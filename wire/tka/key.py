"""A key the tailnet key authority trusts (Go tka/key.go): kind, votes, public bytes, metadata.

CBOR layout (struct keys as ints): 1 Kind, 2 Votes, 3 Public, 12 Meta (omitted when empty).
Go encodes a nil ``Public`` as CBOR null and an empty non-nil one as an empty byte string; here
``public=b""`` stands for Go's nil (encoded null, as Go's ``Key{}`` in aum_test.go), and decoding
refuses the empty-byte-string form, which no valid key carries (a 25519 key is 32 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pytsnet.wire.tka.cbor import opt_bytes, str_map, struct_map, uint_field
from pytsnet.wire.tka.errors import TkaDecodeError, TkaError

MAX_META_BYTES = 512
MAX_VOTES = 4096
ED25519_PUBLIC_SIZE = 32
ED25519_SIGNATURE_SIZE = 64


class _ForwardCompatibleKind(IntEnum):
    """A uint8 enum that keeps values a newer Go defines (``Kind(9)``) instead of refusing them."""

    @classmethod
    def _missing_(cls, value: object) -> Self | None:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFF:
            member = int.__new__(cls, value)
            member._name_ = f"UNKNOWN_{value}"
            member._value_ = value
            return member
        return None


class KeyKind(_ForwardCompatibleKind):
    INVALID = 0
    KEY25519 = 1


def verify_25519(pub: bytes, msg: bytes, sig: bytes) -> bool:
    """RFC 8032 Ed25519 verification (OpenSSL, via ``cryptography``); False on any malformed input.

    Go verifies AUM, Direct and Credential signatures with ZIP-215 (``ed25519consensus``) and
    Rotation signatures with ``crypto/ed25519``. Every signature this accepts, ZIP-215 accepts
    too (ZIP-215 admits non-canonical point encodings and checks the cofactored equation, which
    any solution of the cofactorless one also satisfies; both refuse S >= L), so the difference
    can only refuse a signature Go takes — one made with a non-canonical or small-order R or A —
    never admit one Go refuses. Honest signers (``ed25519.Sign``) never make those.
    """
    if len(pub) != ED25519_PUBLIC_SIZE or len(sig) != ED25519_SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(pub)).verify(bytes(sig), bytes(msg))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Key:
    """A trusted key: its ``votes`` weigh its signatures when forks are resolved."""

    kind: KeyKind
    votes: int
    public: bytes
    meta: dict[str, str] | None = None

    def id(self) -> bytes:
        """The KeyID: the public bytes themselves for 25519 keys; TkaError for other kinds."""
        if self.kind == KeyKind.KEY25519:
            return self.public
        raise TkaError(f"unknown key kind: {int(self.kind)}")

    def static_validate(self) -> None:
        """Go's Key.StaticValidate: 1..4096 votes, at most 512 bytes of meta, a known kind."""
        if self.votes > MAX_VOTES:
            raise TkaError(f"excessive key weight: {self.votes} > {MAX_VOTES}")
        if self.votes == 0:
            raise TkaError("key votes must be non-zero")
        meta_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in (self.meta or {}).items())
        if meta_bytes > MAX_META_BYTES:
            raise TkaError(f"key metadata too big ({meta_bytes} > {MAX_META_BYTES})")
        if self.kind != KeyKind.KEY25519:
            raise TkaError(f"unrecognized key kind: {int(self.kind)}")

    def to_cbor_obj(self) -> dict[int, object]:
        out: dict[int, object] = {1: int(self.kind), 2: self.votes, 3: self.public or None}
        if self.meta:
            out[12] = dict(self.meta)
        return out

    @classmethod
    def from_cbor_obj(cls, obj: object) -> Key:
        m = struct_map(obj, "Key")
        public = opt_bytes(m.get(3), "Key.Public")
        if public == b"":
            raise TkaDecodeError("Key.Public: empty byte string (only null is representable)")
        return cls(
            kind=KeyKind(uint_field(m.get(1), 0xFF, "Key.Kind")),
            votes=uint_field(m.get(2), (1 << 64) - 1, "Key.Votes"),
            public=public or b"",
            meta=str_map(m.get(12), "Key.Meta"),
        )
