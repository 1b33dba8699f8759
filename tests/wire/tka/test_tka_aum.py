"""AUM encoding, hashing, weight and validation against Go's tka/aum_test.go vectors (v1.90.9)."""

from __future__ import annotations

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
    aum_hash_from_text,
    aum_hash_text,
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
            [0xA5, 0x01, 0x04, 0x02, 0xF6, 0x04, 0x42, 0x01, 0x02, 0x06, 0x02, 0x07]
            + [0xA1, 0x61, 0x61, 0x61, 0x62]
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
