"""Walking a stored AUM graph: chain candidates, fork resolution, state at an AUM, verification.

Port of the chain half of Go ``tka/tka.go`` (computeChainCandidates, pickNextAUM,
advanceByPrimary, fastForward, computeStateAt, computeActiveAncestor, computeActiveChain,
aumVerify). Every walk is bounded by an iteration limit (Go's ``maxScanIterations`` = 2000) so a
hostile or corrupt store costs bounded work and ends in a typed ``TkaChainError``.

Fork resolution (all nodes must agree, so this is consensus): among siblings the AUM with the
highest signature weight wins, then a RemoveKey, then the lowest AUM hash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytsnet.wire.tka.aum import AUM, AUMKind
from pytsnet.wire.tka.chonk import AUMNotFoundError, Chonk
from pytsnet.wire.tka.errors import TkaChainError, TkaError, TkaVerifyError
from pytsnet.wire.tka.key import verify_25519
from pytsnet.wire.tka.state import State

MAX_SCAN_ITERATIONS = 2000
"""Go ``maxScanIterations``: the longest AUM walk any chain computation may take."""


@dataclass(frozen=True)
class Chain:
    """A linear run of AUMs from ``oldest`` to ``head``, and the state at ``head``."""

    oldest: AUM
    head: AUM
    state: State | None = None
    chains_through_active: bool = False
    """The chain passes through the last active ancestor of a previous run."""


def empty_state() -> State:
    """The state before any AUM: what a genesis AUM applies to."""
    return State(last_aum_hash=None, disablement_secrets=(), keys=())


def compute_chain_candidates(storage: Chonk, last_known_oldest: bytes | None, max_iter: int) -> list[Chain]:
    """Every (oldest, head) chain in storage, walking back from each head as far as stored."""
    candidates = [Chain(oldest=h, head=h) for h in storage.heads()]
    candidates.sort(key=lambda c: c.oldest.hash())
    again = True
    i = 0
    while again:
        if i >= max_iter:
            raise TkaChainError(f"iteration limit exceeded ({max_iter})")
        i += 1
        again = False
        for j, cand in enumerate(candidates):
            parent_hash = cand.oldest.parent()
            if parent_hash is None:
                continue
            try:
                parent = storage.aum(parent_hash)
            except AUMNotFoundError:
                continue
            through = cand.chains_through_active or (
                last_known_oldest is not None and last_known_oldest == parent.hash()
            )
            candidates[j] = dataclasses.replace(cand, oldest=parent, chains_through_active=through)
            again = True
    return candidates


def pick_next_aum(state: State, candidates: Sequence[AUM]) -> AUM:
    """The child to follow at a fork: highest weight, then RemoveKey, then lowest hash."""
    if not candidates:
        raise TkaChainError("pick_next_aum called with no candidates")
    if len(candidates) == 1:
        return candidates[0]

    def rank(a: AUM) -> tuple[int, int, bytes]:
        return (-a.weight(state), 0 if a.message_kind == AUMKind.REMOVE_KEY else 1, a.hash())

    return min(candidates, key=rank)


Advancer = Callable[[State, Sequence[AUM]], "tuple[AUM | None, State]"]


def advance_by_primary(state: State, candidates: Sequence[AUM]) -> tuple[AUM | None, State]:
    """Follow the primary (fork-resolved) child; ``None`` when at a head."""
    if not candidates:
        return None, state
    nxt = pick_next_aum(state, candidates)
    try:
        return nxt, state.apply_verified_aum(nxt)
    except TkaError as e:
        raise TkaChainError(f"advancing state: {e}") from e


def fast_forward_with_advancer(
    storage: Chonk,
    max_iter: int,
    start_state: State,
    advancer: Advancer,
    done: Callable[[AUM, State], bool] | None,
) -> tuple[AUM, State]:
    """Advance from ``start_state`` until ``done`` or no children; the last AUM and its state."""
    if start_state.last_aum_hash is None:
        raise TkaChainError("invalid initial state")
    curs = storage.aum(start_state.last_aum_hash)
    state = start_state
    for _ in range(max_iter):
        if done is not None and done(curs, state):
            return curs, state
        children = storage.child_aums(curs.hash())
        nxt, next_state = advancer(state, children)
        if nxt is None:
            return curs, state
        curs, state = nxt, next_state
    raise TkaChainError(f"iteration limit exceeded ({max_iter})")


def fast_forward(
    storage: Chonk, max_iter: int, start_state: State, done: Callable[[AUM, State], bool] | None
) -> tuple[AUM, State]:
    """Advance along the primary chain (Go ``fastForward``)."""
    return fast_forward_with_advancer(storage, max_iter, start_state, advance_by_primary, done)


def compute_state_at(storage: Chonk, max_iter: int, want_hash: bytes) -> State:
    """The state right after ``want_hash``, computed from its nearest checkpoint or genesis.

    Raises ``AUMNotFoundError`` when ``want_hash`` itself is not stored.
    """
    curs = storage.aum(want_hash)
    path: set[bytes] = set()
    i = 0
    while True:
        if i > max_iter:
            raise TkaChainError(f"iteration limit exceeded ({max_iter})")
        i += 1
        h = curs.hash()
        path.add(h)
        if curs.message_kind == AUMKind.CHECKPOINT:
            if curs.state is None:
                raise TkaChainError("checkpoint without state")
            state = dataclasses.replace(curs.state, last_aum_hash=h)
            break
        parent = curs.parent()
        if parent is None:
            if curs.message_kind in (AUMKind.NO_OP, AUMKind.ADD_KEY):
                try:
                    state = empty_state().apply_verified_aum(curs)
                except TkaError as e:
                    raise TkaChainError(f"applying genesis: {e}") from e
                break
            raise TkaChainError(f"invalid genesis update: {curs.message_kind!r}")
        try:
            curs = storage.aum(parent)
        except AUMNotFoundError as e:
            raise TkaChainError(f"reading parent: {e}") from e

    def along_path(st: State, candidates: Sequence[AUM]) -> tuple[AUM | None, State]:
        for c in candidates:
            if c.hash() in path:
                try:
                    return c, st.apply_verified_aum(c)
                except TkaError as e:
                    raise TkaChainError(f"advancing state: {e}") from e
        raise TkaChainError("no candidate matching path")

    _, state = fast_forward_with_advancer(
        storage, max_iter, state, along_path, lambda c, _s: c.hash() == want_hash
    )
    if state.last_aum_hash != want_hash:
        raise TkaChainError("unexpected fast_forward outcome")
    return state


def compute_active_ancestor(chains: Sequence[Chain]) -> bytes:
    """The one oldest ancestor to start from; among several, the one active in a previous run."""
    ancestors: dict[bytes, bool] = {}
    for c in chains:
        ancestors[c.oldest.hash()] = c.chains_through_active
    if len(ancestors) == 1:
        return next(iter(ancestors))
    for h, through_active in ancestors.items():
        if through_active:
            return h
    raise TkaChainError("multiple distinct chains")


def compute_active_chain(storage: Chonk, last_known_oldest: bytes | None, max_iter: int) -> Chain:
    """Rebuild the active chain from storage alone (what ``Authority.open`` does)."""
    chains = compute_chain_candidates(storage, last_known_oldest, max_iter)
    if not chains:
        raise TkaChainError("computing ancestor: storage holds no AUMs")
    oldest_hash = compute_active_ancestor(chains)
    ancestor = storage.aum(oldest_hash)
    state = compute_state_at(storage, max_iter, oldest_hash)
    head, state = fast_forward(storage, max_iter, state, None)
    return Chain(oldest=ancestor, head=head, state=state)


def check_parent(aum: AUM, state: State) -> None:
    """Raise unless ``aum`` builds on the last AUM applied to ``state``."""
    parent = aum.parent()
    if parent is None:
        raise TkaChainError("aum has no parent")
    if state.last_aum_hash is None:
        raise TkaChainError("cannot check update parent hash against a state with no previous AUM")
    if state.last_aum_hash != parent:
        raise TkaChainError(
            f"aum with parent {parent.hex()} cannot be applied to a state with parent "
            f"{state.last_aum_hash.hex()}"
        )


def aum_verify(aum: AUM, state: State, is_genesis: bool) -> None:
    """Raise unless ``aum`` is well-formed, builds on ``state`` and every signature verifies.

    Go ``aumVerify``: an unsigned AUM, a signature by a key the state does not trust, a bad
    signature, or removing the state's last key are all refused (``TkaVerifyError``).
    """
    try:
        aum.static_validate()
    except TkaError as e:
        raise TkaVerifyError(f"invalid: {e}") from e
    if not is_genesis:
        check_parent(aum, state)
    if not aum.signatures:
        raise TkaVerifyError("unsigned AUM")
    sig_hash = aum.sig_hash()
    for i, sig in enumerate(aum.signatures):
        try:
            key = state.get_key(sig.key_id)
        except TkaError as e:
            raise TkaVerifyError(f"bad keyID on signature {i}: {e}") from e
        if not verify_25519(key.public, sig_hash, sig.signature):
            raise TkaVerifyError(f"signature {i}: invalid signature")
    if aum.message_kind == AUMKind.REMOVE_KEY and len(state.keys) == 1 and aum.key_id == state.keys[0].id():
        raise TkaVerifyError("cannot remove the last key in the state")
