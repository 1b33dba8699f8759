"""AUM storage ("tailchonk"): the Chonk protocol, the in-memory store, Go's FS record format, compaction.

Port of Go ``tka/tailchonk.go``. ``MemChonk`` is the sans-IO store (tests, control in localnet);
the file-backed store is ``pytsnet.actors.tka.storage.FsChonk``, which uses the record codec and
path layout defined here so a Go node's ``tka-profiles/…`` directory and ours read the same:

- one file per AUM at ``<base>/<first 2 chars>/<base32(hash)>`` (std base32, no padding);
- its content is Go's ``fsHashInfo`` as canonical CBOR: ``{2: AUM, 3: CreatedUnix, 4: PurgedUnix}``
  (3 and 4 omitted when 0; key 1, the removed Children list, is ignored if present);
- ``<base>/last_active_ancestor`` holds the raw 32-byte hash.

Compaction (Go ``Compact`` and its mark* helpers) deletes AUMs no longer needed: it keeps
``min_chain`` AUMs back from head plus back to a checkpoint, anything younger than ``min_age``,
descendants of kept AUMs and the chain joining kept AUMs to the new last active ancestor.
Time is a parameter (``now``, Unix seconds); nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntFlag
from typing import Any, Protocol

from pytsnet.wire.tka import cbor
from pytsnet.wire.tka.aum import AUM, AUMKind, aum_hash_text
from pytsnet.wire.tka.errors import TkaChainError, TkaDecodeError, TkaError

AUM_HASH_LEN = 32


class AUMNotFoundError(TkaChainError, KeyError):
    """The store has no (unpurged) AUM with that hash: Go's ``os.ErrNotExist``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "AUM not found"


class ChonkCorruptError(TkaDecodeError):
    """A stored record cannot be decoded or does not match its name."""


class Chonk(Protocol):
    """Durable AUM storage (Go ``Chonk`` + ``CompactableChonk``).

    Callers commit only verified AUMs; readers trust what is stored as verified.
    """

    def aum(self, h: bytes) -> AUM:
        """The AUM with hash ``h``; ``AUMNotFoundError`` if absent or purged."""
        ...

    def child_aums(self, prev: bytes) -> list[AUM]:
        """Every stored AUM whose parent is ``prev``."""
        ...

    def heads(self) -> list[AUM]:
        """Every stored AUM with no stored child (the leaves)."""
        ...

    def commit_verified_aums(self, aums: Sequence[AUM], now: float) -> None:
        """Durably store verified AUMs, recording ``now`` as their commit time."""
        ...

    def last_active_ancestor(self) -> bytes | None:
        """The oldest AUM of the active chain in a previous run, or ``None``."""
        ...

    def set_last_active_ancestor(self, h: bytes) -> None:
        """Record the oldest AUM of the active chain (a hint for the next open)."""
        ...

    def all_aums(self) -> list[bytes]:
        """The hashes of every stored AUM."""
        ...

    def commit_time(self, h: bytes) -> float:
        """When ``h`` was committed (Unix seconds); ``AUMNotFoundError`` if absent."""
        ...

    def purge_aums(self, hashes: Sequence[bytes]) -> None:
        """Delete the given AUMs for good."""
        ...

    def remove_all(self) -> None:
        """Forget everything (Tailnet Lock disabled)."""
        ...


class MemChonk:
    """In-memory ``Chonk`` (Go ``Mem``): for tests and for the localnet control server.

    Single owner: not locked (an actor owns it, or a test does).
    """

    def __init__(self) -> None:
        self._aums: dict[bytes, AUM] = {}
        self._commit_times: dict[bytes, float] = {}
        self._children: dict[bytes, list[bytes]] = {}
        self._last_active_ancestor: bytes | None = None

    def aum(self, h: bytes) -> AUM:
        try:
            return self._aums[bytes(h)]
        except KeyError:
            raise AUMNotFoundError(f"AUM {aum_hash_text(h)} not found") from None

    def child_aums(self, prev: bytes) -> list[AUM]:
        return [self._aums[h] for h in self._children.get(bytes(prev), ()) if h in self._aums]

    def heads(self) -> list[AUM]:
        return [a for h, a in self._aums.items() if not self._children.get(h)]

    def commit_verified_aums(self, aums: Sequence[AUM], now: float) -> None:
        for a in aums:
            h = a.hash()
            self._aums[h] = a
            self._commit_times[h] = now
            parent = a.parent()
            if parent is not None:
                siblings = self._children.setdefault(parent, [])
                if h not in siblings:
                    siblings.append(h)

    def last_active_ancestor(self) -> bytes | None:
        return self._last_active_ancestor

    def set_last_active_ancestor(self, h: bytes) -> None:
        self._last_active_ancestor = bytes(h)

    def all_aums(self) -> list[bytes]:
        return list(self._aums)

    def commit_time(self, h: bytes) -> float:
        try:
            return self._commit_times[bytes(h)]
        except KeyError:
            raise AUMNotFoundError(f"AUM {aum_hash_text(h)} not found") from None

    def purge_aums(self, hashes: Sequence[bytes]) -> None:
        for h in hashes:
            a = self._aums.pop(bytes(h), None)
            self._commit_times.pop(bytes(h), None)
            if a is None:
                continue
            parent = a.parent()
            if parent is not None and parent in self._children:
                # The purged AUM's own children stay indexed so child_aums still finds them.
                rest = [c for c in self._children[parent] if c != h]
                if rest:
                    self._children[parent] = rest
                else:
                    del self._children[parent]

    def remove_all(self) -> None:
        self._aums.clear()
        self._commit_times.clear()
        self._children.clear()
        self._last_active_ancestor = None


