"""AUM encoding, hashing, weight and validation against Go's tka/aum_test.go vectors (v1.90.9)."""

from __future__ import annotations

import base64

import pytest

from pytsnet.wire.keys import NLPrivate
from pytsnet.wire.tka import (
    AUM,
    AUMKind,
    Key,
    KeyKind,
    Signature,
    State,
    TkaDecodeError,
    TkaError,
    TkaVerifyError,
    aum_hash_from_text,
    aum_hash_text,
    signature_verify,
    verify_25519,
)
from pytsnet.wire.tka.aum import blake2s256

# Go TestSerialization: (name, AUM, expected CBOR), transcribed byte for byte from aum_test.go.
SERIALIZATION_VECTORS = [
    (
        "AddKey",
        AUM(AUMKind.ADD_KEY, None, key=Key(KeyKind.INVALID, 0, b"")),
        bytes([0xA3, 0x01, 0x01, 0x02, 0xF6, 0x03, 0xA3, 0x01, 0x00, 0x02, 0x00, 0x03, 0xF6]),
    ),
    (
        "RemoveKey",
        AUM(AUMKind.REMOVE_KEY, None, key_id=b"\x01\x02"),
        bytes([0xA3, 0x01, 0x02, 0x02, 0xF6, 0x04, 0x42, 0x01, 0x02]),
    ),
    (
        "UpdateKey",
        AUM(AUMKind.UPDATE_KEY, None, votes=2, key_id=b"\x01\x02", meta={"a": "b"}),
        bytes(
            [
                0xA5,
                0x01,
                0x04,
                0x02,
                0xF6,
                0x04,
                0x42,
                0x01,
                0x02,
                0x06,
                0x02,
                0x07,
                0xA1,
                0x61,
                0x61,
                0x61,
                0x62,
            ]
        ),
    ),
    (
        "Checkpoint",
        AUM(
            AUMKind.CHECKPOINT,
            b"\x01\x02",
            state=State(
                last_aum_hash=bytes(32),
                disablement_secrets=(),
                keys=(Key(KeyKind.KEY25519, 0, b"\x05\x06"),),
            ),
        ),
        bytes([0xA3, 0x01, 0x05, 0x02, 0x42, 0x01, 0x02, 0x05, 0xA3, 0x01, 0x58, 0x20])
        + bytes(32)
        + bytes([0x02, 0xF6, 0x03, 0x81, 0xA3, 0x01, 0x01, 0x02, 0x00, 0x03, 0x42, 0x05, 0x06]),
    ),
    (
        "Signature",
        AUM(AUMKind.ADD_KEY, None, signatures=(Signature(key_id=b"\x01", signature=b""),)),
        bytes([0xA3, 0x01, 0x01, 0x02, 0xF6, 0x17, 0x81, 0xA2, 0x01, 0x41, 0x01, 0x02, 0xF6]),
    ),
]


@pytest.mark.parametrize(
    ("aum", "expect"), [v[1:] for v in SERIALIZATION_VECTORS], ids=[v[0] for v in SERIALIZATION_VECTORS]
)
def test_serialization_go_vectors(aum: AUM, expect: bytes) -> None:
    assert aum.serialize() == expect
    assert AUM.unserialize(expect) == aum
    assert aum.hash() == blake2s256(expect)


def _key(votes: int = 2) -> tuple[NLPrivate, Key]:
    priv = NLPrivate.generate()
    return priv, Key(KeyKind.KEY25519, votes, priv.key_id())


def test_aum_weight_go_cases() -> None:
    """Go TestAUMWeight: unknown keys weigh nothing, each distinct trusted key its votes, once."""
    _, key = _key()
    _, key2 = _key()
    fake = bytes(range(32))
    assert AUM(AUMKind.INVALID, None).weight(State(None, (), ())) == 0
    unknown = AUM(AUMKind.INVALID, None, signatures=(Signature(fake, b""),))
    assert unknown.weight(State(None, (), ())) == 0
    unary = AUM(AUMKind.INVALID, None, signatures=(Signature(key.id(), b""),))
    assert unary.weight(State(None, (), (key,))) == 2
    multi = AUM(AUMKind.INVALID, None, signatures=(Signature(key.id(), b""), Signature(key2.id(), b"")))
    assert multi.weight(State(None, (), (key, key2))) == 4
    double = AUM(AUMKind.INVALID, None, signatures=(Signature(key.id(), b""), Signature(key.id(), b"")))
    assert double.weight(State(None, (), (key,))) == 2


