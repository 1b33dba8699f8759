"""Authority Update Messages (Go tka/aum.go): the signed links of the tailnet key authority's chain.

An AUM's hash (BLAKE2s-256 of its canonical CBOR) names it and is the next AUM's parent; its
signatures are over ``sig_hash`` (the same with no signatures). CBOR layout (int struct keys):
1 MessageKind, 2 PrevAUMHash (null when absent — never omitted), 3 Key, 4 KeyID, 5 State,
6 Votes, 7 Meta, 23 Signatures (each ``{1: KeyID, 2: Signature}``); 3..23 are omitted when
unset or empty. Decoding follows Go: unknown int keys are ignored, and the hash is taken over
the re-encoding of what was understood, exactly as Go's ``Hash()`` re-serializes.

Go keeps an empty non-nil ``PrevAUMHash``/``KeyID``/``Meta`` apart from a nil one (static
validation refuses some of them), so here ``b""``/``{}`` and ``None`` stay distinct for those.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pytsnet.wire.tka.cbor import (
    decode_struct,
    encode,
    opt_bytes,
    str_map,
    struct_map,
    uint_field,
)
from pytsnet.wire.tka.errors import TkaDecodeError, TkaError, TkaKeyNotFound, TkaVerifyError
from pytsnet.wire.tka.key import (
    ED25519_PUBLIC_SIZE,
    ED25519_SIGNATURE_SIZE,
    Key,
    KeyKind,
    _ForwardCompatibleKind,
    verify_25519,
)
from pytsnet.wire.tka.state import State

if TYPE_CHECKING:
    from pytsnet.wire.keys import NLPrivate

AUM_HASH_SIZE = 32
_UINT64_MAX = (1 << 64) - 1


def aum_hash_text(h: bytes) -> str:
    """Go's AUMHash.String: base32 (standard alphabet) without padding — 52 characters."""
    return base64.b32encode(bytes(h)).decode("ascii").rstrip("=")


def aum_hash_from_text(s: str) -> bytes:
    """Parse ``aum_hash_text`` output; TkaDecodeError for anything that is not 32 bytes of base32."""
    if not isinstance(s, str) or len(s) != 52 or not s.isascii():
        raise TkaDecodeError("AUM hash text must be 52 base32 characters")
    try:
        raw = base64.b32decode(s + "====", casefold=False)
    except (binascii.Error, ValueError) as e:
        raise TkaDecodeError("AUM hash text is not base32") from e
    if len(raw) != AUM_HASH_SIZE:
        raise TkaDecodeError("AUM hash text is not 32 bytes")
    return raw


def blake2s256(data: bytes) -> bytes:
    """Go's ``blake2s.Sum256`` (unkeyed BLAKE2s, 32-byte digest)."""
    return hashlib.blake2s(data, digest_size=32).digest()


class AUMKind(_ForwardCompatibleKind):
    INVALID = 0
    ADD_KEY = 1
    REMOVE_KEY = 2
    NO_OP = 3
    UPDATE_KEY = 4
    CHECKPOINT = 5


@dataclass(frozen=True)
class Signature:
    """One signer's Ed25519 signature over an AUM's ``sig_hash`` (Go tkatype.Signature).

    ``b""`` stands for Go's nil (encoded null, as aum_test.go's "Signature" vector).
    """

    key_id: bytes
    signature: bytes

    def to_cbor_obj(self) -> dict[int, object]:
        return {1: self.key_id or None, 2: self.signature or None}

    @classmethod
    def from_cbor_obj(cls, obj: object) -> Signature:
        m = struct_map(obj, "Signature")
        kid = opt_bytes(m.get(1), "Signature.KeyID")
        sig = opt_bytes(m.get(2), "Signature.Signature")
        if kid == b"" or sig == b"":
            raise TkaDecodeError("Signature: empty byte string (only null is representable)")
        return cls(key_id=kid or b"", signature=sig or b"")


def signature_verify(sig: Signature, aum_digest: bytes, key: Key) -> None:
    """Go's signatureVerify: ``sig`` is ``key``'s over ``aum_digest`` (an AUM's ``sig_hash``).

    Uses the trusted ``key``'s own public bytes, never ``sig.key_id`` (attacker-controlled).
    Raises TkaVerifyError.
    """
    if key.kind != KeyKind.KEY25519:
        raise TkaVerifyError(f"unhandled key type: {int(key.kind)}")
    if len(key.public) != ED25519_PUBLIC_SIZE:
        raise TkaVerifyError(f"ed25519 key has wrong length: {len(key.public)}")
    if not verify_25519(key.public, aum_digest, sig.signature):
        raise TkaVerifyError("invalid signature")


