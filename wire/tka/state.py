"""The tailnet key authority's state at one AUM (Go tka/state.go): trusted keys, disablement values.

A ``State`` is immutable; applying a verified AUM returns a new one. CBOR layout (int struct keys):
1 LastAUMHash (32 bytes or null), 2 DisablementSecrets (array of byte strings or null),
3 Keys (array of Key maps or null), 4 StateID1 and 5 StateID2 (omitted when 0). Go tells a nil
slice (null) from an empty one (``[]``); here an empty tuple is Go's nil, and decoding refuses
the empty-array form, which a checkpoint never carries (it needs a key and a secret).

Disablement values are Argon2i of the secret (argon2-cffi's ``hash_secret_raw``, the reference
implementation's binding) with Go's parameters: salt "tailscale network-lock disablement salt",
time 4, memory 16 MiB, parallelism 4, 32 bytes out.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from argon2.low_level import Type, hash_secret_raw

from pytsnet.wire.tka.cbor import decode_struct, encode, opt_bytes, struct_map, uint_field
from pytsnet.wire.tka.errors import TkaChainError, TkaDecodeError, TkaError, TkaKeyNotFound
from pytsnet.wire.tka.key import Key

if TYPE_CHECKING:
    from pytsnet.wire.tka.aum import AUM

DISABLEMENT_LENGTH = 32
DISABLEMENT_SALT = b"tailscale network-lock disablement salt"
MAX_DISABLEMENT_SECRETS = 32
MAX_KEYS = 512
AUM_HASH_SIZE = 32
_UINT64_MAX = (1 << 64) - 1


def disablement_kdf(secret: bytes) -> bytes:
    """Go's DisablementKDF: the public value stored in the state for a disablement ``secret``."""
    return hash_secret_raw(
        secret=bytes(secret),
        salt=DISABLEMENT_SALT,
        time_cost=4,
        memory_cost=16 * 1024,
        parallelism=4,
        hash_len=DISABLEMENT_LENGTH,
        type=Type.I,
    )