def test_aum_hashes_go() -> None:
    """Go TestAUMHashes: sig_hash ignores signatures, hash does not."""
    aum = AUM(AUMKind.ADD_KEY, None, key=Key(KeyKind.KEY25519, 0, b""))
    signed = AUM(
        AUMKind.ADD_KEY,
        None,
        key=Key(KeyKind.KEY25519, 0, b""),
        signatures=(Signature(b"\x01\x02\x03\x04", b""),),
    )
    assert aum.sig_hash() == signed.sig_hash()
    assert aum.hash() != signed.hash()
    assert len(signed.signatures) == 1
    assert aum.hash() == blake2s256(aum.serialize())


def test_verify25519_go() -> None:
    """Go TestVerify25519: a signature over sig_hash verifies with its key and not another."""
    priv, key = _key()
    aum = AUM(
        AUMKind.REMOVE_KEY,
        None,
        key_id=b"\x01\x02\x03\x04",
        signatures=(Signature(b"\x2d\x2a", b""),),  # junk: sig_hash must ignore it
    )
    aum = AUM(
        AUMKind.REMOVE_KEY,
        None,
        key_id=b"\x01\x02\x03\x04",
        signatures=(Signature(key.id(), priv.sign(aum.sig_hash())),),
    )
    signature_verify(aum.signatures[0], aum.sig_hash(), key)
    _, key2 = _key()
    with pytest.raises(TkaVerifyError):
        signature_verify(aum.signatures[0], aum.sig_hash(), key2)
    with pytest.raises(TkaVerifyError, match="wrong length"):
        signature_verify(aum.signatures[0], aum.sig_hash(), Key(KeyKind.KEY25519, 1, b"\x01"))
    with pytest.raises(TkaVerifyError, match="unhandled key type"):
        signature_verify(aum.signatures[0], aum.sig_hash(), Key(KeyKind.INVALID, 1, key.public))


def test_signed_appends_a_verifying_signature() -> None:
    priv, key = _key()
    aum = AUM(AUMKind.NO_OP, bytes(32))
    signed = aum.signed(priv).signed(priv.raw[:32])  # NLPrivate and a bare seed sign alike
    assert len(signed.signatures) == 2
    assert signed.signatures[0] == signed.signatures[1]  # Ed25519 is deterministic
    assert signed.sig_hash() == aum.sig_hash()
    signature_verify(signed.signatures[0], signed.sig_hash(), key)
    assert verify_25519(key.public, aum.sig_hash(), signed.signatures[0].signature)


def test_aum_hash_text_roundtrip_and_refusals() -> None:
    h = blake2s256(b"x")
    text = aum_hash_text(h)
    assert len(text) == 52 and "=" not in text
    assert aum_hash_from_text(text) == h
    for bad in ("", text[:-1], text + "A", text.lower(), text[:-1] + "1", text[:-4] + "===="):
        with pytest.raises(TkaDecodeError):
            aum_hash_from_text(bad)


def _valid_state(priv_key: Key) -> State:
    return State(None, (bytes(32),), (priv_key,))


@pytest.mark.parametrize(
    ("aum", "message"),
    [
        (AUM(AUMKind.ADD_KEY, None), "AddKey AUMs must contain a key"),
        (
            AUM(AUMKind.ADD_KEY, None, key=Key(KeyKind.KEY25519, 1, bytes(32)), key_id=b""),
            "AddKey AUMs may only specify a Key",
        ),
        (AUM(AUMKind.REMOVE_KEY, None), "RemoveKey AUMs must specify a key ID"),
        (
            AUM(AUMKind.REMOVE_KEY, None, key_id=b"\x01", votes=1),
            "RemoveKey AUMs may only specify a KeyID",
        ),
        (AUM(AUMKind.UPDATE_KEY, None, key_id=b"\x01"), "must contain an update to votes"),
        (
            AUM(
                AUMKind.UPDATE_KEY,
                None,
                key_id=b"\x01",
                votes=1,
                state=None,
                key=Key(KeyKind.KEY25519, 1, bytes(32)),
            ),
            "UpdateKey AUMs may only specify KeyID, Votes, and Meta",
        ),
        (AUM(AUMKind.CHECKPOINT, None), "Checkpoint AUMs must specify the state"),
        (AUM(AUMKind.NO_OP, b""), "absent parent must be represented by a nil slice"),
        (
            AUM(AUMKind.NO_OP, None, signatures=(Signature(bytes(32), bytes(63)),)),
            "signature 0 has missing keyID or malformed signature",
        ),
        (
            AUM(AUMKind.CHECKPOINT, None, state=State(None, (), ())),
            "checkpoint state: at least one disablement secret required",
        ),
        (
            AUM(AUMKind.ADD_KEY, None, key=Key(KeyKind.KEY25519, 0, bytes(32))),
            "key votes must be non-zero",
        ),
    ],
)
def test_static_validate_refusals_match_go(aum: AUM, message: str) -> None:
    with pytest.raises(TkaError, match=message):
        aum.static_validate()


