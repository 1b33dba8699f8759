"""State: CBOR, apply_verified_aum and disablement, against Go's tka/state_test.go (v1.90.9)."""

from __future__ import annotations

import pytest
from argon2.low_level import Type, hash_secret_raw

from pytsnet.wire.tka import (
    AUM,
    AUMKind,
    Key,
    KeyKind,
    State,
    TkaDecodeError,
    TkaError,
    TkaKeyNotFound,
    disablement_kdf,
)

K1234 = Key(KeyKind.KEY25519, 0, b"\x01\x02\x03\x04")
K5678 = Key(KeyKind.KEY25519, 0, b"\x05\x06\x07\x08")
H_ADD_1234 = bytes.fromhex("53898e4311d0b6087fcbb871563868a16c629d9267df851fcfa7b52b31d2bd03")
H_ADD_5678 = bytes.fromhex("f09bda3bb7cf6756ea9adc25770aede4b3ca8142949d6ef5ca0add29af912fd4")
EMPTY = State(None, (), ())


@pytest.mark.parametrize(
    "state",
    [
        EMPTY,
        State(None, (), (Key(KeyKind.KEY25519, 2, b"\x05\x06\x07\x08", {"a": "b"}),)),
        State(None, (), (), state_id1=42, state_id2=22),
        State(None, (b"\x01\x02\x03\x04", b"\x05\x06\x07\x08"), ()),
        State(bytes(range(32)), (bytes(32),), (K1234,), state_id1=(1 << 64) - 1),
    ],
    ids=["Empty", "Key", "StateID", "DisablementSecrets", "Full"],
)
def test_clone_state_cbor_roundtrip(state: State) -> None:
    """Go TestCloneState's CBOR half: encode then decode gives the same state."""
    assert State.from_cbor(state.to_cbor()) == state


def test_state_encoding_is_gos() -> None:
    """Go encodes State{} with three nulls (no omitempty on 1-3) and omits zero StateIDs."""
    assert EMPTY.to_cbor() == bytes([0xA3, 0x01, 0xF6, 0x02, 0xF6, 0x03, 0xF6])
    assert State(None, (), (), state_id1=42).to_cbor() == bytes(
        [0xA4, 0x01, 0xF6, 0x02, 0xF6, 0x03, 0xF6, 0x04, 0x18, 0x2A]
    )


# Go TestApplyUpdatesChain: (name, updates, start, end) with Go's literal AUM hashes.
CHAIN_CASES = [
    (
        "AddKey",
        [AUM(AUMKind.ADD_KEY, None, key=K1234)],
        EMPTY,
        State(H_ADD_1234, (), (K1234,)),
    ),
    (
        "RemoveKey",
        [AUM(AUMKind.REMOVE_KEY, H_ADD_1234, key_id=b"\x01\x02\x03\x04")],
        State(H_ADD_1234, (), (K1234,)),
        State(
            bytes.fromhex("15d65756abfafbb592279503f40759898590c9c59056be1e2e9f02684c15ba4b"),
            (),
            (),
        ),
    ),
    (
        "UpdateKey",
        [
            AUM(
                AUMKind.UPDATE_KEY,
                H_ADD_1234,
                key_id=b"\x01\x02\x03\x04",
                votes=1,
                meta={"a": "b"},
            )
        ],
        State(H_ADD_1234, (), (K1234,)),
        State(
            bytes.fromhex("d55458a9c3ed6997439ba5a18b9b62d2c6e5e0c1bb4c61409e92a1281a3b458d"),
            (),
            (Key(KeyKind.KEY25519, 1, b"\x01\x02\x03\x04", {"a": "b"}),),
        ),
    ),
    (
        "ChainedKeyUpdates",
        [
            AUM(AUMKind.ADD_KEY, None, key=K5678),
            AUM(AUMKind.REMOVE_KEY, H_ADD_5678, key_id=b"\x01\x02\x03\x04"),
        ],
        State(None, (), (K1234,)),
        State(
            bytes.fromhex("218165fe5f757304b9deaff4ac742890364f5f509e533c74e80e0ce35e44ee1d"),
            (),
            (K5678,),
        ),
    ),
    (
        "Checkpoint",
        [
            AUM(AUMKind.ADD_KEY, None, key=K5678),
            AUM(AUMKind.CHECKPOINT, H_ADD_5678, state=State(None, (), (K1234,))),
        ],
        State(None, (b"\x01\x02\x03\x04",), ()),
        State(
            bytes.fromhex("57343671da5eea3cfb502954e976e8028bffd3540b50a043b2a65a8d8d8217d0"),
            (),
            (K1234,),
        ),
    ),
]


@pytest.mark.parametrize(
    ("updates", "start", "end"), [c[1:] for c in CHAIN_CASES], ids=[c[0] for c in CHAIN_CASES]
)
def test_apply_updates_chain_go_vectors(updates: list[AUM], start: State, end: State) -> None:
    state = start
    for update in updates:
        state = state.apply_verified_aum(update)
        assert state.last_aum_hash == update.hash()
    assert state == end


def test_add_key_hash_vectors_are_byte_exact() -> None:
    """The first link of Go's chain vectors, spelled out: hash of AddKey{25519, 1234}."""
    assert AUM(AUMKind.ADD_KEY, None, key=K1234).hash() == H_ADD_1234
    assert AUM(AUMKind.ADD_KEY, None, key=K5678).hash() == H_ADD_5678