@dataclass(frozen=True)
class State:
    """Trusted keys and disablement values after the AUM ``last_aum_hash``."""

    last_aum_hash: bytes | None
    disablement_secrets: tuple[bytes, ...]
    keys: tuple[Key, ...]
    state_id1: int = 0
    state_id2: int = 0

    def get_key(self, key_id: bytes) -> Key:
        """The trusted key with ``key_id``; TkaKeyNotFound when there is none."""
        for k in self.keys:
            if k.id() == key_id:
                return k
        raise TkaKeyNotFound("key not found")

    def check_disablement(self, secret: bytes) -> bool:
        """Whether ``secret`` derives one of the stored disablement values (constant-time compare)."""
        derived = disablement_kdf(secret)
        found = False
        for candidate in self.disablement_secrets:
            found |= hmac.compare_digest(derived, candidate)
        return found

    def _parent_matches(self, update: AUM) -> bool:
        if self.last_aum_hash is None:
            return True
        return update.prev_aum_hash is not None and self.last_aum_hash == update.prev_aum_hash

    def _clone_for_update(self, update: AUM) -> State:
        return replace(self, last_aum_hash=update.hash())

    def apply_verified_aum(self, update: AUM) -> State:
        """Go's applyVerifiedAUM: the state after ``update``, which the caller has verified.

        ``update`` must already pass ``static_validate`` and its signatures must check out; this
        only enforces the parent link and each kind's own rules. Unknown kinds advance the hash
        and change nothing else (Go's forward-compatibility contract).
        """
        from pytsnet.wire.tka.aum import AUMKind

        if not self._parent_matches(update):
            raise TkaChainError("parent AUMHash mismatch")
        kind = update.message_kind
        if kind == AUMKind.NO_OP:
            return self._clone_for_update(update)
        if kind == AUMKind.CHECKPOINT:
            if update.state is None:
                raise TkaChainError("missing checkpoint state")
            if (update.state.state_id1, update.state.state_id2) != (self.state_id1, self.state_id2):
                raise TkaChainError("checkpointed state has an incorrect stateID")
            return update.state._clone_for_update(update)
        if kind == AUMKind.ADD_KEY:
            if update.key is None:
                raise TkaChainError("no key to add provided")
            key_id = update.key.id()
            try:
                self.get_key(key_id)
            except TkaKeyNotFound:
                pass
            else:
                raise TkaChainError("key already exists")
            return replace(self._clone_for_update(update), keys=(*self.keys, update.key))
        if kind == AUMKind.UPDATE_KEY:
            key_id = update.key_id or b""
            k = self.get_key(key_id)
            if update.votes is not None:
                k = replace(k, votes=update.votes)
            if update.meta is not None:
                k = replace(k, meta=update.meta)
            try:
                k.static_validate()
            except TkaError as e:
                raise TkaChainError(f"updated key fails validation: {e}") from e
            keys = tuple(k if old.id() == key_id else old for old in self.keys)
            return replace(self._clone_for_update(update), keys=keys)
        if kind == AUMKind.REMOVE_KEY:
            key_id = update.key_id or b""
            for i, old in enumerate(self.keys):
                if old.id() == key_id:
                    keys = self.keys[:i] + self.keys[i + 1 :]
                    return replace(self._clone_for_update(update), keys=keys)
            raise TkaKeyNotFound("key not found")
        return self._clone_for_update(update)

    def static_validate_checkpoint(self) -> None:
        """Go's staticValidateCheckpoint: a self-contained state fit for a Checkpoint AUM."""
        if self.last_aum_hash is not None:
            raise TkaError("cannot specify a parent AUM")
        ds = self.disablement_secrets
        if not ds:
            raise TkaError("at least one disablement secret required")
        if len(ds) > MAX_DISABLEMENT_SECRETS:
            raise TkaError(f"too many disablement secrets ({len(ds)}, max {MAX_DISABLEMENT_SECRETS})")
        for i, d in enumerate(ds):
            if len(d) != DISABLEMENT_LENGTH:
                raise TkaError(f"disablement[{i}]: invalid length (got {len(d)}, want {DISABLEMENT_LENGTH})")
            for j, d2 in enumerate(ds):
                if i != j and d == d2:
                    raise TkaError(f"disablement[{i}]: duplicates disablement[{j}]")
        if not self.keys:
            raise TkaError("at least one key is required")
        if len(self.keys) > MAX_KEYS:
            raise TkaError(f"too many keys ({len(self.keys)}, max {MAX_KEYS})")
        for i, k in enumerate(self.keys):
            try:
                k.static_validate()
            except TkaError as e:
                raise TkaError(f"key[{i}]: {e}") from e
        ids = [k.id() for k in self.keys]  # max 512 keys, so O(n^2) is fine (as Go)
        for i, id1 in enumerate(ids):
            for j, id2 in enumerate(ids):
                if i != j and id1 == id2:
                    raise TkaError(f"key[{i}]: duplicates key[{j}]")

    # -- CBOR --

    def to_cbor_obj(self) -> dict[int, object]:
        out: dict[int, object] = {
            1: self.last_aum_hash,
            2: list(self.disablement_secrets) if self.disablement_secrets else None,
            3: [k.to_cbor_obj() for k in self.keys] if self.keys else None,
        }
        if self.state_id1:
            out[4] = self.state_id1
        if self.state_id2:
            out[5] = self.state_id2
        return out

    @classmethod
    def from_cbor_obj(cls, obj: object) -> State:
        m = struct_map(obj, "State")
        last = opt_bytes(m.get(1), "State.LastAUMHash")
        if last is not None and len(last) != AUM_HASH_SIZE:
            raise TkaDecodeError(f"State.LastAUMHash: {len(last)} bytes, want {AUM_HASH_SIZE}")
        return cls(
            last_aum_hash=last,
            disablement_secrets=tuple(
                _bytes_elem(d) for d in _opt_array(m.get(2), "State.DisablementSecrets")
            ),
            keys=tuple(Key.from_cbor_obj(k) for k in _opt_array(m.get(3), "State.Keys")),
            state_id1=uint_field(m.get(4), _UINT64_MAX, "State.StateID1"),
            state_id2=uint_field(m.get(5), _UINT64_MAX, "State.StateID2"),
        )

    def to_cbor(self) -> bytes:
        """This state's CBOR (as Go encodes a State); what ``TkaAuthorityUpdate.state`` carries."""
        return encode(self.to_cbor_obj())

    @classmethod
    def from_cbor(cls, data: bytes) -> State:
        """Parse ``to_cbor`` output (Go's limits apply); TkaDecodeError on anything else."""
        return cls.from_cbor_obj(decode_struct(data, "State"))


def _opt_array(v: object, what: str) -> list[object]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise TkaDecodeError(f"{what}: expected an array")
    if not v:
        raise TkaDecodeError(f"{what}: empty array (only null is representable)")
    return list(v)


def _bytes_elem(v: object) -> bytes:
    if not isinstance(v, bytes):
        raise TkaDecodeError("State.DisablementSecrets: elements must be byte strings")
    return v
