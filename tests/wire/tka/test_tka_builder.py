"""Go tka/builder_test.go, ported: add/remove keys, votes, meta, max keys, checkpoint every 50."""

from __future__ import annotations

import functools

import pytest
from tka_chaintest import chain_key_25519

from pytsnet.wire.tka.aum import AUMKind
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.builder import CHECKPOINT_EVERY, MAX_KEYS
from pytsnet.wire.tka.chonk import MemChonk
from pytsnet.wire.tka.errors import TkaChainError, TkaError, TkaVerifyError
from pytsnet.wire.tka.key import Key, KeyKind
from pytsnet.wire.tka.state import State, disablement_kdf

NOW = 1_700_000_000.0


@functools.cache
def kdf123() -> bytes:
    return disablement_kdf(bytes([1, 2, 3]))


def key25519(pub: bytes, votes: int, meta: dict[str, str] | None = None) -> Key:
    return Key(kind=KeyKind.KEY25519, votes=votes, public=pub, meta=meta)


def create(*keys: Key, signer: bytes) -> tuple[Authority, MemChonk]:
    storage = MemChonk()
    state = State(last_aum_hash=None, disablement_secrets=(kdf123(),), keys=keys)
    a, _ = Authority.create(storage, state, signer, NOW)
    return a, storage


def absent(a: Authority, key_id: bytes) -> bool:
    try:
        a.state.get_key(key_id)
    except TkaError:
        return True
    return False


def test_builder_add_key() -> None:
    pub, priv = chain_key_25519("TestAuthorityBuilderAddKey", 1)
    a, storage = create(key25519(pub, 2), signer=priv)
    key2 = key25519(chain_key_25519("TestAuthorityBuilderAddKey", 2)[0], 1)
    b = a.new_updater(priv)
    b.add_key(key2)
    updates = b.finalize(storage)
    assert [u.message_kind for u in updates] == [AUMKind.ADD_KEY]
    a.inform(storage, updates, NOW)
    assert a.state.get_key(key2.id()) == key2
    # Adding it again is refused by the builder.
    with pytest.raises(TkaChainError, match="already exists"):
        a.new_updater(priv).add_key(key2)


def test_builder_max_key() -> None:
    pub, priv = chain_key_25519("TestAuthorityBuilderMaxKey", 1)
    a, storage = create(key25519(pub, 2), signer=priv)
    for i in range(MAX_KEYS + 1):
        key2 = key25519(chain_key_25519("TestAuthorityBuilderMaxKey", 2 + i)[0], 1)
        b = a.new_updater(priv)
        if i >= MAX_KEYS - 1:
            with pytest.raises(TkaChainError, match="maximum number of keys"):
                b.add_key(key2)
            continue
        b.add_key(key2)
        a.inform(storage, b.finalize(storage), NOW)
        assert a.state.get_key(key2.id()) == key2
    assert len(a.keys()) == MAX_KEYS


def test_builder_remove_key() -> None:
    pub, priv = chain_key_25519("TestAuthorityBuilderRemoveKey", 1)
    key = key25519(pub, 2)
    key2 = key25519(chain_key_25519("TestAuthorityBuilderRemoveKey", 2)[0], 1)
    a, storage = create(key, key2, signer=priv)
    b = a.new_updater(priv)
    b.remove_key(key2.id())
    a.inform(storage, b.finalize(storage), NOW)
    assert absent(a, key2.id())
    # Removing the remaining key: the builder makes it, but inform refuses it.
    b = a.new_updater(priv)
    b.remove_key(key.id())
    updates = b.finalize(storage)
    with pytest.raises(TkaVerifyError, match="cannot remove the last key"):
        a.inform(storage, updates, NOW)
    # And removing a key that is not there is refused by the builder.
    with pytest.raises(TkaChainError, match="failed reading key"):
        a.new_updater(priv).remove_key(key2.id())


def test_builder_set_key_vote() -> None:
    pub, priv = chain_key_25519("TestAuthorityBuilderSetKeyVote", 1)
    key = key25519(pub, 2)
    a, storage = create(key, signer=priv)
    b = a.new_updater(priv)
    b.set_key_vote(key.id(), 5)
    a.inform(storage, b.finalize(storage), NOW)
    assert a.state.get_key(key.id()).votes == 5


def test_builder_set_key_meta() -> None:
    pub, priv = chain_key_25519("TestAuthorityBuilderSetKeyMeta", 1)
    key = key25519(pub, 2, {"a": "b"})
    a, storage = create(key, signer=priv)
    b = a.new_updater(priv)
    b.set_key_meta(key.id(), {"b": "c"})
    a.inform(storage, b.finalize(storage), NOW)
    assert a.state.get_key(key.id()).meta == {"b": "c"}


def test_builder_multiple() -> None:
    pub, priv = chain_key_25519("TestAuthorityBuilderMultiple", 1)
    key = key25519(pub, 2)
    a, storage = create(key, signer=priv)
    key2 = key25519(chain_key_25519("TestAuthorityBuilderMultiple", 2)[0], 1)
    b = a.new_updater(priv)
    b.add_key(key2)
    b.set_key_vote(key2.id(), 42)
    b.remove_key(key.id())
    updates = b.finalize(storage)
    assert [u.parent() for u in updates[1:]] == [u.hash() for u in updates[:-1]]
    a.inform(storage, updates, NOW)
    assert a.state.get_key(key2.id()).votes == 42
    assert absent(a, key.id())


def test_builder_checkpoints_after_x_updates() -> None:
    pub, priv = chain_key_25519("TestAuthorityBuilderCheckpointsAfterXUpdates", 1)
    a, storage = create(key25519(pub, 2), signer=priv)
    for i in range(CHECKPOINT_EVERY + 1):
        key2 = key25519(chain_key_25519("TestAuthorityBuilderCheckpointsAfterXUpdates", i + 2)[0], 1)
        b = a.new_updater(priv)
        b.add_key(key2)
        a.inform(storage, b.finalize(storage), NOW)
        assert a.state.get_key(key2.id()) == key2
        # Genesis + 49 updates == 50: the 50th update carries a checkpoint.
        want = AUMKind.CHECKPOINT if i == CHECKPOINT_EVERY - 1 else AUMKind.ADD_KEY
        assert storage.aum(a.head()).message_kind == want, i
    a2 = Authority.open(storage)
    assert a2.head() == a.head()
    assert a2.state == a.state


def test_builder_refuses_when_head_moved() -> None:
    pub, priv = chain_key_25519("builder-moved", 1)
    a, storage = create(key25519(pub, 2), signer=priv)
    b1 = a.new_updater(priv)
    b1.add_key(key25519(chain_key_25519("builder-moved", 2)[0], 1))
    b2 = a.new_updater(priv)
    b2.add_key(key25519(chain_key_25519("builder-moved", 3)[0], 1))
    a.inform(storage, b2.finalize(storage), NOW)
    with pytest.raises(TkaChainError, match="no longer apply to head"):
        b1.finalize(storage)


def test_builder_unsigned_updates_are_refused_by_inform() -> None:
    pub, priv = chain_key_25519("builder-unsigned", 1)
    a, storage = create(key25519(pub, 2), signer=priv)
    b = a.new_updater(None)
    b.add_key(key25519(chain_key_25519("builder-unsigned", 2)[0], 1))
    updates = b.finalize(storage)
    assert updates[0].signatures == ()
    with pytest.raises(TkaVerifyError, match="unsigned AUM"):
        a.inform(storage, updates, NOW)
