"""Go tka/sync_test.go, ported: sync offers (ancestor spacing), intersections, missing AUMs."""

from __future__ import annotations

import functools

import pytest
from tka_chaintest import (
    chain_key_25519,
    new_testchain,
    opt_key,
    opt_sign_all_using,
    opt_template,
)

from pytsnet.wire.tka.aum import AUM, AUMKind, aum_hash_text
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.chonk import MemChonk
from pytsnet.wire.tka.errors import TkaDecodeError
from pytsnet.wire.tka.key import Key, KeyKind
from pytsnet.wire.tka.state import State, disablement_kdf
from pytsnet.wire.tka.sync import (
    ANCESTORS_SKIP_SHIFT,
    ANCESTORS_SKIP_START,
    MAX_OFFER_ANCESTORS,
    Intersection,
    NoIntersectionError,
    SyncOffer,
    compute_sync_intersection,
    sync_offer_from_text,
    sync_offer_to_text,
)

NOW = 1_700_000_000.0


@functools.cache
def kdf123() -> bytes:
    return disablement_kdf(bytes([1, 2, 3]))


def test_sync_offer() -> None:
    c = new_testchain("""
        A1 -> A2 -> A3 -> A4 -> A5 -> A6 -> A7 -> A8 -> A9 -> A10
        A10 -> A11 -> A12 -> A13 -> A14 -> A15 -> A16 -> A17 -> A18
        A18 -> A19 -> A20 -> A21 -> A22 -> A23 -> A24 -> A25
    """)
    storage = c.chonk()
    a = Authority.open(storage)
    got = a.sync_offer(storage)
    # Ancestors going back, skipping more and more each time, then the oldest.
    assert got == SyncOffer(
        head=c.aum_hashes["A25"],
        ancestors=(
            c.aum_hashes[f"A{25 - ANCESTORS_SKIP_START}"],
            c.aum_hashes[f"A{25 - (ANCESTORS_SKIP_START << ANCESTORS_SKIP_SHIFT)}"],
            c.aum_hashes["A1"],
        ),
    )


def test_sync_offer_of_a_lone_genesis() -> None:
    c = new_testchain("A1")
    storage = c.chonk()
    offer = Authority.open(storage).sync_offer(storage)
    assert offer == SyncOffer(head=c.aum_hashes["A1"], ancestors=(c.aum_hashes["A1"],))


def test_compute_sync_intersection_fast_forward() -> None:
    c = new_testchain("""
        A1 -> A2 -> A3 -> A4
    """)
    chonk1 = c.chonk_with("A1", "A2")
    offer1 = Authority.open(chonk1).sync_offer(chonk1)
    chonk2 = c.chonk()
    offer2 = Authority.open(chonk2).sync_offer(chonk2)
    # Node 1 does not know n2's head: a tail intersection at A1.
    assert compute_sync_intersection(chonk1, offer1, offer2) == Intersection(
        tail_intersection=c.aum_hashes["A1"]
    )
    # Node 2 knows n1's head inside its chain: a head intersection.
    assert compute_sync_intersection(chonk2, offer2, offer1) == Intersection(
        head_intersection=c.aum_hashes["A2"]
    )
    assert compute_sync_intersection(chonk2, offer2, offer2) == Intersection(
        up_to_date=True, head_intersection=offer2.head
    )


def test_compute_sync_intersection_fork_small_diff() -> None:
    c = new_testchain("""
        A1 -> A2 -> A3 -> A4 -> A5 -> A6 -> A7 -> A8 -> A9 -> A10
                                                   | -> F1
        // Make F1 different to A9.
        // hashSeed is chosen such that the hash is higher than A9.
        F1.hashSeed = 7
    """)
    f1h, a9h = c.aum_hashes["F1"], c.aum_hashes["A9"]
    if f1h < a9h:
        pytest.fail("failed assert: h(a9) > h(f1H)\nTweak hashSeed till this passes")
    a = [f"A{i}" for i in range(1, 11)]
    chonk1 = c.chonk_with(*a[:8], "F1")
    offer1 = Authority.open(chonk1).sync_offer(chonk1)
    assert offer1 == SyncOffer(
        head=f1h, ancestors=(c.aum_hashes[f"A{9 - ANCESTORS_SKIP_START}"], c.aum_hashes["A1"])
    )
    chonk2 = c.chonk_with(*a)
    offer2 = Authority.open(chonk2).sync_offer(chonk2)
    assert offer2 == SyncOffer(
        head=c.aum_hashes["A10"],
        ancestors=(c.aum_hashes[f"A{10 - ANCESTORS_SKIP_START}"], c.aum_hashes["A1"]),
    )
    # n2 has 10 AUMs: the first common ancestor is A(10-4).
    assert compute_sync_intersection(chonk1, offer1, offer2) == Intersection(
        tail_intersection=c.aum_hashes[f"A{10 - ANCESTORS_SKIP_START}"]
    )
    # n1 has 9: A(9-4).
    assert compute_sync_intersection(chonk2, offer2, offer1) == Intersection(
        tail_intersection=c.aum_hashes[f"A{9 - ANCESTORS_SKIP_START}"]
    )


