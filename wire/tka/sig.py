"""Node-key signatures (Go tka/sig.go): how a trusted key vouches for a node key.

Kinds: Direct (a trusted key signs the node key), Credential (a trusted key signs a wrapping
public key, which then signs node keys: pre-signed auth keys), Rotation (the node's own
rotation key — the ``WrappingPubkey`` of the signature it nests — signs its new node key,
keeping the chain back to a Direct or Credential signature).

CBOR layout (int struct keys, all but 1 omitted when empty): 1 SigKind, 2 Pubkey, 3 KeyID,
4 Signature, 5 Nested, 6 WrappingPubkey. ``Pubkey`` holds a node key in Go's binary form,
``key.NodePublic.MarshalBinary``: the two ASCII bytes ``np`` then the 32 raw bytes (34 bytes).
The signature is over ``sig_hash``: BLAKE2s-256 of the encoding without field 4. An empty byte
string and an absent field mean the same here, as for Go's ``omitempty`` slices (every check
Go makes on them is a length check), so decoding maps both to None.

Verification: Go checks Direct and Credential signatures with ZIP-215 (ed25519consensus) and
Rotation signatures with ``crypto/ed25519``; we use RFC 8032 verification (OpenSSL through
``cryptography``) for all — see ``key.verify_25519`` for why that can only refuse a signature
Go accepts (non-canonical or small-order points no honest signer makes), never accept more.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace

from pytsnet.wire.keys import KeyParseError, NLPrivate, NodePublic
from pytsnet.wire.tka.aum import blake2s256
from pytsnet.wire.tka.cbor import decode_struct, encode, opt_bytes, struct_map, uint_field
from pytsnet.wire.tka.errors import TkaDecodeError, TkaError, TkaVerifyError
from pytsnet.wire.tka.key import (
    ED25519_PUBLIC_SIZE,
    Key,
    KeyKind,
    _ForwardCompatibleKind,
    verify_25519,
)

NODE_PUBLIC_BINARY_PREFIX = b"np"
MAX_PREV_KEYS = 15  # a rotation chain this long still fits Go's CBOR nesting limit of 16


class SigKind(_ForwardCompatibleKind):
    INVALID = 0
    DIRECT = 1
    ROTATION = 2
    CREDENTIAL = 3


def node_public_binary(node_key: NodePublic) -> bytes:
    """Go's ``NodePublic.MarshalBinary``: ``b"np"`` + the 32 raw bytes."""
    return NODE_PUBLIC_BINARY_PREFIX + node_key.raw


def node_public_from_binary(b: bytes | None) -> NodePublic:
    """Go's ``NodePublic.UnmarshalBinary``; TkaDecodeError on a wrong prefix or length."""
    if b is None or not b.startswith(NODE_PUBLIC_BINARY_PREFIX):
        raise TkaDecodeError("missing/incorrect type prefix np")
    if len(b) != len(NODE_PUBLIC_BINARY_PREFIX) + 32:
        raise TkaDecodeError(f"incorrect len for NodePublic ({len(b)} != 34)")
    return NodePublic(b[2:])


