"""KDF, replay window and message codecs against wireguard-go's own test vectors."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytsnet.wire.errors import ParseError
from pytsnet.wire.wireguard import messages, tai64n
from pytsnet.wire.wireguard.constants import REJECT_AFTER_MESSAGES
from pytsnet.wire.wireguard.kdf import INITIAL_CHAIN_KEY, INITIAL_HASH, kdf1, kdf2, kdf3
from pytsnet.wire.wireguard.keypair import padding_size
from pytsnet.wire.wireguard.replay import WINDOW_SIZE, ReplayFilter

# device/kdf_test.go TestKDF
KDF_VECTORS = [
    ("746573742d6b6579", "746573742d696e707574",
     "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
     "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
     "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24"),
    ("776972656775617264", "776972656775617264",
     "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
     "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
     "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160"),
    ("", "",
     "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
     "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
     "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e"),
]


@pytest.mark.parametrize(("key", "inp", "t0", "t1", "t2"), KDF_VECTORS)
def test_kdf_vectors(key: str, inp: str, t0: str, t1: str, t2: str) -> None:
    k, i = bytes.fromhex(key), bytes.fromhex(inp)
    assert [x.hex() for x in kdf3(k, i)] == [t0, t1, t2]
    assert [x.hex() for x in kdf2(k, i)] == [t0, t1]
    assert kdf1(k, i).hex() == t0


def test_initial_chain_key_and_hash() -> None:
    assert INITIAL_CHAIN_KEY.hex() == "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
    assert INITIAL_HASH.hex() == "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"


def test_replay_go_vectors() -> None:
    """replay/replay_test.go TestReplay, case by case (ported from the Linux kernel's self-test)."""
    f = ReplayFilter()
    lim = WINDOW_SIZE + 1
    ram = REJECT_AFTER_MESSAGES
    cases = [
        (0, True), (1, True), (1, False), (9, True), (8, True), (7, True), (7, False), (lim, True),
        (lim - 1, True), (lim - 1, False), (lim - 2, True), (2, True), (2, False), (lim + 16, True),
        (3, False), (lim + 16, False), (lim * 4, True), (lim * 4 - (lim - 1), True), (10, False),
        (lim * 4 - lim, False), (lim * 4 - (lim + 1), False), (lim * 4 - (lim - 2), True),
        (lim * 4 + 1 - lim, False), (0, False), (ram, False), (ram - 1, True), (ram, False),
        (ram - 1, False), (ram - 2, True), (ram + 1, False), (ram + 2, False), (ram - 2, False),
        (ram - 3, True), (0, False),
    ]
    for n, (counter, want) in enumerate(cases, 1):
        assert f.validate_counter(counter, ram) is want, f"case {n}: {counter}"


def test_replay_go_bulk() -> None:
    f = ReplayFilter()
    assert all(f.validate_counter(i) for i in range(1, WINDOW_SIZE + 1))
    assert f.validate_counter(0) and not f.validate_counter(0)
    f.reset()
    assert all(f.validate_counter(i) for i in range(2, WINDOW_SIZE + 2))
    assert f.validate_counter(1) and not f.validate_counter(0)
    f.reset()
    assert all(f.validate_counter(i) for i in range(WINDOW_SIZE + 1, 0, -1))
    f.reset()
    assert all(f.validate_counter(i) for i in range(WINDOW_SIZE + 2, 1, -1))
    assert not f.validate_counter(0)
    f.reset()
    assert all(f.validate_counter(i) for i in range(WINDOW_SIZE, 0, -1))
    assert f.validate_counter(WINDOW_SIZE + 1) and not f.validate_counter(0)
    f.reset()
    assert all(f.validate_counter(i) for i in range(WINDOW_SIZE, 0, -1))
    assert f.validate_counter(0) and f.validate_counter(WINDOW_SIZE + 1)


def test_tai64n_monotonic_and_whitened() -> None:
    a, b = tai64n.stamp(1_700_000_000.0), tai64n.stamp(1_700_000_000.5)
    assert len(a) == 12 and tai64n.after(b, a) and not tai64n.after(a, a)
    assert int.from_bytes(b[8:], "big") & 0xFFFFFF == 0


def test_padding() -> None:
    assert padding_size(0, 1280) == 0
    assert padding_size(1, 1280) == 15
    assert padding_size(1279, 1280) == 1
    assert padding_size(1275, 1276) == 1  # never past the MTU
    assert padding_size(17, 0) == 15


def test_message_round_trip() -> None:
    m = messages.MessageInitiation(7, b"e" * 32, b"s" * 48, b"t" * 28, b"1" * 16, b"2" * 16)
    assert messages.parse(m.emit()) == m
    r = messages.MessageResponse(1, 2, b"e" * 32, b"x" * 16, b"1" * 16, b"2" * 16)
    assert messages.parse(r.emit()) == r
    c = messages.MessageCookieReply(9, b"n" * 24, b"c" * 32)
    assert messages.parse(c.emit()) == c
    with pytest.raises(messages.WireGuardParseError):
        messages.parse(m.emit()[:-1])
    with pytest.raises(messages.WireGuardParseError):
        messages.parse(b"\x04\x00\x00\x00" + bytes(27))


@given(st.binary(max_size=200))
def test_parse_random_bytes_only_typed_error(b: bytes) -> None:
    with contextlib.suppress(ParseError):
        messages.parse(b)


@given(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=200))
def test_parse_mutated_only_typed_error(t: int, rest: bytes) -> None:
    with contextlib.suppress(ParseError):
        messages.parse(bytes([t, 0, 0, 0]) + rest)
