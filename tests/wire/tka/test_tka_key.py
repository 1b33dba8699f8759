"""Key (Go tka/key.go), Ed25519 verification and the NL key types (Go types/key/nl.go)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pytsnet.wire.keys import KeyParseError, NLPrivate, NLPublic
from pytsnet.wire.tka import Key, KeyKind, TkaDecodeError, TkaError, cbor, verify_25519

# RFC 8032 §7.1 TEST 2: a fixed Ed25519 key, message and signature.
RFC_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC_PUB = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC_MSG = b"\x72"
RFC_SIG = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def test_nl_private_signs_as_rfc8032() -> None:
    priv = NLPrivate.from_ed25519(RFC_SEED)
    assert priv.key_id() == RFC_PUB
    assert priv.public() == NLPublic(RFC_PUB)
    assert priv.sign(RFC_MSG) == RFC_SIG
    assert verify_25519(RFC_PUB, RFC_MSG, RFC_SIG)


def test_nl_private_text_forms_are_gos() -> None:
    priv = NLPrivate.from_ed25519(RFC_SEED)
    text = priv.to_text()
    assert text == "nlpriv:" + RFC_SEED.hex() + RFC_PUB.hex()
    assert NLPrivate.from_text(text) == priv
    assert NLPrivate.from_ed25519(priv.raw) == priv  # Go's 64-byte form
    assert priv.public().to_text() == "nlpub:" + RFC_PUB.hex()
    assert priv.public().cli_string() == "tlpub:" + RFC_PUB.hex()
    assert NLPublic.from_text(priv.public().cli_string()) == priv.public()
    assert "4ccd" not in repr(priv) and "4ccd" not in str(priv)


@pytest.mark.parametrize(
    "text",
    [
        "privkey:" + "00" * 64,
        "nlpriv:" + "00" * 32,
        "nlpriv:" + "zz" * 64,
        "nlpriv:" + RFC_SEED.hex() + "00" * 32,  # public half does not match the seed
    ],
)
def test_nl_private_refuses_bad_text(text: str) -> None:
    with pytest.raises(KeyParseError):
        NLPrivate.from_text(text)


def test_nl_private_generate_is_random_and_consistent() -> None:
    a, b = NLPrivate.generate(), NLPrivate.generate()
    assert a != b
    assert verify_25519(a.key_id(), b"m", a.sign(b"m"))
    assert not verify_25519(b.key_id(), b"m", a.sign(b"m"))
    with pytest.raises(AttributeError):
        a._raw = b""  # type: ignore[misc]


def test_verify_25519_refuses_malformed_input() -> None:
    assert not verify_25519(RFC_PUB[:31], RFC_MSG, RFC_SIG)
    assert not verify_25519(RFC_PUB, RFC_MSG, RFC_SIG[:63])
    assert not verify_25519(RFC_PUB, RFC_MSG + b"\x00", RFC_SIG)
    flipped = bytes([RFC_SIG[0] ^ 1]) + RFC_SIG[1:]
    assert not verify_25519(RFC_PUB, RFC_MSG, flipped)
    # S >= L (S + L, the classic malleability): refused by RFC 8032 and by Go's ZIP-215 alike.
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(RFC_SIG[32:], "little") + order
    assert not verify_25519(RFC_PUB, RFC_MSG, RFC_SIG[:32] + s.to_bytes(32, "little"))


def test_verify_25519_edge_cases_against_zip215() -> None:
    """Where RFC 8032 (OpenSSL) and Go's ZIP-215 differ, we may only refuse, never admit more.

    With the identity as public key and as R and S = 0, both the cofactorless and the cofactored
    equation hold for any message: OpenSSL, Go's crypto/ed25519 and ZIP-215 all accept (a trusted
    key's holder chose it; nothing for the verifier to decide). With R encoded non-canonically
    (y = p + 1), ZIP-215 accepts (it decodes any encoding) but OpenSSL compares R's bytes and
    refuses: the one direction of difference.
    """
    identity = (1).to_bytes(32, "little")
    non_canonical_identity = (2**255 - 19 + 1).to_bytes(32, "little")
    assert verify_25519(identity, b"any", identity + bytes(32))
    assert verify_25519(non_canonical_identity, b"any", identity + bytes(32))
    assert not verify_25519(identity, b"any", non_canonical_identity + bytes(32))


def test_key_id_and_validation_match_go() -> None:
    pub = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    k = Key(KeyKind.KEY25519, 2, pub)
    assert k.id() == pub
    k.static_validate()
    with pytest.raises(TkaError, match="unknown key kind"):
        Key(KeyKind.INVALID, 1, pub).id()
    for bad, msg in [
        (Key(KeyKind.KEY25519, 4097, pub), "excessive key weight: 4097 > 4096"),
        (Key(KeyKind.KEY25519, 0, pub), "key votes must be non-zero"),
        (Key(KeyKind.KEY25519, 1, pub, {"k": "v" * 512}), "key metadata too big"),
        (Key(KeyKind(7), 1, pub), "unrecognized key kind"),
    ]:
        with pytest.raises(TkaError, match=msg):
            bad.static_validate()
    Key(KeyKind.KEY25519, 4096, pub, {"k": "v" * 511}).static_validate()


def test_key_cbor_layout() -> None:
    """Kind 1, Votes 2, Public 3, Meta 12 (omitted when empty), keys sorted as Go."""
    k = Key(KeyKind.KEY25519, 300, b"\xaa", {"n": "x"})
    assert cbor.encode(k.to_cbor_obj()) == bytes(
        [0xA4, 0x01, 0x01, 0x02, 0x19, 0x01, 0x2C, 0x03, 0x41, 0xAA, 0x0C, 0xA1, 0x61, 0x6E, 0x61, 0x78]
    )
    assert Key.from_cbor_obj(cbor.decode(cbor.encode(k.to_cbor_obj()))) == k
    assert cbor.encode(Key(KeyKind.KEY25519, 1, b"\xaa", {}).to_cbor_obj()) == bytes(
        [0xA3, 0x01, 0x01, 0x02, 0x01, 0x03, 0x41, 0xAA]
    )
    with pytest.raises(TkaDecodeError):
        Key.from_cbor_obj(cbor.decode(b"\xa1\x03\x40"))  # empty non-nil Public: not representable
    with pytest.raises(TkaDecodeError):
        Key.from_cbor_obj(cbor.decode(b"\xa1\x0c\xa1\x01\x61x"))  # Meta with an int key