@dataclass(frozen=True)
class NodeKeySignature:
    """A signature authorizing a node key (or, for Credential, a wrapping key)."""

    sig_kind: SigKind
    pubkey: bytes | None = None
    key_id: bytes | None = None
    signature: bytes | None = None
    nested: NodeKeySignature | None = None
    wrapping_pubkey: bytes | None = None

    def to_cbor_obj(self) -> dict[int, object]:
        out: dict[int, object] = {1: int(self.sig_kind)}
        if self.pubkey:
            out[2] = self.pubkey
        if self.key_id:
            out[3] = self.key_id
        if self.signature:
            out[4] = self.signature
        if self.nested is not None:
            out[5] = self.nested.to_cbor_obj()
        if self.wrapping_pubkey:
            out[6] = self.wrapping_pubkey
        return out

    def serialize(self) -> bytes:
        """The canonical CBOR Go's ``NodeKeySignature.Serialize`` produces (byte-exact)."""
        return encode(self.to_cbor_obj())

    @classmethod
    def from_cbor_obj(cls, obj: object) -> NodeKeySignature:
        m = struct_map(obj, "NodeKeySignature")
        nested = m.get(5)
        return cls(
            sig_kind=SigKind(uint_field(m.get(1), 0xFF, "NodeKeySignature.SigKind")),
            pubkey=opt_bytes(m.get(2), "NodeKeySignature.Pubkey") or None,
            key_id=opt_bytes(m.get(3), "NodeKeySignature.KeyID") or None,
            signature=opt_bytes(m.get(4), "NodeKeySignature.Signature") or None,
            nested=None if nested is None else cls.from_cbor_obj(nested),
            wrapping_pubkey=opt_bytes(m.get(6), "NodeKeySignature.WrappingPubkey") or None,
        )

    @classmethod
    def unserialize(cls, data: bytes) -> NodeKeySignature:
        """Parse as Go's ``Unserialize`` (its CBOR limits: at most 16 nested levels)."""
        return cls.from_cbor_obj(decode_struct(data, "NodeKeySignature"))

    def sig_hash(self) -> bytes:
        """What the signer signs: BLAKE2s-256 of the encoding without the signature."""
        return blake2s256(replace(self, signature=None).serialize())

    def wrapping_public(self) -> bytes | None:
        """The key that must sign a signature nesting this one (inherited through rotations)."""
        if self.wrapping_pubkey:
            return self.wrapping_pubkey
        if self.sig_kind == SigKind.ROTATION and self.nested is not None:
            return self.nested.wrapping_public()
        return None

    def authorizing_key_id(self) -> bytes:
        """The KeyID of the trusted key this signature rests on (unverified until checked)."""
        if self.sig_kind in (SigKind.DIRECT, SigKind.CREDENTIAL):
            if not self.key_id:
                raise TkaVerifyError("invalid signature: no keyID present")
            return self.key_id
        if self.sig_kind == SigKind.ROTATION:
            if self.nested is None:
                raise TkaVerifyError("invalid signature: rotation signature missing nested signature")
            return self.nested.authorizing_key_id()
        raise TkaVerifyError(f"unhandled signature type: {int(self.sig_kind)}")

    def verify_signature(self, node_key: NodePublic | None, verification_key: Key) -> None:
        """Go's verifySignature: authentic, rests on ``verification_key``, and names ``node_key``.

        ``node_key`` is ignored (may be None) for a Credential signature, which certifies a
        wrapping key rather than a node key. Raises TkaVerifyError.
        """
        if self.sig_kind != SigKind.CREDENTIAL and (
            node_key is None or node_public_binary(node_key) != (self.pubkey or b"")
        ):
            raise TkaVerifyError("signature does not authorize nodeKey")
        sig_hash = self.sig_hash()
        if self.sig_kind == SigKind.ROTATION:
            if self.nested is None:
                raise TkaVerifyError("nested signatures must nest a signature")
            verify_pub = self.nested.wrapping_public()
            if verify_pub is None:
                raise TkaVerifyError("missing rotation key")
            if len(verify_pub) != ED25519_PUBLIC_SIZE:
                raise TkaVerifyError(f"bad rotation key length: {len(verify_pub)}")
            if not verify_25519(verify_pub, sig_hash, self.signature or b""):
                raise TkaVerifyError("invalid signature")
            nested_pub: NodePublic | None = None
            if self.nested.sig_kind != SigKind.CREDENTIAL:
                try:
                    nested_pub = node_public_from_binary(self.nested.pubkey)
                except TkaDecodeError as e:
                    raise TkaVerifyError(f"nested pubkey: {e}") from e
            try:
                self.nested.verify_signature(nested_pub, verification_key)
            except TkaVerifyError as e:
                raise TkaVerifyError(f"nested: {e}") from e
            return
        if self.sig_kind in (SigKind.DIRECT, SigKind.CREDENTIAL):
            if self.nested is not None:
                raise TkaVerifyError(
                    f"invalid signature: signatures of type {self.sig_kind.name.lower()} "
                    "cannot nest another signature"
                )
            if verification_key.kind != KeyKind.KEY25519:
                raise TkaVerifyError(f"unhandled key type: {int(verification_key.kind)}")
            if len(verification_key.public) != ED25519_PUBLIC_SIZE:
                raise TkaVerifyError(f"ed25519 key has wrong length: {len(verification_key.public)}")
            if not verify_25519(verification_key.public, sig_hash, self.signature or b""):
                raise TkaVerifyError("invalid signature")
            return
        raise TkaVerifyError(f"unhandled signature type: {int(self.sig_kind)}")

    def rotation_details(self) -> RotationDetails | None:
        """For a Rotation signature: the node keys it rotated out (newest first) and its root."""
        if self.sig_kind != SigKind.ROTATION:
            return None
        prev: list[NodePublic] = []
        nested = self.nested
        while nested is not None:
            if nested.pubkey:
                prev.append(node_public_from_binary(nested.pubkey))
            if nested.sig_kind != SigKind.ROTATION:
                break
            nested = nested.nested
        return RotationDetails(initial_sig=nested, prev_node_keys=tuple(prev))