# -- Go's FS record format (fsHashInfo) and path layout --------------------------------------


@dataclass(frozen=True)
class HashInfo:
    """One FS record (Go ``fsHashInfo``): the AUM, when committed, when purged (0 = not)."""

    aum: AUM | None
    created_unix: int = 0
    purged_unix: int = 0


def fs_aum_path(h: bytes) -> tuple[str, str]:
    """Go ``FS.aumDir``: (sub-directory, file name) for an AUM hash, relative to the base."""
    if len(h) != AUM_HASH_LEN:
        raise TkaDecodeError(f"AUM hash must be {AUM_HASH_LEN} bytes, got {len(h)}")
    s = aum_hash_text(h)
    return s[:2], s


def encode_hash_info(info: HashInfo) -> bytes:
    """Canonical CBOR of a record, byte-identical to Go's CTAP2 encoding of ``fsHashInfo``."""
    entries: list[bytes] = [b"\x02" + (info.aum.serialize() if info.aum is not None else b"\xf6")]
    if info.created_unix:
        entries.append(b"\x03" + cbor.encode(info.created_unix))
    if info.purged_unix:
        entries.append(b"\x04" + cbor.encode(info.purged_unix))
    return bytes([0xA0 | len(entries)]) + b"".join(entries)


def decode_hash_info(data: bytes, want_hash: bytes | None = None) -> HashInfo:
    """Decode a record (Go's strict decoder limits); ``ChonkCorruptError`` on anything off.

    With ``want_hash``, the AUM must hash to it (Go refuses a record whose AUM does not
    match its file name).
    """
    try:
        obj = cbor.decode(data)
    except TkaError as e:
        raise ChonkCorruptError(f"record: {e}") from e
    if not isinstance(obj, dict):
        raise ChonkCorruptError("record is not a CBOR map")
    aum: AUM | None = None
    raw_aum = obj.get(2)
    if raw_aum is not None:
        try:
            aum = AUM.from_cbor_obj(raw_aum)
        except TkaError as e:
            raise ChonkCorruptError(f"record AUM: {e}") from e
    created = _record_int(obj, 3)
    purged = _record_int(obj, 4)
    if aum is not None and want_hash is not None and aum.hash() != want_hash:
        raise ChonkCorruptError(
            f"AUM {aum_hash_text(aum.hash())} does not match its name {aum_hash_text(want_hash)}"
        )
    return HashInfo(aum=aum, created_unix=created, purged_unix=purged)


def _record_int(obj: Mapping[Any, object], key: int) -> int:
    v = obj.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
        raise ChonkCorruptError(f"record field {key} is not an int64")
    return v


# -- Compaction (Go Compact, markActiveChain, markYoungAUMs, ...) ----------------------------


class RetainState(IntFlag):
    """Why an AUM is (or may be) kept during compaction (Go ``retainState``)."""

    ACTIVE = 1
    """On the active chain and fewer than min_chain hops from head (or back to a checkpoint)."""
    YOUNG = 2
    """Committed less than min_age ago."""
    LEAF = 4
    """A descendant of a retained AUM."""
    ANCESTOR = 8
    """Between a retained AUM and the new last active ancestor."""
    CANDIDATE = 16
    """On the active chain but older: deleted unless something else retains it."""


RETAIN_MASK = RetainState.ACTIVE | RetainState.YOUNG | RetainState.LEAF | RetainState.ANCESTOR


@dataclass(frozen=True)
class CompactionOptions:
    """Go ``CompactionOptions``: keep at least ``min_chain`` AUMs, and any younger than ``min_age`` s."""

    min_chain: int
    min_age: float


Verdict = dict[bytes, RetainState]


def _walk_bound(verdict: Verdict) -> int:
    # Hash links cannot form a cycle, so no honest walk is longer than the store.
    return len(verdict) + 2


