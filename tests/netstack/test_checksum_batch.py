"""``checksum.word_sums``: a burst's sums in one numpy pass, against the pre-issue-14 big-endian sum
(``checksum_reference``) and the one-buffer functions, for every length class (empty, odd, not a
multiple of 4, views at odd offsets, all-zero, all-0xFF up to 64 KiB)."""

from checksum_reference import old_ones_sum
from hypothesis import given, settings
from hypothesis import strategies as st

from pytsnet.netstack.checksum import checksum, complement, sums_to_ffff, verify, word_sums

buffers = st.one_of(
    st.binary(max_size=1600),
    st.integers(0, 1600).map(lambda n: b"\xff" * n),
    st.integers(0, 1600).map(lambda n: b"\x00" * n),
    st.lists(st.sampled_from([b"\xff\xff", b"\x00\x00", b"\x00\x01", b"\xff\xfe", b"\xff"]),
             max_size=400).map(b"".join),
)
initials = st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(0, 1 << 80))


def folded(s: int) -> int:
    """An unfolded sum as a folded ones'-complement sum (0 only for 0)."""
    return s % 0xFFFF or (0xFFFF if s else 0)


def test_rfc1071_section_3_example() -> None:
    # RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert [folded(s) for s in word_sums([data, memoryview(b"x" + data)[1:]])] == [0xDDF2] * 2
    # odd length: the last byte is the high half of a zero-padded word (f6f7 -> f600)
    assert folded(word_sums([data[:7]])[0]) == 0xDDF2 - 0xF7


def test_empty_burst_and_empty_buffers() -> None:
    assert word_sums([]) == []
    got = word_sums([b"", b"\x00", b"", b"\x12\x34\x56\x78", b""])
    assert [folded(s) for s in got] == [0, 0, 0, 0x1234 + 0x5678, 0]


@given(st.lists(buffers, max_size=12))
def test_word_sums_match_the_reference(bufs: list[bytes]) -> None:
    got = word_sums(bufs)
    assert [folded(s) for s in got] == [old_ones_sum(b) for b in bufs]
    assert all((s == 0) == (not any(b)) for s, b in zip(got, bufs, strict=True))
    # The same bytes as views into one buffer, at an odd offset (the receive path's memoryviews).
    backing = bytearray(b"\xa5" + b"".join(bufs))
    views, at = [], 1
    for b in bufs:
        views.append(memoryview(backing)[at:at + len(b)])
        at += len(b)
    assert word_sums(views) == got
    assert word_sums([bytearray(b) for b in bufs]) == got


@given(st.lists(st.integers(1, 400).map(lambda n: n * 4), min_size=1, max_size=8), st.randoms())
def test_word_sums_of_whole_words(lengths: list[int], rnd: object) -> None:
    # Every length a non-zero multiple of 4: the join-without-pads path.
    bufs = [rnd.randbytes(n) for n in lengths]  # type: ignore[attr-defined]
    assert [folded(s) for s in word_sums(bufs)] == [old_ones_sum(b) for b in bufs]


@given(buffers, initials)
def test_sum_as_initial_gives_the_one_buffer_results(data: bytes, initial: int) -> None:
    (s,) = word_sums([data])
    assert complement(initial + s) == checksum(data, initial)
    assert sums_to_ffff(initial + s) == verify(data, initial)


@given(st.binary(min_size=2, max_size=1400).filter(lambda b: len(b) % 2 == 0), st.integers(0, 1 << 40),
       st.data())
def test_a_filled_in_checksum_verifies_and_a_flip_does_not(data: bytes, initial: int,
                                                           draw: st.DataObject) -> None:
    buf = bytearray(data)
    buf[0:2] = b"\x00\x00"
    buf[0:2] = checksum(buf, initial).to_bytes(2, "big")
    (s,) = word_sums([buf])
    assert sums_to_ffff(s + initial)
    at = draw.draw(st.integers(0, len(buf) - 1))
    buf[at] ^= draw.draw(st.integers(1, 255))
    (s,) = word_sums([buf])
    assert not sums_to_ffff(s + initial)  # one changed byte moves the sum by 1..0xFF00: never ≡ 0


@settings(max_examples=30)
@given(st.lists(st.integers(60000, 65535), min_size=1, max_size=3))
def test_largest_datagrams_do_not_overflow(lengths: list[int]) -> None:
    bufs = [b"\xff" * n for n in lengths]
    assert [folded(s) for s in word_sums(bufs)] == [old_ones_sum(b) for b in bufs]