@dataclass(frozen=True)
class RotationDetails:
    """What a Rotation signature says about its history (Go's RotationDetails).

    ``initial_sig`` is None only for a malformed chain that ends in a rotation with no nested
    signature (such a signature never verifies).
    """

    initial_sig: NodeKeySignature | None
    prev_node_keys: tuple[NodePublic, ...]


def sign_direct(
    node_key: NodePublic, signer_priv: NLPrivate, wrapping_pubkey: bytes | None = None
) -> NodeKeySignature:
    """A Direct signature of ``node_key`` by a trusted key (Go's ``lock sign <node> [<rot>]``)."""
    sig = NodeKeySignature(
        sig_kind=SigKind.DIRECT,
        pubkey=node_public_binary(node_key),
        key_id=signer_priv.key_id(),
        wrapping_pubkey=wrapping_pubkey or None,
    )
    return replace(sig, signature=signer_priv.sign(sig.sig_hash()))


def _trim_rotation_chain(sig: NodeKeySignature, priv: NLPrivate) -> NodeKeySignature:
    """Go's maybeTrimRotationSignatureChain: keep at most 15 previous node keys in the chain."""
    if sig.sig_kind != SigKind.ROTATION:
        return sig
    prev_pubkeys: list[bytes | None] = [sig.pubkey]
    nested = sig.nested
    while nested is not None:
        if nested.pubkey:
            prev_pubkeys.append(nested.pubkey)
        if nested.sig_kind != SigKind.ROTATION:
            break
        nested = nested.nested
    if len(prev_pubkeys) <= MAX_PREV_KEYS:
        return sig
    result = nested  # the original Direct (or Credential) signature
    for i in range(MAX_PREV_KEYS - 2, -1, -1):
        result = NodeKeySignature(sig_kind=SigKind.ROTATION, pubkey=prev_pubkeys[i], nested=result)
        result = replace(result, signature=priv.sign(result.sig_hash()))
    assert result is not None
    return result


def verify_rotation_layers(sig: NodeKeySignature) -> None:
    """Every Rotation layer of ``sig`` is signed by the wrapping key of the signature it nests.

    The root (Direct or Credential) is not checked: that needs the authority's trusted keys, and
    every verifier checks it anyway. Raises TkaVerifyError.
    """
    layer: NodeKeySignature | None = sig
    while layer is not None and layer.sig_kind == SigKind.ROTATION:
        if layer.nested is None:
            raise TkaVerifyError("rotation signature missing nested signature")
        pub = layer.nested.wrapping_public()
        if pub is None or not verify_25519(pub, layer.sig_hash(), layer.signature or b""):
            raise TkaVerifyError("a rotation layer is not signed by its rotation key")
        layer = layer.nested


