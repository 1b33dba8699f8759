"""The LocalAPI's Taildrop routes (Go feature/taildrop/localapi.go): paths, methods, permissions,
JSON and status codes, in-process and over the unix socket (bodies streamed both ways, past the
LocalAPI's 1 MiB buffered-body cap), against an in-memory backend."""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytsnet.errors import LocalApiError
from pytsnet.localapi.client import LocalClient
from pytsnet.localapi.server import MAX_BODY, LocalApi, LocalRequest, LocalResponse
from pytsnet.localapi.taildrop import TaildropBackendError
from pytsnet.localapi.types import FileTarget, WaitingFile
from pytsnet.testing.taildrop_localapi import FakeTaildrop, api_over, fake_target, served

pytestmark = pytest.mark.timeout(60)

P = "/localapi/v0/"


def call(api: LocalApi, method: str, path: str, *, read: bool = True, write: bool = True,
         query: dict[str, str] | None = None, body: bytes = b"",
         headers: dict[str, str] | None = None) -> LocalResponse:
    return api.handle(LocalRequest(method, P + path, query or {}, body, headers or {}),
                      permit_read=read, permit_write=write)


@pytest.fixture
def fake() -> FakeTaildrop:
    return FakeTaildrop(targets=[fake_target(2, "bob"), fake_target(3, "carol", online=False)])


def test_permissions_as_go(fake: FakeTaildrop) -> None:
    api = api_over(fake)
    # file-targets: PermitRead ("access denied"); file-put and files: PermitWrite ("file access denied")
    denied = LocalResponse.error(403, "access denied")
    assert call(api, "GET", "file-targets", read=False, write=False) == denied
    assert call(api, "GET", "file-targets", read=True, write=False).status == 200
    for path, method in [("file-put/stable-bob/x", "PUT"), ("files/", "GET"), ("files/a", "GET"),
                         ("files/a", "DELETE")]:
        r = call(api, method, path, read=True, write=False)
        assert r == LocalResponse.error(403, "file access denied"), path
    assert fake.pushed == [] and fake.inbox == {}


def test_file_targets_json(fake: FakeTaildrop) -> None:
    api = api_over(fake)
    r = call(api, "GET", "file-targets")
    assert r.status == 200 and r.content_type == "application/json" and r.body.endswith(b"}]\n")
    got = [FileTarget.model_validate(t) for t in json.loads(r.body)]
    assert got == fake.targets
    assert json.loads(r.body)[0]["PeerAPIURL"] == "http://100.64.0.2:40002"
    assert call(api, "POST", "file-targets") == LocalResponse.error(400, "want GET to list targets")
    fake.targets.clear()
    assert call(api, "GET", "file-targets").body == b"[]\n"  # Go's NonNilSliceForJSON


def test_file_put_routes(fake: FakeTaildrop) -> None:
    api = api_over(fake)
    assert call(api, "GET", "file-put/stable-bob/x") == LocalResponse.error(400, "want PUT to put file")
    assert call(api, "PUT", "file-put/stable-bob") == LocalResponse.error(400, "bogus URL")
    r = call(api, "PUT", "file-put/stable-nobody/x", body=b"1")
    assert r == LocalResponse.error(404, "node not found")
    assert call(api, "PUT", "file-put/stable-bob/bad%zz") == LocalResponse.error(400, "bad filename")
    assert call(api, "POST", "file-put/stable-bob").status == 501  # multipart: not served, never half
    assert fake.pushed == []
    r = call(api, "PUT", "file-put/stable-bob/my%20notes%2Fv1.txt", body=b"hello",
             headers={"content-length": "5"})
    assert r.status == 200
    [p] = fake.pushed
    assert (p.target, p.name, p.data, p.size) == ("stable-bob", "my notes/v1.txt", b"hello", 5)


def test_file_put_refusal_keeps_status_and_text(fake: FakeTaildrop) -> None:
    fake.refuse["secret"] = TaildropBackendError(403, "Taildrop access denied")
    r = call(api_over(fake), "PUT", "file-put/stable-bob/secret", body=b"x")
    assert r == LocalResponse.error(403, "Taildrop access denied")


def test_files_list_get_delete(fake: FakeTaildrop) -> None:
    api = api_over(fake)
    assert call(api, "GET", "files/").body == b"null\n"  # Go encodes its nil slice
    fake.add("a.txt", b"AAA")
    fake.add("b b", b"B" * 10)
    r = call(api, "GET", "files/")
    assert r.content_type == "application/json"
    assert [WaitingFile.model_validate(w) for w in json.loads(r.body)] == [
        WaitingFile(Name="a.txt", Size=3), WaitingFile(Name="b b", Size=10)]
    assert call(api, "DELETE", "files/") == LocalResponse.error(400, "want GET to list files")
    assert call(api, "GET", "files/", query={"waitsec": "x"}) == LocalResponse.error(400, "invalid waitsec")
    got = call(api, "GET", "files/b%20b")
    assert got.status == 200 and got.content_type == "application/octet-stream" and got.stream_size == 10
    assert got.stream is not None and got.stream.read() == b"B" * 10
    assert call(api, "GET", "files/nope") == LocalResponse.error(500, "open nope: no such file or directory")
    assert call(api, "GET", "files/%") == LocalResponse.error(400, "bad filename")
    assert call(api, "DELETE", "files/a.txt").status == 204
    assert list(fake.inbox) == ["b b"]
    assert call(api, "DELETE", "files/a.txt").status == 500


def test_files_waitsec_waits_for_a_file(fake: FakeTaildrop) -> None:
    api = api_over(fake)
    t0 = time.monotonic()
    assert call(api, "GET", "files/", query={"waitsec": "1"}).body == b"null\n"
    assert time.monotonic() - t0 >= 0.9
    threading.Timer(0.3, fake.add, ("late.bin", b"z")).start()
    t0 = time.monotonic()
    r = call(api, "GET", "files/", query={"waitsec": "20"})
    assert json.loads(r.body) == [{"Name": "late.bin", "Size": 1}] and time.monotonic() - t0 < 10


@pytest.fixture
def sock(fake: FakeTaildrop) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="td", dir="/tmp"))
    with served(fake, d / "localapi.sock"):
        yield d / "localapi.sock"


def test_client_over_socket_streams_large_files(fake: FakeTaildrop, sock: Path) -> None:
    lc = LocalClient.unix(str(sock))
    assert [t.Node.StableID for t in lc.file_targets() if t.Node] == ["stable-bob", "stable-carol"]
    data = os.urandom(3 * MAX_BODY + 12345)  # past the buffered-body cap: streamed, not held
    lc.push_file("stable-bob", len(data), "big file.bin", io.BytesIO(data))
    [p] = fake.pushed
    assert (p.name, p.size) == ("big file.bin", len(data)) and p.data == data
    lc.push_file("stable-bob", -1, "unknown size", io.BytesIO(b"chunked body"))  # chunked, size unknown
    assert (fake.pushed[1].data, fake.pushed[1].size) == (b"chunked body", None)
    with pytest.raises(LocalApiError) as e:
        lc.push_file("stable-nobody", 1, "x", io.BytesIO(b"x"))
    assert e.value.status == 404
    fake.add("in.bin", data)
    assert lc.waiting_files() == [WaitingFile(Name="in.bin", Size=len(data))]
    body, size = lc.get_waiting_file("in.bin")
    with body:
        assert size == len(data) and body.read() == data
    with pytest.raises(LocalApiError):
        lc.get_waiting_file("missing")
    lc.delete_waiting_file("in.bin")
    assert lc.waiting_files() == [] and lc.await_waiting_files(1) == []
