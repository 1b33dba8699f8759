"""Hypothesis fuzz of the Tailnet Lock parsers: typed errors only, bounded memory, stable hashes.

Bytes from a peer or control (AUMs in sync, node-key signatures in the netmap, wrapped auth
keys) reach ``AUM.unserialize``, ``NodeKeySignature.unserialize``, ``State.from_cbor`` and
``cbor.decode``; none may raise anything but TkaError, and whatever parses must re-encode to a
fixpoint (Go hashes the re-encoding, so the name of an AUM must not drift between encodings).
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytsnet.wire.keys import NLPrivate, NodePrivate
from pytsnet.wire.tka import (
    AUM,
    AUMKind,
    Key,
    KeyKind,
    NodeKeySignature,
    SigKind,
    State,
    TkaError,
    cbor,
    decode_wrapped_authkey,
    sign_direct,
)

_PRIV = NLPrivate.from_ed25519(bytes(range(32)))
_KEY = Key(KeyKind.KEY25519, 3, _PRIV.key_id(), {"name": "a"})
_NODE = NodePrivate.from_raw(bytes([7] * 32)).public()
_DIRECT = sign_direct(_NODE, _PRIV, wrapping_pubkey=_PRIV.key_id())
_ROTATION = NodeKeySignature(SigKind.ROTATION, pubkey=b"np" + bytes(32), nested=_DIRECT, signature=bytes(64))
SEEDS = [
    AUM(AUMKind.ADD_KEY, bytes(32), key=_KEY).signed(_PRIV).serialize(),
    AUM(AUMKind.UPDATE_KEY, bytes(32), key_id=_KEY.id(), votes=5, meta={"x": "y"}).serialize(),
    AUM(AUMKind.CHECKPOINT, None, state=State(None, (bytes(32),), (_KEY,), 1, 2)).serialize(),
    _DIRECT.serialize(),
    _ROTATION.serialize(),
    State(bytes(32), (bytes(32),), (_KEY,), 9, 0).to_cbor(),
]

PARSERS: list[tuple[str, Callable[[bytes], object]]] = [
    ("cbor", cbor.decode),
    ("aum", AUM.unserialize),
    ("nks", NodeKeySignature.unserialize),
    ("state", State.from_cbor),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid TKA encoding with a few bytes flipped, inserted or cut."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 2))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


INPUTS = st.binary(max_size=256) | mutated()


def _parse_or_typed_error(parse: Callable[[bytes], object], data: bytes) -> object | None:
    try:
        return parse(data)
    except TkaError:
        return None


@pytest.mark.parametrize(("name", "parse"), PARSERS, ids=[p[0] for p in PARSERS])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=INPUTS)
def test_parsers_raise_only_typed_errors(name: str, parse: Callable[[bytes], object], data: bytes) -> None:
    _parse_or_typed_error(parse, data)


@settings(max_examples=400, deadline=None)
@given(data=INPUTS)
def test_aum_reencoding_is_a_fixpoint(data: bytes) -> None:
    aum = _parse_or_typed_error(AUM.unserialize, data)
    if aum is None:
        return
    assert isinstance(aum, AUM)
    again = AUM.unserialize(aum.serialize())
    assert again.serialize() == aum.serialize()
    assert again.hash() == aum.hash()
    assert again.sig_hash() == aum.sig_hash()
    try:  # validation and hashing of whatever parsed stay within TkaError
        aum.static_validate()
        aum.weight(State(None, (), (_KEY,)))
    except TkaError:
        pass


@settings(max_examples=400, deadline=None)
@given(data=INPUTS)
def test_nks_reencoding_is_a_fixpoint_and_verify_is_typed(data: bytes) -> None:
    sig = _parse_or_typed_error(NodeKeySignature.unserialize, data)
    if sig is None:
        return
    assert isinstance(sig, NodeKeySignature)
    assert NodeKeySignature.unserialize(sig.serialize()) == sig
    for call in (
        lambda: sig.verify_signature(_NODE, _KEY),
        sig.rotation_details,
        sig.authorizing_key_id,
        sig.wrapping_public,
    ):
        with contextlib.suppress(TkaError):
            call()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_wrapped_authkey_parser_never_raises(text: str) -> None:
    key, wrapped, sig, priv = decode_wrapped_authkey("tskey-x--TL" + text)
    assert wrapped == (sig is not None) == (priv is not None)
    assert key in ("tskey-x", "tskey-x--TL" + text)


@pytest.mark.parametrize(
    "data",
    [
        b"\x9b" + b"\xff" * 8,  # a 2**64-element array announced in 9 bytes
        b"\x5b" + b"\x7f" + b"\xff" * 7,  # a huge byte string
        b"\x99\x10\x00" + b"\x9f" * 10,
        b"\xb9\x04\x00" + b"\x81" * 100_000,  # a long run of nested arrays
        (b"\x99\x10\x00" * 15) + b"\x00" * 200_000,  # wide and deep, at the limits
    ],
)
def test_memory_is_bounded_by_input(data: bytes) -> None:
    """A declared length never allocates more than the bytes present justify."""
    tracemalloc.start()
    try:
        for _, parse in PARSERS:
            _parse_or_typed_error(parse, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(data) + 2_000_000


def test_seeds_parse_so_mutations_start_from_valid_encodings() -> None:
    assert [type(AUM.unserialize(s)) for s in SEEDS[:3]] == [AUM] * 3
    assert NodeKeySignature.unserialize(SEEDS[3]) == _DIRECT
    assert NodeKeySignature.unserialize(SEEDS[4]) == _ROTATION
    assert State.from_cbor(SEEDS[5]).state_id1 == 9
