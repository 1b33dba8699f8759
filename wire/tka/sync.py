"""Synchronizing two AUM chains: sync offers, their intersection, the AUMs the other side lacks.

Port of Go ``tka/sync.go``. A ``SyncOffer`` is our head plus a thinned list of ancestors (4
back, then 16 more, then 64 more …, and always the oldest); the other side finds the newest
AUM both hold (a head intersection: they are behind us; a tail intersection: we forked) and
sends everything after it. Walks are bounded (Go ``maxSyncIter``, ``maxSyncHeadIntersectionIter``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pytsnet.wire.tka.aum import AUM, aum_hash_from_text, aum_hash_text
from pytsnet.wire.tka.chain import compute_state_at, fast_forward
from pytsnet.wire.tka.chonk import AUMNotFoundError, Chonk
from pytsnet.wire.tka.errors import TkaChainError, TkaDecodeError

MAX_SYNC_ITER = 2000
"""Go ``maxSyncIter``: the longest walk searching for any intersection."""
MAX_SYNC_HEAD_INTERSECTION_ITER = 400
"""Go ``maxSyncHeadIntersectionIter``: the longest walk searching for a head intersection."""
ANCESTORS_SKIP_START = 4
"""Go ``ancestorsSkipStart``: AUMs skipped before the first listed ancestor."""
ANCESTORS_SKIP_SHIFT = 2
"""Go ``ancestorsSkipShift``: the skip grows by this many bits after each listed ancestor."""
MAX_OFFER_ANCESTORS = 32
"""Ancestors we accept in a remote offer (Go lists at most ~6); each costs a bounded walk."""


class NoIntersectionError(TkaChainError):
    """The remote's offer shares no AUM with our chain (Go ``ErrNoIntersection``)."""


@dataclass(frozen=True)
class SyncOffer:
    """Go ``SyncOffer``: our head and some ancestors, newest first, the oldest last."""

    head: bytes
    ancestors: tuple[bytes, ...]


@dataclass(frozen=True)
class Intersection:
    """How to sync (Go ``intersection``): up to date, or send from the head/tail intersection."""

    up_to_date: bool = False
    head_intersection: bytes | None = None
    tail_intersection: bytes | None = None


def make_sync_offer(storage: Chonk, head: bytes, oldest: bytes) -> SyncOffer:
    """Go ``Authority.SyncOffer`` for a chain from ``oldest`` to ``head``."""
    ancestors: list[bytes] = []
    skip = ANCESTORS_SKIP_START
    curs = head
    for i in range(MAX_SYNC_HEAD_INTERSECTION_ITER):
        if i > 0 and i % skip == 0:
            ancestors.append(curs)
            skip <<= ANCESTORS_SKIP_SHIFT
        try:
            parent = storage.aum(curs)
        except AUMNotFoundError:
            break
        if parent.hash() == oldest:
            break
        prev = parent.parent()
        if prev is None:
            break
        curs = prev
    ancestors.append(oldest)
    return SyncOffer(head=head, ancestors=tuple(ancestors))


def compute_sync_intersection(storage: Chonk, local: SyncOffer, remote: SyncOffer) -> Intersection:
    """The newest AUM we share with the remote; ``NoIntersectionError`` if none."""
    if remote.head == local.head:
        return Intersection(up_to_date=True, head_intersection=local.head)

    # Head intersection: the remote's head is one of our ancestors, it is simply behind.
    has_remote_head = True
    try:
        storage.aum(remote.head)
    except AUMNotFoundError:
        has_remote_head = False
    if has_remote_head:
        curs = local.head
        for _ in range(MAX_SYNC_HEAD_INTERSECTION_ITER):
            try:
                parent = storage.aum(curs)
            except AUMNotFoundError:
                break
            h = parent.hash()
            if h == remote.head:
                return Intersection(head_intersection=h)
            prev = parent.parent()
            if prev is None:
                break
            curs = prev

    # Tail intersection: one of their ancestors leads (by fork resolution) to our head.
    for a in remote.ancestors:
        try:
            state = compute_state_at(storage, MAX_SYNC_ITER, a)
        except AUMNotFoundError:
            continue
        end, _ = fast_forward(storage, MAX_SYNC_ITER, state, lambda c, _s: c.hash() == local.head)
        if end.hash() == local.head:
            return Intersection(tail_intersection=a)
    raise NoIntersectionError("no intersection")


def missing_aums(storage: Chonk, local: SyncOffer, remote: SyncOffer) -> list[AUM]:
    """The AUMs the remote (described by ``remote``) lacks, oldest first (Go ``MissingAUMs``)."""
    inter = compute_sync_intersection(storage, local, remote)
    if inter.up_to_date:
        return []
    start = inter.head_intersection or inter.tail_intersection
    if start is None:
        raise TkaChainError("intersection without a starting AUM")
    out: list[AUM] = []

    def collect(curs: AUM, _state: object) -> bool:
        if curs.hash() != start:
            out.append(curs)
        return False

    state = compute_state_at(storage, MAX_SYNC_ITER, start)
    fast_forward(storage, MAX_SYNC_ITER, state, collect)
    return out


def sync_offer_to_text(offer: SyncOffer) -> tuple[str, list[str]]:
    """(Head, Ancestors) as base32 text, as Go's ``fromSyncOffer`` puts them in JSON."""
    return aum_hash_text(offer.head), [aum_hash_text(a) for a in offer.ancestors]


def sync_offer_from_text(head: str, ancestors: list[str]) -> SyncOffer:
    """Parse an offer's JSON text fields (Go ``toSyncOffer``); ``TkaDecodeError`` on bad text."""
    if len(ancestors) > MAX_OFFER_ANCESTORS:
        raise TkaDecodeError(f"sync offer lists {len(ancestors)} ancestors (max {MAX_OFFER_ANCESTORS})")
    return SyncOffer(
        head=aum_hash_from_text(head),
        ancestors=tuple(aum_hash_from_text(a) for a in ancestors),
    )
