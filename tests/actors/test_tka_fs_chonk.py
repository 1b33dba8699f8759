"""The on-disk TKA chain store (FsChonk): Go's tailchonk tests (chonktest + FS), for Mem and FS."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pytsnet.actors.tka.storage import MAX_RECORD_BYTES, ChonkIOError, FsChonk
from pytsnet.wire.tka.aum import AUM, AUMKind, Signature, aum_hash_text
from pytsnet.wire.tka.authority import Authority
from pytsnet.wire.tka.chonk import (
    AUMNotFoundError,
    Chonk,
    ChonkCorruptError,
    CompactionOptions,
    HashInfo,
    MemChonk,
    decode_hash_info,
    encode_hash_info,
)
from pytsnet.wire.tka.errors import TkaDecodeError
from pytsnet.wire.tka.key import Key, KeyKind
from pytsnet.wire.tka.state import State

NOW = 1_700_000_000.0


def rand_hash(name: str, seed: int) -> bytes:
    return hashlib.sha256(f"{name}/{seed}".encode()).digest()


def aum(kind: AUMKind, prev: bytes | None = None, key_id: bytes | None = None) -> AUM:
    return AUM(message_kind=kind, prev_aum_hash=prev, key_id=key_id)


@pytest.fixture(params=["mem", "fs"])
def new_chonk(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Chonk]:
    if request.param == "mem":
        return MemChonk
    return lambda: FsChonk(tmp_path / "tka")


# -- Go tstest/chonktest: RunChonkTests + RunCompactableChonkTests, for both stores ------------


def test_child_aums(new_chonk: Callable[[], Chonk]) -> None:
    chonk = new_chonk()
    parent = rand_hash("ChildAUMs", 1)
    data = [aum(AUMKind.REMOVE_KEY, parent, b"\x01\x02"), aum(AUMKind.REMOVE_KEY, parent, b"\x03\x04")]
    chonk.commit_verified_aums(data, NOW)
    assert sorted(chonk.child_aums(parent), key=AUM.hash) == sorted(data, key=AUM.hash)


def test_aum_missing(new_chonk: Callable[[], Chonk]) -> None:
    with pytest.raises(AUMNotFoundError):
        new_chonk().aum(bytes([42]) + bytes(31))


def test_read_chain_from_head(new_chonk: Callable[[], Chonk]) -> None:
    chonk = new_chonk()
    genesis = aum(AUMKind.REMOVE_KEY, None, b"\x01\x02")
    intermediate = aum(AUMKind.INVALID, genesis.hash())
    leaf = aum(AUMKind.INVALID, intermediate.hash())
    chonk.commit_verified_aums([genesis, intermediate, leaf], NOW)
    assert chonk.heads() == [leaf]
    got_i = chonk.aum(leaf.parent())  # type: ignore[arg-type]
    assert got_i == intermediate
    assert chonk.aum(got_i.parent()) == genesis  # type: ignore[arg-type]


def test_last_active_ancestor(new_chonk: Callable[[], Chonk]) -> None:
    chonk = new_chonk()
    assert chonk.last_active_ancestor() is None
    h = aum(AUMKind.REMOVE_KEY, None, b"\x01\x02").hash()
    chonk.set_last_active_ancestor(h)
    assert chonk.last_active_ancestor() == h


def test_purge_aums(new_chonk: Callable[[], Chonk]) -> None:
    chonk = new_chonk()
    a = aum(AUMKind.NO_OP, rand_hash("PurgeAUMs", 1))
    chonk.commit_verified_aums([a], NOW)
    chonk.purge_aums([a.hash()])
    with pytest.raises(AUMNotFoundError):
        chonk.aum(a.hash())
    assert chonk.all_aums() == []


def test_all_aums(new_chonk: Callable[[], Chonk]) -> None:
    chonk = new_chonk()
    genesis = aum(AUMKind.REMOVE_KEY, None, b"\x01\x02")
    intermediate = aum(AUMKind.INVALID, genesis.hash())
    leaf = aum(AUMKind.INVALID, intermediate.hash())
    chonk.commit_verified_aums([genesis, intermediate, leaf], NOW)
    assert sorted(chonk.all_aums()) == sorted(a.hash() for a in (genesis, intermediate, leaf))


def test_child_aums_of_purged_aum(new_chonk: Callable[[], Chonk]) -> None:
    chonk = new_chonk()
    parent = aum(AUMKind.REMOVE_KEY, None, b"\x00\x00")
    ph = parent.hash()
    c1, c2, c3 = (aum(AUMKind.ADD_KEY, ph, bytes([i, i])) for i in (1, 2, 3))
    g2a = aum(AUMKind.ADD_KEY, c2.hash(), b"\x02" * 4)
    g2b = aum(AUMKind.ADD_KEY, c2.hash(), b"\x02" * 5)
    chonk.commit_verified_aums([parent, c1, c2, c3, g2a, g2b], NOW)

    def children() -> list[bytes]:
        return sorted(a.hash() for a in chonk.child_aums(ph))

    assert children() == sorted(a.hash() for a in (c1, c2, c3))
    chonk.purge_aums([ph])
    assert children() == sorted(a.hash() for a in (c1, c2, c3))
    chonk.purge_aums([c3.hash()])
    assert children() == sorted(a.hash() for a in (c1, c2))


def test_remove_all(new_chonk: Callable[[], Chonk]) -> None:
    chonk = new_chonk()
    parent = rand_hash("RemoveAll", 1)
    data = [aum(AUMKind.REMOVE_KEY, parent, b"\x01\x02"), aum(AUMKind.REMOVE_KEY, parent, b"\x03\x04")]
    chonk.commit_verified_aums(data, NOW)
    for want in data:
        assert chonk.aum(want.hash()) == want
    chonk.remove_all()
    for want in data:
        with pytest.raises(AUMNotFoundError):
            chonk.aum(want.hash())
    assert chonk.all_aums() == []
    # Usable again afterwards (Tailnet Lock re-enabled).
    chonk.commit_verified_aums(data[:1], NOW)
    assert chonk.aum(data[0].hash()) == data[0]


def test_authority_compact_and_reopen(new_chonk: Callable[[], Chonk]) -> None:
    """Go TestAuthorityCompact (on FS there): compacts G..E down to C -> D -> E and reopens."""
    priv = hashlib.sha256(b"TestAuthorityCompact/1").digest()
    pub = Ed25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = Key(kind=KeyKind.KEY25519, votes=2, public=pub)
    state = State(last_aum_hash=None, disablement_secrets=(b"\x05" * 32,), keys=(key,))
    storage = new_chonk()
    a, genesis = Authority.create(storage, state, priv, NOW)
    chain = {"G": genesis}
    prev = genesis.hash()
    for name in "ABCDE":
        if name == "C":
            u = AUM(message_kind=AUMKind.CHECKPOINT, prev_aum_hash=prev, state=state)
        else:
            u = aum(AUMKind.NO_OP, prev)
        u = u.signed(priv)
        chain[name] = u
        prev = u.hash()
    a.inform(storage, [chain[n] for n in "ABCDE"], NOW)
    a.compact(storage, CompactionOptions(min_chain=2, min_age=1), NOW + 10)
    assert a.oldest_ancestor.hash() == chain["C"].hash()
    stored = Authority.open(storage)
    assert stored.head() == a.head() == chain["E"].hash()
    assert storage.last_active_ancestor() == chain["C"].hash()
    assert sorted(storage.all_aums()) == sorted(chain[n].hash() for n in "CDE")
    # Purged AUMs are gone from reads but (FS, as Go) kept on disk, marked.
    with pytest.raises(AUMNotFoundError):
        storage.aum(chain["A"].hash())
    if isinstance(storage, FsChonk):
        info = decode_hash_info(storage.aum_path(chain["A"].hash()).read_bytes())
        assert info.aum == chain["A"] and info.purged_unix > 0
        # What a restarted node reads from disk matches what this one holds in memory.
        fresh_fs = FsChonk(storage.base)
        assert sorted(fresh_fs.all_aums()) == sorted(storage.all_aums())
        assert fresh_fs.last_active_ancestor() == chain["C"].hash()
        assert Authority.open(fresh_fs).head() == a.head()
    # Syncing still works from the compacted store.
    fresh = MemChonk()
    b = Authority.bootstrap(fresh, chain["C"], NOW)
    b.inform(fresh, a.missing_aums(storage, b.sync_offer(fresh)), NOW)
    assert b.head() == a.head()


# -- Go tailchonk_test.go: FS specifics --------------------------------------------------------


def test_fs_commit_layout(tmp_path: Path) -> None:
    chonk = FsChonk(tmp_path)
    a = aum(AUMKind.NO_OP, rand_hash("TestTailchonkFS_Commit", 1))
    chonk.commit_verified_aums([a], NOW)
    name = aum_hash_text(a.hash())
    path = tmp_path / name[:2] / name
    assert chonk.aum_path(a.hash()) == path
    assert len(name) == 52 and "=" not in name
    info = decode_hash_info(path.read_bytes(), want_hash=a.hash())
    assert info == HashInfo(aum=a, created_unix=int(NOW), purged_unix=0)
    assert path.read_bytes() == encode_hash_info(info)
    # Recommitting keeps the original creation time.
    chonk.commit_verified_aums([a], NOW + 100)
    assert chonk.commit_time(a.hash()) == NOW


def test_fs_reads_a_go_written_record(tmp_path: Path) -> None:
    """A record as Go's FS.commit writes it (CTAP2 CBOR of fsHashInfo), legacy fields too."""
    a = aum(AUMKind.NO_OP, rand_hash("go-record", 1))
    name = aum_hash_text(a.hash())
    (tmp_path / name[:2]).mkdir()
    # {1: [] (legacy Children), 2: AUM}: no CreatedUnix (pre-CreatedUnix tailscaled).
    (tmp_path / name[:2] / name).write_bytes(b"\xa2\x01\x80\x02" + a.serialize())
    os.utime(tmp_path / name[:2] / name, (1234.0, 1234.0))
    chonk = FsChonk(tmp_path)
    assert chonk.aum(a.hash()) == a
    assert chonk.commit_time(a.hash()) == 1234.0  # the file's mtime stands in (Go)


