"""The little-endian big-int checksum against the previous big-endian one and a word-by-word
RFC 1071 loop (kept here as references), plus RFC 1624 incremental updates."""

import ipaddress
import struct

from checksum_reference import old_ones_sum
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.netstack.checksum import address_sum, checksum, ones_sum, pseudo_header_sum, update16, verify


def word_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 §4.1 literally: 16-bit big-endian words with end-around carry."""
    if len(data) % 2:
        data += b"\x00"
    s = initial
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
    return s


buffers = st.one_of(
    st.binary(max_size=2000),
    st.integers(0, 1600).map(lambda n: b"\xff" * n),
    st.integers(0, 1600).map(lambda n: b"\x00" * n),
    st.lists(st.sampled_from([b"\xff\xff", b"\x00\x00", b"\x00\x01", b"\xff\xfe", b"\xff"]),
             max_size=600).map(b"".join),
)


@given(buffers, st.one_of(st.integers(0, 0xFFFF), st.integers(0, 1 << 200), st.just(0)))
def test_ones_sum_matches_previous_implementation(data: bytes, initial: int) -> None:
    want = old_ones_sum(data, initial)
    assert ones_sum(data, initial) == want
    assert ones_sum(bytearray(data), initial) == want
    assert ones_sum(memoryview(data), initial) == want
    assert checksum(data, initial) == ~want & 0xFFFF
    assert verify(data, initial) == (want == 0xFFFF)


@given(buffers, st.integers(0, 0xFFFF))
def test_ones_sum_matches_word_loop(data: bytes, initial: int) -> None:
    assert ones_sum(data, initial) == word_sum(data, initial)


@given(st.binary(min_size=2, max_size=200).filter(lambda b: len(b) % 2 == 0), st.data())
def test_filled_in_checksum_verifies(data: bytes, draw: st.DataObject) -> None:
    at = draw.draw(st.integers(0, len(data) // 2 - 1)) * 2
    buf = bytearray(data)
    buf[at:at + 2] = b"\x00\x00"
    struct.pack_into("!H", buf, at, checksum(buf))
    assert verify(buf)


@given(st.binary(min_size=2, max_size=200).filter(lambda b: len(b) % 2 == 0), st.data())
def test_rfc1624_update_equals_full_recompute(data: bytes, draw: st.DataObject) -> None:
    buf = bytearray(data)
    at = draw.draw(st.integers(0, len(buf) // 2 - 1)) * 2
    new = draw.draw(st.integers(0, 0xFFFF))
    old_csum = checksum(buf)
    old = int.from_bytes(buf[at:at + 2], "big")
    buf[at:at + 2] = new.to_bytes(2, "big")
    # RFC 1624 differs from a recompute only in the +0/-0 representation of an all-zero sum.
    got, want = update16(old_csum, old, new), checksum(buf)
    assert got == want or {got, want} == {0, 0xFFFF}


def test_rfc1624_section_4_example() -> None:
    # RFC 1624 §4: HC=0xDD2F, m=0x5555 -> m'=0x3285: HC' = 0x0000 (eqn. 3), not 0xFFFF.
    assert update16(0xDD2F, 0x5555, 0x3285) == 0x0000


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_pseudo_header_v4_as_bytes(a: int, b: int, proto: int, length: int) -> None:
    src, dst = ipaddress.IPv4Address(a), ipaddress.IPv4Address(b)
    head = src.packed + dst.packed + bytes((0, proto)) + length.to_bytes(2, "big")
    assert pseudo_header_sum(src, dst, proto, length) == old_ones_sum(head)
    assert ones_sum(b"", address_sum(src, dst) + proto + length) == old_ones_sum(head)


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1), st.integers(0, 255), st.integers(0, 2**32 - 1))
def test_pseudo_header_v6_as_bytes(a: int, b: int, proto: int, length: int) -> None:
    src, dst = ipaddress.IPv6Address(a), ipaddress.IPv6Address(b)
    head = src.packed + dst.packed + length.to_bytes(4, "big") + b"\x00\x00\x00" + bytes((proto,))
    assert pseudo_header_sum(src, dst, proto, length) == old_ones_sum(head)


@settings(max_examples=60)
@given(st.integers(400, 70000), st.sampled_from([b"\xff", b"\x00", b"\x5a\xa5", b"\x01\x00\xff"]),
       st.integers(0, 1 << 40))
def test_folded_sum_of_large_buffers(size: int, fill: bytes, initial: int) -> None:
    data = (fill * size)[:size]
    assert ones_sum(data, initial) == old_ones_sum(data, initial)
    assert ones_sum(memoryview(data)[1:], initial) == old_ones_sum(data[1:], initial)


def test_fold_masks_stay_bounded() -> None:
    from pytsnet.netstack import checksum as mod
    for size in range(512, 70000, 97):
        ones_sum(b"\x01" * size)
    assert len(mod._MASKS) <= mod._MASKS_MAX
    assert all(h <= mod._MASK_BITS_MAX for h in mod._MASKS)


@settings(max_examples=80)
@given(st.integers(500, 2100), st.binary(min_size=2100, max_size=2100), st.integers(0, 1 << 40))
def test_packet_sized_buffers_fold_by_their_cached_chain(size: int, data: bytes, initial: int) -> None:
    assert ones_sum(data[:size], initial) == old_ones_sum(data[:size], initial)
    assert ones_sum(memoryview(data)[1:size], initial) == old_ones_sum(data[1:size], initial)


def test_fold_chains_stay_bounded() -> None:
    from pytsnet.netstack import checksum as mod
    for size in range(512, 4000, 7):
        ones_sum(b"\x01" * size)
    assert len(mod._CHAINS) <= mod._CHAINS_MAX
    assert all(size <= mod._CHAIN_MAX_BYTES for size in mod._CHAINS)

