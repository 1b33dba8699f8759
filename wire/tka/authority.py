"""The Tailnet Key Authority: the verified AUM chain, its state, and node-key authorization.

Port of Go ``tka/tka.go``'s ``Authority``. An ``Authority`` is opened from a store
(``open``), made from scratch (``create``: a signed genesis checkpoint) or bootstrapped from
a checkpoint another node made (``bootstrap``). ``inform`` verifies AUMs (well-formed, on a known
parent, every signature by a trusted key) before committing any of them: one bad AUM and
nothing is stored. Forks are resolved by Go's rules (``chain.pick_next_aum``), so every node
agrees on the head.

Node keys are authorized by a ``NodeKeySignature`` from a trusted key
(``node_key_authorized_with_details``, also usable from a ``State`` alone, as the PeerTracker
does). State is immutable; ``inform`` swaps in new values, so a snapshot (``state``) is safe to
share. Time is a parameter (``now``, Unix seconds) for commit times and compaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pytsnet.wire.keys import NodePublic
from pytsnet.wire.tka.aum import AUM, AUMKind
from pytsnet.wire.tka.builder import UpdateBuilder
from pytsnet.wire.tka.chain import (
    MAX_SCAN_ITERATIONS,
    aum_verify,
    compute_active_chain,
    compute_state_at,
)
from pytsnet.wire.tka.chonk import AUMNotFoundError, Chonk, CompactionOptions, compact
from pytsnet.wire.tka.errors import TkaChainError, TkaError, TkaVerifyError
from pytsnet.wire.tka.key import Key
from pytsnet.wire.tka.sig import NodeKeySignature, RotationDetails, SigKind
from pytsnet.wire.tka.state import State
from pytsnet.wire.tka.sync import SyncOffer, make_sync_offer, missing_aums


def node_key_authorized_with_details(
    state: State, node_key: NodePublic, sig: bytes
) -> RotationDetails | None:
    """Raise ``TkaVerifyError`` unless ``sig`` (a serialized NodeKeySignature) authorizes
    ``node_key`` under ``state``'s trusted keys; the rotation details if it is a rotation.

    Credential signatures never authorize a node on their own (Go).
    """
    try:
        decoded = NodeKeySignature.unserialize(sig)
    except TkaError as e:
        raise TkaVerifyError(f"unserialize: {e}") from e
    if decoded.sig_kind == SigKind.CREDENTIAL:
        raise TkaVerifyError("credential signatures cannot authorize nodes on their own")
    try:
        key_id = decoded.authorizing_key_id()
        key = state.get_key(key_id)
    except TkaVerifyError:
        raise
    except TkaError as e:
        raise TkaVerifyError(f"key: {e}") from e
    decoded.verify_signature(node_key, key)
    try:
        return decoded.rotation_details()
    except TkaVerifyError:
        raise
    except TkaError as e:
        raise TkaVerifyError(f"rotation details: {e}") from e


class Authority:
    """A verified chain: its head AUM, oldest stored ancestor and the state at head."""

    __slots__ = ("_head", "_oldest_ancestor", "_state")

    def __init__(self, head: AUM, oldest_ancestor: AUM, state: State) -> None:
        self._head = head
        self._oldest_ancestor = oldest_ancestor
        self._state = state

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def open(cls, chonk: Chonk) -> Authority:
        """Rebuild the authority from a store this node filled before (Go ``Open``)."""
        try:
            chain = compute_active_chain(chonk, chonk.last_active_ancestor(), MAX_SCAN_ITERATIONS)
        except (TkaChainError, TkaVerifyError) as e:
            # A corrupt or unreadable store keeps its own error type (decode / I/O).
            raise _rewrap(e, f"active chain: {e}") from e
        if chain.state is None:
            raise TkaChainError("active chain has no state")
        return cls(chain.head, chain.oldest, chain.state)

    @classmethod
    def create(cls, chonk: Chonk, state: State, signer_priv: Any, now: float) -> tuple[Authority, AUM]:
        """A brand-new authority: a genesis checkpoint of ``state`` signed by ``signer_priv``.

        The signer must be one of ``state``'s keys. Returns the authority and the genesis AUM
        (which other nodes ``bootstrap`` from).
        """
        genesis = AUM(message_kind=AUMKind.CHECKPOINT, prev_aum_hash=None, state=state)
        try:
            genesis.static_validate()
        except TkaError as e:
            raise TkaChainError(f"invalid state: {e}") from e
        genesis = genesis.signed(signer_priv)
        return cls.bootstrap(chonk, genesis, now), genesis

    @classmethod
    def bootstrap(cls, chonk: Chonk, genesis: AUM, now: float) -> Authority:
        """Start from a checkpoint made elsewhere, into an empty store (Go ``Bootstrap``)."""
        if chonk.heads():
            raise TkaChainError("tailchonk is not empty")
        if genesis.message_kind != AUMKind.CHECKPOINT:
            raise TkaChainError(f"bootstrap AUMs must be checkpoint messages, got {genesis.message_kind!r}")
        if genesis.state is None:
            raise TkaChainError("bootstrap AUM is missing state")
        try:
            aum_verify(genesis, genesis.state, True)
        except TkaError as e:
            raise _rewrap(e, f"invalid bootstrap: {e}") from e
        chonk.commit_verified_aums([genesis], now)
        chonk.set_last_active_ancestor(genesis.hash())
        return cls.open(chonk)

    # -- reading -----------------------------------------------------------------------------

    def head(self) -> bytes:
        """The hash of the latest AUM applied."""
        h = self._state.last_aum_hash
        if h is None:
            raise TkaChainError("authority state has no head")
        return h

    @property
    def head_aum(self) -> AUM:
        """The latest AUM applied."""
        return self._head

    @property
    def oldest_ancestor(self) -> AUM:
        """The oldest AUM of the active chain that is stored."""
        return self._oldest_ancestor

    @property
    def state(self) -> State:
        """The state at head (immutable: safe to hand to other actors)."""
        return self._state

    def key_trusted(self, key_id: bytes) -> bool:
        """Whether ``key_id`` is a trusted key now."""
        try:
            self._state.get_key(key_id)
        except TkaError:
            return False
        return True

    def keys(self) -> list[Key]:
        """The trusted keys."""
        return list(self._state.keys)

    def state_ids(self) -> tuple[int, int]:
        """The authority's fixed random identifiers (Go ``StateIDs``)."""
        return self._state.state_id1, self._state.state_id2

    def valid_disablement(self, secret: bytes) -> bool:
        """Whether ``secret`` is one of the disablement secrets (then Tailnet Lock may be off)."""
        return self._state.check_disablement(secret)

    def node_key_authorized(self, node_key: NodePublic, sig_bytes: bytes) -> None:
        """Raise ``TkaVerifyError`` unless ``sig_bytes`` authorizes ``node_key``."""
        node_key_authorized_with_details(self._state, node_key, sig_bytes)

    def node_key_authorized_with_details(
        self, node_key: NodePublic, sig_bytes: bytes
    ) -> RotationDetails | None:
        """As ``node_key_authorized``; the rotation details of a rotation signature."""
        return node_key_authorized_with_details(self._state, node_key, sig_bytes)

    # -- updating ----------------------------------------------------------------------------

    def inform_idempotent(self, chonk: Chonk, updates: Sequence[AUM], now: float) -> Authority:
        """A new authority with ``updates`` (oldest first) verified, applied and committed.

        All or nothing: if any update fails verification, raise and store none of them.
        AUMs already stored are skipped.
        """
        if not updates:
            raise TkaChainError("inform called with empty slice")
        head = self.head()
        state_at: dict[bytes, State] = {head: self._state}
        to_commit: list[AUM] = []
        prev_hash = head
        is_head_chain = True
        for i, update in enumerate(updates):
            h = update.hash()
            try:
                chonk.aum(h)
            except AUMNotFoundError:
                pass
            else:
                is_head_chain = False
                continue
            parent = update.parent()
            if parent is None:
                raise TkaChainError(f"update {i}: missing parent")
            state = state_at.get(parent)
            if state is None:
                try:
                    state = compute_state_at(chonk, MAX_SCAN_ITERATIONS, parent)
                except TkaError as e:
                    raise TkaChainError(f"update {i} computing state: {e}") from e
                state_at[parent] = state
            try:
                aum_verify(update, state, False)
            except TkaError as e:
                raise _rewrap(e, f"update {i} invalid: {e}") from e
            try:
                state_at[h] = state.apply_verified_aum(update)
            except TkaError as e:
                raise TkaChainError(f"update {i} cannot be applied: {e}") from e
            if is_head_chain and parent != prev_hash:
                is_head_chain = False
            prev_hash = h
            to_commit.append(update)

        if to_commit:
            chonk.commit_verified_aums(to_commit, now)
        if is_head_chain:
            return Authority(updates[-1], self._oldest_ancestor, state_at[prev_hash])
        try:
            chain = compute_active_chain(chonk, self._oldest_ancestor.hash(), MAX_SCAN_ITERATIONS)
        except TkaError as e:
            raise TkaChainError(f"recomputing active chain: {e}") from e
        if chain.state is None:
            raise TkaChainError("active chain has no state")
        return Authority(chain.head, chain.oldest, chain.state)

    def inform(self, chonk: Chonk, updates: Sequence[AUM], now: float) -> None:
        """As ``inform_idempotent``, updating this authority in place."""
        new = self.inform_idempotent(chonk, updates, now)
        self._head, self._oldest_ancestor, self._state = new._head, new._oldest_ancestor, new._state

    def new_updater(self, signer_priv: Any | None) -> UpdateBuilder:
        """A builder of signed changes on top of the current head (Go ``NewUpdater``)."""
        return UpdateBuilder(self, signer_priv)

    def compact(self, chonk: Chonk, opts: CompactionOptions, now: float) -> None:
        """Purge history no longer needed (Go ``Authority.Compact``)."""
        ancestor = compact(chonk, self._head.hash(), opts, now)
        self._oldest_ancestor = chonk.aum(ancestor)

    # -- sync --------------------------------------------------------------------------------

    def sync_offer(self, chonk: Chonk) -> SyncOffer:
        """Our head and thinned ancestors, for a remote's ``missing_aums``."""
        return make_sync_offer(chonk, self.head(), self._oldest_ancestor.hash())

    def missing_aums(self, chonk: Chonk, remote: SyncOffer) -> list[AUM]:
        """The AUMs a remote that offered ``remote`` lacks, oldest first."""
        return missing_aums(chonk, self.sync_offer(chonk), remote)

    # -- retroactive revocation (Go findParentForRewrite / MakeRetroactiveRevocation) --------

    def find_parent_for_rewrite(self, chonk: Chonk, remove_keys: Sequence[bytes], our_key: bytes) -> bytes:
        """The newest AUM at which none of ``remove_keys`` is trusted but ``our_key`` is."""
        cursor = self.head()
        oldest = self._oldest_ancestor.hash()
        for _ in range(MAX_SCAN_ITERATIONS):
            if cursor == oldest:
                return cursor
            aum = chonk.aum(cursor)
            state = compute_state_at(chonk, MAX_SCAN_ITERATIONS, cursor)
            if not any(_trusts(state, k) for k in remove_keys) and _trusts(state, our_key):
                return cursor
            parent = aum.parent()
            if parent is None:
                return cursor
            cursor = parent
        raise TkaChainError(f"iteration limit exceeded ({MAX_SCAN_ITERATIONS})")

    def make_retroactive_revocation(
        self,
        chonk: Chonk,
        remove_keys: Sequence[bytes],
        our_key: bytes,
        fork_from: bytes | None = None,
    ) -> AUM:
        """An unsigned forking checkpoint that erases trust in ``remove_keys`` (Go).

        It must be signed with more votes than the compromised keys held before use.
        """
        if fork_from is None:
            if not any(_trusts(self._state, k) for k in remove_keys):
                raise TkaChainError("no provided key is currently trusted")
            parent = self.find_parent_for_rewrite(chonk, remove_keys, our_key)
        else:
            parent = fork_from
        removed = {bytes(k) for k in remove_keys}
        keys = tuple(k for k in self._state.keys if k.id() not in removed)
        if not keys:
            raise TkaChainError("cannot revoke all trusted keys")
        state = dataclasses.replace(self._state, keys=keys, last_aum_hash=None)
        forking = AUM(message_kind=AUMKind.CHECKPOINT, prev_aum_hash=parent, state=state)
        forking.static_validate()
        return forking


def _rewrap(e: TkaError, msg: str) -> TkaError:
    """The same error family with context added (verify failures stay ``TkaVerifyError``)."""
    if isinstance(e, TkaVerifyError):
        return TkaVerifyError(msg)
    return TkaChainError(msg)


def _trusts(state: State, key_id: bytes) -> bool:
    try:
        state.get_key(key_id)
    except TkaError:
        return False
    return True