def test_fs_commit_time(tmp_path: Path) -> None:
    chonk = FsChonk(tmp_path)
    a = aum(AUMKind.NO_OP, rand_hash("TestTailchonkFS_CommitTime", 1))
    chonk.commit_verified_aums([a], NOW)
    assert chonk.commit_time(a.hash()) == NOW


def test_fs_ignore_temp_file(tmp_path: Path) -> None:
    chonk = FsChonk(tmp_path)
    a = aum(AUMKind.NO_OP, rand_hash("TestTailchonkFS_IgnoreTempFile", 1))
    chonk.commit_verified_aums([a], NOW)
    assert chonk.all_aums() == [a.hash()]
    for name, contents in (("AUM1234.tmp", "incomplete AUM\n"), ("AUM1234.tmp_123", "second\n")):
        (tmp_path / name[:2]).mkdir(exist_ok=True)
        (tmp_path / name[:2] / name).write_text(contents)
    # A leftover of our own atomic write, next to the real record.
    real = chonk.aum_path(a.hash())
    (real.parent / (real.name + ".tmp123")).write_bytes(b"half")
    (tmp_path / "stray-file").write_bytes(b"x")
    reopened = FsChonk(tmp_path)  # a fresh scan of the directory
    assert reopened.all_aums() == [a.hash()]
    assert reopened.heads() == [a]


