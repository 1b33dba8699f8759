"""Building signed updates to the authority: add/remove keys, change votes or metadata.

Port of Go ``tka/builder.go``. Each change becomes one AUM chained onto the previous one and
signed by the signer; ``finalize`` appends a checkpoint when the chain since the last checkpoint
would otherwise reach ``CHECKPOINT_EVERY`` AUMs, and refuses if the authority moved meanwhile.
The resulting AUMs must then be applied with ``Authority.inform`` (here and on every node).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from pytsnet.wire.tka.aum import AUM, AUMKind
from pytsnet.wire.tka.chonk import AUMNotFoundError, Chonk
from pytsnet.wire.tka.errors import TkaChainError, TkaError
from pytsnet.wire.tka.key import Key
from pytsnet.wire.tka.state import State

CHECKPOINT_EVERY = 50
"""Go ``checkpointEvery``: a checkpoint AUM at least every this many AUMs."""
MAX_KEYS = 512
"""Go ``maxKeys``: the most keys a state may trust."""


class AuthorityView(Protocol):
    """What a builder reads from its authority (which may move on while building)."""

    def head(self) -> bytes:
        """The authority's current head."""
        ...

    @property
    def state(self) -> State:
        """The authority's current state."""
        ...


class UpdateBuilder:
    """Accumulates changes as signed AUMs from a given head and state (Go ``UpdateBuilder``).

    ``signer`` is whatever ``AUM.signed`` accepts (an Ed25519 seed or an ``NLPrivate``), or
    ``None`` to build unsigned AUMs (for signing elsewhere).
    """

    def __init__(self, authority: AuthorityView, signer: Any | None) -> None:
        self._authority = authority
        self._state = authority.state
        self._parent = authority.head()
        self._signer = signer
        self._out: list[AUM] = []

    def _mk_update(self, update: AUM) -> None:
        update = dataclasses.replace(update, prev_aum_hash=self._parent)
        if self._signer is not None:
            update = update.signed(self._signer)
        try:
            update.static_validate()
        except TkaError as e:
            raise TkaChainError(f"generated update was invalid: {e}") from e
        try:
            state = self._state.apply_verified_aum(update)
        except TkaError as e:
            raise TkaChainError(f"update cannot be applied: {e}") from e
        self._state = state
        self._parent = update.hash()
        self._out.append(update)

    def _require_key(self, key_id: bytes) -> None:
        try:
            self._state.get_key(key_id)
        except TkaError as e:
            raise TkaChainError(f"failed reading key {key_id.hex()}: {e}") from e

    def add_key(self, key: Key) -> None:
        """Trust a new key (refused if already trusted or ``MAX_KEYS`` reached)."""
        key_id = key.id()
        try:
            self._state.get_key(key_id)
        except TkaError:
            pass
        else:
            raise TkaChainError(f"cannot add key {key_id.hex()}: already exists")
        if len(self._state.keys) >= MAX_KEYS:
            raise TkaChainError(f"cannot add key {key_id.hex()}: maximum number of keys reached")
        self._mk_update(AUM(message_kind=AUMKind.ADD_KEY, prev_aum_hash=None, key=key))

    def remove_key(self, key_id: bytes) -> None:
        """Stop trusting a key."""
        self._require_key(key_id)
        self._mk_update(AUM(message_kind=AUMKind.REMOVE_KEY, prev_aum_hash=None, key_id=key_id))

    def set_key_vote(self, key_id: bytes, votes: int) -> None:
        """Change a trusted key's votes (its weight in fork resolution)."""
        self._require_key(key_id)
        self._mk_update(AUM(message_kind=AUMKind.UPDATE_KEY, prev_aum_hash=None, key_id=key_id, votes=votes))

    def set_key_meta(self, key_id: bytes, meta: dict[str, str]) -> None:
        """Replace a trusted key's metadata map."""
        self._require_key(key_id)
        self._mk_update(AUM(message_kind=AUMKind.UPDATE_KEY, prev_aum_hash=None, key_id=key_id, meta=meta))

    def _generate_checkpoint(self) -> None:
        state = self._authority.state
        for i, update in enumerate(self._out):
            try:
                state = state.apply_verified_aum(update)
            except TkaError as e:
                raise TkaChainError(f"applying update {i}: {e}") from e
        # Checkpoints cannot name a parent inside their state.
        state = dataclasses.replace(state, last_aum_hash=None)
        self._mk_update(AUM(message_kind=AUMKind.CHECKPOINT, prev_aum_hash=None, state=state))

    def finalize(self, storage: Chonk) -> list[AUM]:
        """The signed AUMs, plus a checkpoint if one is due.

        Refused if the authority's head moved since the builder was made.
        """
        need_checkpoint = True
        cursor = self._authority.head()
        for _ in range(len(self._out), CHECKPOINT_EVERY):
            try:
                aum = storage.aum(cursor)
            except AUMNotFoundError:
                need_checkpoint = False  # the stored chain is shorter than the interval
                break
            if aum.message_kind == AUMKind.CHECKPOINT:
                need_checkpoint = False
                break
            parent = aum.parent()
            if parent is None:
                need_checkpoint = False  # genesis: shorter than the interval
                break
            cursor = parent
        if need_checkpoint:
            self._generate_checkpoint()
        head = self._authority.head()
        based_on = self._out[0].parent() if self._out else head
        if based_on != head:
            raise TkaChainError(
                f"updates no longer apply to head: based on {(based_on or b'').hex()} but head "
                f"is {head.hex()}"
            )
        return list(self._out)