@dataclass(frozen=True)
class AUM:
    """One Authority Update Message."""

    message_kind: AUMKind
    prev_aum_hash: bytes | None
    key: Key | None = None
    key_id: bytes | None = None
    state: State | None = None
    votes: int | None = None
    meta: dict[str, str] | None = None
    signatures: tuple[Signature, ...] = ()

    def to_cbor_obj(self) -> dict[int, object]:
        out: dict[int, object] = {1: int(self.message_kind), 2: self.prev_aum_hash}
        if self.key is not None:
            out[3] = self.key.to_cbor_obj()
        if self.key_id:
            out[4] = self.key_id
        if self.state is not None:
            out[5] = self.state.to_cbor_obj()
        if self.votes is not None:
            out[6] = self.votes
        if self.meta:
            out[7] = dict(self.meta)
        if self.signatures:
            out[23] = [s.to_cbor_obj() for s in self.signatures]
        return out

    def serialize(self) -> bytes:
        """The canonical CBOR Go's ``AUM.Serialize`` produces (byte-exact)."""
        return encode(self.to_cbor_obj())

    @classmethod
    def from_cbor_obj(cls, obj: object) -> AUM:
        m = struct_map(obj, "AUM")
        key = m.get(3)
        state = m.get(5)
        votes = m.get(6)
        sigs = m.get(23)
        if sigs is not None and not isinstance(sigs, list):
            raise TkaDecodeError("AUM.Signatures: expected an array")
        if sigs == []:
            raise TkaDecodeError("AUM.Signatures: empty array (only null is representable)")
        return cls(
            message_kind=AUMKind(uint_field(m.get(1), 0xFF, "AUM.MessageKind")),
            prev_aum_hash=opt_bytes(m.get(2), "AUM.PrevAUMHash"),
            key=None if key is None else Key.from_cbor_obj(key),
            key_id=opt_bytes(m.get(4), "AUM.KeyID"),
            state=None if state is None else State.from_cbor_obj(state),
            votes=None if votes is None else uint_field(votes, _UINT64_MAX, "AUM.Votes"),
            meta=str_map(m.get(7), "AUM.Meta"),
            signatures=tuple(Signature.from_cbor_obj(s) for s in sigs or ()),
        )

    @classmethod
    def unserialize(cls, data: bytes) -> AUM:
        """Parse an AUM as Go's ``Unserialize`` does (its limits); TkaDecodeError on bad bytes."""
        return cls.from_cbor_obj(decode_struct(data, "AUM"))

    def hash(self) -> bytes:
        """The AUM's name: BLAKE2s-256 over everything, signatures included."""
        return blake2s256(self.serialize())

    def sig_hash(self) -> bytes:
        """What signers sign: BLAKE2s-256 of the AUM without its signatures."""
        return blake2s256(replace(self, signatures=()).serialize())

    def parent(self) -> bytes | None:
        """The parent's hash, or None for a genesis AUM (no or empty PrevAUMHash)."""
        return self.prev_aum_hash or None

    def static_validate(self) -> None:
        """Go's AUM.StaticValidate: the AUM is well-formed for its kind (TkaError if not)."""
        if self.key is not None:
            self.key.static_validate()
        if self.prev_aum_hash is not None and len(self.prev_aum_hash) == 0:
            raise TkaError("absent parent must be represented by a nil slice")
        for i, sig in enumerate(self.signatures):
            if len(sig.key_id) != 32 or len(sig.signature) != ED25519_SIGNATURE_SIZE:
                raise TkaError(f"signature {i} has missing keyID or malformed signature")
        if self.state is not None:
            try:
                self.state.static_validate_checkpoint()
            except TkaError as e:
                raise TkaError(f"checkpoint state: {e}") from e
        kind = self.message_kind
        if kind == AUMKind.ADD_KEY:
            if self.key is None:
                raise TkaError("AddKey AUMs must contain a key")
            if (
                self.key_id is not None
                or self.state is not None
                or self.votes is not None
                or self.meta is not None
            ):
                raise TkaError("AddKey AUMs may only specify a Key")
        elif kind == AUMKind.REMOVE_KEY:
            if not self.key_id:
                raise TkaError("RemoveKey AUMs must specify a key ID")
            if (
                self.key is not None
                or self.state is not None
                or self.votes is not None
                or self.meta is not None
            ):
                raise TkaError("RemoveKey AUMs may only specify a KeyID")
        elif kind == AUMKind.UPDATE_KEY:
            if not self.key_id:
                raise TkaError("UpdateKey AUMs must specify a key ID")
            if self.meta is None and self.votes is None:
                raise TkaError("UpdateKey AUMs must contain an update to votes or key metadata")
            if self.key is not None or self.state is not None:
                raise TkaError("UpdateKey AUMs may only specify KeyID, Votes, and Meta")
        elif kind == AUMKind.CHECKPOINT:
            if self.state is None:
                raise TkaError("Checkpoint AUMs must specify the state")
            if (
                self.key_id is not None
                or self.key is not None
                or self.votes is not None
                or self.meta is not None
            ):
                raise TkaError("Checkpoint AUMs may only specify State")
        # NoOp and kinds a newer Go defines: nothing more to check (forward compatibility).

    def weight(self, state: State) -> int:
        """Go's AUM.Weight: the votes of the distinct trusted keys that signed (caller verified)."""
        seen: set[bytes] = set()
        total = 0
        for sig in self.signatures:
            if len(sig.key_id) != 32:
                raise TkaError("unexpected: keyIDs are 32 bytes")
            try:
                key = state.get_key(sig.key_id)
            except TkaKeyNotFound:
                continue
            if sig.key_id in seen:
                continue
            total += key.votes
            seen.add(sig.key_id)
        return total

    def signed(self, priv: NLPrivate | bytes) -> AUM:
        """A copy with one more signature by ``priv`` (Go's sign25519).

        ``priv`` is an ``NLPrivate``, a 32-byte Ed25519 seed or Go's 64-byte private key.
        """
        from pytsnet.wire.keys import NLPrivate

        nl = priv if isinstance(priv, NLPrivate) else NLPrivate.from_ed25519(priv)
        sig = Signature(key_id=nl.key_id(), signature=nl.sign(self.sig_hash()))
        return replace(self, signatures=(*self.signatures, sig))