def test_fs_create_chonk_dir(tmp_path: Path) -> None:
    base = tmp_path / "a" / "b" / "c"
    chonk = FsChonk(base)
    a = aum(AUMKind.NO_OP)
    chonk.commit_verified_aums([a], NOW)
    assert chonk.aum(a.hash()) == a
    assert base.is_dir()


def test_fs_cannot_use_file(tmp_path: Path) -> None:
    base = tmp_path / "tka_storage.txt"
    base.write_text("this won't work")
    with pytest.raises(ChonkIOError):
        FsChonk(base)


# -- Hostile or corrupt files: typed errors, never a crash -------------------------------------


def _committed(tmp_path: Path) -> tuple[FsChonk, AUM, Path]:
    chonk = FsChonk(tmp_path)
    a = aum(AUMKind.NO_OP, rand_hash("corrupt", 1))
    chonk.commit_verified_aums([a], NOW)
    return chonk, a, chonk.aum_path(a.hash())


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"\xa1\x02\xff", b"\x9f\xff", b"\xa1\x02\xa1\x01\x40"],
    ids=["empty", "garbage", "bad-cbor", "indefinite", "bad-aum"],
)
def test_fs_corrupt_record_is_a_typed_error(tmp_path: Path, content: bytes) -> None:
    chonk, a, path = _committed(tmp_path)
    path.write_bytes(content)
    with pytest.raises(ChonkCorruptError):
        chonk.aum(a.hash())
    with pytest.raises(TkaDecodeError):
        chonk.all_aums()
    with pytest.raises(TkaDecodeError):
        Authority.open(chonk)