def test_static_validate_accepts_well_formed_kinds() -> None:
    priv, key = _key()
    AUM(AUMKind.ADD_KEY, bytes(32), key=key).signed(priv).static_validate()
    AUM(AUMKind.REMOVE_KEY, bytes(32), key_id=key.id()).static_validate()
    AUM(AUMKind.UPDATE_KEY, bytes(32), key_id=key.id(), meta={}).static_validate()
    AUM(AUMKind.CHECKPOINT, None, state=_valid_state(key)).static_validate()
    AUM(AUMKind.NO_OP, bytes(32)).static_validate()
    AUM(AUMKind(42), bytes(32), votes=7).static_validate()  # a newer Go's kind: accepted as is


def test_unknown_kind_and_fields_survive_as_go_does() -> None:
    """A newer Go's kind is kept (not refused); unknown int keys are dropped from the re-encoding."""
    wire = bytes([0xA3, 0x01, 0x18, 0x2A, 0x02, 0xF6, 0x10, 0x01])  # {1: 42, 2: null, 16: 1}
    aum = AUM.unserialize(wire)
    assert int(aum.message_kind) == 42 and aum.message_kind.name == "UNKNOWN_42"
    assert aum.serialize() == bytes([0xA2, 0x01, 0x18, 0x2A, 0x02, 0xF6])
    assert aum.hash() == blake2s256(aum.serialize())


def test_empty_non_nil_fields_stay_distinct_as_in_go() -> None:
    """Go keeps a decoded empty KeyID/Meta non-nil (validation sees it) but omits it on encode."""
    wire = bytes([0xA4, 0x01, 0x01, 0x02, 0xF6, 0x04, 0x40, 0x07, 0xA0])  # KeyID h'', Meta {}
    aum = AUM.unserialize(wire)
    assert aum.key_id == b"" and aum.meta == {}
    assert aum.serialize() == bytes([0xA2, 0x01, 0x01, 0x02, 0xF6])
    with pytest.raises(TkaError, match="AddKey AUMs must contain a key"):
        aum.static_validate()


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\xa1\x01\x20",  # MessageKind -1
        b"\xa1\x01\x19\x01\x00",  # MessageKind 256 overflows uint8
        b"\xa1\x02\x61a",  # PrevAUMHash as text
        b"\xa1\x03\x01",  # Key not a map
        b"\xa1\x17\xa0",  # Signatures not an array
        b"\xa1\x61a\x01",  # text struct key
        b"\xa2\x01\x01\x01\x01",  # duplicate key
        b"\x80",  # not a map
        b"\xa1\x05\xa1\x01\x42\x01\x02",  # LastAUMHash of 2 bytes
        b"\xa1\x3b\x80\x00\x00\x00\x00\x00\x00\x00\x00",  # key -2**63-1: Go's int64 overflows
        b"\xa2\x20\x00\x1b\xff\xff\xff\xff\xff\xff\xff\xff\x00",  # -1 and 2**64-1: one int64
    ],
)
def test_unserialize_refuses_with_typed_error(wire: bytes) -> None:
    with pytest.raises(TkaDecodeError):
        AUM.unserialize(wire)