def resign_nks(priv: NLPrivate, node_key: NodePublic, old_nks: bytes) -> bytes:
    """Go's ResignNKS: a Rotation signature carrying ``old_nks`` over to the new ``node_key``.

    Returns ``old_nks`` itself when it already names ``node_key``; trims long chains to 15 keys.
    Unlike Go, the rotation layers of ``old_nks`` must verify first (TkaVerifyError if not):
    trimming re-signs their node keys with ``priv``, and ``old_nks`` comes from control, so a
    forged layer would get a key of control's choosing signed by our lock key. Refuses only a chain
    that does not verify as it stands (no honest node holds one).
    """
    old = NodeKeySignature.unserialize(old_nks)
    nk = node_public_binary(node_key)
    if nk == (old.pubkey or b""):
        return bytes(old_nks)
    verify_rotation_layers(old)
    nested = _trim_rotation_chain(old, priv)
    new = NodeKeySignature(sig_kind=SigKind.ROTATION, pubkey=nk, nested=nested)
    return replace(new, signature=priv.sign(new.sig_hash())).serialize()


def sign_by_credential(priv_key: bytes, wrapped: NodeKeySignature, node_key: NodePublic) -> bytes:
    """Go's SignByCredential: sign ``node_key`` with a pre-signed auth key's wrapping private key.

    ``priv_key`` is a 32-byte Ed25519 seed or Go's 64-byte private key.
    """
    if wrapped.sig_kind != SigKind.CREDENTIAL:
        raise TkaError(f"wrapped signature must be a credential, got {wrapped.sig_kind.name}")
    sig = NodeKeySignature(sig_kind=SigKind.ROTATION, pubkey=node_public_binary(node_key), nested=wrapped)
    try:
        signer = NLPrivate.from_ed25519(priv_key)
    except KeyParseError as e:
        raise TkaError(f"credential private key: {e}") from e
    return replace(sig, signature=signer.sign(sig.sig_hash())).serialize()


def _b64_raw_std(s: str) -> bytes:
    """Go's ``base64.RawStdEncoding.DecodeString`` (no padding allowed)."""
    if "=" in s or "\n" in s or "\r" in s:
        raise TkaDecodeError("unexpected padding or newline")
    if len(s) % 4 == 1:
        raise TkaDecodeError("illegal base64 length")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise TkaDecodeError("not base64") from e


def decode_wrapped_authkey(
    wrapped: str,
) -> tuple[str, bool, NodeKeySignature | None, bytes | None]:
    """Go's DecodeWrappedAuthkey: split ``<authkey>--TL<sig>-<priv>`` into its parts.

    Returns ``(authkey, is_wrapped, signature, private key)``; an unwrapped or malformed key
    comes back whole with ``is_wrapped`` False, as in Go. The private key is Go's 64-byte form.
    """
    auth_key, sep, suffix = wrapped.partition("--TL")
    if not sep:
        return wrapped, False, None, None
    sig_text, sep, priv_text = suffix.partition("-")
    if not sep:
        return wrapped, False, None, None
    try:
        raw_sig = _b64_raw_std(sig_text)
        raw_priv = _b64_raw_std(priv_text)
        sig = NodeKeySignature.unserialize(raw_sig)
    except TkaDecodeError:
        return wrapped, False, None, None
    return auth_key, True, sig, raw_priv


__all__ = [
    "MAX_PREV_KEYS",
    "NodeKeySignature",
    "RotationDetails",
    "SigKind",
    "decode_wrapped_authkey",
    "node_public_binary",
    "node_public_from_binary",
    "resign_nks",
    "sign_by_credential",
    "sign_direct",
    "verify_rotation_layers",
]