def test_fs_record_under_the_wrong_name_is_refused(tmp_path: Path) -> None:
    chonk, a, path = _committed(tmp_path)
    other = aum(AUMKind.NO_OP, rand_hash("corrupt", 2))
    path.write_bytes(encode_hash_info(HashInfo(aum=other, created_unix=1)))
    with pytest.raises(ChonkCorruptError, match="does not match"):
        chonk.aum(a.hash())


def test_fs_oversized_record_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    chonk, a, path = _committed(tmp_path)
    with open(path, "wb") as f:
        f.truncate(MAX_RECORD_BYTES + 10)
    with pytest.raises(ChonkCorruptError, match="larger than"):
        chonk.aum(a.hash())


def test_fs_bad_last_active_ancestor(tmp_path: Path) -> None:
    chonk = FsChonk(tmp_path)
    (tmp_path / "last_active_ancestor").write_bytes(b"\x01" * 31)
    with pytest.raises(ChonkCorruptError, match="wrong length"):
        chonk.last_active_ancestor()
    with pytest.raises(TkaDecodeError):
        chonk.set_last_active_ancestor(b"\x01" * 3)


def test_fs_unreadable_record_is_a_typed_error(tmp_path: Path) -> None:
    chonk, a, path = _committed(tmp_path)
    path.unlink()
    path.mkdir()  # a directory where the record should be: open() fails with an OSError
    with pytest.raises(ChonkIOError):
        chonk.aum(a.hash())


def test_fs_survives_restart_and_forged_signatures_never_load(tmp_path: Path) -> None:
    """A store reopened by a new process gives the same authority; stored AUMs are trusted as
    verified, so what Open admits is only what inform verified before committing."""
    priv = hashlib.sha256(b"restart/1").digest()
    pub = Ed25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = Key(kind=KeyKind.KEY25519, votes=1, public=pub)
    state = State(last_aum_hash=None, disablement_secrets=(b"\x05" * 32,), keys=(key,))
    a, _ = Authority.create(FsChonk(tmp_path), state, priv, NOW)
    u = aum(AUMKind.NO_OP, a.head()).signed(priv)
    a.inform(FsChonk(tmp_path), [u], NOW)
    reopened = Authority.open(FsChonk(tmp_path))
    assert reopened.head() == u.hash() and reopened.state == a.state
    forged = dataclasses.replace(
        aum(AUMKind.NO_OP, u.hash(), b"\x07"),
        signatures=(Signature(key_id=pub, signature=b"\x00" * 64),),
    )
    with pytest.raises(Exception, match="invalid signature"):
        reopened.inform(FsChonk(tmp_path), [forged], NOW)
    assert Authority.open(FsChonk(tmp_path)).head() == u.hash()
