"""The receiving directory (``actors/taildrop/store.py``) and the ``/v0/put/`` answers, without a network:
budgets, one upload per sender and name, resume offsets, Go's conflict naming, symlinks not followed,
and who may put (Go ``canPutFile``)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from urllib.parse import unquote

import pytest

from pytsnet.actors.taildrop.put import (
    CAP_FILE_SHARING,
    NO_TAILDROP,
    PEER_CAP_FILE_SEND,
    PutAccess,
    can_put_file,
    put_answer,
    put_begin,
)
from pytsnet.actors.taildrop.store import PutRefused, TaildropStore, Upload
from pytsnet.messages.peers import PeerInfo
from pytsnet.wire.peerapi import PeerApiRequest, PeerApiResponse
from pytsnet.wire.taildrop import BlockChecksum, InvalidFileName, ResumeMatcher, block_checksums


def _put(store: TaildropStore, name: str, data: bytes, sender: str = "nA", offset: int = 0) -> str:
    up = store.begin(sender, name, offset, len(data))
    up.write(data)
    return up.finish()


def test_budgets_are_typed_refusals(tmp_path: Path) -> None:
    store = TaildropStore(tmp_path, max_file_size=1000, min_free=0)
    with pytest.raises(PutRefused) as e:
        store.begin("nA", "big", 0, 1001)
    assert e.value.status == 413
    up = store.begin("nA", "chunked", 0, -1)  # unknown length: the budget holds as bytes arrive
    up.write(b"x" * 1000)
    with pytest.raises(PutRefused) as e:
        up.write(b"y")
    assert e.value.status == 413
    up.abort()
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    tight = TaildropStore(tmp_path, min_free=free)  # keeping all of today's free space: no room
    with pytest.raises(PutRefused) as e:
        tight.begin("nA", "f", 0, 1 << 20)
    assert e.value.status == 507


def test_short_or_long_bodies_and_one_upload_at_a_time(tmp_path: Path) -> None:
    store = TaildropStore(tmp_path)
    up = store.begin("nA", "f", 0, 10)
    with pytest.raises(PutRefused) as e:
        store.begin("nA", "f", 0, 10)  # Go's ErrFileExists while the first is in progress
    assert e.value.status == 409
    store.begin("nB", "f", 0, 1).abort()  # another sender's upload of the same name is its own
    with pytest.raises(PutRefused):
        up.write(b"x" * 11)
    up.write(b"x" * 5)
    with pytest.raises(PutRefused) as e:
        up.finish()
    assert e.value.status == 400 and store.waiting_files() == []
    assert [r.received for r in store.history()] == [0, 5]


def test_resume_truncates_at_the_offset_and_refuses_past_the_end(tmp_path: Path) -> None:
    store = TaildropStore(tmp_path)
    up = store.begin("nA", "r.bin", 0, 100)
    up.write(b"a" * 70)
    up.abort()
    lines = store.hashes("nA", "r.bin").splitlines()
    assert [BlockChecksum.from_json(x) for x in lines] == block_checksums(b"a" * 70)
    assert store.hashes("nB", "r.bin") == b""  # only the sender's own partial files
    assert store.partial_files("nA") == ["r.bin.nA.partial"] and store.partial_files("nB") == []
    with pytest.raises(PutRefused) as e:
        store.begin("nA", "r.bin", 71, 29)
    assert e.value.status == 400
    up = store.begin("nA", "r.bin", 60, 40)  # the sender matched 60 bytes: the rest replaced
    up.write(b"b" * 40)
    assert up.finish() == "r.bin"
    assert (tmp_path / "r.bin").read_bytes() == b"a" * 60 + b"b" * 40
    assert store.history()[-1].offset == 60 and store.history()[-1].received == 40


def test_conflicts_get_gos_next_name_and_duplicates_are_dropped(tmp_path: Path) -> None:
    store = TaildropStore(tmp_path)
    assert _put(store, "a.txt", b"one") == "a.txt"
    assert _put(store, "a.txt", b"one") == "a.txt"  # same bytes: the partial is just removed
    assert _put(store, "a.txt", b"two") == "a (1).txt"
    assert [(w.name, w.size) for w in store.waiting_files()] == [("a (1).txt", 3), ("a.txt", 3)]
    with store.open("a (1).txt") as f:
        assert f.read() == b"two"
    store.delete("a.txt")
    assert [w.name for w in store.waiting_files()] == ["a (1).txt"]


def test_names_and_symlinks_cannot_escape(tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    os.symlink(outside, root / "link")
    store = TaildropStore(root)
    with pytest.raises(OSError):
        store.open("link")  # O_NOFOLLOW
    assert "link" not in [w.name for w in store.waiting_files()]
    os.symlink(outside, root / "p.nA.partial")
    with pytest.raises(PutRefused):
        store.begin("nA", "p", 0, 1)  # a planted partial symlink is not written through
    assert outside.read_bytes() == b"secret"
    for bad in ("../secret", "CON", "a\x00", "x.partial"):
        with pytest.raises(InvalidFileName):
            store.begin("nA", bad, 0, 1)
    assert store.begin("../../x", "ok", 0, 0).path.parent == root  # a hostile stable ID is sanitised


def _peer(user: int, tags: list[str] | None = None, unsigned: bool = False) -> PeerInfo:
    return PeerInfo(node_id=user * 10, stable_id=f"n{user}", user=user, tags=tags or [],
                    unsigned_peer_api_only=unsigned)


def test_can_put_file_as_go() -> None:
    me, caps = _peer(1), [CAP_FILE_SHARING]
    assert can_put_file(_peer(1), me, set(), caps)  # our own user, untagged
    assert can_put_file(_peer(1), me, set(), ["file-sharing"])  # localnet's short name
    assert not can_put_file(_peer(1, ["tag:x"]), me, set(), caps)  # tagged: needs the grant
    assert not can_put_file(_peer(1), _peer(1, ["tag:x"]), set(), caps)
    assert not can_put_file(_peer(2), me, set(), caps)  # another user
    assert can_put_file(_peer(2), me, {PEER_CAP_FILE_SEND}, caps)  # ...with file-send
    assert not can_put_file(_peer(1, unsigned=True), me, {PEER_CAP_FILE_SEND}, caps)  # 21h
    assert not can_put_file(_peer(1), me, set(), [])  # no file-sharing capability


def _req(method: str, target: str, **headers: str) -> PeerApiRequest:
    return PeerApiRequest(method=method, target=target, headers=dict(headers))


def test_put_answers_as_go(tmp_path: Path) -> None:
    store = TaildropStore(tmp_path)
    ok, no = PutAccess(True, "nA"), PutAccess(False, "nA")
    denied = put_begin(_req("PUT", "/v0/put/x"), store, no)
    assert isinstance(denied, PeerApiResponse)
    assert (denied.status, denied.body) == (403, NO_TAILDROP.encode() + b"\n")
    off = put_begin(_req("PUT", "/v0/put/x"), None, ok)
    assert isinstance(off, PeerApiResponse) and off.status == 403
    bad_range = put_begin(_req("PUT", "/v0/put/x", range="bytes=1-2"), store, ok)
    assert isinstance(bad_range, PeerApiResponse) and bad_range.body == b"invalid Range header\n"
    bad_name = put_begin(_req("PUT", "/v0/put/..%2Fx"), store, ok)
    assert isinstance(bad_name, PeerApiResponse)
    assert (bad_name.status, bad_name.body) == (400, b"invalid filename\n")
    up = put_begin(_req("PUT", "/v0/put/a%20b", **{"content-length": "3"}), store, ok)
    assert isinstance(up, Upload)
    up.write(b"abc")
    assert up.finish() == "a b"
    assert put_answer(_req("POST", "/v0/put/x"), store, ok).status == 405
    assert put_answer(_req("GET", "/v0/put/"), store, ok).body == b"null\n"  # no partial files
    assert put_answer(_req("GET", "/v0/put/nothing"), store, ok).body == b""
    assert put_answer(_req("GET", "/v0/put/x"), store, no).status == 403


def test_sweep_removes_only_stale_idle_partials(tmp_path: Path) -> None:
    store = TaildropStore(tmp_path)
    store.begin("nA", "old", 0, 10).abort()
    store.begin("nA", "fresh", 0, 10).abort()
    busy = store.begin("nB", "busy", 0, 10)
    _put(store, "done.txt", b"kept")
    old = tmp_path / "old.nA.partial"
    os.utime(old, (1000.0, 1000.0))
    os.utime(tmp_path / "busy.nB.partial", (1000.0, 1000.0))
    now = (tmp_path / "fresh.nA.partial").stat().st_mtime + 10
    assert store.sweep_partials(now, 3600) == ["old.nA.partial"]  # not the busy one, nor a finished file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy.nB.partial", "done.txt", "fresh.nA.partial"]
    busy.abort()
    assert store.sweep_partials(now, 3600) == ["busy.nB.partial"]


def test_resume_retry_go_port(tmp_path: Path) -> None:
    """Go's ``TestResume/resume-retry``: uploads cut after a random number of bytes, each resumed from
    the receiver's hashes, until the file is complete — byte-exact, never re-sending a matched byte."""
    rn = random.Random(0)
    want = rn.randbytes(12345 + 3 * 65536)
    store = TaildropStore(tmp_path)
    for _ in range(2000):
        m = ResumeMatcher()
        for line in store.hashes("", "bar").splitlines():
            cs = BlockChecksum.from_json(line)
            n = m.check(cs)
            if n == 0 or not m.feed(cs, want[m.offset:m.offset + n]):
                break
        offset = m.offset
        up = store.begin("", "bar", offset, len(want) - offset)
        num = rn.randint(0, min(len(want) - offset, 40000))
        up.write(want[offset:offset + num])
        if offset + num == len(want):
            up.finish()
            break
        up.abort()
    else:
        pytest.fail("too many iterations")
    assert (tmp_path / "bar").read_bytes() == want
    assert sum(r.received for r in store.history()) == len(want)  # every byte written exactly once


