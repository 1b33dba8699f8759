"""wire/tka/cbor.py: Go's CTAP2 encoding (RFC 8949 Appendix A vectors, cbor2 as an oracle) and
the decoder's limits (Go tka.go cborDecOpts)."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.wire.tka import TkaDecodeError, TkaError
from pytsnet.wire.tka.cbor import (
    MAX_ARRAY_ELEMENTS,
    MAX_MAP_PAIRS,
    MAX_NESTED_LEVELS,
    decode,
    encode,
)

# RFC 8949 Appendix A: value -> encoding (the subset TKA uses: ints, bytes, text, arrays, maps).
RFC_VECTORS: list[tuple[object, str]] = [
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}, "a56161614161626142616361436164614461656145"),
]


@pytest.mark.parametrize(("value", "hexed"), RFC_VECTORS, ids=[h for _, h in RFC_VECTORS])
def test_rfc8949_vectors(value: object, hexed: str) -> None:
    assert encode(value) == bytes.fromhex(hexed)
    assert decode(bytes.fromhex(hexed)) == value


def test_map_keys_sorted_bytewise_as_fxamacker_ctap2() -> None:
    """fxamacker v2.7 SortCTAP2 = SortBytewiseLexical; cbor2's canonical mode is length-first.

    They differ only across key types of different encoded length; Go's order is ours.
    """
    value = {-1: 0, 24: 0}
    assert encode(value) == bytes.fromhex("a21818002000")
    assert cbor2.dumps(value, canonical=True) == bytes.fromhex("a22000181800")
    assert encode({3: 0, 1: 0, 23: 0, 2: 0}) == bytes.fromhex("a40100020003001700")
    assert encode({"bb": 0, "a": 0, "c": 0}) == bytes.fromhex("a361610061630062626200")


def test_encode_refuses_what_go_never_encodes() -> None:
    for bad in (1.5, object(), 1 << 64, -(1 << 64) - 1, {1, 2}):
        with pytest.raises(TkaError):
            encode(bad)


def _nest(levels: int) -> bytes:
    return b"\x81" * (levels - 1) + b"\x80"


def test_depth_limit_is_gos() -> None:
    assert MAX_NESTED_LEVELS == 16
    decode(_nest(16))
    with pytest.raises(TkaDecodeError, match="nested deeper"):
        decode(_nest(17))
    decode(b"\xa1\x01" * 15 + b"\xa0")
    with pytest.raises(TkaDecodeError, match="nested deeper"):
        decode(b"\xa1\x01" * 16 + b"\xa0")


def test_size_limits_are_gos() -> None:
    assert (MAX_ARRAY_ELEMENTS, MAX_MAP_PAIRS) == (4096, 1024)
    assert decode(b"\x99\x10\x00" + b"\x00" * 4096) == [0] * 4096
    with pytest.raises(TkaDecodeError, match="array over"):
        decode(b"\x99\x10\x01" + b"\x00" * 4097)
    pairs = b"".join(encode(i) + b"\x00" for i in range(1024))
    assert len(decode(b"\xb9\x04\x00" + pairs)) == 1024  # type: ignore[arg-type]
    with pytest.raises(TkaDecodeError, match="map over"):
        decode(b"\xb9\x04\x01" + pairs + encode(1024) + b"\x00")


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        ("a201000100", "duplicate"),
        ("a2616100616100", "duplicate"),
        ("5f4101ff", "indefinite"),
        ("7f6161ff", "indefinite"),
        ("9f01ff", "indefinite"),
        ("bf0100ff", "indefinite"),
        ("c11a514b67b0", "tags"),
        ("d818456449455446", "tags"),
        ("0000", "trailing"),
        ("", "truncated"),
        ("18", "truncated"),
        ("4201", "truncated"),
        ("9bffffffffffffffff", "array over"),
        ("9a00000fff", "truncated"),
        ("5bffffffffffffffff00", "truncated"),
        ("1c", "reserved"),
        ("f0", "simple value"),
        ("f820", "simple value"),
        ("62c328", "UTF-8"),
        ("a1800100", "map key"),
        ("a1f501", "map key"),
        ("ff", "indefinite"),
    ],
)
def test_decoder_refusals(wire: str, why: str) -> None:
    with pytest.raises(TkaDecodeError, match=why):
        decode(bytes.fromhex(wire))


def test_decoder_accepts_non_canonical_input_as_go_does() -> None:
    """Go's decoder does not demand canonical input; the hash is over the re-encoding."""
    assert decode(bytes.fromhex("1800")) == 0
    assert decode(bytes.fromhex("a202000100")) == {1: 0, 2: 0}
    assert decode(bytes.fromhex("f97c00")) == float("inf")
    assert decode(bytes.fromhex("fa47c35000")) == 100000.0
    assert decode(bytes.fromhex("fb3ff199999999999a")) == 1.1
    assert decode(bytes.fromhex("f7")) is None  # undefined reads as nil, as in Go


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(TkaDecodeError):
        decode("a0")  # type: ignore[arg-type]


def _values(key: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    leaves = st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary() | st.text()
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(key, inner, max_size=5),  # type: ignore[arg-type]
        max_leaves=20,
    )


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _decodes_back(wire: bytes, value: object) -> None:
    if _depth(value) > MAX_NESTED_LEVELS:
        with pytest.raises(TkaDecodeError):
            decode(wire)
    else:
        assert decode(wire) == value


VALUES = _values(st.integers(0, 2**64 - 1)) | _values(st.text(max_size=8))


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_encoding_matches_cbor2_canonical_for_single_type_keys(value: object) -> None:
    """For maps whose keys share one type (all TKA maps), Go's order equals cbor2's."""
    assert encode(value) == cbor2.dumps(value, canonical=True)
    _decodes_back(encode(value), value)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_decoder_reads_cbor2_output(value: object) -> None:
    _decodes_back(cbor2.dumps(value), value)