def mark_active_chain(storage: Chonk, verdict: Verdict, min_chain: int, head: bytes) -> bytes:
    """Mark the active chain; return the checkpoint to compact to (the new last ancestor)."""
    bound = _walk_bound(verdict) + min_chain
    nxt = storage.aum(head)
    for _ in range(min_chain):
        h = nxt.hash()
        verdict[h] = verdict.get(h, RetainState(0)) | RetainState.ACTIVE
        parent = nxt.parent()
        if parent is None:
            return h  # genesis: the chain is too short to truncate
        try:
            nxt = storage.aum(parent)
        except AUMNotFoundError:
            return h  # the end of the chain we hold
    for _ in range(bound):
        h = nxt.hash()
        verdict[h] = verdict.get(h, RetainState(0)) | RetainState.ACTIVE
        if nxt.message_kind == AUMKind.CHECKPOINT:
            last_active = h
            break
        parent = nxt.parent()
        if parent is None:
            raise TkaChainError("reached genesis AUM without finding an appropriate lastActiveAncestor")
        nxt = storage.aum(parent)
    else:
        raise TkaChainError("compaction: walk limit exceeded")
    for _ in range(bound):
        parent = nxt.parent()
        if parent is None:
            break
        verdict[parent] = verdict.get(parent, RetainState(0)) | RetainState.CANDIDATE
        try:
            nxt = storage.aum(parent)
        except AUMNotFoundError:
            break
    return last_active


def mark_young_aums(storage: Chonk, verdict: Verdict, min_age: float, now: float) -> None:
    """Mark every AUM committed after ``now - min_age`` for retention."""
    min_time = now - min_age
    for h in list(verdict):
        try:
            committed = storage.commit_time(h)
        except AUMNotFoundError:
            # A parent purged by an earlier compaction (marked CANDIDATE on the walk back):
            # Go's CommitTime fails here and so would every later Compact; it is simply old.
            continue
        if committed > min_time:
            verdict[h] |= RetainState.YOUNG


def mark_descendant_aums(storage: Chonk, verdict: Verdict) -> None:
    """Mark every descendant of a retained AUM as retained."""
    to_scan = [h for h, v in verdict.items() if v & RETAIN_MASK]
    while to_scan:
        nxt: list[bytes] = []
        for h in to_scan:
            v = verdict.get(h, RetainState(0))
            if v & RetainState.LEAF:
                continue
            verdict[h] = v | RetainState.LEAF
            nxt.extend(a.hash() for a in storage.child_aums(h))
        to_scan = nxt


def mark_ancestor_intersection_aums(storage: Chonk, verdict: Verdict, candidate: bytes) -> bytes:
    """Keep the AUMs joining every retained AUM to the ancestor; move it back if needed."""
    bound = _walk_bound(verdict)
    to_scan = [h for h, v in verdict.items() if v & RETAIN_MASK and h != candidate]
    adjusted = False
    rounds = 0
    while to_scan:
        rounds += 1
        if rounds > bound:
            raise TkaChainError("compaction: walk limit exceeded")
        next_scan: list[bytes] = []
        for h in to_scan:
            v = verdict.get(h, RetainState(0))
            if v & RetainState.ANCESTOR:
                continue
            verdict[h] = v | RetainState.ANCESTOR
            parent = storage.aum(h).parent()
            if parent is None:
                raise TkaChainError("reached genesis AUM without intersecting with candidate ancestor")
            pv = verdict.get(parent, RetainState(0))
            if pv & RETAIN_MASK:
                continue
            if pv & RetainState.CANDIDATE:
                # We meet the active chain before the candidate: move the candidate back.
                candidate = parent
                adjusted = True
                verdict[parent] = pv | RetainState.ANCESTOR
                cursor = parent
                for _ in range(bound):
                    for child in storage.child_aums(cursor):
                        ch = child.hash()
                        cv = verdict.get(ch, RetainState(0))
                        if cv & RetainState.CANDIDATE and not cv & RetainState.ACTIVE:
                            verdict[ch] = cv | RetainState.ANCESTOR
                            cursor = ch
                            break
                    else:
                        break
            next_scan.append(parent)
        to_scan = next_scan

    if adjusted:
        nxt = storage.aum(candidate)
        for _ in range(bound):
            h = nxt.hash()
            verdict[h] = verdict.get(h, RetainState(0)) | RetainState.ACTIVE
            if nxt.message_kind == AUMKind.CHECKPOINT:
                return h
            parent = nxt.parent()
            if parent is None:
                raise TkaChainError("reached genesis AUM without finding an appropriate candidateAncestor")
            nxt = storage.aum(parent)
        raise TkaChainError("compaction: walk limit exceeded")
    return candidate


def compact(storage: Chonk, head: bytes, opts: CompactionOptions, now: float) -> bytes:
    """Purge AUMs no longer needed (Go ``Compact``); return the new last active ancestor."""
    if opts.min_chain <= 0:
        raise TkaChainError("opts.min_chain must be set")
    if opts.min_age <= 0:
        raise TkaChainError("opts.min_age must be set")
    verdict: Verdict = {h: RetainState(0) for h in storage.all_aums()}
    last_active = mark_active_chain(storage, verdict, opts.min_chain, head)
    mark_young_aums(storage, verdict, opts.min_age, now)
    mark_descendant_aums(storage, verdict)
    last_active = mark_ancestor_intersection_aums(storage, verdict, last_active)
    to_delete = [h for h, v in verdict.items() if not v & RETAIN_MASK]
    storage.set_last_active_ancestor(last_active)
    storage.purge_aums(to_delete)
    return last_active
