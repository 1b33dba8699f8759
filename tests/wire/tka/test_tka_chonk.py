"""Go tka/tailchonk_test.go (Mem part + compaction), ported; the FS record codec and layout."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tka_chaintest import TestChain, new_testchain, opt_template

from pytsnet.wire.tka.aum import AUM, AUMKind, aum_hash_from_text
from pytsnet.wire.tka.chonk import (
    RETAIN_MASK,
    AUMNotFoundError,
    ChonkCorruptError,
    CompactionOptions,
    HashInfo,
    MemChonk,
    RetainState,
    compact,
    decode_hash_info,
    encode_hash_info,
    fs_aum_path,
    mark_active_chain,
    mark_ancestor_intersection_aums,
    mark_descendant_aums,
)
from pytsnet.wire.tka.errors import TkaChainError, TkaDecodeError
from pytsnet.wire.tka.key import Key, KeyKind
from pytsnet.wire.tka.state import State

R = RetainState
EMPTY_STATE = State(last_aum_hash=None, disablement_secrets=(), keys=())
FAKE_STATE = State(
    last_aum_hash=None,
    disablement_secrets=(b"\x01" * 32,),
    keys=(Key(kind=KeyKind.KEY25519, votes=1, public=b""),),
)


def cp(state: State = EMPTY_STATE) -> AUM:
    return AUM(message_kind=AUMKind.CHECKPOINT, prev_aum_hash=None, state=state)


# -- MemChonk ---------------------------------------------------------------------------------


def test_mem_chonk_basics() -> None:
    c = new_testchain("""
        A -> B -> C
             | -> D
        D.hashSeed = 3
    """)
    m = MemChonk()
    m.commit_verified_aums([c.aums[n] for n in "ABCD"], 5.0)
    m.commit_verified_aums([c.aums["B"]], 9.0)  # recommitting does not duplicate the child
    assert m.aum(c.aum_hashes["B"]) == c.aums["B"]
    assert {a.hash() for a in m.child_aums(c.aum_hashes["B"])} == {
        c.aum_hashes["C"],
        c.aum_hashes["D"],
    }
    assert len(m.child_aums(c.aum_hashes["A"])) == 1
    assert {a.hash() for a in m.heads()} == {c.aum_hashes["C"], c.aum_hashes["D"]}
    assert set(m.all_aums()) == set(c.aum_hashes.values())
    assert m.commit_time(c.aum_hashes["A"]) == 5.0
    with pytest.raises(AUMNotFoundError):
        m.aum(b"\x00" * 32)
    with pytest.raises(AUMNotFoundError):
        m.commit_time(b"\x00" * 32)
    assert m.last_active_ancestor() is None
    m.set_last_active_ancestor(c.aum_hashes["A"])
    assert m.last_active_ancestor() == c.aum_hashes["A"]
    # Purging B keeps its children findable, and B's parent gets no child.
    m.purge_aums([c.aum_hashes["B"]])
    with pytest.raises(AUMNotFoundError):
        m.aum(c.aum_hashes["B"])
    assert len(m.child_aums(c.aum_hashes["B"])) == 2
    assert m.child_aums(c.aum_hashes["A"]) == []
    assert c.aum_hashes["A"] in {a.hash() for a in m.heads()}
    m.remove_all()
    assert m.all_aums() == [] and m.heads() == [] and m.last_active_ancestor() is None


def test_not_found_is_a_chain_error_and_a_key_error() -> None:
    with pytest.raises(TkaChainError):
        MemChonk().aum(b"\x01" * 32)
    with pytest.raises(KeyError):
        MemChonk().aum(b"\x01" * 32)


# -- Go's FS record codec and path layout -----------------------------------------------------


def test_fs_aum_path_layout() -> None:
    h = aum_hash_from_text("PD57DVP6GKC76OOZMXFFZUSOEFQXOLAVT7N2ZM5KB3HDIMCANF4A")
    assert fs_aum_path(h) == ("PD", "PD57DVP6GKC76OOZMXFFZUSOEFQXOLAVT7N2ZM5KB3HDIMCANF4A")
    with pytest.raises(TkaDecodeError):
        fs_aum_path(b"\x00" * 31)


def test_hash_info_encoding_is_go_fshashinfo() -> None:
    aum = AUM(message_kind=AUMKind.NO_OP, prev_aum_hash=None)
    # {2: AUM, 3: CreatedUnix}, CTAP2 canonical (CreatedUnix 1700000000 = 0x1a 6553f100).
    info = HashInfo(aum=aum, created_unix=1_700_000_000)
    want = b"\xa2\x02" + aum.serialize() + b"\x03\x1a\x65\x53\xf1\x00"
    assert encode_hash_info(info) == want
    assert aum.serialize() == bytes.fromhex("a2010302f6")  # {1: NoOp, 2: nil}
    assert decode_hash_info(want, want_hash=aum.hash()) == info
    purged = HashInfo(aum=aum, created_unix=1, purged_unix=2)
    assert encode_hash_info(purged) == b"\xa3\x02" + aum.serialize() + b"\x03\x01\x04\x02"
    assert decode_hash_info(encode_hash_info(purged)) == purged
    # omitempty: no 3/4 when zero; a nil AUM is an explicit null (no omitempty on field 2).
    assert encode_hash_info(HashInfo(aum=None)) == b"\xa1\x02\xf6"
    assert decode_hash_info(b"\xa1\x02\xf6") == HashInfo(aum=None)


def test_hash_info_ignores_legacy_children_field() -> None:
    aum = AUM(message_kind=AUMKind.NO_OP, prev_aum_hash=None)
    legacy = b"\xa2\x01\x80\x02" + aum.serialize()  # {1: [], 2: AUM}
    assert decode_hash_info(legacy).aum == aum


def test_hash_info_refuses_bad_records() -> None:
    aum = AUM(message_kind=AUMKind.NO_OP, prev_aum_hash=None)
    good = encode_hash_info(HashInfo(aum=aum, created_unix=7))
    other = AUM(message_kind=AUMKind.NO_OP, prev_aum_hash=None, key_id=b"\x01")
    with pytest.raises(ChonkCorruptError, match="does not match"):
        decode_hash_info(good, want_hash=other.hash())
    for bad in (
        b"",
        b"\x80",  # an array, not a map
        good[:-3],  # truncated
        b"\xa1\x02\xa1\x01\x63abc",  # an AUM with a wrongly typed MessageKind
        b"\xa2\x02\xf6\x03\x61x",  # CreatedUnix a string
        b"\xbf\xff",  # indefinite length
    ):
        with pytest.raises(TkaDecodeError):
            decode_hash_info(bad)


@given(st.binary(max_size=200))
def test_hash_info_decoder_only_raises_typed_errors(data: bytes) -> None:
    with contextlib.suppress(TkaDecodeError):
        decode_hash_info(data)


# -- Compaction (Go TestMarkActiveChain, TestMarkDescendantAUMs, ...) --------------------------


@pytest.mark.parametrize(
    ("min_chain", "chain", "expect_last_active_idx"),
    [
        pytest.param(2, [cp()], 0, id="genesis"),
        pytest.param(2, [cp(), cp(), cp(), cp()], 1, id="simple truncate"),
        pytest.param(5, [cp()] * 8, 2, id="long truncate"),
        pytest.param(
            2,
            [
                cp(),
                cp(),
                AUM(
                    message_kind=AUMKind.ADD_KEY,
                    prev_aum_hash=None,
                    key=Key(kind=KeyKind.INVALID, votes=0, public=b""),
                ),
                cp(),
                cp(),
            ],
            1,
            id="truncate finding checkpoint",
        ),
    ],
)
def test_mark_active_chain(min_chain: int, chain: list[AUM], expect_last_active_idx: int) -> None:
    storage = MemChonk()
    verdict: dict[bytes, RetainState] = {}
    prev: bytes | None = None
    built: list[AUM] = []
    for a in chain:
        a = dataclasses.replace(a, prev_aum_hash=prev)
        storage.commit_verified_aums([a], 0.0)
        built.append(a)
        prev = a.hash()
        verdict[prev] = R(0)
    assert prev is not None
    got = mark_active_chain(storage, verdict, min_chain, prev)
    assert got == built[expect_last_active_idx].hash()
    for i, a in enumerate(built):
        if i >= expect_last_active_idx:
            assert verdict[a.hash()] & R.ACTIVE, i
        else:
            assert verdict[a.hash()] & R.CANDIDATE, i


def test_mark_active_chain_without_checkpoint_fails() -> None:
    c = new_testchain("A -> B -> C -> D")
    verdict = {h: R(0) for h in c.aum_hashes.values()}
    with pytest.raises(TkaChainError, match="without finding"):
        mark_active_chain(c.chonk(), verdict, 2, c.aum_hashes["D"])


def test_mark_descendant_aums() -> None:
    c = new_testchain("""
        genesis -> B -> C -> C2
                   | -> D
                   | -> E -> F -> G -> H
                        | -> E2

        // tweak seeds so hashes arent identical
        C.hashSeed = 1
        D.hashSeed = 2
        E.hashSeed = 3
        E2.hashSeed = 4
    """)
    verdict = {a.hash(): R(0) for a in c.aums.values()}
    hs = c.aum_hashes
    verdict[hs["C"]] = R.ACTIVE
    verdict[hs["E"]] = R.ACTIVE
    mark_descendant_aums(c.chonk(), verdict)
    for n in ("C2", "F", "G", "H", "E2"):
        assert verdict[hs[n]] & R.LEAF, n
    for n in ("genesis", "B", "D"):
        assert not verdict[hs[n]] & R.LEAF, n


def _cp_chain(text: str) -> TestChain:
    return new_testchain(text, opt_template("checkpoint", cp(FAKE_STATE)))


MARK_ANCESTOR_CASES = [
    pytest.param(
        """
        A
        A.template = checkpoint""",
        {"A": R.ACTIVE},
        "A",
        "A",
        ["A"],
        [],
        id="genesis",
    ),
    pytest.param(
        """
        DEAD -> A -> B -> C
        A.template = checkpoint
        B.template = checkpoint""",
        {"A": R.ACTIVE, "B": R.ACTIVE, "C": R.ACTIVE, "DEAD": R.CANDIDATE},
        "A",
        "A",
        ["A", "B", "C"],
        ["DEAD"],
        id="no adjustment",
    ),
    pytest.param(
        """
        A -> B -> C -> D
                  | -> FORK
        A.template = checkpoint
        C.template = checkpoint
        D.template = checkpoint
        FORK.hashSeed = 2""",
        {"A": R.CANDIDATE, "B": R.CANDIDATE, "C": R.CANDIDATE, "D": R.ACTIVE, "FORK": R.YOUNG},
        "D",
        "C",
        ["C", "D", "FORK"],
        ["A", "B"],
        id="fork",
    ),
    pytest.param(
        """
        A -> B -> C -> D -> E -> F
                  | -> FORK
        A.template = checkpoint
        B.template = checkpoint
        E.template = checkpoint
        FORK.hashSeed = 2""",
        {
            "A": R.CANDIDATE,
            "B": R.CANDIDATE,
            "C": R.CANDIDATE,
            "D": R.CANDIDATE,
            "E": R.ACTIVE,
            "F": R.ACTIVE,
            "FORK": R.YOUNG,
        },
        "E",
        "B",
        ["B", "C", "D", "E", "F", "FORK"],
        ["A"],
        id="fork finding earlier checkpoint",
    ),
    pytest.param(
        """
        A -> B -> C -> D -> E
                       | -> DEADFORK
        C -> FORK
        A.template = checkpoint
        C.template = checkpoint
        D.template = checkpoint
        E.template = checkpoint
        FORK.hashSeed = 2
        DEADFORK.hashSeed = 3""",
        {
            "A": R.CANDIDATE,
            "B": R.CANDIDATE,
            "C": R.CANDIDATE,
            "D": R.ACTIVE,
            "E": R.ACTIVE,
            "FORK": R.YOUNG,
            "DEADFORK": R(0),
        },
        "D",
        "C",
        ["C", "D", "E", "FORK"],
        ["A", "B", "DEADFORK"],
        id="fork multi",
    ),
    pytest.param(
        """
        A -> B -> C -> D -> E -> F -> G

        F -> F1
        D -> F2
        B -> F3

        A.template = checkpoint
        B.template = checkpoint
        D.template = checkpoint
        F.template = checkpoint
        F1.hashSeed = 2
        F2.hashSeed = 3
        F3.hashSeed = 4""",
        {
            "A": R.CANDIDATE,
            "B": R.CANDIDATE,
            "C": R.CANDIDATE,
            "D": R.CANDIDATE,
            "E": R.CANDIDATE,
            "F": R.ACTIVE,
            "G": R.ACTIVE,
            "F1": R.YOUNG,
            "F2": R.YOUNG,
            "F3": R.YOUNG,
        },
        "F",
        "B",
        ["B", "C", "D", "E", "F", "G", "F1", "F2", "F3"],
        [],
        id="fork multi 2",
    ),
]


@pytest.mark.parametrize(
    ("text", "verdicts", "initial", "want_ancestor", "want_retained", "want_deleted"),
    MARK_ANCESTOR_CASES,
)
def test_mark_ancestor_intersection_aums(
    text: str,
    verdicts: dict[str, RetainState],
    initial: str,
    want_ancestor: str,
    want_retained: list[str],
    want_deleted: list[str],
) -> None:
    c = _cp_chain(text)
    verdict = {c.aum_hashes[n]: v for n, v in verdicts.items()}
    got = mark_ancestor_intersection_aums(c.chonk(), verdict, c.aum_hashes[initial])
    assert got == c.aum_hashes[want_ancestor]
    for n in want_retained:
        assert verdict[c.aum_hashes[n]] & RETAIN_MASK, n
    for n in want_deleted:
        assert not verdict[c.aum_hashes[n]] & RETAIN_MASK, n


class CompactingChonkFake(MemChonk):
    """Go ``compactingChonkFake``: commit times from a map, purges recorded not done."""

    def __init__(self, ages: dict[bytes, float]) -> None:
        super().__init__()
        self.ages = ages
        self.purged: list[bytes] | None = None

    def commit_time(self, h: bytes) -> float:
        return self.ages.get(h, 0.0)

    def purge_aums(self, hashes: Sequence[bytes]) -> None:
        self.purged = list(hashes)


def test_compact() -> None:
    # A & B go: the new last active ancestor (C) is past them. OLD goes: it descends from C but
    # from no retained AUM. G, H: MinChain=2 from head. E, F: between them and their newest
    # checkpoint ancestor D. G2: a descendant of G. F1: young. F2: its descendant. C2: between
    # a checkpoint and F1. C: the newest checkpoint common to every retained AUM.
    c = _cp_chain("""
        A -> B -> C -> C2 -> D -> E -> F -> G -> H
                       |  -> F1 -> F2       | -> G2
                       |  -> OLD

        // make {A,B,C,D} compaction candidates
        A.template = checkpoint
        B.template = checkpoint
        C.template = checkpoint
        D.template = checkpoint

        // tweak seeds of forks so hashes arent identical
        F1.hashSeed = 1
        OLD.hashSeed = 2
        G2.hashSeed = 3
    """)
    now = 1_700_000_000.0
    storage = CompactingChonkFake({c.aum_hashes["F1"]: now})
    storage.commit_verified_aums(list(c.aums.values()), 0.0)
    got = compact(storage, c.aum_hashes["H"], CompactionOptions(min_chain=2, min_age=3600), now)
    assert got == c.aum_hashes["C"]
    assert storage.purged is not None
    assert sorted(storage.purged) == sorted(c.aum_hashes[n] for n in ("A", "B", "OLD"))
    assert storage.last_active_ancestor() == c.aum_hashes["C"]


def test_compact_twice_survives_purged_parents() -> None:
    """A second compaction walks into the parent the first purged (Go would fail there)."""
    c = _cp_chain("""
        A -> B -> C -> D -> E -> F
        A.template = checkpoint
        C.template = checkpoint
        E.template = checkpoint
    """)
    m = MemChonk()
    m.commit_verified_aums(list(c.aums.values()), 0.0)
    opts = CompactionOptions(min_chain=2, min_age=10)
    assert compact(m, c.aum_hashes["F"], opts, 1000.0) == c.aum_hashes["C"]
    assert set(m.all_aums()) == {c.aum_hashes[n] for n in "CDEF"}
    e2 = AUM(message_kind=AUMKind.NO_OP, prev_aum_hash=c.aum_hashes["F"], key_id=b"\x09")
    m.commit_verified_aums([e2], 1000.0)
    assert compact(m, e2.hash(), opts, 2000.0) == c.aum_hashes["E"]
    assert set(m.all_aums()) == {c.aum_hashes["E"], c.aum_hashes["F"], e2.hash()}


def test_compact_option_checks() -> None:
    c = new_testchain("A")
    with pytest.raises(TkaChainError, match="min_chain"):
        compact(c.chonk(), c.aum_hashes["A"], CompactionOptions(min_chain=0, min_age=1), 0.0)
    with pytest.raises(TkaChainError, match="min_age"):
        compact(c.chonk(), c.aum_hashes["A"], CompactionOptions(min_chain=1, min_age=0), 0.0)