# Go TestDeserializeExistingAUMs (tka/aum_test.go, v1.98.9): a genesis checkpoint AUM created in
# a real test tailnet by Go (commit d4c5b27, 2025-11-07) — the same CBOR layout as v1.90.9.
GO_GENESIS_AUM = (
    "pAEFAvYFpQH2AopYII0sLaLSEZU3W5DT1dG2WYnzjCBr4tXtVbCT2LvA9LS6WCAQhwVGDiUGRiu3P63gucZ/8otjt2DX"
    "yk+OBjbh5iWx1Fgg5VU4oRQiMoq5qK00McfpwtmjcheVammLCRwzdp2Zje9YIHDoOXe4ogPSy7lfA/veyPCKM6iZe3PT"
    "gzhQZ4W5Sh7wWCBYQtiQ6NcRlyVARJxgAj1BbbvdJQ0t4m+vHqU1J02oDlgg2sksJA+COfsBkrohwHBWlbKrpS8Mvigp"
    "l+enuHw9rIJYIB/+CUBBBLUz0KeHu7NKrg5ZEhjjPUWhNcf9QTNHjuNWWCCJuxqPZ6/IASPTmAERaoKnBNH/D+zY4p4T"
    "UGHR4fACjFggMtDAipPutgcxKnU9Tg2663gP3KlTQfztV3hBwiePZdRYIGYeD2erBkRouSL20lOnWHHlRq5kmNfN6xFb"
    "2CTaPjnXA4KjAQECAQNYIADftG3yaitV/YMoKSBP45zgyeodClumN9ZaeQg/DmCEowEBAgEDWCBRKbmWSzOyHXbHJuYn"
    "8s7dmMPDzxmIjgBoA80cBYgItAQbEWOrxfqJzIkFG/5uNUp0s/ScF4GiAVggAN+0bfJqK1X9gygpIE/jnODJ6h0KW6Y3"
    "1lp5CD8OYIQCWEAENvzblKV2qx6PED5YdGy8kWa7nxEnaeuMmS5Wkx0n7CXs0XxD5f2NIE+pSv9cOsNkfYNndQkYD7ne"
    "33hQOsQM"
)


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


def test_deserialize_existing_go_aum() -> None:
    data = _b64(GO_GENESIS_AUM)
    key1 = _b64("AN+0bfJqK1X9gygpIE/jnODJ6h0KW6Y31lp5CD8OYIQ=")
    key2 = _b64("USm5lkszsh12xybmJ/LO3ZjDw88ZiI4AaAPNHAWICLQ=")
    want = AUM(
        AUMKind.CHECKPOINT,
        None,
        state=State(
            last_aum_hash=None,
            disablement_secrets=tuple(
                _b64(v)
                for v in (
                    "jSwtotIRlTdbkNPV0bZZifOMIGvi1e1VsJPYu8D0tLo=",
                    "EIcFRg4lBkYrtz+t4LnGf/KLY7dg18pPjgY24eYlsdQ=",
                    "5VU4oRQiMoq5qK00McfpwtmjcheVammLCRwzdp2Zje8=",
                    "cOg5d7iiA9LLuV8D+97I8IozqJl7c9ODOFBnhblKHvA=",
                    "WELYkOjXEZclQEScYAI9QW273SUNLeJvrx6lNSdNqA4=",
                    "2sksJA+COfsBkrohwHBWlbKrpS8Mvigpl+enuHw9rII=",
                    "H/4JQEEEtTPQp4e7s0quDlkSGOM9RaE1x/1BM0eO41Y=",
                    "ibsaj2evyAEj05gBEWqCpwTR/w/s2OKeE1Bh0eHwAow=",
                    "MtDAipPutgcxKnU9Tg2663gP3KlTQfztV3hBwiePZdQ=",
                    "Zh4PZ6sGRGi5IvbSU6dYceVGrmSY183rEVvYJNo+Odc=",
                )
            ),
            keys=(Key(KeyKind.KEY25519, 1, key1), Key(KeyKind.KEY25519, 1, key2)),
            state_id1=1253033988139371657,
            state_id2=18333649726973670556,
        ),
        signatures=(
            Signature(
                key1,
                _b64(
                    "BDb825SldqsejxA+WHRsvJFmu58RJ2nrjJkuVpMdJ+wl7NF8Q+X9jSBPqUr/XDrDZH2DZ3UJGA+53t94UDrEDA=="
                ),
            ),
        ),
    )
    got = AUM.unserialize(data)
    assert got == want
    # Our encoding of it is Go's, byte for byte, so its hash is the name Go gives it ...
    assert got.serialize() == data
    assert got.hash() == blake2s256(data)
    # ... and Go's signature verifies over our sig_hash: the genesis is authentic to us too.
    got.static_validate()
    signature_verify(got.signatures[0], got.sig_hash(), got.state.keys[0])  # type: ignore[union-attr]
    assert got.weight(got.state) == 1  # type: ignore[arg-type]
    # A genesis applies to an empty state as Go's Bootstrap does.
    state = State(None, (), (), 1253033988139371657, 18333649726973670556).apply_verified_aum(got)
    assert state.last_aum_hash == got.hash() and state.keys == want.state.keys  # type: ignore[union-attr]
