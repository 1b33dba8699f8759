"""Tailnet Lock (Go's ``tka`` package), sans-IO: AUMs, the authority's state, node-key signatures.

Byte-compatible with Go: the same canonical CBOR, BLAKE2s hashes and Ed25519 signatures, checked
against Go's test vectors (tests/wire/tka/). Nothing here does I/O or reads a clock.
"""

from pytsnet.wire.tka.aum import (
    AUM,
    AUMKind,
    Signature,
    aum_hash_from_text,
    aum_hash_text,
    signature_verify,
)
from pytsnet.wire.tka.errors import (
    TkaChainError,
    TkaDecodeError,
    TkaError,
    TkaKeyNotFound,
    TkaVerifyError,
)
from pytsnet.wire.tka.key import Key, KeyKind, verify_25519
from pytsnet.wire.tka.sig import (
    NodeKeySignature,
    RotationDetails,
    SigKind,
    decode_wrapped_authkey,
    resign_nks,
    sign_by_credential,
    sign_direct,
)
from pytsnet.wire.tka.state import State, disablement_kdf

AUMHash = bytes  # 32 bytes: BLAKE2s-256 of an AUM's canonical CBOR

__all__ = [
    "AUM",
    "AUMHash",
    "AUMKind",
    "Key",
    "KeyKind",
    "NodeKeySignature",
    "RotationDetails",
    "SigKind",
    "Signature",
    "State",
    "TkaChainError",
    "TkaDecodeError",
    "TkaError",
    "TkaKeyNotFound",
    "TkaVerifyError",
    "aum_hash_from_text",
    "aum_hash_text",
    "decode_wrapped_authkey",
    "disablement_kdf",
    "resign_nks",
    "sign_by_credential",
    "sign_direct",
    "signature_verify",
    "verify_25519",
]
