"""Taildrop's sans-IO rules against Go's own test tables (``taildrop_test.go``, ``resume_test.go``)."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytsnet.wire.taildrop import (
    BLOCK_SIZE,
    BadBlockChecksum,
    BlockChecksum,
    InvalidFileName,
    ResumeMatcher,
    block_checksums,
    name_of_target,
    next_filename,
    parse_range,
    partial_name,
    put_target,
    validate_base_name,
)

GO_VALIDATE = [  # TestValidateBaseName
    ("", False), ("foo", True), ("./foo", False), ("../foo", False), ("foo/bar", False), ("😋", True),
    ("\udcde\udcad\udcbe\udcef", False),  # Go's "\xde\xad\xbe\xef": bytes that are not UTF-8
    ("foo.partial", False), ("foo.deleted", False), ("a" * 1024, False), ("foo:bar", False),
]


@pytest.mark.parametrize(("name", "ok"), GO_VALIDATE)
def test_validate_base_name_go_table(name: str, ok: bool) -> None:
    if ok:
        validate_base_name(name)
    else:
        with pytest.raises(InvalidFileName):
            validate_base_name(name)


@pytest.mark.parametrize("name", ["../x", "..", ".", "CON", "con.txt", "LPT1", "nul ", "COM9.tar.gz",
                                  "a\x00b", "x" * 256, "é" * 128, "foo.n1234.partial", " lead", "trail ",
                                  "a\\b", "a*b", "a|b", "tab\there", "bell\x07", "/etc/passwd"])
def test_hostile_names_refused(name: str) -> None:
    with pytest.raises(InvalidFileName):
        validate_base_name(name)


@pytest.mark.parametrize("name", ["x" * 255, "é" * 127, "CONSOLE.txt", "report (1).pdf", ".bashrc",
                                  "新完全マスター　N2　文法.pdf", "a b"])
def test_ordinary_names_accepted(name: str) -> None:
    validate_base_name(name)


GO_NEXT = [  # TestNextFilename
    ("foo", "foo (1)", "foo (2)"), ("foo(1)", "foo(1) (1)", "foo(1) (2)"),
    ("foo.tar", "foo (1).tar", "foo (2).tar"), ("foo.tar.gz", "foo (1).tar.gz", "foo (2).tar.gz"),
    (".bashrc", ".bashrc (1)", ".bashrc (2)"),
    ("fizz buzz.torrent", "fizz buzz (1).torrent", "fizz buzz (2).torrent"),
    ("rawr 2023.12.15.txt", "rawr 2023.12.15 (1).txt", "rawr 2023.12.15 (2).txt"),
    ("IMG_7934.JPEG", "IMG_7934 (1).JPEG", "IMG_7934 (2).JPEG"),
    ("my song.mp3", "my song (1).mp3", "my song (2).mp3"),
    ("archive.7z", "archive (1).7z", "archive (2).7z"),
    ("foo/bar/fizz", "foo/bar/fizz (1)", "foo/bar/fizz (2)"),
    ("新完全マスター　N2　文法.pdf", "新完全マスター　N2　文法 (1).pdf", "新完全マスター　N2　文法 (2).pdf"),
]


@pytest.mark.parametrize(("name", "want", "want2"), GO_NEXT)
def test_next_filename_go_table(name: str, want: str, want2: str) -> None:
    assert next_filename(name) == want
    assert next_filename(want) == want2


def test_partial_name_and_targets() -> None:
    assert partial_name("foo", "n12345CNTRL") == "foo.n12345CNTRL.partial"
    assert partial_name("foo", "") == "foo.partial"
    assert put_target("a b/../c") == "/v0/put/a%20b%2F..%2Fc"
    assert name_of_target(put_target("a b/../c")) == "a b/../c"  # decoded, then refused by validation
    assert name_of_target("/v0/put/%2e%2e%2Fx") == "../x"
    for bad in ("/v0/put/%zz", "/v0/put/%ff", "/v0/put/%"):
        with pytest.raises(InvalidFileName):
            name_of_target(bad)


def test_range_header_forms() -> None:
    assert parse_range("bytes=0-") == 0
    assert parse_range("bytes=65536-") == 65536
    for bad in ("bytes=1-2", "bytes=-5", "bytes=1-,3-", "items=1-", "bytes=x-", ""):
        assert parse_range(bad) is None


def test_block_checksum_json_roundtrip_and_refusals() -> None:
    cs = BlockChecksum(hashlib.sha256(b"x").digest(), 1)
    line = cs.to_line()
    assert line.endswith(b"\n") and b'"algo":"sha256"' in line
    assert BlockChecksum.from_json(line) == cs
    for bad in (b"{}", b"[1]", b"nope", b'{"checksum":"00","algo":"sha256","size":1}',
                b'{"checksum":"' + b"0" * 64 + b'","algo":"sha256","size":"1"}'):
        with pytest.raises(BadBlockChecksum):
            BlockChecksum.from_json(bad)


def _resume(partial: bytes, full: bytes) -> int:
    """Go ``resumeReader`` over ``full`` against the receiver's hashes of ``partial``."""
    m, pos = ResumeMatcher(), 0
    for cs in block_checksums(partial):
        n = m.check(cs)
        if n == 0:
            break
        block = full[pos:pos + n]
        pos += len(block)
        if not m.feed(cs, block):
            break
    return m.offset


def test_resume_offsets() -> None:
    rnd = random.Random(0)
    want = rnd.randbytes(5 * BLOCK_SIZE + 12345)
    assert _resume(b"", want) == 0  # resume-noexist
    assert _resume(want[:3 * BLOCK_SIZE], want) == 3 * BLOCK_SIZE
    assert _resume(want[:3 * BLOCK_SIZE + 7], want) == 3 * BLOCK_SIZE + 7  # a short last block matches
    corrupt = bytearray(want[:4 * BLOCK_SIZE])
    corrupt[2 * BLOCK_SIZE + 5] ^= 1
    assert _resume(bytes(corrupt), want) == 2 * BLOCK_SIZE  # first mismatch: resume there
    assert _resume(want + b"extra", want) == 5 * BLOCK_SIZE  # its last block differs from ours: resent
    m = ResumeMatcher()  # a bogus block size or algorithm stops the matching at once
    assert m.check(BlockChecksum(b"\0" * 32, BLOCK_SIZE + 1)) == 0 and m.offset == 0
    m = ResumeMatcher()
    assert m.check(BlockChecksum(b"\0" * 32, 10, algo="md5")) == 0


@given(st.binary(max_size=3 * 1024), st.integers(min_value=0, max_value=3 * 1024))
def test_resume_never_skips_a_mismatching_byte(data: bytes, cut: int) -> None:
    """Whatever the receiver holds, the offset is a prefix both sides agree on (hypothesis)."""
    partial = data[:cut] + b"\x01garbage"
    off = _resume(partial, data)
    assert data[:off] == partial[:off]