def _hex_all(s: str) -> str:
    return "".join(f"%{b:02x}" for b in s.encode())


GO_PEERAPI_PUTS = [  # feature/taildrop/peerapi_test.go TestHandlePeerAPI (owner with the capability)
    ("/v0/put/foo", b"", 200), ("/v0/put/foo", b"contents", 200),
    ("/v0/put/foo.partial", b"", 400), ("/v0/put/foo.deleted", b"", 400), ("/v0/put/.", b"", 400),
    ("/v0/put/", b"", 400), ("/v0/put/foo/bar", b"", 400), ("/v0/put/" + _hex_all("."), b"", 400),
    ("/v0/put/" + _hex_all("/"), b"", 400), ("/v0/put/" + _hex_all("\\"), b"", 400),
    ("/v0/put/" + _hex_all(".."), b"", 400),
    ("/v0/put/" + _hex_all("foo/../../../../../etc/passwd"), b"", 400),
    ("/v0/put/" + _hex_all("Foo Bar.dat"), b"baz", 200),
    ("/v0/put/" + _hex_all("Томас и его друзья.mp3"), "главный озорник".encode(), 200),  # noqa: RUF001
    ("/v0/put/" + _hex_all("😜")[:3], b"", 400), ("/v0/put/%00", b"", 400), ("/v0/put/%01", b"", 400),
    ("/v0/put/" + _hex_all("nul:"), b"", 400), ("/v0/put/" + _hex_all(" foo "), b"", 400),
]


@pytest.mark.parametrize(("target", "body", "status"), GO_PEERAPI_PUTS)
def test_go_peerapi_put_table(tmp_path: Path, target: str, body: bytes, status: int) -> None:
    store = TaildropStore(tmp_path / "files")
    req = _req("PUT", target, **{"content-length": str(len(body))})
    started = put_begin(req, store, PutAccess(True, "n1"))
    if status != 200:
        assert isinstance(started, PeerApiResponse)
        assert (started.status, started.body) == (status, b"invalid filename\n")
        assert not (tmp_path / "files").exists() or list((tmp_path / "files").iterdir()) == []
        return
    assert isinstance(started, Upload)
    started.write(body)
    name = started.finish()
    assert name == unquote(target.removeprefix("/v0/put/"))
    assert (tmp_path / "files" / name).read_bytes() == body