def test_no_intersection() -> None:
    c = new_testchain("""
        A1 -> A2
        B1 -> B2
        B1.hashSeed = 5
    """)
    chonk_a = c.chonk_with("A1", "A2")
    chonk_b = c.chonk_with("B1", "B2")
    a, b = Authority.open(chonk_a), Authority.open(chonk_b)
    with pytest.raises(NoIntersectionError):
        a.missing_aums(chonk_a, b.sync_offer(chonk_b))


def test_missing_aums_fast_forward() -> None:
    c = new_testchain("""
        A1 -> A2 -> A3 -> A4
        A1.hashSeed = 1
        A2.hashSeed = 2
        A3.hashSeed = 3
        A4.hashSeed = 4
    """)
    chonk1 = c.chonk_with("A1", "A2")
    n1 = Authority.open(chonk1)
    offer1 = n1.sync_offer(chonk1)
    chonk2 = c.chonk()
    n2 = Authority.open(chonk2)
    offer2 = n2.sync_offer(chonk2)
    # n1 does not know n2's head: it sends from the newest common ancestor (A1).
    assert n1.missing_aums(chonk1, offer2) == [c.aums["A2"]]
    # n2 sees n1's head in its chain: a head intersection.
    assert n2.missing_aums(chonk2, offer1) == [c.aums["A3"], c.aums["A4"]]
    assert n2.missing_aums(chonk2, offer2) == []


def test_missing_aums_fork() -> None:
    c = new_testchain("""
        A1 -> A2 -> A3 -> A4
                     | -> F1
        A1.hashSeed = 1
        A2.hashSeed = 2
        A3.hashSeed = 3
        A4.hashSeed = 4
    """)
    chonk1 = c.chonk_with("A1", "A2", "A3", "F1")
    n1 = Authority.open(chonk1)
    offer1 = n1.sync_offer(chonk1)
    chonk2 = c.chonk_with("A1", "A2", "A3", "A4")
    n2 = Authority.open(chonk2)
    offer2 = n2.sync_offer(chonk2)
    assert n1.missing_aums(chonk1, offer2) == [c.aums["A2"], c.aums["A3"], c.aums["F1"]]
    assert n2.missing_aums(chonk2, offer1) == [c.aums["A2"], c.aums["A3"], c.aums["A4"]]


def test_sync_simple_e2e() -> None:
    pub, priv = chain_key_25519("TestSyncSimpleE2E", 1)
    key = Key(kind=KeyKind.KEY25519, votes=2, public=pub)
    c = new_testchain(
        """
        G1 -> L1 -> L2 -> L3
        G1.template = genesis
    """,
        opt_template(
            "genesis",
            AUM(
                message_kind=AUMKind.CHECKPOINT,
                prev_aum_hash=None,
                state=State(last_aum_hash=None, disablement_secrets=(kdf123(),), keys=(key,)),
            ),
        ),
        opt_key("key", key, priv),
        opt_sign_all_using("key"),
    )
    node_storage = MemChonk()
    node = Authority.bootstrap(node_storage, c.aums["G1"], NOW)
    control_storage = c.chonk()
    control = Authority.open(control_storage)
    control_aums = control.missing_aums(control_storage, node.sync_offer(node_storage))
    node.inform(node_storage, control_aums, NOW)
    assert node.head() == control.head() == c.aum_hashes["L3"]


def test_sync_offer_text_round_trip_and_limits() -> None:
    c = new_testchain("A1 -> A2 -> A3 -> A4 -> A5 -> A6")
    storage = c.chonk()
    offer = Authority.open(storage).sync_offer(storage)
    head, ancestors = sync_offer_to_text(offer)
    assert head == aum_hash_text(c.aum_hashes["A6"])
    assert ancestors == [aum_hash_text(h) for h in offer.ancestors]
    assert len(head) == 52 and "=" not in head  # base32 std, no padding (Go AUMHash text)
    assert sync_offer_from_text(head, ancestors) == offer
    with pytest.raises(TkaDecodeError):
        sync_offer_from_text("not base32!", [])
    with pytest.raises(TkaDecodeError):
        sync_offer_from_text(head, ["AAAA"])
    with pytest.raises(TkaDecodeError):
        sync_offer_from_text(head, [head] * (MAX_OFFER_ANCESTORS + 1))


def test_hostile_offer_costs_bounded_work() -> None:
    """Unknown heads and ancestors (attacker-chosen) end in NoIntersectionError, not a hang."""
    c = new_testchain(" -> ".join(f"A{i}" for i in range(1, 60)))
    storage = c.chonk()
    a = Authority.open(storage)
    junk = tuple(bytes([i]) * 32 for i in range(MAX_OFFER_ANCESTORS))
    with pytest.raises(NoIntersectionError):
        a.missing_aums(storage, SyncOffer(head=b"\xee" * 32, ancestors=junk))
    # An offer at our genesis (a node far behind) gets everything after it.
    got = a.missing_aums(storage, SyncOffer(head=c.aum_hashes["A1"], ancestors=()))
    assert got == [c.aums[f"A{i}"] for i in range(2, 60)]