# Go TestApplyUpdateErrors, with Go's error texts.
ERROR_CASES = [
    (
        "AddKey exists",
        [AUM(AUMKind.ADD_KEY, None, key=K1234)],
        State(None, (), (K1234,)),
        "key already exists",
    ),
    (
        "RemoveKey notfound",
        [AUM(AUMKind.REMOVE_KEY, None, key=K1234)],
        EMPTY,
        "key not found",
    ),
    ("UpdateKey notfound", [AUM(AUMKind.UPDATE_KEY, None, key_id=b"\x01")], EMPTY, "key not found"),
    (
        "UpdateKey now fails validation",
        [AUM(AUMKind.UPDATE_KEY, None, key_id=b"\x01", votes=99999)],
        State(None, (), (Key(KeyKind.KEY25519, 0, b"\x01"),)),
        "updated key fails validation: excessive key weight: 99999 > 4096",
    ),
    (
        "Bad lastAUMHash",
        [
            AUM(AUMKind.ADD_KEY, None, key=K5678),
            AUM(AUMKind.REMOVE_KEY, b"\x12\x34", key_id=b"\x01\x02\x03\x04"),
        ],
        State(None, (), (K1234,)),
        "parent AUMHash mismatch",
    ),
    (
        "Bad StateID",
        [AUM(AUMKind.CHECKPOINT, None, state=State(None, (), (), state_id1=1))],
        State(None, (), (Key(KeyKind.KEY25519, 0, b"\x01"),), state_id1=42),
        "checkpointed state has an incorrect stateID",
    ),
]


@pytest.mark.parametrize(
    ("updates", "start", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_apply_update_errors_go(updates: list[AUM], start: State, message: str) -> None:
    state = start
    with pytest.raises(TkaError) as info:
        for update in updates:
            state = state.apply_verified_aum(update)
    assert str(info.value) == message


def test_get_key_missing_is_typed() -> None:
    with pytest.raises(TkaKeyNotFound):
        EMPTY.get_key(b"\x01")
    assert State(None, (), (K1234,)).get_key(b"\x01\x02\x03\x04") == K1234


def test_unknown_kind_only_advances_the_hash() -> None:
    start = State(H_ADD_1234, (bytes(32),), (K1234,))
    update = AUM(AUMKind(9), H_ADD_1234, votes=3)
    assert start.apply_verified_aum(update) == State(update.hash(), (bytes(32),), (K1234,))


# Go x/crypto/argon2 TestVectors (argon2_test.go): Argon2i, password "password", salt
# "somesalt". Go's DisablementKDF is argon2.Key(secret, salt, 4, 16*1024, 4, 32) = this
# function with other inputs; tka has no literal DisablementKDF vector, so these tie
# argon2-cffi to Go's implementation, including the multi-lane (threads > 1) cases.
ARGON2I_GO_VECTORS = [
    (1, 64, 1, "b9c401d1844a67d50eae3967dc28870b22e508092e861a37"),
    (2, 64, 2, "2089f3e78a799720f80af806553128f29b132cafe40d059f"),
    (4, 4096, 4, "a11f7b7f3f93f02ad4bddb59ab62d121e278369288a0d0e7"),
    (4, 1024, 8, "0cdd3956aa35e6b475a7b0c63488822f774f15b43f6e6e17"),
    (3, 1024, 6, "d236b29c2b2a09babee842b0dec6aa1e83ccbdea8023dced"),
]


@pytest.mark.parametrize(("t", "m", "p", "want"), ARGON2I_GO_VECTORS)
def test_argon2i_matches_go_x_crypto(t: int, m: int, p: int, want: str) -> None:
    got = hash_secret_raw(b"password", b"somesalt", t, m, p, len(want) // 2, Type.I)
    assert got.hex() == want


def test_disablement_kdf_parameters_and_check() -> None:
    secret = b"\x01\x02\x03"
    derived = disablement_kdf(secret)
    assert derived == hash_secret_raw(
        secret, b"tailscale network-lock disablement salt", 4, 16 * 1024, 4, 32, Type.I
    )
    assert len(derived) == 32
    state = State(None, (bytes(32), derived), (K1234,))
    assert state.check_disablement(secret)
    assert not state.check_disablement(b"\x01\x02\x04")
    assert not state.check_disablement(derived)  # the stored value itself is not the secret
    assert not EMPTY.check_disablement(secret)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (State(bytes(32), (bytes(32),), (K1234,)), "cannot specify a parent AUM"),
        (State(None, (), (K1234,)), "at least one disablement secret required"),
        (State(None, (bytes(32),) * 2, (K1234,)), r"disablement\[0\]: duplicates disablement\[1\]"),
        (State(None, (bytes(31),), (K1234,)), r"disablement\[0\]: invalid length \(got 31, want 32\)"),
        (State(None, tuple(bytes([i]) * 32 for i in range(33)), (K1234,)), "too many disablement"),
        (State(None, (bytes(32),), ()), "at least one key is required"),
        (State(None, (bytes(32),), (K1234,)), "key votes must be non-zero"),
        (
            State(None, (bytes(32),), (Key(KeyKind.KEY25519, 1, bytes(32)),) * 2),
            r"key\[0\]: duplicates key\[1\]",
        ),
    ],
)
def test_static_validate_checkpoint_refusals(state: State, message: str) -> None:
    with pytest.raises(TkaError, match=message):
        state.static_validate_checkpoint()


@pytest.mark.parametrize(
    "wire",
    [
        b"\xa1\x02\x80",  # empty DisablementSecrets array: Go's non-nil empty, not representable
        b"\xa1\x03\x80",
        b"\xa1\x02\x81\xf6",  # a null disablement value
        b"\xa1\x03\x81\xf6",  # a null key
        b"\xa1\x04\x20",  # negative StateID
        b"\xa1\x01\x41\x00",  # 1-byte LastAUMHash
    ],
)
def test_state_decode_refusals(wire: bytes) -> None:
    with pytest.raises(TkaDecodeError):
        State.from_cbor(wire)
